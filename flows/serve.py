"""Serve the pipeline's deployments (flows/deployments.py) from this process: no work pool needed.

    python -m flows.serve      # from the repository root, with PREFECT_API_URL pointing at a server

Scheduled runs (`nightly`) and triggered ones (`prefect deployment run 'pipeline/on-demand'`)
execute here, in the working directory, one at a time: they share one DVC workspace.
"""

from __future__ import annotations

import sys

from flows.deployments import runner_deployments


def main() -> int:
    from prefect import serve

    serve(*runner_deployments(), limit=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
