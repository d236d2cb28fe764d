"""What orchestration costs and saves: the pipeline flow against plain `dvc repro`, in one run.

    python -m benchmarks.orchestration [--cold] [--repo PATH] [--repeats N] [--json]
    python -m benchmarks.orchestration --iteration [--before REV] [--json]

No-op (always): wall time of a fresh process on a workspace where every stage is up to date
(median of N runs; the flow's JSON is checked to say every stage was skipped):

  dvc repro                 `dvc repro` (the baseline)
  flow, temporary server    `python -m flows.pipeline --json` with no PREFECT_API_URL: Prefect starts a
                            temporary SQLite server for the run and stops it (start-up included)
  flow, running server      the same against `prefect server start` already running on a loopback port

Cold (--cold): the whole lab at its defaults, every stage run, on the same data and machine:

  dvc repro -f              every stage, one after another (the baseline)
  flow, max_parallel=1      the pipeline flow against the running server, stages one at a time
  flow, default             the same with independent stages at once (max_parallel = CPU cores)

Before each cold flow run dvc.lock and DVC's run cache are removed, so that every stage is stale
and runs (none is restored). Per-stage seconds come from the flow's summary; training seconds
are what the train stages report for their training alone.

Iteration (--iteration, instead of the figures above): what one experiment costs beside its training,
on the lab defaults, before (a `git clone` of this repository at --before, default `main`) and after
(this checkout), each in its own temporary copy:

  stages_s                  each stage's wall time in a cold `dvc repro -f` (from DVC's "Running
                            stage" line to its "Updating lock file" line: the command, and DVC
                            hashing what it wrote)
  heart_change_s            `dvc repro` after one heart key changed (heart.model.width 64 -> 48):
                            configure@, train@, evaluate@heart and report
  synthetic_variation_s     `dvc exp run -S synthetic.model.width=48`: one study variation
  train_heart_s, train_synthetic_s   the train stage's own wall time within its case
  heart_change_dvc_s, synthetic_variation_dvc_s   DVC's own part of the case: its wall time less that of
                            the stage commands it ran (each timed by a `python` first on PATH)

The last line printed is the after side's figures, with `before` holding the same for --before.

Without --repo the no-op figures use a throwaway copy with tiny epochs (`dvc repro` on the mirror
data, about 1 minute) and --cold a throwaway copy at the lab defaults. Prefect's state (SQLite)
lives in a temporary PREFECT_HOME; the first temporary-server run there creates the database and
is shown separately.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import (REPO_ROOT, build_tiny_repo, copy_source_tree, default_mirror, init_repo,
                            point_local_remote, repo_env, run)
from tests.servers import running_prefect_server

# The train stage's own summary line (stages/train.py), not DVC's output: its training seconds.
TRAINING_LINE = re.compile(r"^train@\S+: .* epochs in ([0-9.]+) s", re.M)


def timed(command: list[str], repo: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"orchestration: error: {' '.join(command)} exited {result.returncode}:\n"
                         f"{result.stderr[-2000:]}")
    return seconds, result.stdout + result.stderr


RUNNING = re.compile(r"^Running stage '([^']+)'")
LOCKED = re.compile(r"^(Updating lock file|Ran experiment)")
HEART_CHANGE = {"heart.model.width": 48}
SYNTHETIC_VARIATION = ["dvc", "exp", "run", "-S", "synthetic.model.width=48"]


def timed_stages(command: list[str], repo: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """The command's wall time, and each stage's it ran: DVC's output read as it comes, line by line."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    current, since, tail = None, 0.0, []
    with subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            now, tail = time.perf_counter(), (tail + [line])[-40:]
            if current and (LOCKED.match(line) or RUNNING.match(line)):
                stages[current], current = round(now - since, 2), None
            if match := RUNNING.match(line):
                current, since = match.group(1), now
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"orchestration: error: {' '.join(command)} exited {process.returncode}:\n{''.join(tail)}")
    return seconds, stages


# A `python` first on PATH for the stage commands DVC runs: it runs the real one and appends its start and
# end to $COMMAND_TIMES, so that what is left of a case's wall time is DVC's own work.
TIMING_PYTHON = """#!/bin/sh
start=$(date +%s.%N)
"{python}" "$@"
status=$?
echo "$start $(date +%s.%N)" >> "$COMMAND_TIMES"
exit $status
"""


def timed_commands(env: dict[str, str], folder: Path) -> tuple[dict[str, str], Path]:
    """The environment whose stage commands are timed, and the file the times go to."""
    folder.mkdir(parents=True, exist_ok=True)
    shim, times = folder / "python", folder / "times.txt"
    shim.write_text(TIMING_PYTHON.format(python=sys.executable))
    shim.chmod(0o755)
    times.write_text("")
    return {**env, "PATH": f"{folder}{os.pathsep}{env['PATH']}", "COMMAND_TIMES": str(times)}, times


