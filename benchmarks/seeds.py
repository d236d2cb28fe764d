"""Seeds trained side by side (stages/training/replicas.py) against one seed, on the lab's three tasks.

    python -m benchmarks.seeds [--scale S] [--cases synthetic,heart,mnist] [--json]

For each task, in fresh Python processes (as a train stage runs), with the lab defaults and real data
(the processed splits built in memory from the data mirror: DNNLAB_DATA_MIRROR, else ../shared/data):
- `train_compiled`, the engine the train stage runs today, with the first seed;
- the side-by-side engine with that seed alone, and with five seeds counted from it.
Seconds are the training's wall time (XLA compilation included; imports and data loading not). Then,
per task: the headline test metric of each of the five seeds, their mean, 95 % interval and standard
deviation (stages/spread.py), and how far the first seed trained alone lands from it trained among the
five (none: stages/training/replicas.py says where it could), against a tenth of the standard deviation.
Printed last, as JSON with --json:
`{"synthetic": {"one_seed_s": …, "five_seeds_s": …, …}, "heart": {…}, "mnist": {…}, "load": {…}}`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.training import LAB_ORDER, load_case, test_metric
from stages.spread import spread
from stages.tasks import TASK_NAMES, load_params, load_task
from tests.conftest import default_mirror

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDS = 5


def train_once(dataset: str, engine: str, seeds: list[int], scale: float) -> dict:
    """One training run in this process: its seconds and each seed's headline test metric."""
    from stages.training.core import seed_everything, split_validation
    from stages.training.engine import train_compiled
    from stages.training.model import build_model
    from stages.training.replicas import train_seeds_compiled

    params = load_params(REPO_ROOT / "params.yaml")
    config = params.task(dataset)
    train_config = config.train.model_copy(update={"epochs": max(1, round(config.train.epochs * scale))})
    problem = load_task(dataset).PROBLEM
    data = load_case(dataset, params, default_mirror())
    (x_train, y_train), (x_val, y_val) = split_validation(data.x, data.y, train_config.validation_split)
    seed_everything(seeds[0])
    models = [build_model(config.model, data.x.shape[1], problem, seed) for seed in seeds]
    gc.collect()
    gc.freeze()  # no collection of TensorFlow's heap lands inside the timing
    started = time.perf_counter()
    if engine == "train_compiled":
        (model,) = models
        curves = [train_compiled(model, problem, train_config, x_train, y_train, x_val, y_val, seeds[0])]
    else:
        curves = train_seeds_compiled(models, problem, train_config, x_train, y_train, x_val, y_val, seeds)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "metrics": [test_metric(dataset, model, data) for model in models],
            "epochs": [len(curve) for curve in curves]}


def train_in_fresh_process(dataset: str, engine: str, seeds: list[int], scale: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.seeds", "--scale", repr(scale), "--worker", dataset, engine,
               ",".join(map(str, seeds))]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"benchmarks.seeds: the {engine} run of {dataset} with seeds {seeds} failed "
                         f"(exit code {result.returncode}); its messages are above")
    return json.loads(result.stdout)


def run_case(dataset: str, seeds: list[int], scale: float) -> dict:
    runs = {}
    for label, engine, run_seeds in (("train_compiled", "train_compiled", seeds[:1]),
                                     ("one_seed", "side_by_side", seeds[:1]),
                                     ("all_seeds", "side_by_side", seeds)):
        print(f"{dataset}: {engine}, seeds {run_seeds}", file=sys.stderr, flush=True)
        runs[label] = train_in_fresh_process(dataset, engine, run_seeds, scale)
        print(f"{dataset}: {engine}, seeds {run_seeds}: {runs[label]['seconds']:.2f} s", file=sys.stderr, flush=True)
    metrics = runs["all_seeds"]["metrics"]
    over_seeds = spread(metrics)
    alone_vs_among = abs(runs["one_seed"]["metrics"][0] - metrics[0])
    return {
        "metric": load_task(dataset).HEADLINE_METRIC,
        "train_compiled_one_seed_s": runs["train_compiled"]["seconds"],
        "one_seed_s": runs["one_seed"]["seconds"],
        "five_seeds_s": runs["all_seeds"]["seconds"],
        "ratio": runs["all_seeds"]["seconds"] / runs["one_seed"]["seconds"],
        "seed_metrics": metrics,
        "train_compiled_metric": runs["train_compiled"]["metrics"][0],
        "mean": over_seeds.mean, "interval_95": [over_seeds.low, over_seeds.high], "seed_spread_sd": over_seeds.sd,
        "first_seed_alone_vs_among": alone_vs_among,
        "alone_vs_among_within_a_tenth_of_the_spread": alone_vs_among <= over_seeds.sd / 10,
        "epochs": runs["all_seeds"]["epochs"],
    }


def print_table(results: dict, seeds: list[int], scale: float) -> None:
    print(f"seeds side by side, lab defaults, scale {scale:g}, seeds {seeds}")
    print(f"{'task':<10} {'train_compiled':>14} {'1 seed':>8} {'5 seeds':>9} {'ratio':>6}  "
          f"{'metric: mean [95 % interval] over seeds':<44} {'alone vs among':>14}")
    for name, case in results.items():
        low, high = case["interval_95"]
        summary = f"{case['metric']} {case['mean']:.4f} [{low:.4f}, {high:.4f}]"
        print(f"{name:<10} {case['train_compiled_one_seed_s']:>13.2f}s {case['one_seed_s']:>7.2f}s "
              f"{case['five_seeds_s']:>8.2f}s "
              f"{case['ratio']:>5.2f}x  {summary:<44} {case['first_seed_alone_vs_among']:>14.2g}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="share of the configured epochs to run (default 1)")
    parser.add_argument("--cases", default=",".join(LAB_ORDER), help="comma-separated tasks (default all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "ENGINE", "SEEDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:  # one run, in the process the parent started for it; its figures as JSON
        dataset, engine, seeds = args.worker
        print(json.dumps(train_once(dataset, engine, [int(seed) for seed in seeds.split(",")], args.scale)))
        return
    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in cases if name not in TASK_NAMES]
    if unknown or not cases:
        parser.error(f"--cases: unknown {', '.join(unknown) or '(none given)'}; allowed: {', '.join(LAB_ORDER)}")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    params = load_params(REPO_ROOT / "params.yaml")
    seeds = [params.seed + index for index in range(SEEDS)]
    load_before = os.getloadavg()[0]
    results = {name: run_case(name, seeds, args.scale) for name in cases}
    # Timings are only comparable on an otherwise idle machine: the load says how idle it was.
    results["load"] = {"cpus": os.cpu_count(), "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(results))
    else:
        print_table({name: case for name, case in results.items() if name != "load"}, seeds, args.scale)
        print(f"load (1 min) {results['load']['load_1min_before']:.2f} before, "
              f"{results['load']['load_1min_after']:.2f} after, on {results['load']['cpus']} CPUs")


if __name__ == "__main__":
    main()
