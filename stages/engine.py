"""Training engines: plain `model.fit`, and (see compiled) an XLA-compiled epoch loop.

Both take the same inputs and return the learning curve: one row per epoch with
`epoch`, `train/loss`, `val/loss` (and `train/accuracy`, `val/accuracy` for classifiers).
The model is left holding the final weights (the best ones when early stopping restored them).
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np
import pandas as pd

from stages.config import TrainConfig
from stages.datasets import Task
from stages.model import LOSS


def _metrics(task: Task) -> list[str]:
    return ["accuracy"] if task.is_classifier else []


class _Progress(keras.callbacks.Callback):
    """A line every ~2 s (and at the end) instead of one per epoch: 2000 epochs stay readable."""

    def __init__(self, epochs: int, interval_s: float = 2.0):
        super().__init__()
        self.epochs, self.interval_s, self.last = epochs, interval_s, time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now - self.last >= self.interval_s or epoch + 1 == self.epochs:
            self.last = now
            report_progress(epoch + 1, self.epochs, logs or {})


def report_progress(epoch: int, epochs: int, logs: dict) -> None:
    values = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(logs.items()))
    print(f"  epoch {epoch}/{epochs} {values}", file=sys.stderr, flush=True)


def train_with_fit(model: keras.Model, task: Task, config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                   x_val: np.ndarray, y_val: np.ndarray, seed: int) -> pd.DataFrame:
    """`model.fit` as the lab writes it, shuffled each epoch, with the given validation rows."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=LOSS[task.kind], metrics=_metrics(task))
    callbacks: list[keras.callbacks.Callback] = [_Progress(config.epochs)]
    if config.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True))
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    return learning_curve(history.history, task)


def learning_curve(history: dict[str, list[float]], task: Task) -> pd.DataFrame:
    """Keras history names (`loss`, `val_loss`, ...) to the curve's split-prefixed columns."""
    columns = {"train/loss": history["loss"], "val/loss": history["val_loss"]}
    if task.is_classifier:
        columns["train/accuracy"] = history["accuracy"]
        columns["val/accuracy"] = history["val_accuracy"]
    curve = pd.DataFrame({name: np.asarray(values, dtype=np.float64) for name, values in columns.items()})
    curve.insert(0, "epoch", np.arange(1, len(curve) + 1))
    return curve


ENGINES = {"fit": train_with_fit}


def train_model(model: keras.Model, task: Task, config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                x_val: np.ndarray, y_val: np.ndarray, seed: int) -> pd.DataFrame:
    """Train with the engine `config.engine` names; return the learning curve."""
    engine = ENGINES.get(config.engine)
    if engine is None:
        raise ValueError(f"unknown training engine {config.engine!r}; allowed: {', '.join(ENGINES)}")
    return engine(model, task, config, x_train, y_train, x_val, y_val, seed)
