"""The lab report's page around the tasks' own sections: intro, learning curves, metrics table."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from stages.core.results import TaskResults
from stages.reporting.figures import image, learning_curve_figure
from stages.reporting.page import Section, format_value, html_page, metrics_table_html, readable_metric_name

TITLE = "TP3 – Dense neural networks"


def curve_caption(title: str, curve: pd.DataFrame) -> str:
    last = curve.iloc[-1]
    text = f"{title}: {len(curve)} epochs; final train/val loss {format_value(last['train/loss'])} / " \
           f"{format_value(last['val/loss'])}"
    best = curve.loc[curve["val/loss"].idxmin()]
    text += f" (lowest val loss {format_value(best['val/loss'])} at epoch {int(best['epoch'])})"
    if "val/accuracy" in curve:
        text += f"; final val accuracy {100 * float(last['val/accuracy']):.2f} %"
    return text + "."


def learning_curves_section(results: Sequence[TaskResults]) -> Section:
    images = tuple(image(learning_curve_figure(task.curve, f"{task.title} learning curves"),
                         f"{task.name} learning curves", curve_caption(task.title, task.curve))
                   for task in results)
    return Section("Learning curves", "Train and validation loss (and accuracy for the classifiers) per epoch, "
                   "epoch axis log-scaled.", images)


def intro(results: Sequence[TaskResults], headlines: Sequence[str]) -> str:
    parts = [f"{task.title} ({readable_metric_name(metric)} "
             f"{format_value(task.metrics[metric]) if metric in task.metrics else 'n/a'})"
             for task, metric in zip(results, headlines)]
    return (f"The TP3 lab on dense neural networks, {len(parts)} tasks: {', '.join(parts)}. "
            "Built by `dvc repro` from the pipeline's outputs.")


def lab_page(results: Sequence[TaskResults], headlines: Sequence[str], task_sections: Sequence[Section]) -> str:
    """The whole page: learning curves of every task, each task's sections in order, then all metrics."""
    metrics = Section("Metrics", "All metrics written by the evaluate stages, to 4 significant digits.",
                      html=metrics_table_html({task.title: task.metrics for task in results}))
    return html_page(TITLE, [learning_curves_section(results), *task_sections, metrics], intro(results, headlines))
