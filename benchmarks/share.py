"""What a DVC remote saves a teammate: from a fresh `git clone` to reports/report.html at the lab
defaults, with the results pulled against recomputed, in one run.

    python -m benchmarks.share [--json]

  recompute   git clone + dvc repro                every stage runs on this machine
  pull        git clone + dvc pull + dvc repro     the results come from the DVC remote; `dvc repro`
                                                   finds nothing to do (checked: `dvc status` is clean)

Set-up, in a temporary folder: a bare git repo holding this checkout's files as one commit
(lab-default params, dvc.lock as committed). The recompute clone's results then fill a local-folder
DVC remote (`dvc push`, not timed; if its dvc.lock differs from the committed one, it is committed
and pushed to the bare repo first, and the JSON says so), which the pull clone reads. Both clones
aim the default remote `local` at that folder, never at ~/.cache/dnnlab/dvc-remote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.orchestration import lab_default_repo, timed
from tests.conftest import default_mirror, point_local_remote, repo_env, run


def clone(origin: Path, destination: Path, remote: Path, env: dict[str, str]) -> float:
    seconds, _ = timed(["git", "clone", "-q", str(origin), str(destination)], origin.parent, env)
    point_local_remote(destination, remote)
    return seconds


def check_report(repo: Path) -> None:
    if not (repo / "reports" / "report.html").is_file():
        raise SystemExit(f"share: error: no reports/report.html in {repo}")


def recompute(origin: Path, scratch: Path, remote: Path, env: dict[str, str]) -> tuple[dict, Path]:
    repo = scratch / "recompute"
    clone_s = clone(origin, repo, remote, env)
    repro_s, _ = timed(["dvc", "repro"], repo, env)
    check_report(repo)
    return {"git_clone_s": round(clone_s, 1), "dvc_repro_s": round(repro_s, 1),
            "total_s": round(clone_s + repro_s, 1)}, repo


def fill_remote(repo: Path, env: dict[str, str]) -> bool:
    """Push the recomputed results; True if dvc.lock came out as committed (else commit and push it)."""
    as_committed = not run(["git", "status", "--porcelain", "--", "dvc.lock"], repo, env).stdout.strip()
    if not as_committed:
        timed(["git", "commit", "-qam", "results recomputed on this machine"], repo, env)
        timed(["git", "push", "-q", "origin", "main"], repo, env)
    timed(["dvc", "push", "-q"], repo, env)
    return as_committed


def pull(origin: Path, scratch: Path, remote: Path, env: dict[str, str]) -> tuple[dict, Path]:
    repo = scratch / "pull"
    clone_s = clone(origin, repo, remote, env)
    pull_s, _ = timed(["dvc", "pull", "-q"], repo, env)
    repro_s, _ = timed(["dvc", "repro"], repo, env)
    status = json.loads(run(["dvc", "status", "--json"], repo, env).stdout)
    if status != {}:
        raise SystemExit(f"share: error: the pulled clone is not up to date: {status}")
    check_report(repo)
    return {"git_clone_s": round(clone_s, 1), "dvc_pull_s": round(pull_s, 1), "dvc_repro_s": round(repro_s, 1),
            "total_s": round(clone_s + pull_s + repro_s, 1)}, repo


def folder_mb(path: Path) -> float:
    return round(sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 2**20, 1)


def print_table(report: dict) -> None:
    print("from a fresh git clone to reports/report.html, lab defaults (seconds)")
    print(f"{'':<11} {'git clone':>9} {'dvc pull':>9} {'dvc repro':>9} {'total':>8}")
    for name in ("pull", "recompute"):
        row = report[name]
        print(f"{name:<11} {row['git_clone_s']:>9} {row.get('dvc_pull_s', '-'):>9} {row['dvc_repro_s']:>9} "
              f"{row['total_s']:>8}")
    print(f"DVC remote: {report['remote_mb']} MB; recomputed dvc.lock as committed: {report['lock_as_committed']}; "
          f"load {report['machine']['load_1min_before']:.1f} -> {report['machine']['load_1min_after']:.1f} "
          f"on {report['machine']['cpus']} CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.share", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dnnlab-share-") as scratch:
        scratch_path = Path(scratch)
        env = repo_env(default_mirror(), PREFECT_HOME=str(scratch_path / "prefect"))
        report: dict = {"machine": {"cpus": os.cpu_count(), "load_1min_before": os.getloadavg()[0]}}
        source = lab_default_repo(scratch_path / "source", env)
        origin, remote = scratch_path / "origin.git", scratch_path / "dvc-remote"
        timed(["git", "init", "-q", "--bare", "-b", "main", str(origin)], scratch_path, env)
        timed(["git", "push", "-q", str(origin), "main"], source, env)

        report["recompute"], recomputed = recompute(origin, scratch_path, remote, env)
        report["lock_as_committed"] = fill_remote(recomputed, env)
        report["remote_mb"] = folder_mb(remote)
        report["pull"], pulled = pull(origin, scratch_path, remote, env)
        if (pulled / "reports/report.html").read_bytes() != (recomputed / "reports/report.html").read_bytes():
            raise SystemExit("share: error: the pulled report differs from the recomputed one")
        report["machine"]["load_1min_after"] = os.getloadavg()[0]
    if not args.json:
        print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
