"""Serve the pipeline's deployments (flows/deployments.py) from this process: no work pool needed.

    prefect variable set dnnlab_git_remote <git URL>   # where the runs clone from and push to
    python -m flows.serve      # with PREFECT_API_URL pointing at a server

Scheduled runs (`nightly`) and triggered ones (`prefect deployment run 'pipeline/on-demand'`)
execute here one at a time, each in its own fresh clone of the git remote: the checkout this
runs from is never touched. The Prefect variables are read when serving starts."""

from __future__ import annotations

import sys

from flows.deployments import runner_deployments


def main() -> int:
    from prefect import serve

    serve(*runner_deployments(), limit=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
