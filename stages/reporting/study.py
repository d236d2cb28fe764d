"""The hyperparameter study's page (`reports/study.html`): one study, many DVC experiments.

Pure: `StudyExperiment`s in (each one's params and, per task, its metrics over the seeds, learning
curves and the synthetic predictions, as `flows.study` reads them from its experiment commit), HTML
out. Every variation and the baseline train the same seeds (params.yaml `study.seeds`), so a change
is judged seed by seed (stages/spread.py, `paired_verdict`): "helps" or "hurts" only when the 95 %
interval of the seed-by-seed differences excludes zero, else "cannot tell at n seeds", with the
interval shown. The synthetic task answers the lab's three questions; every task a variation changed
answers whether the change helps its headline metrics. Figures and page layout reuse `stages.report`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from stages.core.params import TaskConfig
from stages.reporting.figures import STYLE, figure_to_png_base64
from stages.reporting.page import Image, Section, format_value, html_page, text_html
from stages.spread import Spread, Verdict, paired_verdict, spread

# Final metrics in the synthetic table, in order (reports/metrics/synthetic.json names), with their headers.
TABLE_METRICS = {
    "train/loss": "train loss",
    "val/loss": "validation loss",
    "test/relative_mse": "test relative MSE",
    "domain/mse_vs_truth": "in-domain MSE vs truth",
    "ood/mse_vs_truth": "out-of-domain MSE vs truth",
    "train/epochs_run": "epochs",
}
SORT_METRIC = "val/loss"  # chosen without looking at the test split
# "Reaching a loss" means the validation loss first falls to within this share of a common level.
LEVEL_MARGIN = 0.05
LAB_TASK = "synthetic"  # the task the lab's three questions are about


@dataclass(frozen=True)
class TaskRun:
    """One task's results in one experiment, over its seeds."""

    title: str
    config: TaskConfig
    metrics: Mapping[str, float]                 # each metric's mean over the seeds
    seeds: Mapping[int, Mapping[str, float]]     # each seed's metrics
    curve: pd.DataFrame                          # learning_curve.csv: each epoch's mean over the seeds
    judged: Mapping[str, bool] = field(default_factory=dict)  # headline metric -> higher is better
    seed_curves: Mapping[int, pd.DataFrame] = field(default_factory=dict)  # each seed's curve (the lab's questions)


@dataclass(frozen=True)
class StudyExperiment:
    """One finished experiment of the study, read back from its commit."""

    name: str
    rev: str                        # the experiment's commit
    overrides: Mapping[str, Any]    # dotted params keys the variation set, with the values it ran with
    seed: int
    tasks: Mapping[str, TaskRun]    # by task name; the synthetic task always
    predictions: pd.DataFrame       # the synthetic task's predictions.csv: x, y_true, y_pred, region

    # The synthetic task, which the lab's questions, the table and the figures read.
    @property
    def config(self) -> TaskConfig:
        return self.tasks[LAB_TASK].config

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.tasks[LAB_TASK].metrics

    @property
    def curve(self) -> pd.DataFrame:
        return self.tasks[LAB_TASK].curve


# --- comparing experiments ---


def config_fields(exp: StudyExperiment, tasks: Sequence[str] | None = None) -> dict[str, Any]:
    """What the tasks' chains read, as dotted keys: `seed` and `<task>.{data,model,train}.*`."""
    values: dict[str, Any] = {"seed": exp.seed}
    for name in tasks or exp.tasks:
        for section in ("data", "model", "train"):
            config = getattr(exp.tasks[name].config, section)
            dumped = config.model_dump() if hasattr(config, "model_dump") else {}
            values.update({f"{name}.{section}.{key}": value for key, value in dumped.items()})
    return values


def config_changes(base: StudyExperiment, other: StudyExperiment) -> dict[str, tuple[Any, Any]]:
    """The keys whose resolved values differ between two experiments: key -> (base value, other value)."""
    shared = [name for name in base.tasks if name in other.tasks]
    a, b = config_fields(base, shared), config_fields(other, shared)
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


def changed_tasks(changes: Mapping[str, tuple[Any, Any]], tasks: Sequence[str]) -> list[str]:
    """The tasks a change touches: those whose keys changed, every one when the seed did."""
    return [name for name in tasks if "seed" in changes or any(key.startswith(f"{name}.") for key in changes)]


