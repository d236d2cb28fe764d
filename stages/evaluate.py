"""Stage `evaluate@<task>`: test metrics (JSON) and plot data (CSV) of a trained model.

    python -m stages.evaluate TASK --data data/processed/TASK --model models/TASK.keras
        --curve reports/plots/TASK/learning_curve.csv --metrics reports/metrics/TASK.json
        --headline reports/headline/TASK.json --plots reports/plots/TASK/evaluation

Metric names carry their split: `test/accuracy`, `val/loss`, `ood/mse_vs_truth`. Which metrics
and plots is the task module's business; the last epoch's curve values are added to every task's.
All of them go to --metrics (the report reads it); the few the task names in HEADLINE_METRICS go
to --headline as `TASK/<short name>`, to 4 significant digits: the file DVC shows as metrics
(`dvc exp show`, `dvc exp diff`, `dvc metrics diff`), narrow enough to read at a glance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.errors import StageError, run_stage
from stages.core.io import csv_bytes, json_bytes, read_split, write_outputs
from stages.tasks import TASK_NAMES, headline_metrics, load_task


def curve_metrics(curve: pd.DataFrame) -> dict[str, float]:
    """The last epoch's train/val values, and how many epochs ran."""
    last = curve.iloc[-1]
    values = {name: float(last[name]) for name in curve.columns if name != "epoch"}
    return {**values, "train/epochs_run": int(len(curve))}


def load_predictor(path: Path):
    import keras
    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError) as error:
        raise StageError(f"{path}: cannot load the model ({error}); run `dvc repro` to train it") from None
    return lambda x: np.asarray(model.predict(x, batch_size=4096, verbose=0))


def read_curve(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to train the model") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--data", type=Path, required=True, help="the task's processed folder")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--curve", type=Path, required=True, help="the learning curve written by train")
    parser.add_argument("--metrics", type=Path, required=True, help="where to write every metric (JSON)")
    parser.add_argument("--headline", type=Path, required=True, help="where to write the headline metrics (JSON)")
    parser.add_argument("--plots", type=Path, required=True, help="folder for the plot CSVs")
    args = parser.parse_args(argv)

    task = load_task(args.task)
    curve = read_curve(args.curve)
    splits = {split: read_split(args.data, split) for split in task.EVALUATION_SPLITS}
    metrics, plots = task.evaluate(load_predictor(args.model), splits)
    metrics = {**curve_metrics(curve), **metrics}
    try:
        headline = headline_metrics(args.task, metrics)
    except KeyError as error:
        raise StageError(error.args[0]) from None
    write_outputs({args.metrics: json_bytes(metrics), args.headline: json_bytes(headline),
                   **{args.plots / name: csv_bytes(frame) for name, frame in plots.items()}})
    print(f"evaluate@{args.task}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                               if k.startswith(("test/", "ood/")) and "digit" not in k))


if __name__ == "__main__":
    run_stage("evaluate", main)
