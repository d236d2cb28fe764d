"""Training engines: plain `model.fit`, and `train_compiled`, a compiled (XLA for long runs) epoch loop.

Both take the same inputs and return the learning curve: one row per epoch with
`epoch`, `train/loss`, `val/loss` (and `train/accuracy`, `val/accuracy` for classifiers).
The model is left holding the final weights (the best ones when early stopping restored them).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages.core.params import ENGINES, Engine, TrainConfig
from stages.core.problem import Problem
from stages.training.live import EpochLog
from stages.training.model import LOSS
from stages.training.progress import PROGRESS_INTERVAL_S, progress_display


def _metrics(problem: Problem) -> list[str]:
    return ["accuracy"] if problem.is_classifier else []


class _EpochEnd(keras.callbacks.Callback):
    """fit's per-epoch hook: the progress display, and the epoch's curve row to the log (if any: dvclive,
    the Prefect progress artifact, whatever the train stage subscribed)."""

    def __init__(self, epochs: int, log: EpochLog | None = None):
        super().__init__()
        self.progress, self.log = progress_display(epochs), log

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.progress.update(epoch + 1, logs)
        if self.log is not None:
            self.log.log_epochs([{CURVE_NAMES[name]: value for name, value in logs.items() if name in CURVE_NAMES}])

    def on_train_end(self, logs=None):  # Keras calls it only when fit ends normally (early stopping included)
        self.progress.close()


def train_with_fit(model: keras.Model, problem: Problem, config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                   x_val: np.ndarray, y_val: np.ndarray, seed: int, *, log: EpochLog | None = None,
                   **compile_options) -> pd.DataFrame:
    """Plain `model.fit`, reshuffled every epoch from the seed, with the given validation rows
    (`compile_options` go to model.compile: the benchmarks try steps_per_execution and jit_compile);
    each epoch's curve row goes to `log` when given.

    The rows come as a tf.data pipeline of `epoch_batches`, not as arrays with shuffle=True: once
    TensorFlow's global seed is set (as it is here, for reproducible runs), Keras 3.15 on TF 2.21
    rebuilds its input pipeline every epoch, its seeded shuffle starts over, and every epoch
    repeats the first one's order. The pipeline gives every epoch a fresh order, the same orders `train_compiled` takes.
    """
    callbacks = compile_for_fit(model, problem, config, seed, log=log, **compile_options)
    x_train, y_train, x_val, y_val = as_training_arrays(problem, x_train, y_train, x_val, y_val)
    batch_size = min(config.batch_size, len(x_train))
    batches = epoch_batches(x_train, y_train, seed, config.epochs, batch_size)
    history = model.fit(batches, epochs=config.epochs, steps_per_epoch=math.ceil(len(x_train) / batch_size),
                        validation_data=(x_val, y_val), validation_batch_size=batch_size,
                        shuffle=False, verbose=0, callbacks=callbacks)
    return learning_curve(history.history, problem)


def compile_for_fit(model: keras.Model, problem: Problem, config: TrainConfig, seed: int,
                    log: EpochLog | None = None, **compile_options) -> list[keras.callbacks.Callback]:
    """Seed, compile with Adam and the problem's loss and metrics; return fit's callbacks (progress
    and `log` per epoch, and EarlyStopping with best-weights restore when `early_stopping_patience` > 0)."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSS[problem.kind],
                  metrics=_metrics(problem), **compile_options)
    callbacks: list[keras.callbacks.Callback] = [_EpochEnd(config.epochs, log)]
    if config.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True))
    return callbacks


def epoch_batches(x: np.ndarray, y: np.ndarray, seed: int, epochs: int, batch_size: int) -> tf.data.Dataset:
    """All epochs' mini-batches in one stream: epoch e takes the rows in `shuffled_order(seed, e)`,
    cut into batches of `batch_size` and a smaller last one (fit reads it with steps_per_epoch)."""
    orders = np.stack([shuffled_order(seed, epoch, len(x)) for epoch in range(epochs)])
    x, y = tf.constant(x), tf.constant(y)
    return (tf.data.Dataset.from_tensor_slices(orders)
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
            .map(lambda rows: (tf.gather(x, rows), tf.gather(y, rows))))


