"""The two training engines side by side on the lab's three tasks, with the lab defaults.

    python -m benchmarks.training [--scale S] [--json] [--seeds N] [--cases synthetic,heart,mnist]
                                  [--lab-fit] [--keras-spe]

For each case both engines train the same network on the same real data (the processed splits,
built in memory from the data mirror: DNNLAB_DATA_MIRROR, else ../shared/data). Every run has a
Python process of its own, as a train stage has, and trains through the train core
(stages.training.core). Seconds are the wall time of the engine, XLA
compilation included, imports and data loading not. Reported per case and engine: seconds, the
final model's validation loss, and a test metric (synthetic: MSE / mean(y_test)^2; heart: ROC
AUC; mnist: accuracy), then the ratio fit / compiled. Both engines take the same batches in the
same order, so for each seed their final validation losses can be compared one to one: the
largest same-seed difference is printed. With --seeds N each engine runs with seeds seed,
seed+1, ... (same data) and the figures are medians; the ranges of the validation loss say
whether the compiled engine's lies within (or below) fit's. --scale 0.1 runs a tenth of the
epochs. --lab-fit adds a third row, `model.fit` on the arrays as the lab writes it (the issue's
baseline; its ratio to compiled in parentheses). --keras-spe adds two rows, the fit engine with
model.compile(steps_per_execution=<steps per epoch>), Keras' own answer to per-step overhead, without
XLA (keras_spe) and with it (keras_spe_xla): same batches, one call per epoch; ratios as --lab-fit's.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stages.core.params import Params
from stages.tasks import TASK_NAMES, build_splits, load_params, load_task
from tests.conftest import default_mirror

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE_ORDER = ("fit", "compiled")
LAB_FIT = "lab_fit"  # with --lab-fit: model.fit on the arrays with shuffle=True, as the lab writes it
# With --keras-spe: the fit engine compiled with steps_per_execution = steps per epoch, Keras' own
# answer to per-step overhead, without and with XLA.
KERAS_SPE, KERAS_SPE_XLA = "keras_spe", "keras_spe_xla"
LAB_ORDER = tuple(sorted(TASK_NAMES, key=lambda name: load_task(name).LAB_PART))


@dataclasses.dataclass(frozen=True)
class CaseData:
    x: np.ndarray   # the train split; the train core holds out its last share for validation
    y: np.ndarray
    evaluation: dict  # the splits the task's evaluation takes, for its headline test metric


@dataclasses.dataclass(frozen=True)
class Run:
    seconds: float
    val_loss: float
    test_metric: float
    epochs_run: int


def load_case(name: str, params: Params, mirror: Path) -> CaseData:
    """The processed train split as arrays, and the splits the task evaluates on."""
    task, splits = load_task(name), build_splits(name, params, mirror)
    return CaseData(*task.features_and_target(splits["train"]),
                    {split: splits[split] for split in task.EVALUATION_SPLITS})


def test_metric(name: str, model, data: CaseData) -> float:
    """The task's headline test metric, computed by the task's own evaluation."""
    task = load_task(name)
    metrics, _ = task.evaluate(lambda x: np.asarray(model(x, training=False)), data.evaluation)
    return float(metrics[task.HEADLINE_METRIC])


def train_as_the_lab_writes_it(model, task, config, x_train, y_train, x_val, y_val, seed):
    """`model.fit` on the arrays with shuffle=True: the issue's baseline. Under a fixed TensorFlow seed
    Keras repeats the first epoch's order every epoch (see stages.training.engine.train_with_fit), and
    rebuilds its input pipeline every epoch, so it is slower than the fit engine for the same work."""
    from stages.training.engine import compile_for_fit, learning_curve
    callbacks = compile_for_fit(model, task, config, seed)
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    return learning_curve(history.history, task)


def fit_one_execution_per_epoch(jit_compile: bool):
    """The fit engine, with model.compile(steps_per_execution=<steps per epoch>, jit_compile=...):
    the same tf.data batches, one call into the compiled step function per epoch."""
    from stages.training.engine import train_with_fit

    def train(model, task, config, x_train, y_train, x_val, y_val, seed):
        steps_per_epoch = math.ceil(len(x_train) / min(config.batch_size, len(x_train)))
        if jit_compile:
            # Keras quietly compiles without XLA while TensorFlow's op determinism is on (the train
            # core turns it on): off for this run, in a process of its own. No public API turns it off.
            from tensorflow.python.framework import config as tf_config
            tf_config.disable_op_determinism()
        return train_with_fit(model, task, config, x_train, y_train, x_val, y_val, seed,
                              steps_per_execution=steps_per_epoch, jit_compile=jit_compile)
    return train


def benchmark_engines() -> dict:
    """The lab's engines, and the baselines only benchmarks run."""
    from stages.training.engine import ENGINE_TRAINERS
    return {**ENGINE_TRAINERS, LAB_FIT: train_as_the_lab_writes_it,
            KERAS_SPE: fit_one_execution_per_epoch(jit_compile=False),
            KERAS_SPE_XLA: fit_one_execution_per_epoch(jit_compile=True)}


