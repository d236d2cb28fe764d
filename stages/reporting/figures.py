"""Generic drawing helpers for the tasks' figures (stages/tasks/<task>_figures.py) and the study report:
the style, a bare figure, PNG encoding, and the figures several tasks draw (learning curves,
ROC curves, confusion matrices, image grids). What only one task draws lives with that task.

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

from stages.reporting.page import Image, format_value  # noqa: E402

# Pixels per inch of the PNGs, shown at their own size: at 130 the small figures (4.2 in) are ~550 px
# wide and the tick labels ~15 px tall, readable at a laptop's 1400 px without zooming.
DPI = 130
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


def new_figure(width: float, height: float, **subplots) -> tuple[Figure, np.ndarray | object]:
    """A bare constrained-layout Figure of `width` x `height` inches and its subplots (no pyplot state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


class _PlainLogFormatter(ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.3, 2, 10) instead of 3×10⁻¹ or 3e-01."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


def learning_curve_figure(curve: pd.DataFrame, title: str, band: pd.DataFrame | None = None) -> Figure:
    """Train and validation loss (and accuracy, when the curve has it) against a log-scaled epoch axis;
    `band` (train's learning_curve_band.csv: epoch, curve, low, high) shades each curve's 95 % interval
    over the seeds, where it has one (not with one seed)."""
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "train/accuracy" in curve else [])
    curve = curve[curve["epoch"] > 0]
    band = band[(band["epoch"] > 0) & band["low"].notna() & band["high"].notna()] if band is not None else None
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(4.2 * len(panels), 3.2, ncols=len(panels), squeeze=False)
        for ax, (metric, label) in zip(axes[0], panels):
            for split, color in (("train", TRAIN_COLOR), ("val", TEST_COLOR)):
                column = f"{split}/{metric}"
                if column in curve:
                    ax.plot(curve["epoch"], curve[column], color=color, label=column)
                interval = band[band["curve"] == column] if band is not None else ()
                if len(interval):  # on a log axis, an interval reaching below zero runs off the bottom
                    ax.fill_between(interval["epoch"], interval["low"], interval["high"], color=color, alpha=0.2,
                                    linewidth=0)
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


def seeds_phrase(band: pd.DataFrame | None) -> str:
    """How many seeds the curves are the mean of, as the caption says it."""
    seeds = int(band["seeds"].max()) if band is not None and len(band) else 1
    return f"mean over {seeds} seeds; band: 95 % interval of the mean" if seeds > 1 else "one seed"


def curve_caption(title: str, curve: pd.DataFrame, band: pd.DataFrame | None = None) -> str:
    last = curve.iloc[-1]
    text = f"{title}: {len(curve)} epochs; final train/val loss {format_value(last['train/loss'])} / " \
           f"{format_value(last['val/loss'])}"
    best = curve.loc[curve["val/loss"].idxmin()]
    text += f" (lowest val loss {format_value(best['val/loss'])} at epoch {int(best['epoch'])})"
    if "val/accuracy" in curve:
        text += f"; final val accuracy {100 * float(last['val/accuracy']):.2f} %"
    return f"{text}; {seeds_phrase(band)}."


def learning_curve_image(name: str, title: str, curve: pd.DataFrame, band: pd.DataFrame | None = None) -> Image:
    """A task's learning curves as the page shows them (the mean over the seeds, with its band), captioned
    with the final and lowest losses and the seed count."""
    return image(learning_curve_figure(curve, f"{title} learning curves", band), f"{name} learning curves",
                 curve_caption(title, curve, band))


def roc_auc(roc: pd.DataFrame) -> float:
    """Area under the ROC curve (`fpr`, `tpr`), as scikit-learn computes it."""
    return float(skm.auc(roc["fpr"], roc["tpr"]))


def roc_figure(roc: pd.DataFrame, title: str) -> Figure:
    """The ROC curve (`fpr`, `tpr`) against chance, with the AUC in the title."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(4.2, 4)
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
        fig, ax = new_figure(size + 1, size)
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
