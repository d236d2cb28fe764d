"""The lab's figures: small pure functions, frames in, matplotlib Figure out, and PNG encoding.

Figures are built on a bare Figure (no pyplot state) inside STYLE, so the global rcParams of
whoever imports this module are left alone; PNGs carry no software version, so the same input
gives the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display, and the same pixels on every machine

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from stages.reporting.page import Image  # noqa: E402

# Pixels per inch of the PNGs, shown at their own size: at 130 the small figures (4.2 in) are ~550 px
# wide and the tick labels ~15 px tall, readable at a laptop's 1400 px without zooming.
DPI = 130
MAX_MISPREDICTED = 24
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.8)}
TRAIN_COLOR, TEST_COLOR, TRUTH_COLOR, FIT_COLOR = sns.color_palette("deep", 4)


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure, without the matplotlib version in its metadata: same input, same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def figure_to_png_base64(fig: Figure, dpi: int = DPI) -> str:
    """The figure as a base64 PNG string, ready for `<img src="data:image/png;base64,...">`."""
    return base64.b64encode(figure_to_png(fig, dpi)).decode("ascii")

def image(fig: Figure, alt: str, caption: str = "") -> Image:
    """A figure as an embedded page image."""
    return Image(figure_to_png_base64(fig), alt, caption)


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
    """Area under the ROC curve (`fpr`, `tpr`), as scikit-learn computes it."""
    return float(skm.auc(roc["fpr"], roc["tpr"]))


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
    counts = skm.confusion_matrix(confusion["actual"], confusion["predicted"], labels=list(labels))
    return pd.DataFrame(counts, index=list(labels), columns=list(labels))


def confusion_figure(confusion: pd.DataFrame, labels: Sequence, title: str,
                     names: Sequence[str] | None = None) -> Figure:
    """A heatmap of the confusion counts, coloured by each actual row's share so errors stand out;
    `names`: what the axes call the labels (the classes' names, where the data has them)."""
    counts = confusion_counts(confusion, labels)
    if names is not None:
        counts.index = counts.columns = list(names)
    share = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    size = 2.5 + 0.45 * len(labels)
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(size + 1, size)
        sns.heatmap(share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, square=True, ax=ax,
                    cbar_kws={"label": "share of the actual class"}, annot_kws={"fontsize": 8 if len(labels) > 5 else 10})
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
