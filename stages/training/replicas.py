"""Several seeds trained side by side: one compiled function trains the networks of all seeds at once.

The seeds' networks share one architecture, so each Dense layer's kernels are stacked on a replica axis
([seeds, inputs, units]) and every step is one batched matrix product per layer for all seeds, not one
per seed: a step's op count, and so its fixed cost, does not grow with the seeds. Each seed keeps what
it draws: its initial weights (its model, built by `build_model` with that seed), its row order every
epoch (`shuffled_order(seed, epoch)`), its dropout masks and its early stopping.

A seed's result does not depend on which seeds train beside it: seed s among five gives the curve and
weights of seed s trained alone, bit for bit, with one exception (tests/test_replicas.py):
- Each replica's rows are filled up to whole vector registers, and its sums taken row by row, so where a
  seed's rows fall, and how many replicas there are, does not change how TensorFlow rounds them.
- XLA compiles a replica axis of one as plain matrix products, which round otherwise: under XLA a lone seed
  trains beside a copy of itself (for the compute-bound tasks, that doubles a lone seed's arithmetic).
- The exception: without XLA, TensorFlow's (oneDNN's) batched product rounds a many-class output layer
  differently at another replica index; the runs then agree to float32 rounding, and drift over many
  steps. The lab's one multiclass task, MNIST, trains under XLA.

Otherwise the training is `train_compiled`'s (stages/training/engine.py): Adam; the padded last batch;
l2 added to the loss; each epoch's train loss and accuracy over its rows as the weights move, validation
at its end; EarlyStopping(val_loss, patience, restore_best_weights=True) per seed. Dropout masks are
drawn by a stateless generator from (seed, layer, step), so they are the seed's own whatever trains
beside it (runs with dropout match `train_compiled`'s only statistically, as its own match fit's).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages.core.params import TrainConfig
from stages.core.problem import Problem
from stages.training.engine import (CURVE_COLUMNS, CURVE_NAMES, LOSS_FUNCTIONS, ORDER_BUFFER_ENTRIES, XLA_MIN_STEPS,
                                    as_training_arrays, curve_columns_of, epochs_for_next_call, learning_curve,
                                    on_device, shuffled_order, without_graph_rewrites)
from stages.training.live import EpochLog
from stages.training.progress import progress_display


# Vector registers hold 16 float32 (AVX-512; AVX2's 8 and NEON's 4 divide it). TensorFlow's CPU kernels run
# an elementwise op (log, exp) a register at a time and its last, partial register's elements one by one, in
# code that rounds otherwise: a row's result then depends on where it falls. So each replica's rows are
# whole registers (filled up with rows weighted 0), and where a seed's rows fall does not depend on the seeds
# beside it.
PACKET = 16


def whole_packets(rows: int) -> int:
    return math.ceil(rows / PACKET) * PACKET


def per_replica_sum(values):
    """Sums over axis 1 of [replicas, n]: each replica's. TensorFlow sums a [1, n] tensor as one whole
    (another order than row by row), so a lone replica is summed as the first row of two: a seed's
    figures do not depend on how many seeds train beside it."""
    if values.shape[0] == 1:
        return tf.reduce_sum(tf.concat([values, tf.zeros_like(values)], axis=0), axis=1)[:1]
    return tf.reduce_sum(values, axis=1)


class _StackedNetwork:
    """The seeds' Dense networks as stacked variables, with the forward pass over the replica axis."""

    def __init__(self, models: Sequence[keras.Model]):
        layers = [[layer for layer in model.layers if isinstance(layer, keras.layers.Dense)] for model in models]
        shapes = {tuple(tuple(layer.kernel.shape) for layer in dense) for dense in layers}
        if len(shapes) != 1:
            raise ValueError(f"the seeds' networks differ in shape: {sorted(shapes)}")
        first = models[0]
        self.models, self.dense = models, layers
        self.activations = [layer.activation for layer in layers[0]]
        # A Dropout layer after a Dense one: its rate, for that Dense layer's output.
        self.dropout = [0.0] * len(layers[0])
        index = -1
        for layer in first.layers:
            if isinstance(layer, keras.layers.Dense):
                index += 1
            elif isinstance(layer, keras.layers.Dropout):
                self.dropout[index] = float(layer.rate)
        penalties = [layer.kernel_regularizer for layer in layers[0]]
        if any(not isinstance(penalty, (keras.regularizers.L2, type(None))) for penalty in penalties):
            raise ValueError("only L2 kernel penalties train side by side")
        self.l2 = [float(penalty.l2) if penalty is not None else 0.0 for penalty in penalties]
        self.kernels = [keras.Variable(np.stack([dense[i].kernel.numpy() for dense in layers]), name=f"kernels_{i}")
                        for i in range(len(layers[0]))]
        self.biases = [keras.Variable(np.stack([dense[i].bias.numpy() for dense in layers]), name=f"biases_{i}")
                       for i in range(len(layers[0]))]
        self.weights = [weight for pair in zip(self.kernels, self.biases) for weight in pair]

    @property
    def replicas(self) -> int:
        return len(self.models)

    def __call__(self, x, seeds=None, step=None):
        """Outputs [replicas, rows, outputs] for x [replicas, rows, inputs], or for x [rows, inputs] shared by all
        replicas (validation). With `seeds` and `step`: training, dropout on, masks from (seed, layer, step)."""
        h = x
        for index, (kernel, bias, activation) in enumerate(zip(self.kernels, self.biases, self.activations)):
            h = activation(self._product(h, kernel) + bias[:, None, :])
            rate = self.dropout[index]
            if rate > 0 and seeds is not None:
                h = h * self._keep_masks(tf.shape(h)[1:], seeds, index, step, rate)
        return h

    @staticmethod
    def _product(h, kernel):
        """h [replicas, rows, inputs] times each replica's kernel; shared rows [rows, inputs] (validation) are
        broadcast over the replicas, in the same batched product as training's."""
        return tf.matmul(h[None] if len(h.shape) == 2 else h, kernel)

    def _keep_masks(self, shape, seeds, layer: int, step, rate: float):
        # One stateless draw per replica, so a seed's masks are its own whatever trains beside it.
        masks = [tf.cast(tf.random.stateless_uniform(shape, tf.stack([seeds[k], layer * (1 << 20) + step])) >= rate,
                         tf.float32) / (1.0 - rate) for k in range(self.replicas)]
        return tf.stack(masks)

    def penalties(self):
        """Each replica's l2 penalty, as Keras' L2 regularizer adds it to the loss: [replicas]."""
        terms = [l2 * per_replica_sum(tf.reshape(tf.square(kernel), [self.replicas, -1]))
                 for l2, kernel in zip(self.l2, self.kernels) if l2 > 0]
        return tf.add_n(terms) if terms else tf.zeros([self.replicas])

    def write_back(self, replica_weights: Sequence[np.ndarray] | None = None) -> None:
        """Each seed's trained weights into its own Keras model."""
        values = replica_weights or [weight.numpy() for weight in self.weights]
        written = set()
        for k, (model, dense) in enumerate(zip(self.models, self.dense)):
            if id(model) in written:  # a lone seed's copy (XLA): the seed's own replica came first
                continue
            written.add(id(model))
            for i, layer in enumerate(dense):
                layer.kernel.assign(values[2 * i][k])
                layer.bias.assign(values[2 * i + 1][k])


