"""What seeds cost a study: the default study's variations with 5 seeds against the same with 1, in one run.

    python -m benchmarks.study [--seeds 5] [--only NAME,...] [--json]

In a temporary copy of this checkout at the lab defaults (its outputs pulled from this checkout's DVC
cache, without its run cache: run `dvc repro` here first), for each seed count: every task the variations touch is set to
that many seeds and `dvc repro` builds that baseline (not timed), then each variation of params.yaml's
study runs as `dvc exp run -S key=value ...` in the workspace, one after another, timed: its stages,
DVC and process start-up included, as the study's queue runs them. MNIST variations are left out (the
issue's exception: MNIST is compute-bound, 5 seeds cost about 5 times 1), and so MNIST is never retrained.
Printed last, as JSON with --json: `{"one_seed_s": {variation: seconds, ...}, "seeds_s": {...},
"one_seed_total_s": ..., "seeds_total_s": ..., "ratio": ..., "seeds": 5, "load": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.orchestration import lab_default_repo, timed
from flows.dvc_adapter import override_text
from stages.tasks import load_params
from tests.conftest import REPO_ROOT, default_mirror, repo_env, run, set_params

SKIPPED_TASK = "mnist"  # compute-bound: its variations are the stated exception
SEEDED_TASKS = ("synthetic", "heart")  # whose seeds a run sets: never MNIST's, so it stays as built


def study_variations(only: list[str] | None) -> list:
    variations = [v for v in load_params(REPO_ROOT / "params.yaml").study
                  if not any(key.startswith(f"{SKIPPED_TASK}.") for key, _ in v.overrides)]
    return [v for v in variations if not only or v.name in only]


def run_at(repo: Path, env: dict[str, str], variations, seeds: int) -> dict[str, float]:
    """The baseline built at `seeds` seeds (untimed), then each variation's `dvc exp run`, timed."""
    set_params(repo, {f"{task}.train.seeds": seeds for task in SEEDED_TASKS})
    print(f"study: baseline at {seeds} seed(s)", file=sys.stderr, flush=True)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", f"baseline at {seeds} seeds", "--allow-empty"], repo, env)
    times = {}
    for variation in variations:
        sets = [arg for key, value in variation.overrides for arg in ("-S", override_text(key, value))]
        seconds, _ = timed(["dvc", "exp", "run", "-n", f"{variation.name}-{seeds}", *sets], repo, env)
        run(["git", "checkout", "--", "."], repo, env)  # back to the baseline: params, lock, metrics files
        run(["dvc", "checkout", "-f"], repo, env)       # and the outputs they record
        times[variation.name] = round(seconds, 2)
        print(f"study: {variation.name} at {seeds} seed(s): {seconds:.1f} s", file=sys.stderr, flush=True)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="the seed count set against one (default 5)")
    parser.add_argument("--only", help="comma-separated variation names (default: every non-MNIST one)")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON")
    args = parser.parse_args(argv)
    variations = study_variations(args.only.split(",") if args.only else None)
    if not variations:
        parser.error("--only: no such non-MNIST variation in params.yaml's study")
    env = repo_env(default_mirror())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dnnlab-study-bench-") as scratch:
        repo = lab_default_repo(Path(scratch) / "repo", env)
        # The committed outputs pulled from this checkout's cache (laid out as a DVC remote), not rebuilt (MNIST's
        # minute of training); into the copy's own cache, without run-cache entries: every variation runs.
        (repo / ".dvc" / "config.local").write_text(f"['remote \"checkout\"']\n    url = {REPO_ROOT / '.dvc' / 'cache'}\n")
        run(["dvc", "pull", "-r", "checkout"], repo, env)
        one = run_at(repo, env, variations, 1)
        many = run_at(repo, env, variations, args.seeds)
    report = {"one_seed_s": one, "seeds_s": many, "one_seed_total_s": round(sum(one.values()), 2),
              "seeds_total_s": round(sum(many.values()), 2), "seeds": args.seeds,
              "load": {"cpus": os.cpu_count(), "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}}
    report["ratio"] = round(report["seeds_total_s"] / report["one_seed_total_s"], 3)
    if not args.json:
        print(f"{'variation':<18} {'1 seed':>8} {f'{args.seeds} seeds':>9} {'ratio':>6}")
        for name in one:
            print(f"{name:<18} {one[name]:>7.1f}s {many[name]:>8.1f}s {many[name] / one[name]:>5.2f}x")
        print(f"{'total':<18} {report['one_seed_total_s']:>7.1f}s {report['seeds_total_s']:>8.1f}s "
              f"{report['ratio']:>5.2f}x   (load {load_before:.2f} before, on {os.cpu_count()} CPUs)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