def as_training_arrays(problem: Problem, x_train, y_train, x_val, y_val) -> tuple[np.ndarray, ...]:
    """Features as float32; targets float32, or int64 class labels for the multiclass problem."""
    target_dtype = np.int64 if problem.kind == "multiclass" else np.float32
    return (np.asarray(x_train, dtype=np.float32), np.asarray(y_train, dtype=target_dtype),
            np.asarray(x_val, dtype=np.float32), np.asarray(y_val, dtype=target_dtype))


def learning_curve(history: dict[str, list[float]], problem: Problem) -> pd.DataFrame:
    """Keras history names (`loss`, `val_loss`, ...) to the curve's split-prefixed columns."""
    columns = {"train/loss": history["loss"], "val/loss": history["val_loss"]}
    if problem.is_classifier:
        columns["train/accuracy"] = history["accuracy"]
        columns["val/accuracy"] = history["val_accuracy"]
    curve = pd.DataFrame({name: np.asarray(values, dtype=np.float64) for name, values in columns.items()})
    curve.insert(0, "epoch", np.arange(1, len(curve) + 1))
    return curve


# The loss objects that match model.LOSS (same reduction as compile(loss=...): mean over the batch).
LOSS_FUNCTIONS = {
    "regression": keras.losses.MeanSquaredError,
    "binary": keras.losses.BinaryCrossentropy,
    "multiclass": keras.losses.SparseCategoricalCrossentropy,
}
CURVE_COLUMNS = ("loss", "val_loss", "accuracy", "val_accuracy")  # Keras history names, one row per epoch
CURVE_NAMES = {"loss": "train/loss", "val_loss": "val/loss", "accuracy": "train/accuracy",
               "val_accuracy": "val/accuracy"}  # Keras history names to the learning curve's
# XLA compiles for 1-3 s on a 2-core CPU, then runs small-batch steps ~5x faster than a TF graph:
# worth it from about this many training steps (the synthetic task's 40000, not heart's <= 2600).
XLA_MIN_STEPS = 10_000
ORDER_BUFFER_ENTRIES = 1 << 22  # row indices passed per call (16 MB): 2000 synthetic epochs, 50 of MNIST


def on_device(array: np.ndarray) -> tf.Tensor:
    """Copy an array once to where the compiled function runs (the GPU when TensorFlow sees one)."""
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        return tf.identity(tf.convert_to_tensor(array))


def shuffled_order(seed: int, epoch: int, rows: int) -> np.ndarray:
    """The row order of one epoch: a fresh permutation each epoch, from a generator seeded by
    (seed, epoch) only, so the same seed gives the same run whatever ran before.

    Drawn here rather than inside the compiled function: XLA takes ~0.3 s to compile an RNG and a sort.
    """
    return np.random.default_rng([seed, epoch]).permutation(rows).astype(np.int32)


