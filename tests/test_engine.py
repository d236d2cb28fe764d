"""The training engines on tiny data: `fit` and the compiled loop (graph and XLA).

Seconds, not minutes: a few dozen rows, a 16x2 network, a handful of epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from stages.core.params import ModelConfig, ParamsError, TrainConfig, read_params_file
from stages.core.problem import Problem
from stages.tasks import apply_overrides, parse_params
from stages.training.engine import LOSS_FUNCTIONS, epoch_batches, shuffled_order, train_compiled, train_model
from stages.training.model import build_model

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
REGRESSION, BINARY, MULTICLASS = Problem("regression", 1), Problem("binary", 1), Problem("multiclass", 10)  # 10 outputs, 3 classes used


def regression_data(rows: int = 70, val_rows: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (rows + val_rows, 1)).astype(np.float32)
    y = (x[:, 0] ** 2 + 1).astype(np.float32)
    return x[:rows], y[:rows], x[rows:], y[rows:]


def classification_data(classes: int, rows: int = 70, val_rows: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows + val_rows, 3)).astype(np.float32)
    if classes == 2:
        y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    else:
        y = np.digitize(x[:, 0] + x[:, 2], [-0.5, 0.5]).astype(np.int64)
    return x[:rows], y[:rows], x[rows:], y[rows:]


def train(task, data, *, engine="compiled", seed=1, epochs=10, batch_size=16, learning_rate=0.01, patience=0,
          l2=0.0, dropout=0.0, **compiled_options):
    """Build the 16x2 network and train it; returns (curve, model)."""
    x_train, y_train, x_val, y_val = data
    model = build_model(ModelConfig(width=16, depth=2, activation="relu", l2=l2, dropout=dropout),
                        x_train.shape[1], task, seed)
    # Unvalidated: the unknown-engine test hands the engine a name params.yaml would refuse.
    config = TrainConfig.model_construct(engine=engine, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                         validation_split=0.2, early_stopping_patience=patience)
    if compiled_options:
        curve = train_compiled(model, task, config, x_train, y_train, x_val, y_val, seed, **compiled_options)
    else:
        curve = train_model(model, task, config, x_train, y_train, x_val, y_val, seed)
    return curve, model


def model_loss(model, task, x, y) -> float:
    """The loss the curve reports, computed here from the model: loss function + l2 penalties."""
    predictions = model(x, training=False)
    return float(LOSS_FUNCTIONS[task.kind]()(y, predictions) + sum(model.losses, 0.0))


def weights_of(model) -> list[np.ndarray]:
    return [np.array(weight) for weight in model.get_weights()]


@pytest.fixture
def deterministic_ops():
    tf.config.experimental.enable_op_determinism()  # what the train stage does; stays on for the session
    yield


@pytest.mark.parametrize("engine, task, data", [
    ("fit", REGRESSION, regression_data()),
    ("fit", BINARY, classification_data(2)),
    ("compiled", REGRESSION, regression_data()),
    ("compiled", BINARY, classification_data(2)),
    ("compiled", MULTICLASS, classification_data(3)),
], ids=["fit-regression", "fit-binary", "compiled-regression", "compiled-binary", "compiled-multiclass"])
def test_both_engines_learn_and_return_the_same_curve_shape(engine, task, data):
    curve, model = train(task, data, engine=engine, epochs=12)
    expected = ["epoch", "train/loss", "val/loss"] + (["train/accuracy", "val/accuracy"] if task.is_classifier else [])
    assert list(curve.columns) == expected
    assert curve["epoch"].tolist() == list(range(1, 13))
    assert curve["train/loss"].iloc[-1] < 0.8 * curve["train/loss"].iloc[0]
    assert curve["val/loss"].iloc[-1] < 0.8 * curve["val/loss"].iloc[0]
    if task.is_classifier:
        assert curve["val/accuracy"].iloc[-1] > 0.7
    # val/loss of the last epoch is the final model's loss on the validation rows.
    assert curve["val/loss"].iloc[-1] == pytest.approx(model_loss(model, task, data[2], data[3]), rel=1e-4)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_compiled_same_seed_same_run_other_seed_other_run(deterministic_ops, jit_compile):
    data = classification_data(2)
    options = dict(epochs=6, l2=0.01, dropout=0.2, jit_compile=jit_compile)  # every random path: init, shuffle, dropout
    first, first_model = train(BINARY, data, **options)
    again, again_model = train(BINARY, data, **options)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    for weight, weight_again in zip(weights_of(first_model), weights_of(again_model)):
        np.testing.assert_array_equal(weight, weight_again)
    if jit_compile:
        return  # XLA compiles take seconds with dropout; the graph runs check the rest
    one_epoch_per_call, _ = train(BINARY, data, max_epochs_per_call=1, **options)
    pd.testing.assert_frame_equal(first, one_epoch_per_call, check_exact=True)  # chunking changes nothing
    other_seed, _ = train(BINARY, data, seed=2, **options)
    assert not np.allclose(first["train/loss"], other_seed["train/loss"])


def test_shuffled_order_is_a_new_permutation_each_epoch_fixed_by_seed_and_epoch():
    orders = [shuffled_order(5, epoch, 50) for epoch in range(4)]
    for order in orders:
        assert sorted(order) == list(range(50))
    assert len({tuple(order) for order in orders}) == 4
    np.testing.assert_array_equal(shuffled_order(5, 2, 50), orders[2])
    assert not np.array_equal(shuffled_order(6, 2, 50), orders[2])


def test_fit_reads_every_epoch_in_a_fresh_seeded_order_with_a_smaller_last_batch():
    # Row i holds the value i, so the batches give away the order the rows were taken in.
    rows = np.arange(37, dtype=np.float32)
    batches = [x.numpy() for x, _ in epoch_batches(rows[:, None], rows, seed=5, epochs=3, batch_size=16)]
    assert [len(batch) for batch in batches] == [16, 16, 5] * 3
    for epoch in range(3):
        taken = np.concatenate(batches[3 * epoch:3 * epoch + 3])[:, 0].astype(int)
        np.testing.assert_array_equal(taken, shuffled_order(5, epoch, 37))


@pytest.mark.parametrize("task, data, patience", [
    (REGRESSION, regression_data(), 0),
    (BINARY, classification_data(2), 0),
    (MULTICLASS, classification_data(3), 2),
], ids=["regression", "binary", "multiclass-early-stopping"])
def test_compiled_graph_takes_the_same_steps_as_fit(deterministic_ops, task, data, patience):
    """Same seed, same batches in the same order (70 rows: 4 batches of 16 and one of 6): the
    compiled loop reproduces fit's curve and final weights up to float32 rounding."""
    options = dict(epochs=8, l2=0.01, patience=patience)
    fit_curve, fit_model = train(task, data, engine="fit", **options)
    compiled_curve, compiled_model = train(task, data, jit_compile=False, **options)
    assert len(compiled_curve) == len(fit_curve)
    pd.testing.assert_frame_equal(compiled_curve, fit_curve, check_exact=False, rtol=1e-4)
    for weight, fit_weight in zip(weights_of(compiled_model), weights_of(fit_model)):
        np.testing.assert_allclose(weight, fit_weight, rtol=1e-4, atol=1e-5)


