"""The MNIST task's report sections: sample digits, the confusion matrix with the test accuracy over
the seeds against the lab notebook's, and a gallery of the first mispredicted test digits (drawn
here, only this task has one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stages.core.errors import StageError
from stages.core.results import TaskResults
from stages.reporting.figures import confusion_counts, confusion_figure, digit_grid_figure, image
from stages.reporting.page import Section, metric
from stages.tasks import mnist

if TYPE_CHECKING:
    from stages.spread import Spread

SAMPLE_DIGITS = 25
MAX_MISPREDICTED = 24
# The TP3 lab notebook's MNIST test accuracy: a single run of the same network (3 dense layers of 128,
# Adam, 50 epochs, batch 200); one run, so the report says where it falls among the seeds'.
NOTEBOOK_TEST_ACCURACY = 0.9839


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
    accuracy = (accuracy_against_notebook(results.spreads["test/accuracy"],
                                          [values["test/accuracy"] for values in results.seeds.values()])
                if "test/accuracy" in results.spreads else "Test accuracy n/a")
    return [sample_section(digits, labels), confusion_section(confusion, metrics, accuracy, next(iter(results.seeds))),
            mispredicted_section(digits, confusion)]


def accuracy_against_notebook(accuracy: Spread, values: Sequence[float],
                              notebook: float = NOTEBOOK_TEST_ACCURACY) -> str:
    """The test accuracy over the seeds (`values`, one per seed) next to the notebook's single run: whether
    the run lies inside the 95 % interval of the mean and, telling more with few seeds, among the seeds' values."""
    if accuracy.low is None:  # one seed: no interval to speak of
        side = "above" if notebook > accuracy.mean else "below" if notebook < accuracy.mean else "equal to"
        return (f"Test accuracy {accuracy.mean:.4f} (one seed, so no interval); the lab notebook's {notebook:.4f} "
                f"(one run of the same network) is {side} it")
    lowest, highest = min(values), max(values)
    among = ("above every seed" if notebook > highest else "below every seed" if notebook < lowest
             else "within the seeds' range")
    interval = "inside" if accuracy.covers(notebook) else "outside"
    return (f"Test accuracy {accuracy.mean:.4f} ± {accuracy.high - accuracy.mean:.4f} (95 % interval of the mean "
            f"over {accuracy.n} seeds; seeds {lowest:.4f}–{highest:.4f}); the lab notebook's {notebook:.4f} (one run "
            f"of the same network) lies {among} and {interval} the interval")


def sample_section(digits: np.ndarray, labels: np.ndarray):
    shown = min(SAMPLE_DIGITS, len(digits))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
    return Section(
        "Sample digits",
        f"The first {shown} of {len(digits)} test images with their labels "
        f"(test set: {counts.min()} to {counts.max()} images per digit).",
        (image(digit_grid_figure(digits[:shown], [str(label) for label in labels[:shown]], columns=5),
                   "the first test digits with their labels"),))


def confusion_section(confusion: pd.DataFrame, metrics: Mapping[str, float], accuracy: str, seed: int):
    """The matrix of `seed`'s network (evaluate's plots: the first seed's), captioned with the test accuracy
    over the seeds (`accuracy`, a sentence) and the mean macro F1."""
    off_diagonal = confusion_counts(confusion, list(range(10))).to_numpy() * ~np.eye(10, dtype=bool)
    actual, predicted = np.unravel_index(int(np.argmax(off_diagonal)), off_diagonal.shape)
    per_digit = mnist.digit_accuracy(confusion).set_index("digit")["accuracy"]
    worst = (f": hardest digit {per_digit.idxmin()} ({100 * per_digit.min():.2f} %)" if len(per_digit) else "")
    common = (f"; most frequent confusion {actual} → {predicted} ({_images_word(int(off_diagonal[actual, predicted]))})"
              if off_diagonal.max() > 0 else "")
    return Section(
        "MNIST confusion matrix",
        f"{accuracy}. Mean macro F1 {metric(metrics, 'test/macro_f1')}. The matrix shows seed {seed}'s network"
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
