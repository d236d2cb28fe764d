"""The lab report's page around the tasks' own sections: intro, learning curves, metrics table.

It assembles what the `figures@<task>` stages drew (stages/reporting/fragment.py); it draws nothing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from stages.reporting.fragment import TaskFigures
from stages.reporting.page import Section, format_value, html_page, metrics_table_html, readable_metric_name

TITLE = "TP3 – Dense neural networks"


def learning_curves_section(tasks: Sequence[TaskFigures]) -> Section:
    return Section("Learning curves", "Train and validation loss (and accuracy for the classifiers) per epoch, "
                   "epoch axis log-scaled.", tuple(task.learning_curve for task in tasks))


def intro(tasks: Sequence[TaskFigures], metrics: Mapping[str, Mapping[str, float]]) -> str:
    parts = [f"{task.title} ({readable_metric_name(task.headline_metric)} "
             f"{format_value(values[task.headline_metric]) if task.headline_metric in values else 'n/a'})"
             for task, values in ((task, metrics[task.name]) for task in tasks)]
    return (f"The TP3 lab on dense neural networks, {len(parts)} tasks: {', '.join(parts)}. "
            "Built by `dvc repro` from the pipeline's outputs.")


def lab_page(tasks: Sequence[TaskFigures], metrics: Mapping[str, Mapping[str, float]]) -> str:
    """The whole page: learning curves of every task, each task's sections in order, then all metrics
    (`metrics`: each task's by its name)."""
    tasks = sorted(tasks, key=lambda task: task.lab_part)
    table = Section("Metrics", "All metrics written by the evaluate stages, to 4 significant digits.",
                    html=metrics_table_html({task.title: metrics[task.name] for task in tasks}))
    sections = [section for task in tasks for section in task.sections]
    return html_page(TITLE, [learning_curves_section(tasks), *sections, table], intro(tasks, metrics))
