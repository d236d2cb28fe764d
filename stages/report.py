"""Stage `report`: the lab's figures, captions and metrics in one self-contained HTML page.

Every figure is drawn by a small pure function (frames in, matplotlib Figure out) and embedded
as a base64 PNG; `build_report` assembles the page from in-memory inputs, and `main()` only
reads the earlier stages' files and writes `report.html` atomically. The helpers
`figure_to_png_base64`, `Image`, `Section` and `html_page` are generic, for other reports.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display, and the same pixels on every machine

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stages.common import StageError, run_stage, write_outputs  # noqa: E402
from stages.datasets import MNIST_PIXELS, mnist_images, read_split  # noqa: E402

DATASETS = ("synthetic", "heart", "mnist")
DATASET_TITLES = {"synthetic": "Synthetic regression", "heart": "Heart disease", "mnist": "MNIST"}
DPI = 90
SAMPLE_DIGITS = 25
MAX_MISPREDICTED = 24
# Figures are built on a bare Figure (no pyplot state) inside this style, so the global
# rcParams of whoever imports this module are left alone.
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.8)}
TRAIN_COLOR, TEST_COLOR, TRUTH_COLOR, FIT_COLOR = sns.color_palette("deep", 4)

# --- generic helpers (also for other reports) ---


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure, without the matplotlib version in its metadata: same input, same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def figure_to_png_base64(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a base64 PNG string, ready for `<img src="data:image/png;base64,...">`."""
    return base64.b64encode(figure_to_png(fig, dpi)).decode("ascii")


@dataclass(frozen=True)
class Image:
    png_base64: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled part of a page: a one-line caption, embedded images, then optional trusted HTML."""

    title: str
    caption: str = ""
    images: tuple[Image, ...] = ()
    html: str = ""


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
p.caption, figcaption { color: #444; } figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
img { max-width: 100%; } nav ol { columns: 2; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; } td.value { text-align: right; } th { background: #f3f3f3; }
""".strip()