def train_in_fresh_process(dataset: str, engine: str, seed: int, scale: float, params_file: str) -> Run:
    """One training run in a new Python process, as a train stage runs: no run inherits another's
    traced functions, heap or threads (within one process, later runs took up to 50 % longer)."""
    command = [sys.executable, "-m", "benchmarks.training", "--params", params_file, "--scale", repr(scale),
               "--worker", dataset, engine, str(seed)]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"benchmarks.training: the {engine} run of {dataset}, seed {seed}, failed "
                         f"(exit code {result.returncode}); its messages are above")
    return Run(**json.loads(result.stdout))


def train_once(dataset: str, params: Params, engine: str, data: CaseData, seed: int, scale: float) -> Run:
    from stages.training.core import split_validation, train_network
    from stages.training.engine import LOSS_FUNCTIONS

    config = params.task(dataset)
    train_config = config.train.model_copy(update={"engine": engine,
                                                   "epochs": max(1, round(config.train.epochs * scale))})
    task = load_task(dataset).PROBLEM
    timed = TimedEngine(benchmark_engines()[engine])
    trained = train_network(task, config.model, train_config, data.x, data.y, seed, engine=timed)
    # The final model's validation loss (the restored best one under early stopping), measured
    # the same way for every engine: the training loss function plus any l2 penalty.
    model = trained.model
    _, (x_val, y_val) = split_validation(data.x, data.y, train_config.validation_split)
    val_predictions = model(x_val, training=False)
    val_loss = float(LOSS_FUNCTIONS[task.kind]()(y_val, val_predictions) + sum(model.losses, 0.0))
    return Run(timed.seconds, val_loss, test_metric(dataset, model, data), len(trained.curve))


class TimedEngine:
    """An engine that times itself: the wall time of training alone, after the core has built the model."""

    def __init__(self, engine):
        self.engine, self.seconds = engine, float("nan")

    def __call__(self, *args):
        # A full collection over TensorFlow's heap takes ~0.2 s: do it here, and freeze the survivors,
        # so that no such pause lands at random inside one engine's timing.
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        curve = self.engine(*args)
        self.seconds = time.perf_counter() - started
        gc.unfreeze()
        return curve


def run_case(dataset: str, seeds: list[int], scale: float, engines: tuple[str, ...], params_file: str) -> dict:
    runs: dict[str, list[Run]] = {engine: [] for engine in engines}
    for seed in seeds:
        for engine in engines:
            print(f"{dataset}: {engine}, seed {seed}", file=sys.stderr, flush=True)
            run = train_in_fresh_process(dataset, engine, seed, scale, params_file)
            print(f"{dataset}: {engine}, seed {seed}: {run.seconds:.2f} s, val loss {run.val_loss:.6g}",
                  file=sys.stderr, flush=True)
            runs[engine].append(run)

    def median(engine: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs[engine])

    case = {"name": dataset}
    for engine in engines:
        case[f"{engine}_seconds"] = median(engine, "seconds")
        case[f"{engine}_val_loss"] = median(engine, "val_loss")
        case[f"{engine}_test_metric"] = median(engine, "test_metric")
        case[f"{engine}_epochs"] = median(engine, "epochs_run")
    case["ratio"] = case["fit_seconds"] / case["compiled_seconds"]
    for engine in engines[len(ENGINE_ORDER):]:  # the optional baselines, each against compiled
        case[f"{engine}_ratio"] = case[f"{engine}_seconds"] / case["compiled_seconds"]
    # Both engines take the same batches in the same order: per seed, how far apart they end.
    case["val_loss_largest_same_seed_difference"] = max(
        abs(fit.val_loss - compiled.val_loss) for fit, compiled in zip(runs["fit"], runs["compiled"]))
    if len(seeds) > 1:
        for engine in engines:
            losses = [run.val_loss for run in runs[engine]]
            case[f"{engine}_val_loss_range"] = [min(losses), max(losses)]
        fit_low, fit_high = case["fit_val_loss_range"]
        compiled_high = case["compiled_val_loss_range"][1]
        case["compiled_val_loss_vs_fit"] = ("below" if compiled_high < fit_low
                                            else "within or below" if compiled_high <= fit_high else "above")
    return case


