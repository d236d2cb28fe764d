"""Stage `configure@<task>`: the config train@<task> reads, resolved from params.yaml (one JSON file).

    python -m stages.configure TASK --out data/config/TASK.json

train@<task> depends on this file instead of params.yaml's whole `model` section: a shared `model.*`
value that the task overrides (MNIST's width) leaves the file's bytes as they were, so DVC trains
nothing, and `dvc status` names the file as the reason when a value the task uses changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.errors import run_stage
from stages.core.io import json_bytes, write_outputs
from stages.core.params import read_params_file, training_config
from stages.tasks import TASK_NAMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="where to write the task's training config")
    args = parser.parse_args(argv)
    config = training_config(read_params_file(args.params), args.task)
    write_outputs({args.out: json_bytes(config.model_dump(mode="json"))})


if __name__ == "__main__":
    run_stage("configure", main)