def commands_seconds(times: Path) -> float:
    return sum(float(end) - float(start) for start, end in (line.split() for line in times.read_text().splitlines()))


def iteration_side(repo: Path, env: dict[str, str]) -> dict:
    """Cold per-stage times, then a heart change through `dvc repro`, then one synthetic `dvc exp run`."""
    from tests.conftest import set_params

    _, stages = timed_stages(["dvc", "repro", "-f"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "lab defaults built", "--allow-empty"], repo, env)
    set_params(repo, HEART_CHANGE)
    case_env, times = timed_commands(env, repo.parent / f"{repo.name}-heart-commands")
    heart_s, heart_stages = timed_stages(["dvc", "repro"], repo, case_env)
    heart_dvc_s = heart_s - commands_seconds(times)
    # Back to the lab defaults: params, lock and metrics files from the commit (not `git checkout -- .`:
    # core.autostage left the heart change's dvc.lock in the index), then the outputs they record.
    run(["git", "reset", "-q", "--hard"], repo, env)
    timed(["dvc", "checkout", "-f"], repo, env)
    status = run(["dvc", "status", "--json"], repo, env).stdout.strip()
    if status not in ("{}", ""):
        raise SystemExit(f"orchestration: error: not back at the lab defaults before the variation: {status}")
    case_env, times = timed_commands(env, repo.parent / f"{repo.name}-variation-commands")
    variation_s, variation_stages = timed_stages(SYNTHETIC_VARIATION, repo, case_env)
    variation_dvc_s = variation_s - commands_seconds(times)
    return {"stages_s": stages, "heart_change_s": round(heart_s, 2), "train_heart_s": heart_stages["train@heart"],
            "heart_change_stages_s": heart_stages, "heart_change_dvc_s": round(heart_dvc_s, 2),
            "synthetic_variation_s": round(variation_s, 2), "train_synthetic_s": variation_stages["train@synthetic"],
            "synthetic_variation_stages_s": variation_stages, "synthetic_variation_dvc_s": round(variation_dvc_s, 2)}


def iteration_figures(before: str, env: dict[str, str], scratch: Path) -> dict:
    """The iteration figures of this checkout, and under `before` those of the commit `before`."""
    old = scratch / "before"
    run(["git", "clone", "-q", str(REPO_ROOT), str(old)], scratch, env)
    run(["git", "checkout", "-q", before], old, env)
    point_local_remote(old, scratch / "before-remote")
    rev = run(["git", "rev-parse", "--short", "HEAD"], old, env).stdout.strip()
    old_figures = iteration_side(old, env)
    return {**iteration_side(lab_default_repo(scratch / "after", env), env), "before": {"rev": rev, **old_figures}}


def print_iteration(report: dict) -> None:
    before = report["before"]
    print(f"lab defaults, cold dvc repro -f, seconds per stage (before: {before['rev']}, after: this checkout)")
    print(f"{'stage':<22} {'before':>8} {'after':>8}")
    for name in report["stages_s"]:
        print(f"{name:<22} {before['stages_s'].get(name, float('nan')):>8.2f} {report['stages_s'][name]:>8.2f}")
    for label, case, train in (("heart change (dvc repro)", "heart_change_s", "train_heart_s"),
                               ("synthetic variation (dvc exp run)", "synthetic_variation_s", "train_synthetic_s")):
        print(f"{label}: before {before[case]} s (train {before[train]} s, DVC's own {before[f'{case[:-2]}_dvc_s']} s), "
              f"after {report[case]} s (train {report[train]} s, DVC's own {report[f'{case[:-2]}_dvc_s']} s)")


def flow_run(repo: Path, env: dict[str, str], *options: str) -> tuple[float, dict]:
    seconds, output = timed([sys.executable, "-m", "flows.pipeline", "--json", *options], repo, env)
    return seconds, json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


def noop_flow_seconds(repo: Path, env: dict[str, str]) -> float:
    seconds, summary = flow_run(repo, env)
    statuses = {stage["status"] for stage in summary["stages"]}
    if statuses != {"skipped"}:
        raise SystemExit(f"orchestration: error: {repo} is not up to date (stage statuses {statuses}): "
                         "run `dvc repro` there first, or leave out --repo")
    return seconds


def make_stale(repo: Path) -> None:
    """Every stage stale and nothing to restore: no dvc.lock, no run cache (outputs stay, as persist keeps them)."""
    (repo / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)


def cold_flow(repo: Path, env: dict[str, str], *options: str) -> tuple[float, dict]:
    make_stale(repo)
    seconds, summary = flow_run(repo, env, *options)
    if {stage["status"] for stage in summary["stages"]} != {"ran"}:
        raise SystemExit(f"orchestration: error: a cold flow run skipped or failed stages: {summary['stages']}")
    return seconds, {stage["name"]: stage["seconds"] for stage in summary["stages"]}


