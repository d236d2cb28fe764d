"""Generic drawing helpers for the tasks' figures (stages/tasks/<task>_figures.py) and the study report:
the style, a bare figure, PNG encoding, and the figures several tasks draw (learning curves,
ROC curves, confusion matrices, image grids). What only one task draws lives with that task.

Figures are built on a bare Figure (no pyplot state) inside STYLE, so the global rcParams of
whoever imports this module are left alone; PNGs carry no software version, so the same input
gives the same bytes. Neither seaborn nor scikit-learn is imported: seaborn loads scipy.stats (about
1 s of a 2.6 s figures stage), so its style, palette and heatmap look are written out here
(tests/test_report.py holds them equal to seaborn's).
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
from matplotlib import colors, ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stages.reporting.page import Image, format_value  # noqa: E402

# Pixels per inch of the PNGs, shown at their own size: at 130 the small figures (4.2 in) are ~550 px
# wide and the tick labels ~15 px tall, readable at a laptop's 1400 px without zooming.
DPI = 130
# seaborn's axes_style("whitegrid") and plotting_context("notebook", font_scale=0.8), but for its default
# colormap ("rocket", which only importing seaborn registers): each drawing names its own.
STYLE = {
    "figure.facecolor": "white", "axes.facecolor": "white", "axes.labelcolor": ".15", "text.color": ".15",
    "xtick.direction": "out", "ytick.direction": "out", "xtick.color": ".15", "ytick.color": ".15",
    "axes.axisbelow": True, "axes.grid": True, "axes.edgecolor": ".8", "grid.color": ".8", "grid.linestyle": "-",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    "lines.solid_capstyle": "round", "patch.edgecolor": "w", "patch.force_edgecolor": True,
    "xtick.top": False, "ytick.right": False, "xtick.bottom": False, "ytick.left": False,
    "axes.spines.left": True, "axes.spines.bottom": True, "axes.spines.right": True, "axes.spines.top": True,
    "axes.linewidth": 1.25, "grid.linewidth": 1, "lines.linewidth": 1.5, "lines.markersize": 6, "patch.linewidth": 1,
    "xtick.major.width": 1.25, "ytick.major.width": 1.25, "xtick.minor.width": 1, "ytick.minor.width": 1,
    "xtick.major.size": 6, "ytick.major.size": 6, "xtick.minor.size": 4, "ytick.minor.size": 4,
    "font.size": 12 * 0.8, "axes.labelsize": 12 * 0.8, "axes.titlesize": 12 * 0.8, "legend.title_fontsize": 12 * 0.8,
    "xtick.labelsize": 11 * 0.8, "ytick.labelsize": 11 * 0.8, "legend.fontsize": 11 * 0.8,
}
DEEP = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")  # seaborn's "deep" palette, its first four
TRAIN_COLOR, TEST_COLOR, TRUTH_COLOR, FIT_COLOR = (colors.to_rgb(color) for color in DEEP)


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
    """Area under the ROC curve (`fpr`, `tpr`, in evaluate's order: fpr rising), by trapezoids."""
    return float(np.trapezoid(roc["tpr"], roc["fpr"]))


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
    counts = pd.crosstab(confusion["actual"], confusion["predicted"])
    return counts.reindex(index=list(labels), columns=list(labels), fill_value=0).rename_axis(index=None, columns=None)


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
        heatmap(ax, share.to_numpy(), counts.to_numpy(), list(counts.index), "share of the actual class",
                fontsize=8 if len(labels) > 5 else 10)
        ax.set(xlabel="predicted", ylabel="actual", title=title)
    return fig


def heatmap(ax, values: np.ndarray, counts: np.ndarray, labels: Sequence, label: str, fontsize: float) -> None:
    """seaborn.heatmap(values, annot=counts, cmap="Blues", vmin=0, vmax=1, square=True) as it looks: cells
    from the top left, each count dark on a light cell and white on a dark one, a labelled colour bar."""
    colormap = matplotlib.colormaps["Blues"]
    mesh = ax.pcolormesh(values, cmap=colormap, vmin=0, vmax=1)
    ax.set(xlim=(0, values.shape[1]), ylim=(values.shape[0], 0), aspect="equal")
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(np.arange(len(labels)) + 0.5, labels)
    ax.set_yticks(np.arange(len(labels)) + 0.5, labels)
    linear = np.asarray(colormap(values))[..., :3]  # each cell's colour, to relative luminance (as seaborn)
    linear = np.where(linear <= 0.03928, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    for (row, column), count in np.ndenumerate(counts):
        ax.text(column + 0.5, row + 0.5, str(count), ha="center", va="center", fontsize=fontsize,
                color=".15" if luminance[row, column] > 0.408 else "w")
    ax.figure.colorbar(mesh, ax=ax, label=label).outline.set_visible(False)


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
