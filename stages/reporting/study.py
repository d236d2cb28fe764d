"""The hyperparameter study's page (`reports/study.html`): one study, many DVC experiments.

Pure: `StudyExperiment`s in (each one's params, metrics, learning curve and predictions, as
`flows.study` reads them from its experiment commit), HTML out. The page overlays every
experiment's learning curves and fitted curves, sorts their final metrics, and answers the lab's
questions with numbers computed from them. Figures and page layout reuse `stages.report`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from stages.core.params import TaskConfig
from stages.reporting.figures import STYLE, figure_to_png_base64
from stages.reporting.page import Image, Section, format_value, html_page, text_html

# Final metrics in the table, in order (reports/metrics/synthetic.json names), with their headers.
TABLE_METRICS = {
    "train/loss": "train loss",
    "val/loss": "validation loss",
    "test/relative_mse": "test relative MSE",
    "domain/mse_vs_truth": "in-domain MSE vs truth",
    "ood/mse_vs_truth": "out-of-domain MSE vs truth",
    "train/epochs_run": "epochs",
}
SORT_METRIC = "val/loss"  # chosen without looking at the test split
# Changes smaller than this share are called "no difference": one seed cannot tell them from noise.
TOLERANCE = 0.05
# "Reaching a loss" means the validation loss first falls to within this share of a common level.
LEVEL_MARGIN = 0.05


@dataclass(frozen=True)
class StudyExperiment:
    """One finished experiment of the study, read back from its commit."""

    name: str
    rev: str                        # the experiment's commit
    overrides: Mapping[str, Any]    # dotted params keys the variation set, with the values it ran with
    seed: int
    config: TaskConfig              # the synthetic task's resolved config in that experiment
    metrics: Mapping[str, float]    # reports/metrics/synthetic.json
    curve: pd.DataFrame             # learning_curve.csv: epoch, train/loss, val/loss
    predictions: pd.DataFrame       # predictions.csv: x, y_true, y_pred, region


# --- comparing experiments ---


def config_fields(exp: StudyExperiment) -> dict[str, Any]:
    """What the synthetic chain reads, as dotted keys: `seed` and `synthetic.{data,model,train}.*`."""
    values: dict[str, Any] = {"seed": exp.seed}
    for section in ("data", "model", "train"):
        values.update({f"synthetic.{section}.{key}": value
                       for key, value in getattr(exp.config, section).model_dump().items()})
    return values


def config_changes(base: StudyExperiment, other: StudyExperiment) -> dict[str, tuple[Any, Any]]:
    """The keys whose resolved values differ between two experiments: key -> (base value, other value)."""
    a, b = config_fields(base), config_fields(other)
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


def find_baseline(experiments: Sequence[StudyExperiment]) -> StudyExperiment | None:
    """The experiment that overrides nothing (the lab's defaults), if the study ran one."""
    return next((exp for exp in experiments if not exp.overrides), None)


def relative_change(old: float, new: float) -> float:
    return (new - old) / abs(old) if old else float("inf") if new else 0.0


def percent(change: float) -> str:
    return f"{100 * change:+.1f} %"


def trend(change: float, lower: str = "lower", higher: str = "higher") -> str:
    """A word for a relative change: within TOLERANCE it is no difference."""
    if abs(change) < TOLERANCE:
        return f"no different (within {100 * TOLERANCE:.0f} %)"
    return lower if change < 0 else higher


def epochs_to_reach(curve: pd.DataFrame, level: float, column: str = "val/loss") -> int | None:
    """The first epoch at which `column` is at or below `level`; None if it never is."""
    reached = curve.loc[curve[column] <= level, "epoch"]
    return int(reached.iloc[0]) if len(reached) else None


def curve_noise(curve: pd.DataFrame, column: str = "val/loss") -> float:
    """How jagged the second half of a curve is: std of the epoch-to-epoch change of log(loss)."""
    tail = curve[column].to_numpy()[len(curve) // 2:]
    tail = tail[tail > 0]
    return float(np.std(np.diff(np.log(tail)))) if len(tail) > 2 else float("nan")


def _metric_line(base: StudyExperiment, other: StudyExperiment, key: str) -> str:
    old, new = float(base.metrics[key]), float(other.metrics[key])
    return f"{TABLE_METRICS.get(key, key)} {format_value(old)} → {format_value(new)} ({percent(relative_change(old, new))})"


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key.removeprefix('synthetic.')} {a} → {b}" for key, (a, b) in changes.items())


def batch_answer(base: StudyExperiment, big: StudyExperiment) -> str:
    """Does a larger batch behave like a smaller learning rate? Epochs to a common loss, smoothness, final loss."""
    b, batch = base.config.train.batch_size, big.config.train.batch_size
    level = (1 + LEVEL_MARGIN) * max(base.curve["val/loss"].min(), big.curve["val/loss"].min())
    e_base, e_big = epochs_to_reach(base.curve, level), epochs_to_reach(big.curve, level)
    updates_ratio = batch / b  # how many times fewer weight updates per epoch
    noise_base, noise_big = curve_noise(base.curve), curve_noise(big.curve)
    slower = e_big / e_base if e_base and e_big else float("nan")
    smoother = noise_base / noise_big if noise_big else float("nan")
    final = relative_change(float(base.metrics["val/loss"]), float(big.metrics["val/loss"]))
    text = (f"Batch {batch} against {b} (same learning rate {base.config.train.learning_rate:g}): "
            f"{updates_ratio:.3g}× fewer weight updates per epoch. Both reach validation loss "
            f"{format_value(level)} (within {100 * LEVEL_MARGIN:.0f} % of the higher of their minima): "
            f"batch {batch} at epoch {e_big}, batch {b} at epoch {e_base}, {slower:.3g}× the epochs. "
            f"Batch {batch}'s validation curve is {smoother:.3g}× {'smoother' if smoother >= 1 else 'noisier'} "
            f"(epoch-to-epoch jitter of log loss over the second half: {noise_big:.3g} against {noise_base:.3g}); "
            f"final validation loss {format_value(big.metrics['val/loss'])} against "
            f"{format_value(base.metrics['val/loss'])} ({percent(final)}). ")
    if slower >= 1 + TOLERANCE and smoother >= 1:
        text += (f"So yes: like a learning rate about {slower:.2g}× smaller, the larger batch descends more "
                 f"slowly per epoch and more smoothly.")
    elif slower >= 1 + TOLERANCE:
        text += "Partly: it descends more slowly per epoch, like a smaller learning rate, but not more smoothly."
    elif slower <= 1 - TOLERANCE:
        text += "No: it reached that loss in fewer epochs, unlike a smaller learning rate."
    else:
        text += "Not here: per epoch it converged as fast, so it did not act like a smaller learning rate."
    return text


def depth_answer(base: StudyExperiment, deep: StudyExperiment) -> str:
    """Does depth help? In-domain and out-of-domain errors against the truth, validation loss."""
    d, depth = base.config.model.depth, deep.config.model.depth
    inside = relative_change(float(base.metrics["domain/mse_vs_truth"]), float(deep.metrics["domain/mse_vs_truth"]))
    outside = relative_change(float(base.metrics["ood/mse_vs_truth"]), float(deep.metrics["ood/mse_vs_truth"]))
    ratio = float(deep.metrics["ood/mse_vs_truth"]) / float(deep.metrics["domain/mse_vs_truth"])
    text = (f"Depth {depth} against {d} hidden layers: "
            + "; ".join(_metric_line(base, deep, key) for key in
                        ("val/loss", "test/relative_mse", "domain/mse_vs_truth", "ood/mse_vs_truth")) + ". ")
    verdict = {"lower": "helps", "higher": "hurts"}.get(trend(inside), "makes no difference")
    text += (f"In the domain the extra depth {verdict} ({percent(inside)} error against the truth); "
             f"out of the domain its error is {trend(outside)} ({percent(outside)}), and still "
             f"{ratio:.3g}× its in-domain error: depth does not make the network extrapolate.")
    return text


def longer_answer(base: StudyExperiment, longer: StudyExperiment) -> str:
    """Does training longer overfit? Final train and validation loss, their gap, where validation loss bottoms out."""
    e, epochs = base.config.train.epochs, longer.config.train.epochs
    train = relative_change(float(base.metrics["train/loss"]), float(longer.metrics["train/loss"]))
    val = relative_change(float(base.metrics["val/loss"]), float(longer.metrics["val/loss"]))
    inside = relative_change(float(base.metrics["domain/mse_vs_truth"]),
                             float(longer.metrics["domain/mse_vs_truth"]))
    gap_base = float(base.metrics["val/loss"]) - float(base.metrics["train/loss"])
    gap_longer = float(longer.metrics["val/loss"]) - float(longer.metrics["train/loss"])
    best = longer.curve.loc[longer.curve["val/loss"].idxmin()]
    best_epoch, best_val = int(best["epoch"]), float(best["val/loss"])
    drift = relative_change(best_val, float(longer.metrics["val/loss"]))
    text = (f"{epochs} epochs against {e}: final train loss {percent(train)}, validation loss {percent(val)}, "
            f"gap (validation − train) {format_value(gap_base)} → {format_value(gap_longer)}; in-domain error "
            f"against the truth {percent(inside)}. ")
    if train <= -TOLERANCE and (val >= TOLERANCE or inside >= TOLERANCE):
        text += ("So yes: the extra epochs overfit — the train loss keeps falling while the validation "
                 "loss or the error against the truth rises. ")
    elif val <= -TOLERANCE:
        text += "No: the validation loss still improves with the extra epochs. "
    else:
        text += (f"The extra epochs move neither the validation loss nor, beyond {100 * TOLERANCE:.0f} %, "
                 "the train loss: they add no overfitting. ")
    text += (f"Within the {epochs}-epoch run the validation loss is lowest at epoch {best_epoch} "
             f"({format_value(best_val)}) and ends {percent(drift)} from there")
    if drift >= TOLERANCE:
        when = f"before epoch {e}" if best_epoch < e else f"after epoch {e}"
        text += f": what overfitting there is sets in early, {when}."
    else:
        text += ": no overfitting within the run either."
    return text


def other_answer(base: StudyExperiment, other: StudyExperiment, changes: Mapping[str, tuple[Any, Any]]) -> str:
    return (f"{other.name} ({_describe(changes)}): "
            + "; ".join(_metric_line(base, other, key) for key in
                        ("train/loss", "val/loss", "domain/mse_vs_truth", "ood/mse_vs_truth")) + ".")


# The lab's questions, each answered by the experiments that change exactly this one key.
QUESTIONS: dict[str, tuple[str, Callable[[StudyExperiment, StudyExperiment], str], Callable[[Any, Any], bool]]] = {
    "synthetic.train.batch_size": ("Does a larger batch behave like a smaller learning rate?", batch_answer,
                                   lambda old, new: new > old),
    "synthetic.model.depth": ("Does depth help?", depth_answer, lambda old, new: new > old),
    "synthetic.train.epochs": ("Does training longer overfit?", longer_answer, lambda old, new: new > old),
}


def answers(experiments: Sequence[StudyExperiment]) -> list[tuple[str, list[str]]]:
    """(question, answers) for the lab's questions, then the other single-change variations against the baseline."""
    base = find_baseline(experiments)
    if base is None:
        return [("Answers need the baseline", ["No experiment of this study leaves the params as they are "
                                               "(a variation with `params: {}`), so nothing is compared."])]
    answered: dict[str, list[str]] = {question: [] for question, _, _ in QUESTIONS.values()}
    others: list[str] = []
    for exp in experiments:
        if exp is base:
            continue
        changes = config_changes(base, exp)
        key = next(iter(changes)) if len(changes) == 1 else None
        if key in QUESTIONS and QUESTIONS[key][2](*changes[key]):
            question, answer, _ = QUESTIONS[key]
            answered[question].append(answer(base, exp))
        elif changes:
            others.append(other_answer(base, exp, changes))
    result = [(question, texts or [f"Not asked: no variation of this study changes only "
                                   f"{key.removeprefix('synthetic.')} upwards."])
              for key, (question, _, _) in QUESTIONS.items() for texts in [answered[question]]]
    if others:
        result.append(("Other variations against the baseline", others))
    return result


# --- figures ---

SMOOTHING_EPOCHS = 25  # rolling median for the late-epoch close-up: the jitter of small batches hides the trend
TRUTH = "black"


def _colors(experiments: Sequence[StudyExperiment]) -> dict[str, tuple]:
    return dict(zip((exp.name for exp in experiments), sns.color_palette("tab10", max(10, len(experiments)))))


def _longest_first(experiments: Sequence[StudyExperiment]) -> list[StudyExperiment]:
    """Drawing order: a run that retraces a shorter one's first epochs (same seed) goes underneath."""
    return sorted(experiments, key=lambda exp: -len(exp.curve))


def learning_curves_figure(experiments: Sequence[StudyExperiment]) -> Figure:
    """Every experiment's train and validation loss overlaid (log axes), and a close-up of the late validation loss."""
    colors = _colors(experiments)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(14, 4.2), layout="constrained")
        train_ax, val_ax, late_ax = fig.subplots(1, 3)
        late_start = max(1, min(len(exp.curve) for exp in experiments) // 20)
        for exp in _longest_first(experiments):
            curve = exp.curve[exp.curve["epoch"] > 0]
            for ax, column in ((train_ax, "train/loss"), (val_ax, "val/loss")):
                ax.plot(curve["epoch"], curve[column], color=colors[exp.name], lw=1, alpha=0.85, label=exp.name)
            late = curve[curve["epoch"] >= late_start]
            late_ax.plot(late["epoch"], late["val/loss"].rolling(SMOOTHING_EPOCHS, min_periods=1).median(),
                         color=colors[exp.name], lw=1.2, label=exp.name)
        for ax, column in ((train_ax, "train/loss"), (val_ax, "val/loss")):
            ax.set(xscale="log", yscale="log", xlabel="epoch (log scale)", ylabel=f"{column} (log scale)",
                   title=column)
        late_ax.set(xscale="log", xlabel="epoch (log scale)", ylabel="val/loss",
                    title=f"val/loss from epoch {late_start}, rolling median of {SMOOTHING_EPOCHS}")
        handles, labels = val_ax.get_legend_handles_labels()
        order = [labels.index(exp.name) for exp in experiments]
        val_ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, ncols=2)
    return fig


