"""What exact params dependencies and DVC's run cache save: `dvc exp run -S model.width=128` on the lab
defaults, then the revert to them, before (a commit without either) and after (this checkout), in one run.

    python -m benchmarks.exp_run [--before 8ad5d30] [--json]

  experiment   dvc exp run -S model.width=128      before: MNIST retrains too (its width is its own);
                                                   after: only the synthetic and heart chains run
  revert       git checkout params.yaml dvc.lock   before: the synthetic and heart chains retrain;
               + dvc repro                         after: every stage comes back from the run cache

Set-up, not timed, in a temporary folder: a `git clone` of this repository at the `--before` commit,
and a copy of this checkout (its files as git would submit them, one commit), each brought up to date
at the lab defaults by `dvc repro` (the mirror in DNNLAB_DATA_MIRROR, else ../shared/data). Each side
runs in its own clone with its own DVC cache; the default remote `local` points at a scratch folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from benchmarks.orchestration import lab_default_repo, timed
from tests.conftest import REPO_ROOT, default_mirror, point_local_remote, repo_env, run

BEFORE = "8ad5d30"  # main before issue 18: train@<task> read the whole `model` section; every output persisted
EXPERIMENT = ["dvc", "exp", "run", "-S", "model.width=128"]


def ran_and_restored(output: str) -> tuple[list[str], list[str]]:
    """The stages DVC ran, and those it checked out of the run cache, from its log."""
    return (re.findall(r"Running stage '([^']+)'", output),
            re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def side(repo: Path, env: dict[str, str]) -> dict:
    """The experiment and the revert in an up-to-date lab-default repo: seconds, stages run and restored."""
    point_local_remote(repo, repo.parent / f"{repo.name}-remote")
    timed(["dvc", "repro"], repo, env)  # set-up: the lab defaults, built
    row = {}
    for name, commands in (("experiment", [EXPERIMENT]),
                           ("revert", [["git", "checkout", "params.yaml", "dvc.lock"], ["dvc", "repro"]])):
        seconds, output = 0.0, ""
        for command in commands:
            took, text = timed(command, repo, env)
            seconds, output = seconds + took, output + text
        ran, restored = ran_and_restored(output)
        row[name] = {"seconds": round(seconds, 1), "ran": ran, "restored": restored}
    if run(["dvc", "status", "--json"], repo, env).stdout.strip() != "{}":
        raise SystemExit(f"exp_run: error: {repo} is not up to date after the revert")
    return row


def print_table(report: dict) -> None:
    print("dvc exp run -S model.width=128 on the lab defaults, then back (seconds; stages run / restored)")
    print(f"{'':<8} {'experiment':>11} {'run':>4} {'revert':>8} {'run':>4} {'restored':>9}")
    for name in ("before", "after"):
        row = report[name]
        print(f"{name:<8} {row['experiment']['seconds']:>11} {len(row['experiment']['ran']):>4} "
              f"{row['revert']['seconds']:>8} {len(row['revert']['ran']):>4} {len(row['revert']['restored']):>9}")
    print(f"after / before: experiment {report['ratio_experiment']:.2f}, revert {report['ratio_revert']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exp_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help=f"the commit to compare with (default: {BEFORE})")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    env = repo_env(default_mirror())
    with tempfile.TemporaryDirectory(prefix="dnnlab-exp-run-") as folder:
        scratch = Path(folder)
        before = scratch / "before"
        run(["git", "clone", "-q", str(REPO_ROOT), str(before)], scratch, env)
        run(["git", "checkout", "-q", args.before], before, env)
        after = lab_default_repo(scratch / "after", env)
        report = {"before_commit": args.before, "before": side(before, env), "after": side(after, env)}
    for name in ("experiment", "revert"):
        report[f"ratio_{name}"] = round(report["after"][name]["seconds"] / report["before"][name]["seconds"], 3)
    if not args.json:
        print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
