"""Stage `report`: the lab's figures, captions and metrics in one self-contained HTML page.

Every figure is drawn by a small pure function (frames in, matplotlib Figure out) and embedded
as a base64 PNG; `build_report` assembles the page from in-memory inputs, and `main()` only
reads the earlier stages' files and writes `report.html` atomically. The helpers
`figure_to_png_base64`, `Image`, `Section` and `html_page` are generic, for other reports.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.core.errors import StageError, run_stage
from stages.core.io import read_split, write_outputs
from stages.datasets import MNIST_PIXELS, mnist_images
from stages.reporting.figures import (confusion_counts, confusion_figure, digit_grid_figure,
                                      extrapolation_figure, fit_figure, learning_curve_figure, misprediction_figure,
                                      misprediction_title, mispredicted, roc_auc, roc_figure, synthetic_data_figure)
from stages.reporting.figures import image as _image
from stages.reporting.page import Section, format_value, html_page, metrics_table_html

DATASETS = ("synthetic", "heart", "mnist")
DATASET_TITLES = {"synthetic": "Synthetic regression", "heart": "Heart disease", "mnist": "MNIST"}
SAMPLE_DIGITS = 25

# --- captions (computed from the inputs) ---


def _get(metrics: Mapping[str, float], key: str) -> str:
    return format_value(metrics[key]) if key in metrics else "n/a"


def _percent(metrics: Mapping[str, float], key: str) -> str:
    return f"{100 * float(metrics[key]):.2f} %" if key in metrics else "n/a"


def curve_caption(name: str, curve: pd.DataFrame) -> str:
    last = curve.iloc[-1]
    text = (f"{DATASET_TITLES.get(name, name)}: {len(curve)} epochs; final train/val loss "
            f"{format_value(last['train/loss'])} / {format_value(last['val/loss'])}" if "val/loss" in curve else
            f"{DATASET_TITLES.get(name, name)}: {len(curve)} epochs; final train loss {format_value(last['train/loss'])}")
    best = curve.loc[curve["val/loss"].idxmin()] if "val/loss" in curve else None
    if best is not None:
        text += f" (lowest val loss {format_value(best['val/loss'])} at epoch {int(best['epoch'])})"
    if "val/accuracy" in curve:
        text += f"; final val accuracy {100 * float(last['val/accuracy']):.2f} %"
    return text + "."


def extrapolation_caption(metrics: Mapping[str, float]) -> str:
    text = (f"MSE against the true function: {_get(metrics, 'domain/mse_vs_truth')} on the domain, "
            f"{_get(metrics, 'ood/mse_vs_truth')} out of domain")
    inside, outside = metrics.get("domain/mse_vs_truth"), metrics.get("ood/mse_vs_truth")
    if inside and outside is not None:
        text += f" ({float(outside) / float(inside):.3g}× larger)"
    return text + "."


# --- the page ---


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report draws, already read and checked."""

    metrics: Mapping[str, Mapping[str, float]]   # dataset -> flat metrics
    curves: Mapping[str, pd.DataFrame]           # dataset -> learning curve
    synthetic_train: pd.DataFrame                # x, y, y_true
    synthetic_test: pd.DataFrame                 # x, y, y_true
    synthetic_grid: pd.DataFrame                 # x, y_true, y_pred, region
    heart_roc: pd.DataFrame                      # fpr, tpr, threshold
    heart_confusion: pd.DataFrame                # actual, predicted
    mnist_confusion: pd.DataFrame                # index, actual, predicted
    mnist_images: np.ndarray                     # (n, 28, 28) uint8, the test split
    mnist_labels: np.ndarray                     # (n,)


def synthetic_sections(train: pd.DataFrame, test: pd.DataFrame, grid: pd.DataFrame,
                       metrics: Mapping[str, float]) -> list[Section]:
    """Part 1: the data and truth, the fit on the domain, and the extrapolation."""
    domain_grid = grid[grid["region"] == "domain"]
    both = pd.concat([train, test])
    noise = float(np.std(both["y"] - both["y_true"]))
    return [
        Section("Synthetic data",
                f"{len(train)} train and {len(test)} test samples on x in [{format_value(float(both['x'].min()))}, "
                f"{format_value(float(both['x'].max()))}]; noise standard deviation (y − truth) {format_value(noise)}.",
                (_image(synthetic_data_figure(train, test, domain_grid),
                        "synthetic train and test samples and the true function"),)),
        Section("Fitted curve vs truth",
                f"Test MSE {_get(metrics, 'test/mse')} (relative MSE {_get(metrics, 'test/relative_mse')}); "
                f"MSE against the true function {_get(metrics, 'test/mse_vs_truth')} on the test points.",
                (_image(fit_figure(domain_grid, test), "network prediction and true function on the domain"),)),
        Section("Extrapolation", extrapolation_caption(metrics),
                (_image(extrapolation_figure(grid, train),
                        "predictions on the domain and the shaded extrapolation region"),)),
    ]