def fits_figure(experiments: Sequence[StudyExperiment]) -> Figure:
    """Every experiment's fitted curve against the truth on the whole grid, and its in- and out-of-domain errors."""
    colors = _colors(experiments)
    grid = experiments[0].predictions.sort_values("x")
    inside = grid.loc[grid["region"] == "domain", "x"]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13, 4.4), layout="constrained")
        fit_ax, error_ax = fig.subplots(1, 2, width_ratios=[1.6, 1])
        if len(inside):
            for start, stop in ((grid["x"].min(), inside.min()), (inside.max(), grid["x"].max())):
                if stop > start:
                    fit_ax.axvspan(start, stop, color="0.9", zorder=0)
        fit_ax.plot(grid["x"], grid["y_true"], color=TRUTH, lw=2.5, label="true function")
        for exp in experiments:
            frame = exp.predictions.sort_values("x")
            fit_ax.plot(frame["x"], frame["y_pred"], color=colors[exp.name], lw=1.2, label=exp.name)
        fit_ax.set(xlabel="x (shaded: outside the training domain)", ylabel="y", title="Fitted curves against the truth")
        fit_ax.legend(fontsize=7, ncols=2, loc="upper center")

        names = [exp.name for exp in experiments]
        rows = np.arange(len(experiments))
        for offset, key, hatch in ((-0.2, "domain/mse_vs_truth", ""), (0.2, "ood/mse_vs_truth", "//")):
            values = [float(exp.metrics.get(key, np.nan)) for exp in experiments]
            error_ax.barh(rows + offset, values, height=0.38, color=[colors[name] for name in names], hatch=hatch,
                          edgecolor="0.3")
        error_ax.set_yticks(rows, names)
        error_ax.invert_yaxis()
        error_ax.set(xscale="log", xlabel="MSE against the truth (log scale)",
                     title="In-domain (plain) vs out-of-domain (hatched) error")
    return fig


