"""The train core: seed, validation split, network, training, learning curve; no files read or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages.core.params import ModelConfig, TrainConfig
from stages.core.problem import Problem
from stages.training.engine import train_model
from stages.training.live import EpochLog
from stages.training.model import build_model
from stages.training.replicas import train_seeds_compiled

# An engine's signature: (model, problem, config, x_train, y_train, x_val, y_val, seed) -> learning curve.
Engine = Callable[..., pd.DataFrame]


class ValidationSplitError(ValueError):
    """A validation share that leaves no rows for training or for validation."""


@dataclass(frozen=True)
class TrainedNetwork:
    model: keras.Model    # holding the final weights (the best ones when early stopping restored them)
    curve: pd.DataFrame   # one row per epoch run: epoch, train/loss, val/loss (and accuracies)
    train_rows: int
    validation_rows: int


def seed_everything(seed: int) -> None:
    """Python, numpy and TensorFlow seeds, and deterministic TensorFlow kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float):
    """The last `fraction` of the rows for validation, as Keras' `validation_split` takes them."""
    n_val = int(round(len(x) * fraction))
    if n_val < 1 or n_val >= len(x):
        raise ValidationSplitError(
            f"validation_split={fraction} leaves no rows for training or validation out of {len(x)}")
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def train_network(problem: Problem, model_config: ModelConfig, train_config: TrainConfig, x: np.ndarray,
                  y: np.ndarray, seed: int, *, engine: Engine = train_model,
                  log: EpochLog | None = None) -> TrainedNetwork:
    """Train the lab's network on (x, y), its last `validation_split` share held out for validation.

    `engine` defaults to the one `train_config.engine` names; benchmarks pass others. The epochs'
    curve rows go to `log` as they come (the train stage's dvclive), when given."""
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, train_config.validation_split)
    seed_everything(seed)
    model = build_model(model_config, x.shape[1], problem, seed)
    options = {"log": log} if log is not None else {}  # the benchmarks' engines take no log
    curve = engine(model, problem, train_config, x_train, y_train, x_val, y_val, seed, **options)
    return TrainedNetwork(model, curve, len(x_train), len(x_val))


def train_networks(problem: Problem, model_config: ModelConfig, train_config: TrainConfig, x: np.ndarray,
                   y: np.ndarray, seeds: Sequence[int], *, log: EpochLog | None = None) -> list[TrainedNetwork]:
    """One network per seed on (x, y), with one validation split: the `compiled` engine trains them side by
    side in one compiled function (stages/training/replicas.py), `fit` one after another. Each seed draws
    its own initial weights, row orders and dropout masks, and its run does not depend on the seeds beside
    it. The first seed's curve rows go to `log` as they come."""
    if not seeds:
        raise ValueError("no seeds to train")
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, train_config.validation_split)
    seed_everything(seeds[0])
    models = [build_model(model_config, x.shape[1], problem, seed) for seed in seeds]
    if train_config.engine == "compiled":
        curves = train_seeds_compiled(models, problem, train_config, x_train, y_train, x_val, y_val, seeds, log=log)
    else:
        curves = [train_model(model, problem, train_config, x_train, y_train, x_val, y_val, seed,
                              log=log if index == 0 else None)
                  for index, (model, seed) in enumerate(zip(models, seeds))]
    return [TrainedNetwork(model, curve, len(x_train), len(x_val)) for model, curve in zip(models, curves)]
