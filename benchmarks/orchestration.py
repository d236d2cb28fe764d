"""What Prefect costs on an up-to-date workspace: the pipeline flow against plain `dvc repro`.

    python -m benchmarks.orchestration [--repo PATH] [--repeats N] [--json]

Each figure is the wall time of a fresh process on a workspace where every stage is up to date
(median of N runs; the flow's JSON is checked to say every stage was skipped):

  dvc repro                 `dvc repro` (the baseline, measured in the same run)
  flow, temporary server    `python -m flows.pipeline --json` with no PREFECT_API_URL: Prefect starts a
                            temporary SQLite server for the run and stops it (start-up included)
  flow, running server      the same against `prefect server start` already running on a loopback port

Without --repo the benchmark first builds a throwaway copy of this repository with tiny epochs
(`dvc repro` on the mirror data, about 2 minutes). Prefect's state (SQLite) lives in a temporary
PREFECT_HOME; the first temporary-server run there creates the database and is shown separately.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flows.processes import stop_process_group
from tests.conftest import build_tiny_repo, default_mirror, repo_env  # the test suite's throwaway built copy and its env

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], repo: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"orchestration: error: {' '.join(command)} exited {result.returncode}:\n"
                         f"{result.stderr[-2000:]}")
    return seconds, result.stdout


def flow_seconds(repo: Path, env: dict[str, str]) -> float:
    seconds, stdout = timed([sys.executable, "-m", "flows.pipeline", "--json"], repo, env)
    statuses = {stage["status"] for stage in json.loads(stdout)["stages"]}
    if statuses != {"skipped"}:
        raise SystemExit(f"orchestration: error: {repo} is not up to date (stage statuses {statuses}): "
                         "run `dvc repro` there first, or leave out --repo")
    return seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(env: dict[str, str], port: int, timeout: float = 120.0) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_process_group(server, grace_s=30)
    raise SystemExit(f"orchestration: error: `prefect server start` did not answer on port {port}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, help="an up-to-date, built repository copy (default: build one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected an integer >= 1")
    mirror = default_mirror()

    with tempfile.TemporaryDirectory(prefix="dnnlab-orchestration-") as scratch:
        scratch_path = Path(scratch)
        if args.repo:
            repo = args.repo.resolve()
        else:
            repo = build_tiny_repo(scratch_path / "repo", mirror)
        env = repo_env(mirror, PREFECT_HOME=str(scratch_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        results: dict[str, list[float]] = {"dvc repro": [], "flow, temporary server": [],
                                           "flow, running server": []}
        first_temporary = flow_seconds(repo, env)  # creates Prefect's SQLite database in PREFECT_HOME
        for _ in range(args.repeats):
            results["dvc repro"].append(timed(["dvc", "repro"], repo, env)[0])
            results["flow, temporary server"].append(flow_seconds(repo, env))
        port = free_port()
        server_env = {**env, "PREFECT_HOME": str(scratch_path / "prefect-server")}
        server = start_server(server_env, port)
        try:
            client_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            flow_seconds(repo, client_env)  # the server's first flow run registers the flows
            for _ in range(args.repeats):
                results["flow, running server"].append(flow_seconds(repo, client_env))
        finally:
            stop_process_group(server, grace_s=30)

    baseline = statistics.median(results["dvc repro"])
    report = {
        "repeats": args.repeats,
        "seconds": {name: round(statistics.median(values), 2) for name, values in results.items()},
        "runs": {name: [round(value, 2) for value in values] for name, values in results.items()},
        "ratio_to_dvc_repro": {name: round(statistics.median(values) / baseline, 2)
                               for name, values in results.items()},
        "first_temporary_server_run_seconds": round(first_temporary, 2),
    }
    if not args.json:
        print(f"{'up-to-date workspace':<26} {'median s':>9} {'x dvc repro':>12}   runs")
        for name, values in results.items():
            print(f"{name:<26} {report['seconds'][name]:>9.2f} {report['ratio_to_dvc_repro'][name]:>12.2f}   "
                  + " ".join(f"{value:.2f}" for value in values))
        print(f"(first flow run with a new temporary-server database: {first_temporary:.2f} s)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