def learning_curves_section(curves: Mapping[str, pd.DataFrame]) -> Section:
    images = tuple(_image(learning_curve_figure(curves[name], f"{DATASET_TITLES[name]} learning curves"),
                          f"{name} learning curves", curve_caption(name, curves[name]))
                   for name in DATASETS if name in curves)
    return Section("Learning curves", "Train and validation loss (and accuracy for the classifiers) per epoch, "
                   "epoch axis log-scaled.", images)


def heart_section(roc: pd.DataFrame, confusion: pd.DataFrame, metrics: Mapping[str, float]) -> Section:
    """Part 2: ROC curve and confusion matrix of the heart-disease classifier."""
    counts = confusion_counts(confusion, [0, 1])
    return Section(
        "Heart disease classifier",
        f"{int(counts.values.sum())} test patients: accuracy {_percent(metrics, 'test/accuracy')}, "
        f"precision {_get(metrics, 'test/precision')}, recall {_get(metrics, 'test/recall')}, "
        f"ROC AUC {format_value(roc_auc(roc))}; "
        f"{int(counts.loc[1, 0])} missed and {int(counts.loc[0, 1])} false alarms at threshold 0.5.",
        (_image(roc_figure(roc), "heart ROC curve"),
         _image(confusion_figure(confusion, [0, 1], "Heart confusion matrix"), "heart confusion matrix")))


