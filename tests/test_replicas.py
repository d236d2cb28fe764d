"""Seeds trained side by side (stages/training/replicas.py) on tiny data: a seed's run is its own whatever
trains beside it, and each replica is the compiled engine's training of that seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.core.params import ModelConfig, TrainConfig
from stages.training.engine import train_compiled
from stages.training.model import build_model
from stages.training.replicas import train_seeds_compiled
from tests.test_engine import BINARY, MULTICLASS, REGRESSION, classification_data, regression_data, weights_of

NETWORK = ModelConfig(width=16, depth=2, activation="relu", l2=0.0, dropout=0.0)


def config(epochs: int = 12, patience: int = 0, batch_size: int = 16) -> TrainConfig:
    return TrainConfig(engine="compiled", epochs=epochs, batch_size=batch_size, learning_rate=0.01,
                       validation_split=0.2, early_stopping_patience=patience)


def train_seeds(task, data, seeds, network=NETWORK, **options):
    """Each seed's model (built from its seed) trained side by side: (curves, models)."""
    x_train, y_train, x_val, y_val = data
    models = [build_model(network, x_train.shape[1], task, seed) for seed in seeds]
    settings = {key: options.pop(key) for key in ("epochs", "patience", "batch_size") if key in options}
    curves = train_seeds_compiled(models, task, config(**settings), x_train, y_train, x_val, y_val, seeds, **options)
    return curves, models


CASES = [(REGRESSION, regression_data()), (BINARY, classification_data(2)), (MULTICLASS, classification_data(3))]
CASE_IDS = ["regression", "binary", "multiclass"]


def assert_same_run(curve, model, other_curve, other_model) -> None:
    pd.testing.assert_frame_equal(curve, other_curve, check_exact=True)
    for weight, other in zip(weights_of(model), weights_of(other_model)):
        np.testing.assert_array_equal(weight, other)


ALL_PENALTIES = ModelConfig(width=16, depth=2, activation="relu", l2=0.001, dropout=0.1)


@pytest.mark.parametrize("task, data", CASES[:2], ids=CASE_IDS[:2])
def test_without_xla_a_seed_among_others_trains_as_it_trains_alone_bit_for_bit(task, data):
    """Seed 7 alone, and second of three (with early stopping, l2 and dropout: every seed stops at its own
    epoch and draws its own masks): the same curve and weights, bit for bit."""
    alone, (alone_model,) = train_seeds(task, data, [7], ALL_PENALTIES, patience=2, epochs=30, jit_compile=False)
    among, models = train_seeds(task, data, [3, 7, 11], ALL_PENALTIES, patience=2, epochs=30, jit_compile=False)

    assert_same_run(among[1], models[1], alone[0], alone_model)
    assert len(among[1]) < 30  # early stopping did its work
    first = min(len(curve) for curve in among)
    assert not np.allclose(among[0]["train/loss"][:first], among[1]["train/loss"][:first])  # the others: other runs


@pytest.mark.parametrize("task, data", CASES, ids=CASE_IDS)
def test_under_xla_a_seed_trains_alike_alone_and_wherever_it_stands_among_others(task, data):
    """XLA compiles a replica axis of one as plain products (another float32 summation order), so a lone
    seed trains beside a copy of itself: alone, first of two or last of three, seed 7's run is one run."""
    alone, (alone_model,) = train_seeds(task, data, [7], ALL_PENALTIES, patience=3, epochs=20, jit_compile=True)
    pair, pair_models = train_seeds(task, data, [7, 3], ALL_PENALTIES, patience=3, epochs=20, jit_compile=True)
    trio, trio_models = train_seeds(task, data, [5, 9, 7], ALL_PENALTIES, patience=3, epochs=20, jit_compile=True)

    assert len(alone) == 1
    assert_same_run(pair[0], pair_models[0], alone[0], alone_model)
    assert_same_run(trio[2], trio_models[2], alone[0], alone_model)


def test_the_multiclass_product_without_xla_depends_on_where_the_seed_stands_by_float32_rounding_only():
    """Without XLA, TensorFlow's (oneDNN's) batched product rounds a 10-class output layer differently for
    another replica index: the one case that is not bit for bit; it stays at float32 rounding here."""
    task, data = MULTICLASS, classification_data(3)
    alone, (alone_model,) = train_seeds(task, data, [7], epochs=12, jit_compile=False)
    among, models = train_seeds(task, data, [3, 7, 11], epochs=12, jit_compile=False)
    pd.testing.assert_frame_equal(among[1], alone[0], check_exact=False, rtol=1e-5)
    for weight, lone in zip(weights_of(models[1]), weights_of(alone_model)):
        np.testing.assert_allclose(weight, lone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task, data", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_each_replica_is_the_compiled_engines_training_of_its_seed(task, data, jit_compile):
    """The same steps as `train_compiled` (same orders, same padded last batch, same Adam, l2 and early
    stopping), with each layer's product taken batched over the seeds: equal to float32 rounding."""
    network = ModelConfig(width=16, depth=2, activation="relu", l2=0.001, dropout=0.0)
    curves, models = train_seeds(task, data, [4, 5], network, patience=2, epochs=15, jit_compile=jit_compile)
    for curve, model, seed in zip(curves, models, [4, 5]):
        x_train, y_train, x_val, y_val = data
        single = build_model(network, x_train.shape[1], task, seed)
        expected = train_compiled(single, task, config(15, patience=2), x_train, y_train, x_val, y_val, seed,
                                  jit_compile=jit_compile)
        pd.testing.assert_frame_equal(curve, expected, check_exact=False, rtol=1e-4)
        for weight, other in zip(weights_of(model), weights_of(single)):
            np.testing.assert_allclose(weight, other, rtol=1e-4, atol=1e-5)


def test_epochs_grouped_into_calls_differently_give_the_same_runs():
    task, data = REGRESSION, regression_data()
    whole, _ = train_seeds(task, data, [1, 2], epochs=9, jit_compile=False)
    in_pieces, _ = train_seeds(task, data, [1, 2], epochs=9, jit_compile=False, max_epochs_per_call=2)
    for one, other in zip(whole, in_pieces):
        pd.testing.assert_frame_equal(one, other, check_exact=True)


def test_the_first_seeds_epochs_go_to_the_log_as_they_come():
    class Rows:
        def __init__(self):
            self.rows = []

        def log_epochs(self, rows):
            self.rows.extend(rows)

    log = Rows()
    curves, _ = train_seeds(BINARY, classification_data(2), [1, 2], epochs=8, patience=1, jit_compile=False,
                            max_epochs_per_call=3, log=log)
    assert [row["val/loss"] for row in log.rows] == pytest.approx(curves[0]["val/loss"].tolist(), rel=1e-6)
    assert set(log.rows[0]) == {"train/loss", "val/loss", "train/accuracy", "val/accuracy"}


def test_seeds_and_models_must_pair_up_and_share_one_shape():
    task, (x, *_) = REGRESSION, regression_data()
    narrow = build_model(NETWORK, x.shape[1], task, 1)
    wide = build_model(NETWORK.model_copy(update={"width": 32}), x.shape[1], task, 2)
    with pytest.raises(ValueError, match="differ in shape"):
        train_seeds_compiled([narrow, wide], task, config(), *regression_data(), [1, 2])
    with pytest.raises(ValueError, match="2 models for 1 seeds"):
        train_seeds_compiled([narrow, narrow], task, config(), *regression_data(), [1])
