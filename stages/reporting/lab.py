"""The lab report's page around the tasks' own sections: intro, learning curves, metrics table.

It assembles what the `figures@<task>` stages drew (stages/reporting/fragment.py); it draws nothing.
The metrics are evaluate's documents over seeds ({"mean", "spread", "seeds"}: stages/spread.py), read
here as plain JSON, so the page stage needs no statistics of its own.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from stages.reporting.fragment import TaskFigures
from stages.reporting.page import Section, format_value, html_page, metrics_table_html, readable_metric_name

TITLE = "TP3 – Dense neural networks"


def learning_curves_section(tasks: Sequence[TaskFigures]) -> Section:
    return Section("Learning curves", "Train and validation loss (and accuracy for the classifiers) per epoch, "
                   "the mean over the seeds with a band of its 95 % interval, epoch axis log-scaled.",
                   tuple(task.learning_curve for task in tasks))


def mean_and_margin(document: Mapping, name: str) -> str:
    """A metric's mean over the seeds, with the half-width of its 95 % interval and the seed count when
    there are several: `0.9799 ± 0.0029 over 5 seeds`; `n/a` when evaluate did not write it."""
    if name not in document["mean"]:
        return "n/a"
    mean, over = document["mean"][name], (document.get("spread") or {}).get(name) or {}
    if over.get("high") is None:  # one seed: no interval
        return format_value(mean)
    return f"{format_value(mean)} ± {over['high'] - mean:.2g} over {over['n']} seeds"


def intro(tasks: Sequence[TaskFigures], documents: Mapping[str, Mapping]) -> str:
    parts = [f"{task.title} ({readable_metric_name(task.headline_metric)} "
             f"{mean_and_margin(documents[task.name], task.headline_metric)})" for task in tasks]
    return (f"The TP3 lab on dense neural networks, {len(parts)} tasks: {', '.join(parts)}. "
            "Built by `dvc repro` from the pipeline's outputs.")


def over_seeds(counts: Sequence[int]) -> str:
    """What the table's values are: `the mean over 5 seeds` when every task ran as many seeds."""
    counts = sorted(set(counts))
    if len(counts) > 1:
        return f"the mean over each task's seeds ({', '.join(map(str, counts))})"
    return "one seed each" if counts == [1] else f"the mean over {counts[0]} seeds"


def table_means(document: Mapping) -> dict[str, float | int]:
    """The means the table shows; a count every seed wrote as a whole number (epochs run, test rows) stays
    whole when its mean is, so it reads `3`, not `3.000`."""
    seeds = document["seeds"].values()
    return {name: int(mean) if float(mean).is_integer() and all(isinstance(values.get(name), int) for values in seeds)
            else mean for name, mean in document["mean"].items()}


def lab_page(tasks: Sequence[TaskFigures], documents: Mapping[str, Mapping]) -> str:
    """The whole page: learning curves of every task, each task's sections in order, then all metrics
    (`documents`: each task's metrics over seeds, by its name; the table shows their means)."""
    tasks = sorted(tasks, key=lambda task: task.lab_part)
    counts = [len(documents[task.name]["seeds"]) for task in tasks]
    table = Section("Metrics", f"All metrics written by the evaluate stages, {over_seeds(counts)}, "
                    "to 4 significant digits.",
                    html=metrics_table_html({task.title: table_means(documents[task.name]) for task in tasks}))
    sections = [section for task in tasks for section in task.sections]
    return html_page(TITLE, [learning_curves_section(tasks), *sections, table], intro(tasks, documents))
