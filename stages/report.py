"""Stage `report`: the lab's figures, captions and metrics in one self-contained HTML page.

    python -m stages.report --metrics reports/metrics --figures reports/figures --out reports/report.html

It assembles what the `figures@<task>` stages drew (one file per task, stages/tasks/, in lab
order) with the metrics table (stages/reporting/lab.py); it draws nothing, so it neither loads
matplotlib nor redraws a task whose results did not change. A missing or corrupt file is one
line naming it. Figures are embedded PNGs: one file, no links out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.errors import run_stage
from stages.core.io import write_outputs
from stages.reporting.fragment import read_fragment
from stages.reporting.inputs import read_metrics_document
from stages.reporting.lab import lab_page
from stages.tasks import TASK_NAMES


def build_report(metrics_dir: Path, figures_dir: Path) -> str:
    """The page from every task's metrics (over seeds) and figures files, as HTML text."""
    tasks = [read_fragment(figures_dir / f"{name}.json") for name in TASK_NAMES]
    return lab_page(tasks, {name: read_metrics_document(metrics_dir / f"{name}.json") for name in TASK_NAMES})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of the evaluate stages' JSON metrics")
    parser.add_argument("--figures", type=Path, required=True, help="folder of the figures stages' files")
    parser.add_argument("--out", type=Path, required=True, help="where to write the HTML report")
    args = parser.parse_args(argv)
    page = build_report(args.metrics, args.figures)
    write_outputs({args.out: page.encode()})
    print(f"report: wrote {args.out} ({len(page) / 1024:.0f} KiB)")


if __name__ == "__main__":
    run_stage("report", main)