def find_baseline(experiments: Sequence[StudyExperiment]) -> StudyExperiment | None:
    """The experiment that overrides nothing (the lab's defaults), if the study ran one."""
    return next((exp for exp in experiments if not exp.overrides), None)


def relative_change(old: float, new: float) -> float:
    return (new - old) / abs(old) if old else float("inf") if new else 0.0


def percent(change: float) -> str:
    return f"{100 * change:+.1f} %"


def common_seeds(base: TaskRun, other: TaskRun) -> list[int]:
    return sorted(set(base.seeds) & set(other.seeds))


def verdict(base: TaskRun, other: TaskRun, metric: str, higher_is_better: bool) -> Optional[Verdict]:
    """`other` against `base` on `metric`, seed by seed over the seeds both trained; None when they share none."""
    seeds = common_seeds(base, other)
    if not seeds:
        return None
    return paired_verdict([other.seeds[s][metric] for s in seeds], [base.seeds[s][metric] for s in seeds],
                          higher_is_better)


def judged_text(found: Optional[Verdict]) -> str:
    return "no seed in common with the baseline: not comparable" if found is None else found.sentence()


def moved_text(found: Optional[Verdict]) -> str:
    """`falls by 0.1 [0.098, 0.102] over 5 seeds`, `rises by …`, or the verdict's "cannot tell" sentence."""
    if found is None or found.word == "cannot tell":
        return judged_text(found)
    d = found.difference
    return (f"{'rises' if d.mean > 0 else 'falls'} by {abs(d.mean):.4g} "
            f"[{min(abs(d.low), abs(d.high)):.4g}, {max(abs(d.low), abs(d.high)):.4g}] over {d.n} seeds")


def shift(values: Mapping[int, float], base_values: Mapping[int, float]) -> Optional[Spread]:
    """The seed-by-seed differences `values - base_values` over the seeds both have (finite), or None."""
    seeds = sorted(s for s in set(values) & set(base_values)
                   if math.isfinite(values[s]) and math.isfinite(base_values[s]))
    return spread([values[s] - base_values[s] for s in seeds]) if seeds else None


def direction(difference: Optional[Spread]) -> str:
    """"up" or "down" when the differences' 95 % interval excludes zero, else "unclear"."""
    if difference is None or not difference.excludes(0.0):
        return "unclear"
    return "up" if difference.mean > 0 else "down"


def interval_text(difference: Optional[Spread], unit: str = "") -> str:
    if difference is None:
        return "no seed reached it in both runs"
    if difference.low is None:
        return f"{difference.mean:+.3g}{unit} from one seed"
    return f"{difference.mean:+.3g}{unit} [{difference.low:+.3g}, {difference.high:+.3g}] over {difference.n} seeds"


def epochs_to_reach(curve: pd.DataFrame, level: float, column: str = "val/loss") -> int | None:
    """The first epoch at which `column` is at or below `level`; None if it never is."""
    reached = curve.loc[curve[column] <= level, "epoch"]
    return int(reached.iloc[0]) if len(reached) else None