def _images_word(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def mnist_sections(images: np.ndarray, labels: np.ndarray, confusion: pd.DataFrame,
                   metrics: Mapping[str, float]) -> list[Section]:
    """Part 3: sample digits, the confusion matrix and the first mispredicted digits."""
    shown = min(SAMPLE_DIGITS, len(images))
    label_counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
    samples = Section(
        "Sample digits",
        f"The first {shown} of {len(images)} test images with their labels "
        f"(test set: {label_counts.min()} to {label_counts.max()} images per digit).",
        (_image(digit_grid_figure(images[:shown], [str(label) for label in labels[:shown]], columns=5),
                "the first test digits with their labels"),))

    off_diagonal = confusion_counts(confusion, list(range(10))).to_numpy() * ~np.eye(10, dtype=bool)
    actual, predicted = np.unravel_index(int(np.argmax(off_diagonal)), off_diagonal.shape)
    digit_accuracy = {d: float(metrics[f"test/accuracy_digit_{d}"]) for d in range(10)
                      if f"test/accuracy_digit_{d}" in metrics}
    worst = (f"; hardest digit {min(digit_accuracy, key=digit_accuracy.get)} "
             f"({100 * min(digit_accuracy.values()):.2f} %)" if digit_accuracy else "")
    common = (f"; most frequent confusion {actual} → {predicted} ({_images_word(int(off_diagonal[actual, predicted]))})"
              if off_diagonal.max() > 0 else "")
    matrix = Section(
        "MNIST confusion matrix",
        f"Test accuracy {_percent(metrics, 'test/accuracy')}, macro F1 {_get(metrics, 'test/macro_f1')}{worst}{common}.",
        (_image(confusion_figure(confusion, list(range(10)), "MNIST confusion matrix"), "MNIST confusion matrix"),))

    total, wrong_count = len(confusion), int((confusion["actual"] != confusion["predicted"]).sum())
    wrong = mispredicted(confusion)
    gallery: tuple[Image, ...] = ()
    if len(wrong):
        titles = ", ".join(f"#{i}: {misprediction_title(a, p)}"
                           for i, a, p in zip(wrong["index"], wrong["actual"], wrong["predicted"]))
        gallery = (_image(misprediction_figure(images, wrong, columns=8),
                          f"mispredicted test digits, true / predicted: {titles}"),)
    errors = Section(
        "Mispredicted digits",
        f"{wrong_count} of {total} test images mispredicted ({100 * wrong_count / max(total, 1):.2f} %)"
        + (f"; the first {len(wrong)} in test order, each titled true / predicted." if len(wrong) else "."),
        gallery)
    return [samples, matrix, errors]


def build_sections(inputs: ReportInputs) -> list[Section]:
    """The lab's figures in the lab's order, each section with a caption computed from the inputs."""
    synthetic, heart, mnist = (inputs.metrics.get(name, {}) for name in DATASETS)
    data, fit, extrapolation = synthetic_sections(inputs.synthetic_train, inputs.synthetic_test,
                                                  inputs.synthetic_grid, synthetic)
    return [
        data, learning_curves_section(inputs.curves), fit, extrapolation,
        heart_section(inputs.heart_roc, inputs.heart_confusion, heart),
        *mnist_sections(inputs.mnist_images, inputs.mnist_labels, inputs.mnist_confusion, mnist),
        Section("Metrics", "All metrics written by the evaluate stages, to 4 significant digits.",
                html=metrics_table_html({DATASET_TITLES[name]: inputs.metrics[name] for name in DATASETS if name in inputs.metrics})),
    ]


def build_report(inputs: ReportInputs) -> str:
    """The whole report page as HTML text."""
    synthetic, heart, mnist = (inputs.metrics.get(name, {}) for name in DATASETS)
    intro = ("The TP3 lab on dense neural networks, three tasks: regression of a noisy synthetic function "
             f"(test relative MSE {_get(synthetic, 'test/relative_mse')}), heart-disease classification "
             f"(test accuracy {_percent(heart, 'test/accuracy')}) and MNIST digit recognition "
             f"(test accuracy {_percent(mnist, 'test/accuracy')}). Built by `dvc repro` from the pipeline's outputs.")
    return html_page("TP3 – Dense neural networks", build_sections(inputs), intro)


# --- reading the earlier stages' files (thin I/O) ---

_REBUILD = "run `dvc repro` to rebuild it"


def read_metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise StageError(f"{path} is not valid JSON ({error}); {_REBUILD}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in data.values()):
        raise StageError(f"{path} is not a flat JSON object of numbers; {_REBUILD}")
    return data


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise StageError(f"{path} is not readable CSV ({str(error).splitlines()[0]}); {_REBUILD}") from None
    return check_columns(frame, columns, path)


def check_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise StageError(f"{path} lacks column(s) {', '.join(missing)}; {_REBUILD}")
    numeric = [column for column in columns if column != "region"]
    if len(frame) == 0:
        raise StageError(f"{path} has no rows; {_REBUILD}")
    if not all(pd.api.types.is_numeric_dtype(frame[column]) for column in numeric):
        raise StageError(f"{path} has non-numeric values in {', '.join(numeric)}; {_REBUILD}")
    return frame


def read_parquet(folder: Path, split: str, columns: Sequence[str]) -> pa.Table:
    table = read_split(folder, split)
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise StageError(f"{Path(folder) / f'{split}.parquet'} lacks column(s) {', '.join(missing)}; {_REBUILD}")
    return table


def read_inputs(metrics_dir: Path, plots_dir: Path, data_dir: Path) -> ReportInputs:
    """Read and check every input file; a missing or corrupt one is a StageError naming it."""
    metrics = {name: read_metrics(metrics_dir / f"{name}.json") for name in DATASETS}
    curves = {name: read_csv(plots_dir / name / "learning_curve.csv",
                             ["epoch", "train/loss", "val/loss"] + (["train/accuracy", "val/accuracy"]
                                                                    if name != "synthetic" else []))
              for name in DATASETS}
    evaluation = {name: plots_dir / name / "evaluation" for name in DATASETS}
    grid = read_csv(evaluation["synthetic"] / "predictions.csv", ["x", "y_true", "y_pred", "region"])
    heart_roc = read_csv(evaluation["heart"] / "roc.csv", ["fpr", "tpr"])
    heart_confusion = read_csv(evaluation["heart"] / "confusion.csv", ["actual", "predicted"])
    mnist_confusion = read_csv(evaluation["mnist"] / "confusion.csv", ["index", "actual", "predicted"])
    synthetic = {split: read_parquet(data_dir / "synthetic", split, ["x", "y", "y_true"])
                 .select(["x", "y", "y_true"]).to_pandas() for split in ("train", "test")}
    mnist_path = data_dir / "mnist" / "test.parquet"
    mnist_test = read_parquet(data_dir / "mnist", "test", ["image", "label"])
    if mnist_test.schema.field("image").type != pa.binary(MNIST_PIXELS):
        raise StageError(f"{mnist_path}: column image is {mnist_test.schema.field('image').type}, "
                         f"not fixed_size_binary[{MNIST_PIXELS}]; {_REBUILD}")
    images = mnist_images(mnist_test)
    indices = mnist_confusion["index"]
    if indices.min() < 0 or indices.max() >= len(images):
        raise StageError(f"{evaluation['mnist'] / 'confusion.csv'} refers to test rows up to {indices.max()} but "
                         f"{mnist_path} has {len(images)}; run `dvc repro` so both come from the same data")
    return ReportInputs(metrics, curves, synthetic["train"], synthetic["test"], grid, heart_roc, heart_confusion,
                        mnist_confusion, images, mnist_test.column("label").to_numpy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of the evaluate stages' JSON metrics")
    parser.add_argument("--plots", type=Path, required=True, help="folder of the learning curves and evaluation CSVs")
    parser.add_argument("--data", type=Path, required=True, help="the processed data folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the HTML report")
    args = parser.parse_args(argv)
    page = build_report(read_inputs(args.metrics, args.plots, args.data))
    write_outputs({args.out: page.encode()})
    print(f"report: wrote {args.out} ({len(page) / 1024:.0f} KiB)")


if __name__ == "__main__":
    run_stage("report", main)