# --- the page ---


def _cell(value: Any) -> str:
    return format_value(value) if isinstance(value, (int, float, np.number)) else html.escape(str(value))


def metrics_table_html(experiments: Sequence[StudyExperiment]) -> str:
    """One row per experiment, sorted by SORT_METRIC (best first): what it changed, then its final metrics."""
    ordered = sorted(experiments, key=lambda exp: (float(exp.metrics.get(SORT_METRIC, np.inf)), exp.name))
    header = "".join(f"<th>{html.escape(label)}</th>" for label in ("experiment", "changes", *TABLE_METRICS.values()))
    rows = []
    for rank, exp in enumerate(ordered):
        changes = ", ".join(f"{key}={value}" for key, value in exp.overrides.items()) or "(lab defaults)"
        cells = "".join(f'<td class="value">{_cell(exp.metrics[key]) if key in exp.metrics else "–"}</td>'
                        for key in TABLE_METRICS)
        name = f"<strong>{html.escape(exp.name)}</strong>" if rank == 0 else html.escape(exp.name)
        rows.append(f'<tr><th scope="row">{name}</th><td>{html.escape(changes)}</td>{cells}</tr>')
    return (f'<table class="study"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def answers_html(experiments: Sequence[StudyExperiment]) -> str:
    parts = []
    for question, texts in answers(experiments):
        parts.append(f"<h3>{html.escape(question)}</h3>")
        parts.append("<ul>" + "".join(f"<li>{text_html(text)}</li>" for text in texts) + "</ul>")
    return "\n".join(parts)


def build_study_report(experiments: Sequence[StudyExperiment], baseline_commit: str = "") -> str:
    """The study page: answers, the sorted metrics table, overlaid learning curves and fits."""
    if not experiments:
        raise ValueError("a study report needs at least one experiment")
    names = ", ".join(exp.name for exp in experiments)
    on = f" on commit {baseline_commit[:10]}" if baseline_commit else ""
    intro = (f"{len(experiments)} DVC experiments of the synthetic task{on}: {names}. "
             f"Seed {', '.join(str(seed) for seed in sorted({exp.seed for exp in experiments}))}; regenerate with `python -m flows.study`, "
             f"compare with `dvc exp show` and `dvc plots diff <experiment> <experiment>`.")
    sections = [
        Section("Answers to the lab's questions",
                caption=f"Computed from the experiments below; changes under {100 * TOLERANCE:.0f} % are called "
                        "no difference (one seed per variation).",
                html=answers_html(experiments)),
        Section("Final metrics", caption=f"Sorted by {TABLE_METRICS[SORT_METRIC]} (best first, in bold).",
                html=metrics_table_html(experiments)),
        Section("Learning curves", caption="Every experiment's train and validation loss per epoch (log axes).",
                images=(Image(figure_to_png_base64(learning_curves_figure(experiments)),
                              alt="learning curves of every experiment"),)),
        Section("Fitted curves against the truth",
                caption="Predictions on the evaluation grid; the shaded x ranges lie outside the training domain.",
                images=(Image(figure_to_png_base64(fits_figure(experiments)),
                              alt="fitted curves of every experiment against the true function"),)),
    ]
    return html_page("Hyperparameter study: synthetic regression", sections, intro=intro)