class _ReplicaEpochs:
    """What the compiled function runs for all replicas: Adam steps, whole epochs with validation at their
    end, per-replica early stopping, several epochs per call (`run_epochs`, traced once)."""

    def __init__(self, network: _StackedNetwork, problem: Problem, config: TrainConfig, rows: int,
                 seeds: Sequence[int]):
        self.network, self.problem, self.rows = network, problem, rows
        self.seeds = tf.constant(list(seeds), tf.int32)
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(network.weights)
        self.loss_per_row = LOSS_FUNCTIONS[problem.kind](reduction=None)
        self.batch_size = min(config.batch_size, rows)
        self.steps_per_epoch = math.ceil(rows / self.batch_size)
        self.padding = self.steps_per_epoch * self.batch_size - rows
        self.step_rows = whole_packets(self.batch_size)  # a step's rows: the batch, then rows weighted 0
        self.slots = max(1, min(config.epochs, ORDER_BUFFER_ENTRIES // (rows * network.replicas)))
        self.patience = config.early_stopping_patience
        replicas = network.replicas
        self.best_val_loss = tf.Variable(np.full(replicas, np.inf, np.float32), trainable=False)
        self.without_improvement = tf.Variable(np.zeros(replicas, np.int32), trainable=False)
        self.best_weights = [tf.Variable(tf.convert_to_tensor(w), trainable=False) for w in network.weights]

    def losses(self, y, predictions):
        """Per row loss [replicas, rows] of predictions [replicas, rows, outputs] against y [replicas, rows]."""
        replicas, rows = tf.shape(predictions)[0], tf.shape(predictions)[1]
        flat = tf.reshape(predictions, [replicas * rows, -1])
        target = tf.reshape(y, [-1]) if self.problem.kind == "multiclass" else tf.reshape(y, [-1, 1])
        return tf.reshape(self.loss_per_row(target, flat), [replicas, rows])

    def correct(self, y, predictions):
        """Per row 1.0 where the class is right, [replicas, rows] (zeros for regression)."""
        y = tf.reshape(y, tf.shape(predictions)[:2])
        if self.problem.kind == "binary":
            return tf.cast(tf.equal(tf.cast(predictions[..., 0] > 0.5, tf.float32), tf.cast(y, tf.float32)), tf.float32)
        if self.problem.kind == "multiclass":
            return tf.cast(tf.equal(tf.argmax(predictions, axis=-1), tf.cast(y, tf.int64)), tf.float32)
        return tf.zeros(tf.shape(predictions)[:2])

    def train_step(self, x, y, indices, in_batch, step):
        """One Adam step of every replica on its rows `indices` [replicas, batch] (in_batch 0 marks padding);
        returns each replica's batch loss times its row count, and its correct predictions."""
        x_batch, y_batch = tf.gather(x, indices), tf.gather(y, indices)
        batch_rows = tf.reduce_sum(in_batch)
        with tf.GradientTape() as tape:
            predictions = self.network(x_batch, self.seeds, step)
            loss = per_replica_sum(self.losses(y_batch, predictions) * in_batch) / batch_rows + self.network.penalties()
            total = tf.reduce_sum(loss)  # the replicas' losses are independent: each one's gradient is its own
        weights = self.network.weights
        self.optimizer.apply_gradients(zip(tape.gradient(total, weights), weights))
        return loss * batch_rows, per_replica_sum(self.correct(y_batch, predictions) * in_batch)

    def run_epoch(self, x, y, x_validation, y_validation, in_validation, orders, epoch):
        """One epoch, replica k in row order orders[k], then validation: [replicas, CURVE_COLUMNS]."""
        batch_size, replicas, steps = self.batch_size, self.network.replicas, self.steps_per_epoch
        # Each step's batch_size rows, the last step's filled up with rows weighted 0 (fit's smaller last
        # batch), then each step's filled up to step_rows likewise.
        orders = tf.reshape(tf.concat([orders, orders[:, :self.padding]], axis=1), [replicas, steps, batch_size])
        orders = tf.concat([orders, orders[:, :, :self.step_rows - batch_size]], axis=2)
        in_batch = tf.reshape(tf.concat([tf.ones([self.rows]), tf.zeros([self.padding])], axis=0), [steps, batch_size])
        in_batch = tf.concat([in_batch, tf.zeros([steps, self.step_rows - batch_size])], axis=1)

        def step(index, loss_sum, correct):
            step_loss, step_correct = self.train_step(x, y, orders[:, index], in_batch[index],
                                                      epoch * self.steps_per_epoch + index)
            return index + 1, loss_sum + step_loss, correct + step_correct

        _, loss_sum, correct = tf.while_loop(
            lambda index, loss_sum, correct: index < self.steps_per_epoch, step,
            (tf.constant(0), tf.zeros([replicas]), tf.zeros([replicas])), parallel_iterations=1)
        # The validation rows, filled up to whole packets with rows weighted 0 (x_validation, y_validation and
        # in_validation come so from train_seeds_compiled).
        predictions = self.network(x_validation)
        y_shared = tf.broadcast_to(tf.reshape(y_validation, [1, -1]), [replicas, tf.size(y_validation)])
        count = tf.reduce_sum(in_validation)
        val_loss = per_replica_sum(self.losses(y_shared, predictions) * in_validation) / count \
            + self.network.penalties()
        val_accuracy = per_replica_sum(self.correct(y_shared, predictions) * in_validation) / count
        return tf.stack([loss_sum / self.rows, val_loss, correct / self.rows, val_accuracy], axis=1)

    def track(self, epoch, val_loss, active):
        """Keras' EarlyStopping per replica, for the replicas still training: the first epoch counts as an
        improvement, then only a strictly lower val_loss; the best weights kept."""
        improved = tf.logical_and(active, tf.logical_or(tf.equal(epoch, 0), val_loss < self.best_val_loss))
        self.best_val_loss.assign(tf.where(improved, val_loss, self.best_val_loss))
        for best, weight in zip(self.best_weights, self.network.weights):
            mask = tf.reshape(improved, [-1] + [1] * (len(best.shape) - 1))
            best.assign(tf.where(mask, tf.convert_to_tensor(weight), best))
        counted = tf.where(improved, 0, self.without_improvement + 1)
        self.without_improvement.assign(tf.where(active, counted, self.without_improvement))

    def still_training(self):
        if self.patience <= 0:
            return tf.ones([self.network.replicas], tf.bool)
        return self.without_improvement < self.patience

    def run_epochs(self, x, y, x_validation, y_validation, in_validation, orders, first_epoch, epoch_count):
        """Up to epoch_count epochs from first_epoch, replica k's i-th in row order orders[k, i], until no
        replica is still training; returns how many ran, each replica's curve rows [replicas, slots, columns]
        and how many of them it ran before it stopped."""
        slot = tf.range(self.slots)[None, :, None]
        replicas = self.network.replicas

        def keep_going(done, curve, ran):
            return tf.logical_and(done < epoch_count, tf.reduce_any(self.still_training()))

        def one_epoch(done, curve, ran):
            active = self.still_training()
            rows = self.run_epoch(x, y, x_validation, y_validation, in_validation, orders[:, done], first_epoch + done)
            if self.patience > 0:
                self.track(first_epoch + done, rows[:, 1], active)
            ran = ran + tf.cast(active, tf.int32)
            return done + 1, tf.where(slot == done, rows[:, None, :], curve), ran

        return tf.while_loop(keep_going, one_epoch,
                             (tf.constant(0), tf.zeros([replicas, self.slots, len(CURVE_COLUMNS)]),
                              tf.zeros([replicas], tf.int32)), parallel_iterations=1)


def train_seeds_compiled(models: Sequence[keras.Model], problem: Problem, config: TrainConfig, x_train: np.ndarray,
                         y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seeds: Sequence[int], *,
                         jit_compile: bool | None = None, max_epochs_per_call: int | None = None,
                         log: EpochLog | None = None) -> list[pd.DataFrame]:
    """Train `models[k]` with seed `seeds[k]`, all at once; return each seed's learning curve.

    The models (from `build_model`, one per seed) are left holding their final weights, the best ones
    with early stopping. Calls grow to about PROGRESS_INTERVAL_S each, as `train_compiled`'s; the first
    seed's curve rows go to `log` and to the progress display. XLA when the run has at least
    XLA_MIN_STEPS steps per seed (`jit_compile` forces either)."""
    if len(models) != len(seeds) or not seeds:
        raise ValueError(f"{len(models)} models for {len(seeds)} seeds")
    x_train, y_train, x_val, y_val = as_training_arrays(problem, x_train, y_train, x_val, y_val)
    if jit_compile is None:
        steps = math.ceil(len(x_train) / min(config.batch_size, len(x_train)))
        jit_compile = config.epochs * steps >= XLA_MIN_STEPS
    trained = len(seeds)
    if jit_compile and trained == 1:
        # XLA compiles a replica axis of one as plain matrix products, which round otherwise: a lone seed
        # trains beside a copy of itself, so that its run is the one it has among other seeds.
        models, seeds = [models[0]] * 2, [seeds[0]] * 2
    network = _StackedNetwork(models)
    epochs_graph = _ReplicaEpochs(network, problem, config, len(x_train), seeds)
    run_epochs = tf.function(epochs_graph.run_epochs, jit_compile=jit_compile, autograph=False)
    shown = len(x_val)
    x_val, y_val = (np.concatenate([array, array[:whole_packets(shown) - shown]]) for array in (x_val, y_val))
    in_validation = (np.arange(len(x_val)) < shown).astype(np.float32)
    data = [on_device(array) for array in (x_train, y_train, x_val, y_val, in_validation)]
    rows, replicas, slots = len(x_train), len(seeds), epochs_graph.slots
    orders = np.zeros((replicas, slots, rows), dtype=np.int32)
    history: list[np.ndarray] = []
    ran = np.zeros(replicas, dtype=np.int64)
    epoch, epochs_per_call, calls = 0, 1, 0
    progress = progress_display(config.epochs)
    names = [CURVE_NAMES[name] for name in curve_columns_of(problem)]
    try:
        while epoch < config.epochs:
            started = time.monotonic()
            count = min(epochs_per_call, config.epochs - epoch, slots)
            for k, seed in enumerate(seeds):
                for index in range(count):
                    orders[k, index] = shuffled_order(seed, epoch + index, rows)
            with without_graph_rewrites():
                done, curve, ran_now = run_epochs(*data, orders, tf.constant(epoch, tf.int32),
                                                  tf.constant(count, tf.int32))
            done = int(done)
            history.append(curve.numpy()[:, :done])
            first_before = ran[0]
            ran += ran_now.numpy()
            calls += 1
            if calls > 1:  # the first call includes compilation: time the later ones
                epochs_per_call = epochs_for_next_call(done, time.monotonic() - started, max_epochs_per_call)
            epoch += done
            new_rows = history[-1][0, :ran[0] - first_before]  # the first seed's, while it still trained
            if len(new_rows):
                last = new_rows[-1]
                if log is not None:
                    log.log_epochs([dict(zip(names, row)) for row in new_rows[:, :len(names)].tolist()])
            stopped = done < count
            progress.update(int(ran[0]), dict(zip(curve_columns_of(problem), last)), stopped=stopped)
            if stopped:
                break
    finally:
        progress.close()
    table = np.concatenate(history, axis=1)
    if epochs_graph.patience > 0:  # like restore_best_weights=True, also when training ran to the last epoch
        network.write_back([best.numpy() for best in epochs_graph.best_weights])
    else:
        network.write_back()
    return [learning_curve({name: table[k, :ran[k], column] for column, name in enumerate(CURVE_COLUMNS)}, problem)
            for k in range(trained)]