def print_table(cases: list[dict], seeds: list[int], scale: float, engines: tuple[str, ...]) -> None:
    print(f"training engines, lab defaults, scale {scale:g}, seeds {seeds} (medians over seeds)")
    print(f"{'case':<10} {'engine':<13} {'epochs':>6} {'seconds':>9} {'val loss':>9} {'test metric':>24} "
          f"{'fit/compiled':>13}")
    for case in cases:
        name = case["name"]
        for engine in engines:
            ratio = (f"{case['ratio']:.1f}x" if engine == "compiled"
                     else f"({case[f'{engine}_ratio']:.1f}x)" if engine not in ENGINE_ORDER else "")
            metric = f"{load_task(name).HEADLINE_METRIC} {case[f'{engine}_test_metric']:.4f}"
            print(f"{name:<10} {engine:<13} {case[f'{engine}_epochs']:>6g} {case[f'{engine}_seconds']:>9.2f} "
                  f"{case[f'{engine}_val_loss']:>9.4f} {metric:>24} {ratio:>13}")
        print(f"{'':<10} same seed, fit vs compiled val loss: at most "
              f"{case['val_loss_largest_same_seed_difference']:.2g} apart")
        if "compiled_val_loss_vs_fit" in case:
            fit_low, fit_high = case["fit_val_loss_range"]
            compiled_low, compiled_high = case["compiled_val_loss_range"]
            print(f"{'':<10} val loss ranges: fit [{fit_low:.4f}, {fit_high:.4f}], compiled "
                  f"[{compiled_low:.4f}, {compiled_high:.4f}]: compiled {case['compiled_val_loss_vs_fit']} fit's")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="share of the configured epochs to run (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per engine (default 1)")
    parser.add_argument("--cases", default=",".join(LAB_ORDER), help="comma-separated cases (default all)")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--lab-fit", action="store_true",
                        help="also time model.fit on the arrays with shuffle=True, as the lab writes it")
    parser.add_argument("--keras-spe", action="store_true",
                        help="also time model.fit compiled with steps_per_execution = steps per epoch, "
                             "without and with XLA (jit_compile)")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "ENGINE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:  # one run, in the process the parent started for it; its figures as JSON
        dataset, engine, seed = args.worker
        params = load_params(args.params)
        data = load_case(dataset, params, default_mirror())
        print(json.dumps(dataclasses.asdict(train_once(dataset, params, engine, data, int(seed), args.scale))))
        return

    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in cases if name not in TASK_NAMES]
    if unknown or not cases:
        parser.error(f"--cases: unknown {', '.join(unknown) or '(none given)'}; allowed: {', '.join(LAB_ORDER)}")
    if args.scale <= 0 or args.seeds < 1:
        parser.error("--scale must be > 0 and --seeds >= 1")

    params = load_params(args.params)  # refuses a bad params file before any run
    seeds = [params.seed + index for index in range(args.seeds)]
    load_before = os.getloadavg()[0]
    engines = (ENGINE_ORDER + ((LAB_FIT,) if args.lab_fit else ())
               + ((KERAS_SPE, KERAS_SPE_XLA) if args.keras_spe else ()))
    params_file = str(Path(args.params).resolve())  # the workers run from the repository root
    results = [run_case(name, seeds, args.scale, engines, params_file) for name in cases]
    # Timings are only comparable on an otherwise idle machine: the load says how idle it was.
    load = {"cpus": os.cpu_count(), "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps({"scale": args.scale, "seeds": seeds, "machine": load, "cases": results}, indent=2))
    else:
        print_table(results, seeds, args.scale, engines)
        print(f"machine: {load['cpus']} CPUs, 1-min load average {load['load_1min_before']:.1f} before, "
              f"{load['load_1min_after']:.1f} after (above ~0.5, other processes shared the CPUs)")


if __name__ == "__main__":
    main()
