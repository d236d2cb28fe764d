"""How a stage process reports itself: to a Prefect server when one is configured (a flow run named
after the stage), and to the flow that started it (one JSON record per stage run, see STAGE_REPORT_ENV).

The stage layer owns this, so nothing in stages/ imports flows/. Prefect is imported only when a
server may be configured: `dvc repro` without one must not pay Prefect's second of import time.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any, Callable

from stages.core.contract import STAGE_REPORT_ENV

PARENT_ENV = "DNNLAB_PREFECT_PARENT"  # "1" in stage subprocesses of the pipeline flow: already in a flow run
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command (dvc/stage/run.py: prepare_kwargs)
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"  # DVC sets it for every queued experiment's run


# --- is a Prefect server configured? ---

def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _profiles_path() -> Path:
    """Prefect's profiles file, when no .env, prefect.toml or pyproject.toml moved it (those count anyway)."""
    if path := os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(path).expanduser()
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser() / "profiles.toml"


def _active_profile_sets_url() -> bool:
    profiles = _read_toml(_profiles_path())
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    return bool(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


def prefect_may_be_configured(cwd: Path | None = None) -> bool:
    """True if any place Prefect 3 reads its settings from could hold an API URL; no Prefect import.

    The places (prefect/settings/base.py: PrefectBaseSettings.settings_customise_sources, and
    sources.py): the environment, a `.env` file in the working directory, `prefect.toml` there,
    `[tool.prefect]` in `pyproject.toml` there, and the active profile of the profiles file. This is
    a superset check: Prefect's own settings object then decides (prefect_api_url).
    """
    if os.environ.get("PREFECT_API_URL"):
        return True
    cwd = cwd or Path.cwd()
    dotenv = cwd / ".env"
    if dotenv.is_file() and "PREFECT_" in dotenv.read_text(errors="replace"):
        return True
    if (cwd / "prefect.toml").is_file():
        return True
    if "prefect" in _read_toml(cwd / "pyproject.toml").get("tool", {}):
        return True
    return _active_profile_sets_url()


def prefect_api_url() -> str | None:
    """The Prefect API URL as Prefect itself resolves it, or None; imports Prefect only if one may be set."""
    if not prefect_may_be_configured():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


# --- a stage process as a Prefect flow run ---

def dvc_stage_name(module: str, argv: list[str] | None = None) -> str:
    """The DVC stage a stage process runs: DVC's DVC_STAGE, else from argv (`train` + `mnist` -> `train@mnist`)."""
    if stage := os.environ.get(DVC_STAGE_ENV):
        return stage
    argv = sys.argv if argv is None else argv
    item = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    return f"{module}@{item}" if item else module


def track_stage(module: str, main: Callable[[], None],
                known_errors: tuple[type[BaseException], ...]) -> Callable[[], None]:
    """main itself, or, when a Prefect server is configured and no pipeline flow runs this stage,
    main wrapped in a flow run named after the stage (so `dvc repro` shows up in Prefect)."""
    if os.environ.get(PARENT_ENV) or not prefect_api_url():
        return main
    return as_stage_flow(dvc_stage_name(module), main, known_errors, module)


def as_stage_flow(stage: str, main: Callable[[], None], known_errors: tuple[type[BaseException], ...],
                  prefix: str) -> Callable[[], None]:
    """Wrap a stage's main() in a flow run named after the stage (for `stages.core.errors.run_stage`).

    Known errors end the flow run Failed with the stage's one-line error and are re-raised for
    run_stage to report; if the server cannot be reached the stage runs without it.
    """
    from prefect import flow
    from prefect.states import Failed

    def run() -> None:
        caught: list[BaseException] = []
        started = threading.Event()

        def body() -> Any:
            started.set()
            try:
                main()
            except known_errors as error:
                caught.append(error)
                return Failed(message=f"{prefix}: error: {error}")
            return None

        try:
            flow(body, name=stage, flow_run_name=stage, log_prints=True)(return_state=True)
        except Exception as error:
            if started.is_set():
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            print(f"{prefix}: warning: no Prefect flow run for {stage} ({reason}); running without it",
                  file=sys.stderr)
            main()
            return
        if caught:
            raise caught[0]

    return run


# --- the record a stage leaves for the flow that started it ---

def write_stage_record(module: str, exit_code: int, line: str) -> None:
    """Append {"stage", "experiment", "exit_code", "line"} as one JSON line to $STAGE_REPORT_ENV, if set.

    One short append per stage run: concurrent stages (queued experiments) may share the file.
    """
    path = os.environ.get(STAGE_REPORT_ENV)
    if not path:
        return
    record = {"stage": dvc_stage_name(module), "experiment": os.environ.get(DVC_EXP_NAME_ENV),
              "exit_code": exit_code, "line": line}
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def read_stage_records(path: str | Path) -> list[dict]:
    """The records stage processes appended to `path` (none if it is missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