def test_compiled_shuffles_each_epoch_from_the_seed():
    """Same initial weights (model seed), different shuffle seeds: different runs."""
    data = regression_data()
    x_train, y_train, x_val, y_val = data
    curves = []
    for shuffle_seed in (1, 2):
        model = build_model(ModelConfig(width=16, depth=2, activation="relu", l2=0.0, dropout=0.0), 1, REGRESSION, 7)
        config = TrainConfig(engine="compiled", epochs=3, batch_size=16, learning_rate=0.01, validation_split=0.2,
                             early_stopping_patience=0)
        curves.append(train_compiled(model, REGRESSION, config, x_train, y_train, x_val, y_val, shuffle_seed))
    assert not np.allclose(curves[0]["train/loss"], curves[1]["train/loss"])


@pytest.mark.parametrize("engine, jit_compile", [("fit", None), ("compiled", False), ("compiled", True)],
                         ids=["fit", "compiled-graph", "compiled-xla"])
def test_early_stopping_stops_and_restores_the_best_weights(engine, jit_compile):
    # Validation targets that contradict the training ones: val/loss soon rises while training goes on.
    x_train, y_train, x_val, _ = regression_data()
    data = (x_train, y_train, x_val, -(x_val[:, 0] ** 2) - 1)
    patience = 3
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    curve, model = train(REGRESSION, data, engine=engine, epochs=60, learning_rate=0.02, patience=patience, **options)

    best_epoch = int(curve["val/loss"].idxmin())  # 0-based row
    assert len(curve) < 60, "never stopped"
    assert len(curve) == best_epoch + 1 + patience  # stopped `patience` epochs after the best one
    assert curve["val/loss"].iloc[-1] > curve["val/loss"].min()
    assert model_loss(model, REGRESSION, data[2], data[3]) == pytest.approx(curve["val/loss"].min(), rel=1e-4)


