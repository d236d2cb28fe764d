"""Stage `evaluate@{synthetic,heart,mnist}`: test metrics (JSON) and plot data (CSV).

Metric names carry their split: `test/accuracy`, `val/loss`, `ood/mse_vs_truth`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn import metrics as skm

from stages.core.errors import StageError, run_stage
from stages.core.io import csv_bytes, json_bytes, write_outputs
from stages.core.io import read_split
from stages.datasets import TASKS, features_and_target


def curve_metrics(curve: pd.DataFrame) -> dict[str, float]:
    """The last epoch's train/val values, and how many epochs ran."""
    last = curve.iloc[-1]
    values = {name: float(last[name]) for name in curve.columns if name != "epoch"}
    return {**values, "train/epochs_run": int(len(curve))}


def evaluate_synthetic(predict, test: pa.Table, grid: pa.Table) -> tuple[dict, dict[str, pd.DataFrame]]:
    x_test, y_test = features_and_target("synthetic", test)
    y_pred = predict(x_test).reshape(-1)
    mse = float(np.mean((y_pred - y_test) ** 2))
    x_grid = grid.column("x").to_numpy()
    grid_frame = pd.DataFrame({"x": x_grid, "y_true": grid.column("y_true").to_numpy(),
                               "y_pred": predict(x_grid.astype(np.float32).reshape(-1, 1)).reshape(-1),
                               "region": grid.column("region").to_pylist()})
    squared_error = (grid_frame["y_pred"] - grid_frame["y_true"]) ** 2
    metrics = {
        "test/mse": mse,
        "test/relative_mse": mse / float(np.mean(y_test)) ** 2,  # the lab's MSE / mean(y)^2
        "test/mse_vs_truth": float(np.mean((y_pred - test.column("y_true").to_numpy()) ** 2)),
        "domain/mse_vs_truth": float(squared_error[grid_frame["region"] == "domain"].mean()),
        "ood/mse_vs_truth": float(squared_error[grid_frame["region"] == "extrapolation"].mean()),
    }
    return metrics, {"predictions.csv": grid_frame}


def evaluate_heart(predict, test: pa.Table) -> tuple[dict, dict[str, pd.DataFrame]]:
    x_test, y_test = features_and_target("heart", test)
    y_test = y_test.astype(int)
    probability = predict(x_test).reshape(-1)
    y_pred = (probability >= 0.5).astype(int)
    metrics = {
        "test/accuracy": float(skm.accuracy_score(y_test, y_pred)),
        "test/precision": float(skm.precision_score(y_test, y_pred, zero_division=0)),
        "test/recall": float(skm.recall_score(y_test, y_pred, zero_division=0)),
        "test/f1": float(skm.f1_score(y_test, y_pred, zero_division=0)),
        "test/roc_auc": float(skm.roc_auc_score(y_test, probability)),
        "test/rows": int(len(y_test)),
    }
    fpr, tpr, thresholds = skm.roc_curve(y_test, probability)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})
    confusion = pd.DataFrame({"actual": y_test, "predicted": y_pred})
    return metrics, {"roc.csv": roc, "confusion.csv": confusion}


def evaluate_mnist(predict, test: pa.Table) -> tuple[dict, dict[str, pd.DataFrame]]:
    x_test, y_test = features_and_target("mnist", test)
    y_pred = predict(x_test).argmax(axis=1)
    metrics = {
        "test/accuracy": float(skm.accuracy_score(y_test, y_pred)),
        "test/macro_f1": float(skm.f1_score(y_test, y_pred, average="macro")),
    }
    for digit in np.unique(y_test):
        metrics[f"test/accuracy_digit_{digit}"] = float(np.mean(y_pred[y_test == digit] == digit))
    # `index` is the row in the test split: the report shows the mispredicted images.
    confusion = pd.DataFrame({"index": np.arange(len(y_test)), "actual": y_test, "predicted": y_pred})
    return metrics, {"confusion.csv": confusion}


def evaluate(dataset: str, predict, data: Path) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Dispatch to the dataset's evaluation; `predict` maps a float32 feature matrix to outputs."""
    test = read_split(data, "test")
    if dataset == "synthetic":
        return evaluate_synthetic(predict, test, read_split(data, "grid"))
    if dataset == "heart":
        return evaluate_heart(predict, test)
    return evaluate_mnist(predict, test)


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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(TASKS))
    parser.add_argument("--data", type=Path, required=True, help="the dataset's processed folder")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--curve", type=Path, required=True, help="the learning curve written by train")
    parser.add_argument("--metrics", type=Path, required=True, help="where to write the metrics JSON")
    parser.add_argument("--plots", type=Path, required=True, help="folder for the plot CSVs")
    args = parser.parse_args(argv)

    curve = read_curve(args.curve)
    metrics, plots = evaluate(args.dataset, load_predictor(args.model), args.data)
    metrics = {**curve_metrics(curve), **metrics}
    write_outputs({args.metrics: json_bytes(metrics),
                   **{args.plots / name: csv_bytes(frame) for name, frame in plots.items()}})
    print(f"evaluate@{args.dataset}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                  if k.startswith(("test/", "ood/")) and "digit" not in k))


if __name__ == "__main__":
    run_stage("evaluate", main)
