"""Stage `report`: the lab's figures, captions and metrics in one self-contained HTML page.

    python -m stages.report --metrics reports/metrics --plots reports/plots --data data/processed
        --out reports/report.html

For every task (stages/tasks/, in lab order) it reads what the earlier stages wrote, checks it
(a missing or corrupt file is one line naming it), and asks the task module for its sections;
the page (stages/reporting/lab.py) adds the learning curves and the metrics table. Figures are
embedded PNGs: one file, no links out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from stages.core.errors import StageError, run_stage
from stages.core.io import read_split, write_outputs
from stages.core.results import TaskResults
from stages.tasks import TASK_NAMES, load_task

_REBUILD = "run `dvc repro` to rebuild it"


def read_metrics(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise StageError(f"{path} is not valid JSON ({error}); {_REBUILD}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in data.values()):
        raise StageError(f"{path} is not a flat JSON object of numbers; {_REBUILD}")
    return data


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise StageError(f"{path} is not readable CSV ({str(error).splitlines()[0]}); {_REBUILD}") from None
    return check_columns(frame, columns, path)


def check_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise StageError(f"{path} lacks column(s) {', '.join(missing)}; {_REBUILD}")
    numeric = [column for column in columns if column != "region"]
    if len(frame) == 0:
        raise StageError(f"{path} has no rows; {_REBUILD}")
    if not all(pd.api.types.is_numeric_dtype(frame[column]) for column in numeric):
        raise StageError(f"{path} has non-numeric values in {', '.join(numeric)}; {_REBUILD}")
    return frame


def read_results(name: str, metrics_dir: Path, plots_dir: Path, data_dir: Path) -> TaskResults:
    """What the earlier stages wrote for one task, checked."""
    task = load_task(name)
    curve_columns = ["epoch", "train/loss", "val/loss"] + (["train/accuracy", "val/accuracy"]
                                                           if task.PROBLEM.is_classifier else [])
    return TaskResults(
        name=name, title=task.TITLE,
        metrics=read_metrics(metrics_dir / f"{name}.json"),
        curve=read_csv(plots_dir / name / "learning_curve.csv", curve_columns),
        plots={file: read_csv(plots_dir / name / "evaluation" / file, columns)
               for file, columns in task.PLOT_COLUMNS.items()},
        splits={split: read_split(data_dir / name, split) for split in task.REPORT_SPLITS})


def build_report(results: Sequence[TaskResults]) -> str:
    """The page from every task's results (tasks in lab order), as HTML text."""
    from stages.reporting import kit
    from stages.reporting.lab import lab_page

    tasks = [load_task(task.name) for task in results]
    sections = [section for task, result in zip(tasks, results) for section in task.report_sections(result, kit)]
    return lab_page(results, [task.HEADLINE_METRIC for task in tasks], sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of the evaluate stages' JSON metrics")
    parser.add_argument("--plots", type=Path, required=True, help="folder of the learning curves and evaluation CSVs")
    parser.add_argument("--data", type=Path, required=True, help="the processed data folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the HTML report")
    args = parser.parse_args(argv)
    names = sorted(TASK_NAMES, key=lambda name: load_task(name).LAB_PART)
    page = build_report([read_results(name, args.metrics, args.plots, args.data) for name in names])
    write_outputs({args.out: page.encode()})
    print(f"report: wrote {args.out} ({len(page) / 1024:.0f} KiB)")


if __name__ == "__main__":
    run_stage("report", main)
