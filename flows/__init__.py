"""The Prefect layer: orchestrates the DVC stages (never re-implements them).

- `flows.pipeline`: the `pipeline` flow and its command line.
- `flows.study`: the `study` flow (the lab's hyperparameter study as DVC experiments).
- `flows.deployments`: the deployments (`nightly`, `on-demand`, `study`), rendered into prefect.yaml.
- `flows.serve`: serves those deployments in one process.

This module stays free of Prefect imports: every stage process loads it through
`stages.core.errors.run_stage`, and `dvc repro` without a Prefect server must not pay for Prefect.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Callable

PARENT_ENV = "DNNLAB_PREFECT_PARENT"  # "1" in stage subprocesses of the pipeline flow


def prefect_api_url() -> str | None:
    """PREFECT_API_URL from the environment, else from the active Prefect profile; None if neither."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


def dvc_stage_name(module: str, argv: list[str] | None = None) -> str:
    """The DVC stage a stage process runs (DVC does not export it): `train` + `mnist` -> `train@mnist`."""
    argv = sys.argv if argv is None else argv
    item = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    return f"{module}@{item}" if item else module


def track_stage(module: str, main: Callable[[], None],
                known_errors: tuple[type[BaseException], ...]) -> Callable[[], None]:
    """main itself, or, when a Prefect server is configured and no pipeline flow runs this stage,
    main wrapped in a flow run named after the stage (so `dvc repro` shows up in Prefect)."""
    if os.environ.get(PARENT_ENV) or not prefect_api_url():
        return main
    from flows.pipeline import as_stage_flow

    return as_stage_flow(dvc_stage_name(module), main, known_errors, module)
