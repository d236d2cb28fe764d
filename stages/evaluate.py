"""Stage `evaluate@<task>`: test metrics (JSON) and plot data (CSV) of the trained networks, one per seed.

    python -m stages.evaluate TASK --data data/processed/TASK --models models/TASK.seeds
        --seed-curves reports/plots/TASK/seed_curves.csv --metrics reports/metrics/TASK.json
        --headline reports/headline/TASK.json --plots reports/plots/TASK/evaluation

Metric names carry their split: `test/accuracy`, `val/loss`, `ood/mse_vs_truth`. Which metrics
and plots is the task module's business; the last epoch's curve values are added to every task's.
Each seed's network is evaluated; --metrics gets every seed's metrics, their means and their spread
(sd, 95 % interval of the mean, n: stages/spread.py), which the report reads. The few metrics the
task names in HEADLINE_METRICS go to --headline as `TASK/<short name>` (the mean, 4 significant
digits), and its HEADLINE_METRIC's margin as `TASK/<short name>±` (the 95 % interval's half-width):
the file DVC shows as metrics (`dvc exp show`, `dvc exp diff`, `dvc metrics diff`), narrow enough to read. The
plot data is the first seed's: the network a user scores with (models/TASK.tflite).

The metrics measure the networks train@TASK exported for LiteRT (`models/TASK.seeds/seed-<n>.tflite`),
served by ai-edge-litert (`load_exported`, a tenth of a second where TensorFlow takes seconds): this
stage loads neither TensorFlow nor Keras. Their outputs equal the `.keras` model's up to float32
rounding, with the same class decisions (tests/test_export.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from stages.core.contract import EXPORT_SUFFIX, SEED_EXPORT_PREFIX
from stages.core.errors import StageError, run_stage
from stages.core.io import csv_bytes, json_bytes, read_split, write_outputs
from stages.spread import metrics_over_seeds
from stages.tasks import TASK_NAMES, headline_metrics, load_task

RUNTIME = "ai-edge-litert"   # serves the network train exported (stages/training/export.py)
INSTALL = f"pip install -c requirements.lock {RUNTIME}"   # `make setup` installs it too


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise StageError(f"the LiteRT runtime is not installed; run `{INSTALL}` in the project's "
                         "virtual environment (or `make setup`)") from None
    return Interpreter


def load_exported(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """`predict(x)`: the exported network's outputs for the float32 rows x (a batch of any size).

    A missing or damaged file, or no runtime, is a StageError saying what to do."""
    path = Path(path)
    interpreter_class = _interpreter_class()
    if not path.is_file():
        raise StageError(f"{path} is missing; run `dvc repro` to train and export the network")
    try:
        # One thread: the same float sums in the same order on every machine and run.
        interpreter = interpreter_class(model_path=str(path), num_threads=1)
    except ValueError as error:
        raise StageError(f"{path} is not a LiteRT model ({error}); rebuild it with `dvc repro --force`") from None
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    width = int(inputs["shape_signature"][-1])

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != width:
            raise StageError(f"{path} takes rows of {width} features, not {x.shape[1:]}; "
                             "the model and the data come from different runs: run `dvc repro`")
        interpreter.resize_tensor_input(inputs["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inputs["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(outputs["index"])

    return predict


def curve_metrics(curve: pd.DataFrame) -> dict[str, float]:
    """The last epoch's train/val values, and how many epochs ran."""
    last = curve.iloc[-1]
    values = {name: float(last[name]) for name in curve.columns if name not in ("epoch", "seed")}
    return {**values, "train/epochs_run": int(len(curve))}


def read_seed_curves(path: Path) -> dict[int, pd.DataFrame]:
    """seed_curves.csv (train's every seed's learning curve) as {seed: its curve}."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to train the model") from None
    return {int(seed): curve for seed, curve in table.groupby("seed", sort=True)}


def seed_of(export: Path) -> int:
    """The seed in a seed export's name (stages/train.py, seed_export_name: seed-42.tflite)."""
    try:
        return int(export.stem.removeprefix(SEED_EXPORT_PREFIX))
    except ValueError:
        raise StageError(f"{export}: not a seed export ({SEED_EXPORT_PREFIX}<n>{EXPORT_SUFFIX}); run `dvc repro --force` "
                         "to rebuild the folder") from None


def seed_exports(folder: Path) -> dict[int, Path]:
    """The seed exports train wrote, by seed, in seed order."""
    exports = sorted(folder.glob(f"*{EXPORT_SUFFIX}")) if folder.is_dir() else []
    if not exports:
        raise StageError(f"{folder} holds no trained networks; run `dvc repro` to train them")
    return dict(sorted((seed_of(path), path) for path in exports))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--data", type=Path, required=True, help="the task's processed folder")
    parser.add_argument("--models", type=Path, required=True,
                        help="the folder of networks train exported, one per seed (seed-<n>.tflite)")
    parser.add_argument("--seed-curves", type=Path, required=True, help="every seed's learning curve, written by train")
    parser.add_argument("--metrics", type=Path, required=True, help="where to write every metric (JSON)")
    parser.add_argument("--headline", type=Path, required=True, help="where to write the headline metrics (JSON)")
    parser.add_argument("--plots", type=Path, required=True, help="folder for the plot CSVs (the first seed's)")
    args = parser.parse_args(argv)

    task = load_task(args.task)
    networks = {seed: load_exported(path) for seed, path in seed_exports(args.models).items()}
    curves = read_seed_curves(args.seed_curves)
    if set(curves) != set(networks):
        raise StageError(f"{args.seed_curves} and {args.models} come from different runs (seeds {sorted(curves)} "
                         f"against {sorted(networks)}); run `dvc repro` to rebuild them")
    splits = {split: read_split(args.data, split) for split in task.EVALUATION_SPLITS}
    per_seed, plots = {}, None
    for seed, predict in networks.items():
        metrics, seed_plots = task.evaluate(predict, splits)
        per_seed[seed] = {**curve_metrics(curves[seed]), **metrics}
        plots = seed_plots if plots is None else plots   # the first seed's: the network a user scores with
    document = metrics_over_seeds(per_seed)
    margins = {name: None if over["high"] is None else over["high"] - document["mean"][name]
               for name, over in document["spread"].items()}
    try:
        headline = headline_metrics(args.task, document["mean"], margins)
    except KeyError as error:
        raise StageError(error.args[0]) from None
    write_outputs({args.metrics: json_bytes(document), args.headline: json_bytes(headline),
                   **{args.plots / name: csv_bytes(frame) for name, frame in plots.items()}})
    print(f"evaluate@{args.task}, mean over {len(per_seed)} seed(s): " + ", ".join(
        f"{k} {v:.4g}" for k, v in document["mean"].items() if k.startswith(("test/", "ood/")) and "digit" not in k))


if __name__ == "__main__":
    run_stage("evaluate", main)