@contextlib.contextmanager
def without_graph_rewrites():
    """Grappler, TensorFlow's graph optimizer, takes ~0.15 s (on this CPU) to rewrite the epoch
    function when it first runs: more than a short run's whole training, and its rewrites gain
    these small loops nothing measurable. It reads its switch when a function is instantiated and
    keeps one instance per setting, so the switch is held off around every call, then restored."""
    switch = "disable_meta_optimizer"
    was_disabled = tf.config.optimizer.get_experimental_options().get(switch, False)
    tf.config.optimizer.set_experimental_options({switch: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({switch: was_disabled})


def train_compiled(model: keras.Model, problem: Problem, config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                   x_val: np.ndarray, y_val: np.ndarray, seed: int, *,
                   jit_compile: bool | None = None, max_epochs_per_call: int | None = None,
                   log: EpochLog | None = None) -> pd.DataFrame:
    """The training of `train_with_fit`, run by a compiled TensorFlow function that runs whole epochs.

    Each call runs several epochs (a while loop over epochs, each a while loop over mini-batches
    of one static shape), so Python and Keras run once per call instead of once per step. Calls
    start at one epoch and grow to about PROGRESS_INTERVAL_S each, with progress shown and the
    epochs' curve rows sent to `log` (when given) between (`max_epochs_per_call` caps them); how epochs are grouped into calls does not change the
    results. The function is XLA-compiled when the run has at least XLA_MIN_STEPS steps, where
    XLA's compile time pays off, else a plain TF graph (`jit_compile` forces either).

    As in fit: Adam at `config.learning_rate`; the rows reshuffled every epoch, in the same
    `shuffled_order`s as `train_with_fit` takes them; the last, partial
    batch a step of its own (padded to the static batch shape with rows weighted 0, so its loss
    and gradient are those of its real rows); the model's regularization losses (l2) added to
    the loss; an epoch's train loss the mean of its batch losses weighted by batch size (the mean
    over all rows, taken as the weights move), train accuracy likewise, from the training-mode
    predictions (dropout on); validation loss (l2 included) and accuracy on the whole validation
    set with training=False at each epoch end; with `early_stopping_patience` > 0,
    EarlyStopping(monitor="val_loss", patience, restore_best_weights=True): one curve row per epoch
    run, and the best epoch's weights restored at the end, also when it never stopped.

    So without dropout a graph run takes fit's steps: same seed, same curve to float32 rounding.
    Where it differs from fit: XLA fuses and reorders float32 arithmetic, so XLA runs drift from
    fit's in the last bits and, over thousands of steps, somewhat more; the padded last batch
    draws dropout masks of the full batch shape, so with dropout the runs are only statistically
    alike; validation runs as one batch, so its mean may differ from fit's batched one in the last
    float32 bits; early stopping restores the trainable weights only (the lab's models hold no
    other state).
    """
    keras.utils.set_random_seed(seed)
    epochs_graph = _EpochsGraph(model, problem, config, rows=len(x_train))
    x_train, y_train, x_val, y_val = as_training_arrays(problem, x_train, y_train, x_val, y_val)
    if jit_compile is None:
        jit_compile = config.epochs * epochs_graph.steps_per_epoch >= XLA_MIN_STEPS
    # Plain tf.while_loop rather than autograph: converting the Python code took longer than XLA.
    run_epochs = tf.function(epochs_graph.run_epochs, jit_compile=jit_compile, autograph=False)
    data = [on_device(array) for array in (x_train, y_train, x_val, y_val)]
    table = _run_in_calls(run_epochs, data, problem, seed, config.epochs, epochs_graph.slots, max_epochs_per_call,
                          log)
    if epochs_graph.early_stopping:  # like restore_best_weights=True, also when training ran to the last epoch
        epochs_graph.early_stopping.restore_best_weights()
    return learning_curve({name: table[:, column] for column, name in enumerate(CURVE_COLUMNS)}, problem)


class _EarlyStopping:
    """EarlyStopping(monitor="val_loss", patience, restore_best_weights=True) inside the graph.

    Its state lives in variables so it carries across calls."""

    def __init__(self, weights: list[tf.Variable], patience: int):
        self.weights, self.patience = weights, patience
        self.best_val_loss = tf.Variable(np.inf, dtype=tf.float32, trainable=False)
        self.epochs_without_improvement = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.best_weights = [tf.Variable(tf.convert_to_tensor(weight), trainable=False) for weight in weights]

    def patience_left(self) -> tf.Tensor:
        return self.epochs_without_improvement < self.patience

    def track(self, epoch: tf.Tensor, val_loss: tf.Tensor) -> None:
        # EarlyStopping counts the first epoch as an improvement, then only a strictly lower val_loss.
        # Selects instead of a branch: copying the weights each epoch costs little next to the epoch.
        improved = tf.logical_or(tf.equal(epoch, 0), val_loss < self.best_val_loss)
        self.best_val_loss.assign(tf.where(improved, val_loss, self.best_val_loss))
        for best, weight in zip(self.best_weights, self.weights):
            best.assign(tf.where(improved, tf.convert_to_tensor(weight), best))
        self.epochs_without_improvement.assign(tf.where(improved, 0, self.epochs_without_improvement + 1))

    def restore_best_weights(self) -> None:
        for weight, best in zip(self.weights, self.best_weights):
            weight.assign(best)


class _EpochsGraph:
    """What the compiled function runs: Adam steps on batches of one static shape, whole epochs
    with validation at their end, and several epochs per call (`run_epochs`, traced once)."""

    def __init__(self, model: keras.Model, problem: Problem, config: TrainConfig, rows: int):
        self.model, self.problem, self.rows = model, problem, rows
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.weights = model.trainable_variables
        self.optimizer.build(self.weights)  # its slot variables must exist before tracing
        self.loss_per_row = LOSS_FUNCTIONS[problem.kind](reduction=None)
        self.batch_size = min(config.batch_size, rows)
        self.steps_per_epoch = math.ceil(rows / self.batch_size)
        self.padding = self.steps_per_epoch * self.batch_size - rows
        # Epochs per call are bounded by the shuffle orders passed in: one row of `rows` per epoch.
        self.slots = max(1, min(config.epochs, ORDER_BUFFER_ENTRIES // rows))
        patience = config.early_stopping_patience
        self.early_stopping = _EarlyStopping(self.weights, patience) if patience > 0 else None

    def regularization(self):
        return tf.add_n(self.model.losses) if self.model.losses else 0.0  # l2 penalties, added as fit does

    def correct_per_row(self, y, predictions):
        if self.problem.kind == "binary":
            predicted = tf.cast(tf.reshape(predictions, [-1]) > 0.5, tf.float32)
            return tf.cast(tf.equal(predicted, tf.reshape(y, [-1])), tf.float32)
        if self.problem.kind == "multiclass":
            return tf.cast(tf.equal(tf.argmax(predictions, axis=-1), y), tf.float32)
        return tf.zeros([tf.shape(predictions)[0]])

    def train_step(self, x, y, indices, in_batch):
        """One Adam step on the rows `indices` where `in_batch` is 1 (0 marks padding); returns the
        batch loss times its row count, and its correct predictions."""
        x_batch, y_batch = tf.gather(x, indices), tf.gather(y, indices)
        batch_rows = tf.reduce_sum(in_batch)
        with tf.GradientTape() as tape:
            predictions = self.model(x_batch, training=True)
            loss = (tf.reduce_sum(self.loss_per_row(y_batch, predictions) * in_batch) / batch_rows
                    + self.regularization())
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.weights), self.weights))
        return loss * batch_rows, tf.reduce_sum(self.correct_per_row(y_batch, predictions) * in_batch)

    def run_epoch(self, x, y, x_validation, y_validation, order):
        """One epoch in the row `order`, then validation; returns its curve row (CURVE_COLUMNS)."""
        # Every step has the same static shape (XLA needs static shapes; one shape is also traced
        # and compiled once): the last, partial batch is filled up with rows weighted 0, so its
        # step has the loss and gradient of its real rows alone, as fit's smaller last batch.
        batch_size, padding = self.batch_size, self.padding
        order = tf.concat([order, order[:padding]], axis=0)
        in_batch = tf.concat([tf.ones([self.rows]), tf.zeros([padding])], axis=0)

        def step(index, loss_sum, correct):
            batch = [index * batch_size]
            step_loss, step_correct = self.train_step(
                x, y, tf.slice(order, batch, [batch_size]), tf.slice(in_batch, batch, [batch_size]))
            return index + 1, loss_sum + step_loss, correct + step_correct

        _, loss_sum, correct = tf.while_loop(
            lambda index, loss_sum, correct: index < self.steps_per_epoch, step,
            (tf.constant(0), tf.constant(0.0), tf.constant(0.0)), parallel_iterations=1)
        predictions = self.model(x_validation, training=False)
        val_loss = tf.reduce_mean(self.loss_per_row(y_validation, predictions)) + self.regularization()
        val_accuracy = tf.reduce_mean(self.correct_per_row(y_validation, predictions))
        return tf.stack([loss_sum / self.rows, val_loss, correct / self.rows, val_accuracy])

    def run_epochs(self, x, y, x_validation, y_validation, orders, first_epoch, epoch_count):
        """Run epoch_count epochs from first_epoch (fewer if early stopping stops), the i-th in the row
        order orders[i]; return how many ran and their curve rows (the first rows of a buffer)."""
        slot = tf.range(self.slots)[:, None]
        early_stopping = self.early_stopping

        def keep_going(done, curve):
            if early_stopping:
                return tf.logical_and(done < epoch_count, early_stopping.patience_left())
            return done < epoch_count

        def one_epoch(done, curve):
            row = self.run_epoch(x, y, x_validation, y_validation, orders[done])
            if early_stopping:
                early_stopping.track(first_epoch + done, row[1])
            return done + 1, tf.where(slot == done, row[None, :], curve)

        return tf.while_loop(keep_going, one_epoch, (tf.constant(0), tf.zeros([self.slots, len(CURVE_COLUMNS)])),
                             parallel_iterations=1)


def _run_in_calls(run_epochs, data: list[tf.Tensor], problem: Problem, seed: int, epochs: int, slots: int,
                  max_epochs_per_call: int | None, log: EpochLog | None = None) -> np.ndarray:
    """Run all epochs through `run_epochs`, several per call, showing progress and sending each
    call's curve rows to `log` between calls; return the curve table, one row (CURVE_COLUMNS) per epoch run."""
    rows = int(data[0].shape[0])
    orders = np.zeros((slots, rows), dtype=np.int32)
    history: list[np.ndarray] = []
    epoch, epochs_per_call, calls = 0, 1, 0
    progress = progress_display(epochs)
    try:
        while epoch < epochs:
            started = time.monotonic()
            count = min(epochs_per_call, epochs - epoch, slots)
            for index in range(count):
                orders[index] = shuffled_order(seed, epoch + index, rows)
            with without_graph_rewrites():
                done, curve = run_epochs(*data, orders, tf.constant(epoch, tf.int32), tf.constant(count, tf.int32))
            done = int(done)
            history.append(curve.numpy()[:done])
            calls += 1
            if calls > 1:  # the first call includes compilation: time the later ones
                epochs_per_call = epochs_for_next_call(done, time.monotonic() - started, max_epochs_per_call)
            stopped = done < count
            epoch += done
            if log is not None and done:
                names = [CURVE_NAMES[name] for name in curve_columns_of(problem)]
                log.log_epochs([dict(zip(names, row)) for row in history[-1][:, :len(names)].tolist()])
            last_row = np.concatenate(history)[-1]  # a call may run no epoch: stopped at the previous one's end
            progress.update(epoch, dict(zip(curve_columns_of(problem), last_row)), stopped=stopped)
            if stopped:
                break
    finally:
        progress.close()
    return np.concatenate(history)


def epochs_for_next_call(epochs_done: int, seconds: float, cap: int | None) -> int:
    """About PROGRESS_INTERVAL_S of epochs at the last call's pace, at most `cap`."""
    epochs = max(1, int(PROGRESS_INTERVAL_S * epochs_done / max(seconds, 1e-6)))
    return min(epochs, cap) if cap else epochs


def curve_columns_of(problem: Problem) -> tuple[str, ...]:
    """The Keras history names a problem's curve has (accuracy for classifiers only)."""
    return CURVE_COLUMNS if problem.is_classifier else CURVE_COLUMNS[:2]


# The training function of each engine params.yaml may name: the names are stages.core.params.Engine's, the
# one list of them (checked here, so that a new engine cannot be named without a function, or the reverse).
ENGINE_TRAINERS: dict[Engine, Callable[..., pd.DataFrame]] = {"compiled": train_compiled, "fit": train_with_fit}
assert set(ENGINE_TRAINERS) == set(ENGINES), f"Engine {ENGINES} and ENGINE_TRAINERS {tuple(ENGINE_TRAINERS)} disagree"


def train_model(model: keras.Model, problem: Problem, config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                x_val: np.ndarray, y_val: np.ndarray, seed: int, *, log: EpochLog | None = None) -> pd.DataFrame:
    """Train with the engine `config.engine` names (each epoch's curve row to `log`); return the learning curve."""
    engine = ENGINE_TRAINERS.get(config.engine)
    if engine is None:  # a config built in code, past params.yaml's check
        raise ValueError(f"unknown training engine {config.engine!r}; allowed: {', '.join(ENGINES)}")
    return engine(model, problem, config, x_train, y_train, x_val, y_val, seed, log=log)