def test_early_stopping_restores_the_best_weights_when_it_never_stops():
    # Like EarlyStopping(restore_best_weights=True): restored at the end even without a stop.
    x_train, y_train, x_val, _ = regression_data()
    data = (x_train, y_train, x_val, -(x_val[:, 0] ** 2) - 1)
    curve, model = train(REGRESSION, data, epochs=8, learning_rate=0.02, patience=50)
    assert len(curve) == 8
    assert model_loss(model, REGRESSION, data[2], data[3]) == pytest.approx(curve["val/loss"].min(), rel=1e-4)


def test_every_row_takes_part_including_the_last_partial_batch():
    # 3 rows in batches of 2: a full batch and a last one of 1 row. Change one target at a time:
    # if any row were left out of the epoch, changing it would leave the weights as they were.
    x_train, y_train, x_val, y_val = regression_data(rows=3, val_rows=4)
    _, base_model = train(REGRESSION, (x_train, y_train, x_val, y_val), epochs=1, batch_size=2)
    base = weights_of(base_model)
    for row in range(len(y_train)):
        changed = y_train.copy()
        changed[row] += 10.0
        _, model = train(REGRESSION, (x_train, changed, x_val, y_val), epochs=1, batch_size=2)
        assert any(not np.array_equal(a, b) for a, b in zip(base, weights_of(model))), f"row {row} had no effect"


def test_train_loss_is_the_mean_over_all_rows_with_l2():
    # A learning rate so small the weights barely move within the epoch: the epoch's train loss
    # (batch losses weighted by batch size, as fit reports it) is then the initial model's loss
    # over all 37 rows (2 full batches of 16 and one of 5), l2 penalty included.
    x_train, y_train, x_val, y_val = regression_data(rows=37, val_rows=10)
    initial = build_model(ModelConfig(width=16, depth=2, activation="relu", l2=0.05, dropout=0.0), 1, REGRESSION, 1)
    expected = model_loss(initial, REGRESSION, x_train, y_train)
    without_last_batch = model_loss(initial, REGRESSION, x_train[:32], y_train[:32])
    curve, _ = train(REGRESSION, (x_train, y_train, x_val, y_val), epochs=1, learning_rate=1e-9, l2=0.05)
    assert curve["train/loss"].iloc[0] == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(without_last_batch, rel=1e-3)  # the check can tell them apart


def test_dropout_is_on_in_training_and_off_for_validation():
    data = regression_data()
    plain, _ = train(REGRESSION, data, epochs=4)
    with_dropout, model = train(REGRESSION, data, epochs=4, dropout=0.5)
    assert not np.allclose(plain["train/loss"], with_dropout["train/loss"])  # training=True in the step
    # Validation with training=False: the curve's last val/loss is the deterministic model's.
    assert with_dropout["val/loss"].iloc[-1] == pytest.approx(model_loss(model, REGRESSION, data[2], data[3]),
                                                              rel=1e-4)


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown training engine 'xla'; allowed: compiled, fit"):
        train(REGRESSION, regression_data(), engine="xla", epochs=1)


def test_params_reject_an_unknown_engine():
    raw = read_params_file(PARAMS_FILE)
    with pytest.raises(ParamsError, match=r"synthetic\.train\.engine"):
        apply_overrides(raw, {"synthetic.train.engine": "xla"})
    raw["synthetic"]["train"]["engine"] = "turbo"
    with pytest.raises(ParamsError, match=r"synthetic\.train\.engine"):
        parse_params(raw)
    assert parse_params(read_params_file(PARAMS_FILE)).task("synthetic").train.engine in ("compiled", "fit")
