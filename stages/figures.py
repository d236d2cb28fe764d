"""Stage `figures@<task>`: one task's part of the lab report, drawn from what its stages wrote.

    python -m stages.figures heart --metrics reports/metrics/heart.json --plots reports/plots/heart
        --data data/processed/heart --out reports/figures/heart.json

It reads the task's metrics over seeds, learning curve (the seeds' mean) and its band, evaluation
CSVs and the processed splits its report asks for (a missing or corrupt file is one line naming it),
draws its learning curves and asks the task's figures module (stages/tasks/<task>_figures.py) for
its sections. Its own stage per
task, so a task's figures are redrawn when that task's results change, not another's; `report`
assembles the page from these files.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

import pandas as pd

from stages.core.errors import StageError, run_stage
from stages.core.io import read_split, write_outputs
from stages.core.results import TaskResults
from stages.reporting.inputs import REBUILD, read_csv, read_metrics_document
from stages.spread import Spread
from stages.tasks import TASK_NAMES, load_task, load_task_figures


def spreads_of(document: Mapping) -> dict[str, Spread]:
    """Each metric's spread over the seeds, as evaluate wrote it (stages/spread.py, metrics_over_seeds)."""
    return {name: Spread(document["mean"][name], **over) for name, over in document["spread"].items()}


def read_band(path: Path) -> pd.DataFrame:
    """train's learning_curve_band.csv: one row per epoch and curve (a name, so not in read_csv's numbers)."""
    band = read_csv(path, ["epoch", "mean", "low", "high", "seeds"])
    if "curve" not in band:
        raise StageError(f"{path} lacks column(s) curve; {REBUILD}")
    return band


def read_results(name: str, metrics: Path, plots_dir: Path, data_dir: Path) -> TaskResults:
    """What the earlier stages wrote for one task, checked."""
    task = load_task(name)
    curve_columns = ["epoch", "train/loss", "val/loss"] + (["train/accuracy", "val/accuracy"]
                                                           if task.PROBLEM.is_classifier else [])
    document = read_metrics_document(metrics)
    try:
        seeds = dict(sorted((int(seed), values) for seed, values in document["seeds"].items()))
    except ValueError:
        raise StageError(f"{metrics} names seeds that are not numbers; {REBUILD}") from None
    return TaskResults(
        name=name, title=task.TITLE, metrics=document["mean"], spreads=spreads_of(document), seeds=seeds,
        curve=read_csv(plots_dir / "learning_curve.csv", curve_columns),
        band=read_band(plots_dir / "learning_curve_band.csv"),
        plots={file: read_csv(plots_dir / "evaluation" / file, columns) for file, columns in task.PLOT_COLUMNS.items()},
        splits={split: read_split(data_dir, split) for split in task.REPORT_SPLITS})


def draw(results: TaskResults):
    """The task's part of the page: its learning curves and its own sections."""
    from stages.reporting.figures import learning_curve_image
    from stages.reporting.fragment import TaskFigures

    task = load_task(results.name)
    return TaskFigures(results.name, task.TITLE, task.LAB_PART, task.HEADLINE_METRIC,
                       learning_curve_image(results.name, task.TITLE, results.curve, results.band),
                       tuple(load_task_figures(results.name).report_sections(results)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--metrics", type=Path, required=True, help="the task's metrics JSON (evaluate@TASK)")
    parser.add_argument("--plots", type=Path, required=True,
                        help="the task's folder of learning curve (mean and band) and evaluation CSVs")
    parser.add_argument("--data", type=Path, required=True, help="the task's processed data folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the task's figures (JSON)")
    args = parser.parse_args(argv)
    from stages.reporting.fragment import fragment_bytes

    figures = draw(read_results(args.task, args.metrics, args.plots, args.data))
    write_outputs({args.out: fragment_bytes(figures)})
    print(f"figures@{args.task}: wrote {args.out} ({sum(len(s.images) for s in figures.sections) + 1} figures)")


if __name__ == "__main__":
    run_stage("figures", main)
