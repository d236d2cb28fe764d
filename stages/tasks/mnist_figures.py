"""The MNIST task's report sections: sample digits, the confusion matrix, and a gallery of the first
mispredicted test digits (drawn here, only this task has one)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stages.core.errors import StageError
from stages.core.results import TaskResults
from stages.reporting.figures import confusion_counts, confusion_figure, digit_grid_figure, image
from stages.reporting.page import Section, metric, percent
from stages.tasks import mnist

SAMPLE_DIGITS = 25
MAX_MISPREDICTED = 24


def mispredicted(confusion: pd.DataFrame, limit: int = MAX_MISPREDICTED) -> pd.DataFrame:
    """The first `limit` wrong rows of an `index, actual, predicted` frame, in test order."""
    wrong = confusion[confusion["actual"] != confusion["predicted"]]
    return wrong.sort_values("index", kind="stable").head(limit)


def misprediction_title(actual, predicted) -> str:
    return f"{actual} / {predicted}"


def misprediction_figure(images: np.ndarray, wrong: pd.DataFrame, columns: int = 8) -> Figure:
    """The mispredicted test images (`wrong`: rows of index, actual, predicted), titled true / predicted."""
    titles = [misprediction_title(a, p) for a, p in zip(wrong["actual"], wrong["predicted"])]
    return digit_grid_figure(images[wrong["index"].to_numpy()], titles, columns=columns,
                             suptitle="Mispredicted test digits (true / predicted)", title_color="firebrick")


def _images_word(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def report_sections(results: TaskResults) -> list[Section]:
    """Sample digits, the confusion matrix and the first mispredicted digits."""
    test, confusion, metrics = results.splits["test"], results.plots["confusion.csv"], results.metrics
    digits, labels = mnist.images(test), test.column("label").to_numpy()
    indices = confusion["index"]
    if indices.min() < 0 or indices.max() >= len(digits):
        raise StageError(f"MNIST confusion.csv refers to test rows up to {indices.max()} but the test split has "
                         f"{len(digits)}; run `dvc repro` so both come from the same data")
    return [sample_section(digits, labels), confusion_section(confusion, metrics),
            mispredicted_section(digits, confusion)]


def sample_section(digits: np.ndarray, labels: np.ndarray):
    shown = min(SAMPLE_DIGITS, len(digits))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
    return Section(
        "Sample digits",
        f"The first {shown} of {len(digits)} test images with their labels "
        f"(test set: {counts.min()} to {counts.max()} images per digit).",
        (image(digit_grid_figure(digits[:shown], [str(label) for label in labels[:shown]], columns=5),
                   "the first test digits with their labels"),))


def confusion_section(confusion: pd.DataFrame, metrics: Mapping[str, float]):
    off_diagonal = confusion_counts(confusion, list(range(10))).to_numpy() * ~np.eye(10, dtype=bool)
    actual, predicted = np.unravel_index(int(np.argmax(off_diagonal)), off_diagonal.shape)
    per_digit = mnist.digit_accuracy(confusion).set_index("digit")["accuracy"]
    worst = (f"; hardest digit {per_digit.idxmin()} ({100 * per_digit.min():.2f} %)" if len(per_digit) else "")
    common = (f"; most frequent confusion {actual} → {predicted} ({_images_word(int(off_diagonal[actual, predicted]))})"
              if off_diagonal.max() > 0 else "")
    return Section(
        "MNIST confusion matrix",
        f"Test accuracy {percent(metrics, 'test/accuracy')}, macro F1 {metric(metrics, 'test/macro_f1')}"
        f"{worst}{common}.",
        (image(confusion_figure(confusion, list(range(10)), "MNIST confusion matrix"), "MNIST confusion matrix"),))


def mispredicted_section(digits: np.ndarray, confusion: pd.DataFrame):
    total, wrong_count = len(confusion), int((confusion["actual"] != confusion["predicted"]).sum())
    wrong = mispredicted(confusion)
    gallery = ()
    if len(wrong):
        titles = ", ".join(f"#{i}: {misprediction_title(a, p)}"
                           for i, a, p in zip(wrong["index"], wrong["actual"], wrong["predicted"]))
        gallery = (image(misprediction_figure(digits, wrong, columns=8),
                             f"mispredicted test digits, true / predicted: {titles}"),)
    return Section(
        "Mispredicted digits",
        f"{wrong_count} of {total} test images mispredicted ({100 * wrong_count / max(total, 1):.2f} %)"
        + (f"; the first {len(wrong)} in test order, each titled true / predicted." if len(wrong) else "."),
        gallery)
