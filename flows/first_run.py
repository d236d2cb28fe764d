"""What `make pipeline` says around `dvc repro`: one line each, no md5 lists.

    python -m flows.first_run pull      # before: what the DVC remote has is pulled, the rest is computed
    python -m flows.first_run compare   # after: do the results differ from the committed ones?

Results computed on another CPU can differ in their last digits (a different instruction set, a
different summation order): `compare` says so when it happens, and how to look and what to do.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Optional

from flows.dvc_adapter import DvcError, find_root, metrics_diff, pull_what_the_remote_has


def pull_line(pulled: int, missing: int, remote: str) -> str:
    """The one line `pull` prints, from what it brought and what is left for `dvc repro`."""
    where = f"the DVC remote {remote!r}" if remote else "the DVC remote"
    if missing == 0:
        return f"dvc pull: {pulled} output(s) pulled from {where}; nothing left to compute" if pulled else \
            "dvc pull: every output is already here; nothing to compute"
    if pulled == 0:
        return f"dvc pull: nothing to pull yet from {where}: `dvc repro` computes the {missing} output(s)"
    return f"dvc pull: {pulled} output(s) pulled from {where}; `dvc repro` computes the other {missing}"


def metric_changes(diff: dict) -> list[tuple[str, str, float]]:
    """(file, metric, relative change) for every metric of a `dvc metrics diff --json` that changed;
    infinite where there was no committed value (or it was 0)."""
    changes = []
    for path, values in diff.items():
        for name, value in values.items():
            old, new, change = value.get("old"), value.get("new"), value.get("diff")
            if old == new:
                continue
            if isinstance(change, (int, float)) and isinstance(old, (int, float)) and old != 0:
                changes.append((path, name, abs(change / old)))
            else:
                changes.append((path, name, math.inf))
    return changes


def difference_line(diff: dict) -> Optional[str]:
    """One line when the results differ from the committed ones (None when they do not)."""
    changes = metric_changes(diff)
    if not changes:
        return None
    files = len({path for path, _, _ in changes})
    path, name, largest = max(changes, key=lambda change: change[2])
    size = "new" if math.isinf(largest) else f"{100 * largest:.2g} % relative change"
    return (f"Your results differ from the committed ones in {len(changes)} metric(s) of {files} file(s) "
            f"(largest: {name} in {path}, {size}); recomputing on another CPU can change the last digits. "
            "See them with `dvc metrics diff`; take the team's with `git restore dvc.lock reports && dvc pull`.")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.first_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("pull", "compare"))
    args = parser.parse_args(argv)
    root = find_root(Path.cwd())
    try:
        if args.step == "pull":
            print(pull_line(*pull_what_the_remote_has(root)), flush=True)
        elif line := difference_line(metrics_diff(root, dict(os.environ))):
            print(line, flush=True)
    except DvcError as error:  # neither is a reason to fail the pipeline: it computes, or it has computed
        if args.step == "pull":
            print(f"dvc pull: nothing pulled ({error}); `dvc repro` computes what is missing", file=sys.stderr)
        else:
            print(f"compare: warning: cannot compare with the committed results ({error})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
