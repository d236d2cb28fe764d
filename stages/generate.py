"""Stage `generate`: a generated task's raw data, from params.yaml (the lab's synthetic data).

    python -m stages.generate TASK --out data/raw/TASK
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.errors import StageError, run_stage
from stages.core.io import write_outputs
from stages.tasks import TASK_NAMES, load_params, load_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="folder for the raw files")
    args = parser.parse_args(argv)
    task = load_task(args.task)
    if not hasattr(task, "generate"):
        raise StageError(f"task {args.task} is downloaded, not generated: its raw data comes from `fetch@{args.task}`")
    params = load_params(args.params, [args.task])
    files = task.generate(params.task(args.task).data, params.seed)
    write_outputs({args.out / name: content for name, content in files.items()})


if __name__ == "__main__":
    run_stage("generate", main)