def curve_noise(curve: pd.DataFrame, column: str = "val/loss") -> float:
    """How jagged the second half of a curve is: std of the epoch-to-epoch change of log(loss)."""
    tail = curve[column].to_numpy()[len(curve) // 2:]
    tail = tail[tail > 0]
    return float(np.std(np.diff(np.log(tail)))) if len(tail) > 2 else float("nan")


def per_seed_curves(run: TaskRun) -> Mapping[int, pd.DataFrame]:
    """Each seed's curve; with none read, the mean curve stands for the first seed."""
    return run.seed_curves or {min(run.seeds): run.curve}


def _metric_line(base: TaskRun, other: TaskRun, key: str, higher_is_better: bool = False) -> str:
    old, new = float(base.metrics[key]), float(other.metrics[key])
    return (f"{TABLE_METRICS.get(key, key)} {format_value(old)} → {format_value(new)} "
            f"({judged_text(verdict(base, other, key, higher_is_better))})")


def _describe(changes: Mapping[str, tuple[Any, Any]], task: str = LAB_TASK) -> str:
    return ", ".join(f"{key.removeprefix(f'{task}.')} {a} → {b}" for key, (a, b) in changes.items())


def batch_answer(base_exp: StudyExperiment, big_exp: StudyExperiment) -> str:
    """Does a larger batch behave like a smaller learning rate? Epochs to a common loss, smoothness, final
    loss; each judged seed by seed."""
    base, big = base_exp.tasks[LAB_TASK], big_exp.tasks[LAB_TASK]
    b, batch = base.config.train.batch_size, big.config.train.batch_size
    level = (1 + LEVEL_MARGIN) * max(base.curve["val/loss"].min(), big.curve["val/loss"].min())
    curves_base, curves_big = per_seed_curves(base), per_seed_curves(big)

    def log_epochs(curves):
        return {s: math.log(e) if (e := epochs_to_reach(c, level)) else math.nan for s, c in curves.items()}

    def log_noise(curves):
        return {s: math.log(n) if (n := curve_noise(c)) > 0 else math.nan for s, c in curves.items()}

    slower = shift(log_epochs(curves_big), log_epochs(curves_base))       # log of the epochs' ratio
    noisier = shift(log_noise(curves_big), log_noise(curves_base))        # log of the jitter's ratio
    ratio = math.exp(slower.mean) if slower is not None else float("nan")
    smoother = math.exp(-noisier.mean) if noisier is not None else float("nan")
    text = (f"Batch {batch} against {b} (same learning rate {base.config.train.learning_rate:g}): "
            f"{batch / b:.3g}× fewer weight updates per epoch. To reach validation loss {format_value(level)} "
            f"(within {100 * LEVEL_MARGIN:.0f} % of the higher of the two mean curves' minima) batch {batch} takes "
            f"{ratio:.3g}× the epochs (log ratio {interval_text(slower)}); its validation curve is "
            f"{smoother:.3g}× {'smoother' if smoother >= 1 else 'noisier'} (epoch-to-epoch jitter of log loss over "
            f"the second half, log ratio {interval_text(noisier)}); final validation loss "
            f"{format_value(big.metrics['val/loss'])} against {format_value(base.metrics['val/loss'])} "
            f"({judged_text(verdict(base, big, 'val/loss', False))}). ")
    pace, calm = direction(slower), direction(noisier)
    if pace == "up" and calm == "down":
        text += (f"So yes: like a learning rate about {ratio:.2g}× smaller, the larger batch descends more slowly "
                 "per epoch and more smoothly, beyond the seeds' noise.")
    elif pace == "up":
        text += "Partly: it descends more slowly per epoch, like a smaller learning rate, but not clearly more smoothly."
    elif pace == "down":
        text += "No: it reached that loss in fewer epochs, unlike a smaller learning rate."
    else:
        text += (f"Cannot tell at {slower.n if slower else 0} seeds: whether it descends more slowly per epoch "
                 "lies within the seeds' noise.")
    return text


def depth_answer(base_exp: StudyExperiment, deep_exp: StudyExperiment) -> str:
    """Does depth help? In-domain and out-of-domain errors against the truth, validation loss, seed by seed."""
    base, deep = base_exp.tasks[LAB_TASK], deep_exp.tasks[LAB_TASK]
    d, depth = base.config.model.depth, deep.config.model.depth
    inside = verdict(base, deep, "domain/mse_vs_truth", False)
    outside = verdict(base, deep, "ood/mse_vs_truth", False)
    ratio = float(deep.metrics["ood/mse_vs_truth"]) / float(deep.metrics["domain/mse_vs_truth"])
    text = (f"Depth {depth} against {d} hidden layers: "
            + "; ".join(_metric_line(base, deep, key) for key in
                        ("val/loss", "test/relative_mse", "domain/mse_vs_truth", "ood/mse_vs_truth")) + ". ")
    word = {"helps": "helps", "hurts": "hurts"}.get(inside.word if inside else "", "cannot be told apart from noise")
    text += (f"In the domain the extra depth {word} (error against the truth: {judged_text(inside)}); "
             f"out of the domain: {judged_text(outside)}, and still {ratio:.3g}× its in-domain error: depth does "
             "not make the network extrapolate.")
    return text


def longer_answer(base_exp: StudyExperiment, longer_exp: StudyExperiment) -> str:
    """Does training longer overfit? Final train and validation loss and the error against the truth, seed by
    seed; where the mean validation curve bottoms out."""
    base, longer = base_exp.tasks[LAB_TASK], longer_exp.tasks[LAB_TASK]
    e, epochs = base.config.train.epochs, longer.config.train.epochs
    train = verdict(base, longer, "train/loss", False)
    val = verdict(base, longer, "val/loss", False)
    inside = verdict(base, longer, "domain/mse_vs_truth", False)
    best = longer.curve.loc[longer.curve["val/loss"].idxmin()]
    best_epoch, best_val = int(best["epoch"]), float(best["val/loss"])
    drift = relative_change(best_val, float(longer.metrics["val/loss"]))
    text = (f"{epochs} epochs against {e}: final train loss {moved_text(train)}; validation loss "
            f"{moved_text(val)}; in-domain error against the truth {moved_text(inside)}. ")
    words = {name: found.word if found else "cannot tell" for name, found in
             (("train", train), ("val", val), ("inside", inside))}
    if words["train"] == "helps" and "hurts" in (words["val"], words["inside"]):
        text += ("So yes: the extra epochs overfit — the train loss falls while the validation loss or the error "
                 "against the truth rises, beyond the seeds' noise. ")
    elif words["val"] == "helps":
        text += "No: the validation loss still improves with the extra epochs. "
    else:
        text += "No overfitting beyond the seeds' noise: the validation loss and the error against the truth hold. "
    text += (f"Over the {epochs}-epoch runs the mean validation loss is lowest at epoch {best_epoch} "
             f"({format_value(best_val)}) and ends {percent(drift)} from there.")
    return text


def task_answer(base_exp: StudyExperiment, other_exp: StudyExperiment, task: str,
                changes: Mapping[str, tuple[Any, Any]]) -> str:
    """Does this change help the task? Each of its headline metrics, seed by seed."""
    base, other = base_exp.tasks[task], other_exp.tasks[task]
    parts = [f"{metric} {format_value(base.metrics[metric])} → {format_value(other.metrics[metric])} "
             f"({judged_text(verdict(base, other, metric, higher))})"
             for metric, higher in other.judged.items() if metric in base.metrics and metric in other.metrics]
    return f"{other_exp.name} ({_describe(changes, task)}): " + "; ".join(parts) + "."


# The lab's questions, each answered by the experiments that change exactly this one key.
QUESTIONS: dict[str, tuple[str, Callable[[StudyExperiment, StudyExperiment], str], Callable[[Any, Any], bool]]] = {
    "synthetic.train.batch_size": ("Does a larger batch behave like a smaller learning rate?", batch_answer,
                                   lambda old, new: new > old),
    "synthetic.model.depth": ("Does depth help?", depth_answer, lambda old, new: new > old),
    "synthetic.train.epochs": ("Does training longer overfit?", longer_answer, lambda old, new: new > old),
}


def task_question(title: str) -> str:
    return f"{title}: does each change help, hurt, or can we not tell?"


def answers(experiments: Sequence[StudyExperiment]) -> list[tuple[str, list[str]]]:
    """(question, answers): the lab's questions, then for each task a variation changed, whether each change
    helps its headline metrics, against the baseline."""
    base = find_baseline(experiments)
    if base is None:
        return [("Answers need the baseline", ["No experiment of this study leaves the params as they are "
                                               "(a variation with `params: {}`), so nothing is compared."])]
    answered: dict[str, list[str]] = {question: [] for question, _, _ in QUESTIONS.values()}
    by_task: dict[str, list[str]] = {name: [] for name in base.tasks}
    for exp in experiments:
        if exp is base:
            continue
        changes = config_changes(base, exp)
        key = next(iter(changes)) if len(changes) == 1 else None
        if key in QUESTIONS and QUESTIONS[key][2](*changes[key]):
            question, answer, _ = QUESTIONS[key]
            answered[question].append(answer(base, exp))
            continue
        for name in changed_tasks(changes, list(base.tasks)):
            if name in exp.tasks:
                own = {k: v for k, v in changes.items() if k.startswith(f"{name}.") or k == "seed"}
                by_task[name].append(task_answer(base, exp, name, own))
    result = [(question, texts or [f"Not asked: no variation of this study changes only "
                                   f"{key.removeprefix('synthetic.')} upwards."])
              for key, (question, _, _) in QUESTIONS.items() for texts in [answered[question]]]
    result += [(task_question(base.tasks[name].title), texts) for name, texts in by_task.items() if texts]
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


def task_table_html(experiments: Sequence[StudyExperiment], task: str) -> str:
    """The baseline and each experiment that changed `task`: its headline metrics as mean ± the 95 % interval's
    half-width over the seeds."""
    base = find_baseline(experiments)
    shown = [exp for exp in experiments if task in exp.tasks and (
        exp is base or (base is not None and changed_tasks(config_changes(base, exp), [task])))]
    metrics = list(shown[0].tasks[task].judged) if shown else []
    header = "".join(f"<th>{html.escape(label)}</th>" for label in ("experiment", "changes", *metrics))
    rows = []
    for exp in shown:
        run = exp.tasks[task]
        changes = ", ".join(f"{key}={value}" for key, value in exp.overrides.items()) or "(lab defaults)"
        cells = "".join(f'<td class="value">{mean_and_margin([v[m] for v in run.seeds.values()])}</td>'
                        for m in metrics)
        rows.append(f'<tr><th scope="row">{html.escape(exp.name)}</th><td>{html.escape(changes)}</td>{cells}</tr>')
    return f'<table class="study"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def mean_and_margin(values: Sequence[float]) -> str:
    over = spread(values)
    return format_value(over.mean) + ("" if over.high is None else f" ± {format_value(over.high - over.mean)}")


def seed_words(experiments: Sequence[StudyExperiment]) -> str:
    """`seeds 42–46` (or the seeds listed, when they differ between experiments)."""
    seeds = sorted({s for exp in experiments for run in exp.tasks.values() for s in run.seeds})
    if not seeds:
        return "no seeds"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def answers_html(experiments: Sequence[StudyExperiment]) -> str:
    parts = []
    for question, texts in answers(experiments):
        parts.append(f"<h3>{html.escape(question)}</h3>")
        parts.append("<ul>" + "".join(f"<li>{text_html(text)}</li>" for text in texts) + "</ul>")
    return "\n".join(parts)


def build_study_report(experiments: Sequence[StudyExperiment], baseline_commit: str = "") -> str:
    """The study page: answers, the sorted metrics table, each changed task's table, overlaid learning curves
    and fits."""
    if not experiments:
        raise ValueError("a study report needs at least one experiment")
    names = ", ".join(exp.name for exp in experiments)
    on = f" on commit {baseline_commit[:10]}" if baseline_commit else ""
    base = find_baseline(experiments)
    others = [name for name in experiments[0].tasks if name != LAB_TASK and base is not None and any(
        changed_tasks(config_changes(base, exp), [name]) for exp in experiments if name in exp.tasks)]
    intro = (f"{len(experiments)} DVC experiments{on}: {names}. Every one trains {seed_words(experiments)}, "
             "so a change is judged seed by seed; regenerate with `python -m flows.study`, "
             "compare with `dvc exp show` and `dvc plots diff <experiment> <experiment>`.")
    sections = [
        Section("Answers to the lab's questions",
                caption="Computed from the experiments below, seed by seed against the baseline: a change "
                        "“helps” or “hurts” only when the 95 % interval of its seed-by-seed differences (shown "
                        "in brackets) excludes zero; otherwise we cannot tell at that many seeds.",
                html=answers_html(experiments)),
        Section("Final metrics, synthetic regression",
                caption=f"Means over the seeds, sorted by {TABLE_METRICS[SORT_METRIC]} (best first, in bold).",
                html=metrics_table_html(experiments)),
        *(Section(f"Final metrics, {experiments[0].tasks[name].title}",
                  caption="The baseline and the variations that change this task: each headline metric's mean "
                          "± the half-width of its 95 % interval over the seeds.",
                  html=task_table_html(experiments, name)) for name in others),
        Section("Learning curves", caption="Every experiment's train and validation loss per epoch, means over "
                                           "the seeds (log axes).",
                images=(Image(figure_to_png_base64(learning_curves_figure(experiments)),
                              alt="learning curves of every experiment"),)),
        Section("Fitted curves against the truth",
                caption="The first seed's predictions on the evaluation grid; the shaded x ranges lie outside the "
                        "training domain.",
                images=(Image(figure_to_png_base64(fits_figure(experiments)),
                              alt="fitted curves of every experiment against the true function"),)),
    ]
    return html_page("Hyperparameter study", sections, intro=intro)
