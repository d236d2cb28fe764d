"""Serve the pipeline's deployments (flows/deployments.py) from this process: no work pool needed.

    prefect variable set dnnlab_git_remote <git URL>   # where the runs clone from and push to
    python -m flows.serve      # with PREFECT_API_URL pointing at a server

Scheduled runs (`nightly`) and triggered ones (`prefect deployment run 'pipeline/on-demand'`)
execute here one at a time, each in its own fresh clone of the git remote: the checkout this
runs from is never touched. The Prefect variables are read when serving starts."""

from __future__ import annotations

import contextlib
import signal
import sys

from flows.deployments import runner_deployments
from flows.processes import interrupt_signal, signals_interrupt


def main() -> int:
    from prefect import serve

    # Prefect's serve stops on Ctrl-C (cancelling the run in progress, whose flow stops its stages) and
    # installs its own SIGTERM handler for a graceful stop; it returns only when stopped.
    with signals_interrupt(), contextlib.suppress(SystemExit):  # its SIGTERM handler exits so before it starts
        serve(*runner_deployments(), limit=1)
    signum = interrupt_signal() or signal.SIGTERM
    print(f"serve: stopped by {signal.Signals(signum).name}: no more runs are taken here; a run in progress, if "
          "any, was cancelled and its stages stopped with their last good outputs", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
