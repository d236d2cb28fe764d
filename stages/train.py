"""Stage `train@<task>`: the dense network on the task's processed train split, one per training seed.

Reads its settings from the config file configure@<task> resolved from params.yaml: `train.seeds`
networks from seeds `seed`, `seed`+1, ..., trained side by side by the `compiled` engine. Writes the
first seed's model (`.keras`) and, with `--export`, the same network for an inference runtime (LiteRT
`.tflite`: stages/training/export.py), the one a user scores with; with `--seed-exports`, every seed's
network for LiteRT, which evaluate@<task> measures. The learning curve (one row per epoch: train and
validation loss, and accuracy for the classifiers) is each epoch's mean over the seeds; `--band` adds
its 95 % interval, `--seed-curves` every seed's curve (stages/spread.py). With `--live`, dvclive's
step-wise metrics of the first seed as it trains.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import zipfile
from pathlib import Path

from stages.core.contract import EXPORT_SUFFIX, SEED_EXPORT_PREFIX
from stages.core.errors import StageError, run_stage
from stages.core.io import csv_bytes, read_split, staged_path, write_outputs
from stages.core.params import ParamsError, TrainingConfig, require_network_fits
from stages.spread import curve_band, mean_curve, seed_curves
from stages.tasks import TASK_NAMES, load_task


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date, which Keras gives its other entries


def make_reproducible(keras_file: Path) -> None:
    """Rewrite a .keras archive without what changes from one save of the same model to the next:
    the save time (metadata.json's date_saved, the weights entry's zip date) and the memory
    addresses Keras numbers shared objects by in config.json (renumbered 1, 2, ... in order).
    The same weights then give the same bytes, so dvc.lock keeps the model's hash and a retrain
    that changes nothing reruns nothing after it."""
    with zipfile.ZipFile(keras_file) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(keras_file, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = json.dumps(renumber_shared_objects(json.loads(data))).encode()
            info.date_time = ZIP_EPOCH
            archive.writestr(info, data)


def renumber_shared_objects(config):
    """Replace each `shared_object_id` (Python's id() of the object) with its rank of first appearance."""
    numbers: dict[int, int] = {}

    def walk(node):
        if isinstance(node, dict):
            if "shared_object_id" in node:
                node["shared_object_id"] = numbers.setdefault(node["shared_object_id"], len(numbers) + 1)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return config


def read_config(path: Path, task: str) -> TrainingConfig:
    try:
        return TrainingConfig.model_validate_json(path.read_bytes())
    except (OSError, ValueError):  # missing, or not what configure writes
        raise ParamsError(f"{path}: missing or not a training config; run `dvc repro configure@{task}`") from None


@contextlib.contextmanager
def epoch_log(task: str, live: Path | None, epochs: int):
    """The training engine's epoch log and its subscribers: dvclive with `--live`, and the Prefect progress
    artifact when the flow that runs this stage made one; None when neither (the engine then logs nothing)."""
    from stages.core.tracking import training_progress
    from stages.training.live import EpochLogs, LiveLog

    with contextlib.ExitStack() as subscribed:
        logs = [subscribed.enter_context(LiveLog(live, task))] if live else []
        if (progress := training_progress("train", epochs)) is not None:
            logs.append(subscribed.enter_context(progress))
        yield EpochLogs(logs) if logs else None


def seed_export_name(seed: int) -> str:
    """A seed's network in the --seed-exports folder, which evaluate@<task> reads back (`seed_of`)."""
    return f"{SEED_EXPORT_PREFIX}{seed}{EXPORT_SUFFIX}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--config", type=Path, required=True,
                        help="the task's training config, resolved from params.yaml by configure@TASK")
    parser.add_argument("--data", type=Path, required=True, help="the task's processed folder")
    parser.add_argument("--model", type=Path, required=True, help="where to save the first seed's .keras model")
    parser.add_argument("--curve", type=Path, required=True,
                        help="where to write learning_curve.csv: each epoch's mean over the seeds")
    parser.add_argument("--band", type=Path, help="where to write the curves' mean and 95 %% interval over the "
                                                  "seeds, one row per epoch and curve (learning_curve_band.csv)")
    parser.add_argument("--seed-curves", type=Path, help="where to write every seed's learning curve (seed_curves.csv)")
    parser.add_argument("--export", type=Path, help=f"where to export the first seed's network for LiteRT ({EXPORT_SUFFIX})")
    parser.add_argument("--seed-exports", type=Path, help=f"a folder for every seed's network for LiteRT "
                                                          f"({seed_export_name(42)}, ...), which evaluate reads")
    parser.add_argument("--live", type=Path, help="a folder for dvclive's step-wise metrics (one step per epoch), "
                                                  "which DVC shows while the experiment runs")
    args = parser.parse_args(argv)
    if args.export is not None and args.export.suffix != EXPORT_SUFFIX:
        parser.error(f"--export {args.export}: a LiteRT model's name ends in {EXPORT_SUFFIX}")

    config = read_config(args.config, args.task)
    task = load_task(args.task)
    x, y = task.features_and_target(read_split(args.data, "train"))
    seeds = config.training_seeds
    require_network_fits(args.task, config.model, config.train.batch_size, x.shape[1], task.PROBLEM.outputs,
                         replicas=len(seeds))

    from stages.training.core import ValidationSplitError, train_networks
    side_by_side = f", {len(seeds)} seeds ({seeds[0]}-{seeds[-1]})" if len(seeds) > 1 else f", seed {seeds[0]}"
    print(f"train@{args.task}: {len(x)} rows, {config.train.epochs} epochs, batch {config.train.batch_size}, "
          f"engine {config.train.engine}{side_by_side}", flush=True)
    started = time.perf_counter()
    try:
        with epoch_log(args.task, args.live, config.train.epochs) as log:
            trained = train_networks(task.PROBLEM, config.model, config.train, x, y, seeds, log=log)
    except ValidationSplitError as error:
        raise StageError(f"{args.task}.train.validation_split: {error}") from None
    first = trained[0]
    curves = {seed: network.curve for seed, network in zip(seeds, trained)}
    last = first.curve.iloc[-1]
    print(f"train@{args.task}: {first.model.name}, {first.train_rows} train / {first.validation_rows} validation "
          f"rows, {len(first.curve)} epochs in {time.perf_counter() - started:.1f} s; seed {seeds[0]}: "
          f"train/loss {last['train/loss']:.4g}, val/loss {last['val/loss']:.4g}", flush=True)

    outputs = {args.curve: csv_bytes(mean_curve(curves))}
    if args.band:
        outputs[args.band] = csv_bytes(curve_band(curves))
    if args.seed_curves:
        outputs[args.seed_curves] = csv_bytes(seed_curves(curves))
    exports = {}
    if args.export or args.seed_exports:
        from stages.training.export import exported_network

        exports = {seed: exported_network(network.model) for seed, network in zip(seeds, trained)}
    if args.export:
        outputs[args.export] = exports[seeds[0]]
    if args.seed_exports:
        outputs.update({args.seed_exports / seed_export_name(seed): data for seed, data in exports.items()})
    with staged_path(args.model) as temp_model:
        first.model.save(temp_model)
        make_reproducible(temp_model)
        write_outputs(outputs)
    if args.seed_exports:
        for stale in set(args.seed_exports.glob(f"*{EXPORT_SUFFIX}")) - set(outputs):  # seeds of an earlier run
            stale.unlink()


if __name__ == "__main__":
    run_stage("train", main)