def html_page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no scripts or links out."""
    escape = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
             f"<h1>{escape(title)}</h1>"]
    if intro:
        parts.append(f'<p class="intro">{escape(intro)}</p>')
    parts.append("<nav><ol>" + "".join(f'<li><a href="#{_anchor(s.title)}">{escape(s.title)}</a></li>'
                                       for s in sections) + "</ol></nav>")
    for section in sections:
        parts.append(f'<section id="{_anchor(section.title)}">')
        parts.append(f"<h2>{escape(section.title)}</h2>")
        if section.caption:
            parts.append(f'<p class="caption">{escape(section.caption)}</p>')
        for image in section.images:
            figcaption = f"<figcaption>{escape(image.caption)}</figcaption>" if image.caption else ""
            parts.append(f'<figure><img src="data:image/png;base64,{image.png_base64}" '
                         f'alt="{escape(image.alt)}">{figcaption}</figure>')
        if section.html:
            parts.append(section.html)
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def format_value(value: float | int) -> str:
    """Integers as they are, floats to 4 significant digits."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    return f"{value:#.4g}" if math.isfinite(value) else str(value)


# Table order: test results first, then the synthetic grid's, then the last epoch's.
_SPLITS = {"test": "Test", "domain": "On-domain", "ood": "Out-of-domain", "train": "Train", "val": "Validation"}
_WORDS = {"mse": "MSE", "roc": "ROC", "auc": "AUC", "f1": "F1", "vs": "vs"}


def readable_metric_name(key: str) -> str:
    """`test/accuracy_digit_3` -> `Test accuracy (digit 3)`, `ood/mse_vs_truth` -> `Out-of-domain MSE vs truth`."""
    split, _, name = key.rpartition("/")
    name, digit = re.subn(r"_digit_(\d+)$", r" (digit \1)", name)
    words = " ".join(_WORDS.get(word, word) for word in name.split("_"))
    prefix = _SPLITS.get(split, split.replace("_", " ").capitalize()) if split else ""
    return f"{prefix} {words}".strip()


def metrics_table_html(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One row per metric name, one column per dataset; a dash where a dataset lacks the metric."""
    names = list(dict.fromkeys(key for values in metrics.values() for key in values))
    order = list(_SPLITS)
    names.sort(key=lambda key: (order.index(key.split("/")[0]) if key.split("/")[0] in order else len(order),
                                "_digit_" in key, key))
    header = "".join(f"<th>{html.escape(DATASET_TITLES.get(d, d))}</th>" for d in metrics)
    rows = []
    for name in names:
        cells = "".join(f'<td class="value">{format_value(values[name]) if name in values else "–"}</td>'
                        for values in metrics.values())
        rows.append(f'<tr><th scope="row" title="{html.escape(name)}">{html.escape(readable_metric_name(name))}'
                    f"</th>{cells}</tr>")
    return (f'<table class="metrics"><thead><tr><th>Metric</th>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


# --- figures (pure: frames in, Figure out) ---


def _figure(width: float, height: float, **subplots) -> tuple[Figure, np.ndarray | object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def synthetic_data_figure(train: pd.DataFrame, test: pd.DataFrame, truth: pd.DataFrame) -> Figure:
    """Noisy train and test samples (`x`, `y`) over the true function (`x`, `y_true`)."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(7, 4)
        ax.scatter(train["x"], train["y"], s=8, alpha=0.5, color=TRAIN_COLOR, label=f"train ({len(train)})")
        ax.scatter(test["x"], test["y"], s=8, alpha=0.7, color=TEST_COLOR, label=f"test ({len(test)})")
        truth = truth.sort_values("x")
        ax.plot(truth["x"], truth["y_true"], color=TRUTH_COLOR, lw=2, label="true function")
        ax.set(xlabel="x", ylabel="y", title="Synthetic data: y = f(x) + noise")
        ax.legend(loc="upper center")
    return fig


class _PlainLogFormatter(ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.3, 2, 10) instead of 3×10⁻¹ or 3e-01."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


def learning_curve_figure(curve: pd.DataFrame, title: str) -> Figure:
    """Train and validation loss (and accuracy, when the curve has it) against a log-scaled epoch axis."""
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "train/accuracy" in curve else [])
    curve = curve[curve["epoch"] > 0]
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(4.2 * len(panels), 3.2, ncols=len(panels), squeeze=False)
        for ax, (metric, label) in zip(axes[0], panels):
            for split, color in (("train", TRAIN_COLOR), ("val", TEST_COLOR)):
                column = f"{split}/{metric}"
                if column in curve:
                    ax.plot(curve["epoch"], curve[column], color=color, label=column)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(_PlainLogFormatter())
            ax.xaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
            if metric == "loss" and (curve[[c for c in ("train/loss", "val/loss") if c in curve]] > 0).all().all():
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
                ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
            ax.set(xlabel="epoch (log scale)", ylabel=label)
            ax.legend()
        fig.suptitle(title)
    return fig


def fit_figure(domain_grid: pd.DataFrame, test: pd.DataFrame) -> Figure:
    """The network's curve (`y_pred`) against the truth (`y_true`) on the training domain, with test points."""
    grid = domain_grid.sort_values("x")
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(7, 4)
        ax.scatter(test["x"], test["y"], s=8, alpha=0.4, color=TEST_COLOR, label="test samples")
        ax.plot(grid["x"], grid["y_true"], color=TRUTH_COLOR, lw=2, label="true function")
        ax.plot(grid["x"], grid["y_pred"], color=FIT_COLOR, lw=2, ls="--", label="network")
        ax.set(xlabel="x", ylabel="y", title="Fitted curve vs truth on the domain")
        ax.legend(loc="upper center")
    return fig


def extrapolation_figure(grid: pd.DataFrame, train: pd.DataFrame | None = None) -> Figure:
    """Truth and prediction on the whole grid; the extrapolation region (outside the domain) shaded."""
    grid = grid.sort_values("x")
    inside = grid.loc[grid["region"] == "domain", "x"]
    low, high = (inside.min(), inside.max()) if len(inside) else (np.nan, np.nan)
    outside = grid.loc[grid["region"] != "domain", "x"]
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(8, 4)
        shaded = False
        for start, stop in ((outside[outside < low].min(), low), (high, outside[outside > high].max())):
            if np.isfinite(start) and np.isfinite(stop):
                ax.axvspan(start, stop, color="0.85", zorder=0, label=None if shaded else "extrapolation")
                shaded = True
        if train is not None:
            ax.scatter(train["x"], train["y"], s=5, alpha=0.25, color=TRAIN_COLOR, label="train samples")
        ax.plot(grid["x"], grid["y_true"], color=TRUTH_COLOR, lw=2, label="true function")
        ax.plot(grid["x"], grid["y_pred"], color=FIT_COLOR, lw=2, ls="--", label="network")
        ax.set(xlabel="x", ylabel="y", title="On-domain vs out-of-domain predictions")
        ax.legend(loc="upper center", ncols=2)
    return fig


def roc_auc(roc: pd.DataFrame) -> float:
    """Area under the ROC curve (`fpr`, `tpr`), by the trapezoid rule."""
    ordered = roc.sort_values(["fpr", "tpr"])
    return float(np.trapezoid(ordered["tpr"], ordered["fpr"]))


def roc_figure(roc: pd.DataFrame, title: str = "Heart ROC") -> Figure:
    """The ROC curve (`fpr`, `tpr`) against chance, with the AUC in the title."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(4.2, 4)
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="chance")
        ax.plot(roc["fpr"], roc["tpr"], color=FIT_COLOR, lw=2, label="network")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{title} (AUC = {roc_auc(roc):.3f})")
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
    return fig


def confusion_counts(confusion: pd.DataFrame, labels: Sequence) -> pd.DataFrame:
    """Counts of (`actual`, `predicted`) pairs as a labels x labels frame, zero where a pair never occurs."""
    counts = pd.crosstab(confusion["actual"], confusion["predicted"])
    return counts.reindex(index=labels, columns=labels, fill_value=0).astype(int)


def confusion_figure(confusion: pd.DataFrame, labels: Sequence, title: str) -> Figure:
    """A heatmap of the confusion counts, coloured by each actual row's share so errors stand out."""
    counts = confusion_counts(confusion, labels)
    share = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    size = 2.5 + 0.45 * len(labels)
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(size + 1, size)
        sns.heatmap(share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, square=True, ax=ax,
                    cbar_kws={"label": "share of the actual class"}, annot_kws={"fontsize": 7 if len(labels) > 5 else 10})
        ax.set(xlabel="predicted", ylabel="actual", title=title)
        ax.tick_params(axis="y", rotation=0)
    return fig


def digit_grid_figure(images: np.ndarray, titles: Sequence[str], columns: int = 8,
                      suptitle: str = "", title_color: str = "black") -> Figure:
    """Greyscale images (n, h, w) in a grid, each with its title."""
    rows = max(1, math.ceil(len(images) / columns))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(1.05 * columns, 1.2 * rows + (0.3 if suptitle else 0)), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if index < len(images):
                ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
                ax.set_title(titles[index], fontsize=9, color=title_color)
        if suptitle:
            fig.suptitle(suptitle)
    return fig


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


def _image(fig: Figure, alt: str, caption: str = "") -> Image:
    return Image(figure_to_png_base64(fig), alt, caption)


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
                html=metrics_table_html({name: inputs.metrics[name] for name in DATASETS if name in inputs.metrics})),
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
