"""The three learning tasks and how their processed Parquet splits load into arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from stages.core.problem import Problem

MNIST_PIXELS = 28 * 28


TASKS = {
    "synthetic": Problem("regression", 1),
    "heart": Problem("binary", 1),
    "mnist": Problem("multiclass", 10),
}
TARGET_COLUMN = {"synthetic": "y", "heart": "target", "mnist": "label"}


def mnist_images(table: pa.Table) -> np.ndarray:
    """The `image` column (fixed-size binary of 784 bytes) as a (n, 28, 28) uint8 array, zero-copy."""
    column = table.column("image").combine_chunks()
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * MNIST_PIXELS
    return data[start:start + len(column) * MNIST_PIXELS].reshape(-1, 28, 28)


def features_and_target(dataset: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (float32, one row per example) and targets of a processed split."""
    target = table.column(TARGET_COLUMN[dataset]).to_numpy()
    if dataset == "mnist":
        x = mnist_images(table).reshape(len(table), MNIST_PIXELS).astype(np.float32) / 255.0
        return x, target.astype(np.int64)
    if dataset == "synthetic":
        return table.column("x").to_numpy().astype(np.float32).reshape(-1, 1), target.astype(np.float32)
    features = [name for name in table.column_names if name != TARGET_COLUMN[dataset]]
    x = np.column_stack([table.column(name).to_numpy() for name in features]).astype(np.float32)
    return x, target.astype(np.float32)
