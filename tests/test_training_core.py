"""The train core on tiny arrays: split, seed, build and train in one call, no files."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.params import ModelConfig, TrainConfig
from stages.core.problem import Problem
from stages.training.core import ValidationSplitError, train_network, train_networks
from stages.training.engine import LOSS_FUNCTIONS, train_model

REGRESSION = Problem("regression", 1)
MODEL = ModelConfig(width=8, depth=2, activation="relu", l2=0.0, dropout=0.0)


def train_config(engine: str = "compiled", epochs: int = 4, validation_split: float = 0.2) -> TrainConfig:
    return TrainConfig(engine=engine, epochs=epochs, batch_size=16, learning_rate=0.01,
                       validation_split=validation_split, early_stopping_patience=0)


def tiny_regression(rows: int = 50):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (rows, 1)).astype(np.float32)
    return x, (x[:, 0] ** 2 + 1).astype(np.float32)


def train(seed: int = 3, epochs: int = 4, engine: str = "compiled"):
    x, y = tiny_regression()
    return train_network(REGRESSION, MODEL, train_config(engine, epochs), x, y, seed)


@pytest.mark.parametrize("engine", ["compiled", "fit"])
def test_returns_the_trained_model_and_a_curve_row_per_epoch_validated_on_the_last_rows(engine):
    x, y = tiny_regression()
    trained = train(engine=engine)
    assert (trained.train_rows, trained.validation_rows) == (40, 10)
    assert trained.curve["epoch"].tolist() == [1, 2, 3, 4]
    assert trained.model.output_shape == (None, REGRESSION.outputs)
    # The last val/loss is the returned model's loss on the last 10 rows: those were held out.
    val_loss = float(LOSS_FUNCTIONS[REGRESSION.kind]()(y[-10:], trained.model(x[-10:], training=False)))
    assert trained.curve["val/loss"].iloc[-1] == pytest.approx(val_loss, rel=1e-4)


def test_same_seed_same_weights_other_seed_other_weights():
    first, again, other = train(seed=3), train(seed=3), train(seed=4)
    for weight, weight_again in zip(first.model.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(weight, weight_again)
    assert not np.array_equal(first.model.get_weights()[0], other.model.get_weights()[0])


def test_the_engine_gets_the_split_rows_and_a_bad_split_fails_before_any_training():
    calls = []

    def recording_engine(model, problem, config, x_train, y_train, x_val, y_val, seed):
        calls.append((len(x_train), len(x_val), seed))
        return train_model(model, problem, config, x_train, y_train, x_val, y_val, seed)

    x, y = tiny_regression()
    train_network(REGRESSION, MODEL, train_config(epochs=1), x, y, 5, engine=recording_engine)
    assert calls == [(40, 10, 5)]
    with pytest.raises(ValidationSplitError, match="no rows"):
        train_network(REGRESSION, MODEL, train_config(epochs=1, validation_split=0.01), x[:10], y[:10], 5,
                      engine=recording_engine)
    assert len(calls) == 1


@pytest.mark.parametrize("engine", ["compiled", "fit"])
def test_several_seeds_each_train_their_own_network_as_it_trains_alone(engine):
    """Side by side (compiled) or one after another (fit): seed 7 second of three is seed 7 alone, its
    dropout masks included, and the others are other networks; each holds out the same validation rows."""
    x, y = tiny_regression()
    model = MODEL.model_copy(update={"dropout": 0.2})
    config = train_config(engine, epochs=5)
    among = train_networks(REGRESSION, model, config, x, y, [3, 7, 11])
    (alone,) = train_networks(REGRESSION, model, config, x, y, [7])

    assert [(net.train_rows, net.validation_rows) for net in among] == [(40, 10)] * 3
    np.testing.assert_array_equal(among[1].curve.to_numpy(), alone.curve.to_numpy())
    for weight, lone in zip(among[1].model.get_weights(), alone.model.get_weights()):
        np.testing.assert_array_equal(weight, lone)
    assert not np.array_equal(among[0].model.get_weights()[0], among[1].model.get_weights()[0])
    with pytest.raises(ValueError, match="no seeds to train"):
        train_networks(REGRESSION, model, config, x, y, [])
