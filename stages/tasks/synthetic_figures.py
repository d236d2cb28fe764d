"""The synthetic task's report sections and the figures only it draws: the data over the truth, the
fit on the domain, the extrapolation.

Apart from stages/tasks/synthetic.py, which every stage of the task imports: a figure's change reruns
`figures@synthetic` (and the page), not the training.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stages.core.results import TaskResults
from stages.reporting.figures import FIT_COLOR, STYLE, TEST_COLOR, TRAIN_COLOR, TRUTH_COLOR, image, new_figure
from stages.reporting.page import Section, format_value, metric


def synthetic_data_figure(train: pd.DataFrame, test: pd.DataFrame, truth: pd.DataFrame) -> Figure:
    """Noisy train and test samples (`x`, `y`) over the true function (`x`, `y_true`)."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(7, 4)
        ax.scatter(train["x"], train["y"], s=8, alpha=0.5, color=TRAIN_COLOR, label=f"train ({len(train)})")
        ax.scatter(test["x"], test["y"], s=8, alpha=0.7, color=TEST_COLOR, label=f"test ({len(test)})")
        truth = truth.sort_values("x")
        ax.plot(truth["x"], truth["y_true"], color=TRUTH_COLOR, lw=2, label="true function")
        ax.set(xlabel="x", ylabel="y", title="Synthetic data: y = f(x) + noise")
        ax.legend(loc="upper center")
    return fig


def fit_figure(domain_grid: pd.DataFrame, test: pd.DataFrame) -> Figure:
    """The network's curve (`y_pred`) against the truth (`y_true`) on the training domain, with test points."""
    grid = domain_grid.sort_values("x")
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(7, 4)
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
        fig, ax = new_figure(8, 4)
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


def extrapolation_caption(metrics: Mapping[str, float]) -> str:
    text = (f"MSE against the true function: {metric(metrics, 'domain/mse_vs_truth')} on the domain, "
            f"{metric(metrics, 'ood/mse_vs_truth')} out of domain")
    inside, outside = metrics.get("domain/mse_vs_truth"), metrics.get("ood/mse_vs_truth")
    if inside and outside is not None:
        text += f" ({float(outside) / float(inside):.3g}× larger)"
    return text + "."


def report_sections(results: TaskResults) -> list[Section]:
    """The data and truth, the fit on the domain, and the extrapolation."""
    columns = ["x", "y", "y_true"]
    train, test = (results.splits[name].select(columns).to_pandas() for name in ("train", "test"))
    grid, metrics = results.plots["predictions.csv"], results.metrics
    domain_grid = grid[grid["region"] == "domain"]
    both = pd.concat([train, test])
    noise = float(np.std(both["y"] - both["y_true"]))
    low, high = format_value(float(both["x"].min())), format_value(float(both["x"].max()))
    return [
        Section("Synthetic data",
                f"{len(train)} train and {len(test)} test samples on x in [{low}, {high}]; "
                f"noise standard deviation (y − truth) {format_value(noise)}.",
                (image(synthetic_data_figure(train, test, domain_grid),
                       "synthetic train and test samples and the true function"),)),
        Section("Fitted curve vs truth",
                f"Test MSE {metric(metrics, 'test/mse')} (relative MSE "
                f"{metric(metrics, 'test/relative_mse')}); MSE against the true function "
                f"{metric(metrics, 'test/mse_vs_truth')} on the test points.",
                (image(fit_figure(domain_grid, test), "network prediction and true function on the domain"),)),
        Section("Extrapolation", extrapolation_caption(metrics),
                (image(extrapolation_figure(grid, train),
                       "predictions on the domain and the shaded extrapolation region"),)),
    ]
