"""Stage `train@{synthetic,heart,mnist}`: the dense network on the processed train split.

Writes the model (`.keras`) and the learning curve (one row per epoch: train and validation
loss, and accuracy for the classifiers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stages.common import StageError, csv_bytes, run_stage, staged_path, write_outputs
from stages.config import load_params
from stages.datasets import TASKS, features_and_target, read_split


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float):
    """The last `fraction` of the rows for validation, as Keras' `validation_split` takes them."""
    n_val = int(round(len(x) * fraction))
    if n_val < 1 or n_val >= len(x):
        raise ValueError(f"validation_split={fraction} leaves no rows for training or validation out of {len(x)}")
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def seed_everything(seed: int) -> None:
    """Python, numpy and TensorFlow seeds, and deterministic TensorFlow kernels."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(TASKS))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, required=True, help="the dataset's processed folder")
    parser.add_argument("--model", type=Path, required=True, help="where to save the .keras model")
    parser.add_argument("--curve", type=Path, required=True, help="where to write learning_curve.csv")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    config = params.dataset(args.dataset)
    x, y = features_and_target(args.dataset, read_split(args.data, "train"))
    try:
        (x_train, y_train), (x_val, y_val) = split_validation(x, y, config.train.validation_split)
    except ValueError as error:
        raise StageError(f"{args.dataset}.train.validation_split: {error}") from None

    from stages.engine import train_model
    from stages.model import build_model
    seed_everything(params.seed)
    task = TASKS[args.dataset]
    model = build_model(config.model, x.shape[1], task, params.seed)
    print(f"train@{args.dataset}: {model.name}, {len(x_train)} train / {len(x_val)} validation rows, "
          f"{config.train.epochs} epochs, batch {config.train.batch_size}, engine {config.train.engine}", flush=True)
    started = time.perf_counter()
    curve = train_model(model, task, config.train, x_train, y_train, x_val, y_val, params.seed)
    last = curve.iloc[-1]
    print(f"train@{args.dataset}: {len(curve)} epochs in {time.perf_counter() - started:.1f} s, "
          f"train/loss {last['train/loss']:.4g}, val/loss {last['val/loss']:.4g}", flush=True)

    with staged_path(args.model) as temp_model:
        model.save(temp_model)
        write_outputs({args.curve: csv_bytes(curve)})


if __name__ == "__main__":
    run_stage("train", main)
