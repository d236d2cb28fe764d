"""What a work pool costs and saves: one tiny 8-variation study three ways, in one run, on this machine.

    python -m benchmarks.study_pool [--json]

  pool, 1 worker     `python -m flows.study --pool NAME` with one `prefect worker --limit 1`
  pool, 2 workers    the same with two workers (each its own HOME and git identity), one run each at a time
  queue -j 2         the local default, `python -m flows.study --jobs 2` (DVC's Celery queue, 2 workers)

Each way starts from its own copy of one built tiny repository (tiny epochs) with its own bare git
remote and DVC remote folder, so nothing is reused between them; all three report to one
`prefect server start` on a loopback port. Wall time is the study command's, start to end
(baseline check, clones, training, pushes, `dvc exp pull`, the report). On one machine a worker is
not a machine: two workers share its cores, as the queue's two workers do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.conftest import build_tiny_repo, default_mirror, repo_env, run
from tests.pool_setup import add_remotes, create_pool, kill_machine, start_worker, worker_env
from tests.servers import running_prefect_server

VARIATIONS = [
    {"name": "baseline", "params": {}},
    {"name": "width-16", "params": {"synthetic.model.width": 16}},
    {"name": "width-128", "params": {"synthetic.model.width": 128}},
    {"name": "depth-1", "params": {"synthetic.model.depth": 1}},
    {"name": "depth-3", "params": {"synthetic.model.depth": 3}},
    {"name": "batch-64", "params": {"synthetic.train.batch_size": 64}},
    {"name": "l2-1e-4", "params": {"synthetic.model.l2": 1.0e-4}},
    {"name": "lr-1e-2", "params": {"synthetic.train.learning_rate": 1.0e-2}},
]


def study_copy(built: Path, folder: Path, env: dict[str, str], pooled: bool) -> Path:
    """A copy of the built repo with the 8-variation study committed (and remotes for the pool)."""
    repo = Path(shutil.copytree(built, folder / "repo", symlinks=True))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"] = {"variations": VARIATIONS}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "the benchmark's study"], repo, env)
    if pooled:
        add_remotes(repo, folder, env)
    return repo


def timed_study(repo: Path, env: dict[str, str], *options: str) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flows.study", "--json", *options], cwd=repo, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"study_pool: error: the study {' '.join(options)} exited {result.returncode}:\n"
                         f"{result.stderr[-3000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if len(summary["experiments"]) != len(VARIATIONS) or summary.get("reused"):
        raise SystemExit(f"study_pool: error: expected {len(VARIATIONS)} trained experiments: {summary}")
    return seconds, summary


def pool_figure(built: Path, folder: Path, env: dict[str, str], workers: int) -> float:
    folder.mkdir()
    repo = study_copy(built, folder, env, pooled=True)
    pool = f"bench-{workers}"
    create_pool(pool, env, folder)
    processes = []
    with (folder / "workers.log").open("w") as log:
        try:
            for index in range(workers):
                name = f"worker-{index + 1}"
                processes.append(start_worker(pool, name, worker_env(env, folder / "homes" / name, name), folder, log))
            seconds, _ = timed_study(repo, env, "--pool", pool)
        finally:
            for process in processes:
                kill_machine(process)
    return seconds


def queue_figure(built: Path, folder: Path, env: dict[str, str]) -> float:
    folder.mkdir()
    repo = study_copy(built, folder, env, pooled=False)
    seconds, _ = timed_study(repo, env, "--jobs", "2")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_pool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    mirror = default_mirror()
    with tempfile.TemporaryDirectory(prefix="dnnlab-study-pool-") as scratch:
        scratch_path = Path(scratch)
        env = repo_env(mirror, PREFECT_HOME=str(scratch_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with running_prefect_server(env, scratch_path) as env:
            report = {"machine": {"cpus": os.cpu_count(), "load_1min_before": os.getloadavg()[0]},
                      "variations": len(VARIATIONS)}
            built = build_tiny_repo(scratch_path / "built", mirror)
            report["pool_1_worker_s"] = round(pool_figure(built, scratch_path / "one", env, 1), 1)
            report["pool_2_workers_s"] = round(pool_figure(built, scratch_path / "two", env, 2), 1)
            report["queue_j2_s"] = round(queue_figure(built, scratch_path / "queue", env), 1)
            report["machine"]["load_1min_after"] = os.getloadavg()[0]
    if not args.json:
        print(f"{report['variations']} tiny variations, {report['machine']['cpus']} CPUs:")
        for label, key in (("pool, 1 worker", "pool_1_worker_s"), ("pool, 2 workers", "pool_2_workers_s"),
                           ("local queue -j 2", "queue_j2_s")):
            print(f"  {label:<18} {report[key]:>7.1f} s")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
