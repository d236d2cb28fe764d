"""Stage `preprocess@<task>`: a task's raw data to Parquet splits with explicit schemas.

    python -m stages.preprocess TASK --raw data/raw/TASK --out data/processed/TASK

What the splits are is the task module's business (stages/tasks/<task>.py); a fitted
preprocessing it returns (heart's scaling) is written beside them as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa

from stages.core.errors import StageError, run_stage
from stages.core.io import json_bytes, parquet_bytes, write_outputs
from stages.tasks import TASK_NAMES, load_params, load_task, raw_stage


def read_raw_files(task: str, folder: Path) -> dict[str, bytes]:
    """The task's raw files as bytes; a missing one names the stage that writes it."""
    files = {}
    for name in load_task(task).RAW_FILES:
        try:
            files[name] = (folder / name).read_bytes()
        except FileNotFoundError:
            raise StageError(f"{folder / name} is missing; run `dvc repro {raw_stage(task)}`") from None
    return files


def output_files(outputs: dict[str, pa.Table | dict]) -> dict[str, bytes]:
    """Splits as `<split>.parquet`; anything else (a fitted preprocessing) as the JSON file it names."""
    return {(f"{name}.parquet" if isinstance(value, pa.Table) else name):
            (parquet_bytes(value) if isinstance(value, pa.Table) else json_bytes(value))
            for name, value in outputs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True, help="the task's raw folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Parquet splits")
    args = parser.parse_args(argv)
    params = load_params(args.params, [args.task])
    task = load_task(args.task)
    raw = task.read_raw(read_raw_files(args.task, args.raw), str(args.raw))
    outputs = task.preprocess(raw, params.task(args.task).data, params.seed)
    write_outputs({args.out / name: content for name, content in output_files(outputs).items()})


if __name__ == "__main__":
    run_stage("preprocess", main)