def cold_figures(repo: Path, env: dict[str, str], client_env: dict[str, str]) -> dict:
    repro_s, output = timed(["dvc", "repro", "-f"], repo, env)
    serial_s, serial_stages = cold_flow(repo, client_env, "--max-parallel", "1")
    parallel_s, parallel_stages = cold_flow(repo, client_env)
    return {"dvc_repro_s": round(repro_s, 1), "flow_serial_s": round(serial_s, 1),
            "flow_parallel_s": round(parallel_s, 1),
            "training_s": round(sum(float(s) for s in TRAINING_LINE.findall(output)), 1),
            "stages_serial_s": serial_stages, "stages_parallel_s": parallel_stages}


def noop_figures(repo: Path, env: dict[str, str], client_env: dict[str, str], repeats: int) -> dict:
    runs: dict[str, list[float]] = {"dvc_repro_s": [], "flow_temp_server_s": [], "flow_server_s": []}
    first_temporary = noop_flow_seconds(repo, env)  # creates Prefect's SQLite database in PREFECT_HOME
    noop_flow_seconds(repo, client_env)  # the server's first flow run registers the flows
    for _ in range(repeats):
        runs["dvc_repro_s"].append(timed(["dvc", "repro"], repo, env)[0])
        runs["flow_temp_server_s"].append(noop_flow_seconds(repo, env))
        runs["flow_server_s"].append(noop_flow_seconds(repo, client_env))
    return {**{name: round(statistics.median(values), 2) for name, values in runs.items()},
            "runs": {name: [round(value, 2) for value in values] for name, values in runs.items()},
            "first_temporary_server_run_s": round(first_temporary, 2)}


def lab_default_repo(destination: Path, env: dict[str, str]) -> Path:
    repo = copy_source_tree(destination)
    init_repo(repo, env)
    return repo


def print_table(report: dict) -> None:
    if "cold" in report:
        cold = report["cold"]
        print(f"cold, lab defaults: dvc repro -f {cold['dvc_repro_s']} s (of which training {cold['training_s']} s); "
              f"flow max_parallel=1 {cold['flow_serial_s']} s; flow default {cold['flow_parallel_s']} s "
              f"({cold['flow_parallel_s'] / cold['dvc_repro_s']:.2f} x dvc repro)")
        print(f"{'stage':<22} {'serial s':>9} {'parallel s':>11}")
        for name, seconds in cold["stages_serial_s"].items():
            print(f"{name:<22} {seconds:>9.1f} {cold['stages_parallel_s'][name]:>11.1f}")
    noop = report["noop"]
    print(f"no-op: dvc repro {noop['dvc_repro_s']} s; flow with a temporary server {noop['flow_temp_server_s']} s; "
          f"against a running server {noop['flow_server_s']} s (first temporary-server run "
          f"{noop['first_temporary_server_run_s']} s)")


def iteration_main(before: str, json_only: bool, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory(prefix="dnnlab-iteration-") as scratch:
        load_before = os.getloadavg()[0]
        report = iteration_figures(before, env, Path(scratch))
        report["machine"] = {"cpus": os.cpu_count(), "load_1min_before": load_before,
                             "load_1min_after": os.getloadavg()[0]}
    if not json_only:
        print_iteration(report)
    print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also time whole cold runs at the lab defaults")
    parser.add_argument("--repo", type=Path, help="an up-to-date, built repository copy (default: build one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iteration", action="store_true",
                        help="instead: per-stage cold times, a heart change and a synthetic variation, before and after")
    parser.add_argument("--before", default="main", help="with --iteration: the commit to compare with (default: main)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected an integer >= 1")
    mirror = default_mirror()
    if args.iteration:
        return iteration_main(args.before, args.json, repo_env(mirror))

    with tempfile.TemporaryDirectory(prefix="dnnlab-orchestration-") as scratch:
        scratch_path = Path(scratch)
        env = repo_env(mirror, PREFECT_HOME=str(scratch_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with running_prefect_server(env, scratch_path) as client_env:
            report = {"machine": {"cpus": os.cpu_count(), "load_1min_before": os.getloadavg()[0]}}
            if args.cold:
                lab = lab_default_repo(scratch_path / "lab", env)
                report["cold"] = cold_figures(lab, env, client_env)
                repo = args.repo.resolve() if args.repo else lab  # up to date after the cold runs
            else:
                repo = args.repo.resolve() if args.repo else build_tiny_repo(scratch_path / "repo", mirror)
            report["noop"] = noop_figures(repo, env, client_env, args.repeats)
            report["machine"]["load_1min_after"] = os.getloadavg()[0]
    if not args.json:
        print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
