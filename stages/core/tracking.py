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

from stages.core.contract import PROGRESS_ARTIFACT_ENV, STAGE_REPORT_ENV

PARENT_ENV = "DNNLAB_PREFECT_PARENT"  # "1" in stage subprocesses of the pipeline flow: already in a flow run
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for every stage command (dvc/stage/run.py: prepare_kwargs)
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"  # DVC sets it for every queued experiment's run
STAGE_FLOW = "stage"  # every stage run is a run of this one flow, named after its DVC stage


def stage_tag(stage: str) -> str:
    """The tag a stage's flow runs carry, to filter them by stage in the UI: `stage:train@heart`."""
    return f"stage:{stage}"


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


def quiet_event_drain() -> None:
    """Keep Prefect's event worker from warning `Still processing items: 1 items remaining...` when a
    stage process exits with events still queued (a routine drain, not a problem): its logger, named
    after the class (prefect/_internal/concurrency/services.py), says errors only."""
    import logging

    logging.getLogger("EventsWorker").setLevel(logging.ERROR)


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
    main wrapped in a run of the `stage` flow named after the stage (so `dvc repro` shows up in Prefect)."""
    if os.environ.get(PARENT_ENV) or not prefect_api_url():
        return main
    return as_stage_flow(dvc_stage_name(module), main, known_errors, module)


def as_stage_flow(stage: str, main: Callable[[], None], known_errors: tuple[type[BaseException], ...],
                  prefix: str) -> Callable[[], None]:
    """Wrap a stage's main() in a run of the one `stage` flow, named and tagged after the stage (for
    `stages.core.errors.run_stage`): the Flows page lists the lab's flows, not one per stage.

    Known errors end the flow run Failed with the stage's one-line error and are re-raised for
    run_stage to report; if the server cannot be reached the stage runs without it.
    """
    from prefect import flow, tags
    from prefect.states import Failed

    quiet_event_drain()

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
            with tags(stage_tag(stage)):
                flow(body, name=STAGE_FLOW, flow_run_name=stage, log_prints=True)(return_state=True)
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


# --- a progress artifact the flow created, updated by the stage ---

def training_progress(module: str, epochs: int) -> PrefectProgress | None:
    """A subscriber of the training engine's epoch log that updates the Prefect progress artifact the
    flow created ($PROGRESS_ARTIFACT_ENV), or None when the flow gave none (then no Prefect import).

    The train stage's main wires it next to dvclive (stages.training.live.EpochLogs); the engine knows
    only its epoch log. Use it as a context manager: leaving it normally says training ended (100 %)."""
    return PrefectProgress(module, epochs) if os.environ.get(PROGRESS_ARTIFACT_ENV) else None


class PrefectProgress:
    """Sends the latest training progress to the Prefect progress artifact $PROGRESS_ARTIFACT_ENV names.

    `log_epochs` (the engine's epoch-log interface) counts the epochs and keeps the latest curve row.
    The first update goes out from the caller (Prefect's import and client set-up, once); later ones
    from a background thread, only the newest, so a slow server never holds up training. The first
    failure prints one `train: warning:` line and ends the updates. Leaving the context normally sends
    100 % (saying so when early stopping ended training) and gives the last update a few seconds.
    """

    def __init__(self, module: str, epochs: int, exit_wait_s: float = 5.0):
        self.module, self.epochs, self.exit_wait_s = module, epochs, exit_wait_s
        self.epoch, self.row = 0, {}
        self.latest: tuple[float, str] | None = None
        self.wake = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closing = self.failed = False

    def log_epochs(self, rows) -> None:
        if not rows:
            return
        self.epoch, self.row = self.epoch + len(rows), dict(rows[-1])
        self._send(round(100.0 * self.epoch / max(self.epochs, 1), 2),
                   f"{dvc_stage_name(self.module)}: epoch {self.epoch}/{self.epochs} {_values(self.row)}".strip())

    def __enter__(self) -> PrefectProgress:
        return self

    def __exit__(self, error_type, *exc_info) -> None:
        """Training ended: normally, 100 % now, not at exit (once the interpreter shuts down, Prefect's event
        worker has stopped and cannot start again: `can't register atexit after shutdown`); then the sender ends.
        On an error the flow that made the artifact says the stage failed."""
        if error_type is None:
            self._send(100.0, finished_text(dvc_stage_name(self.module), self.epoch, self.epochs, self.row))
        self.close()

    def _send(self, progress: float, text: str) -> None:
        if self.failed:
            return
        with self.wake:
            self.latest = (progress, text)
            self.wake.notify()
        if self.thread is None:
            self._start()

    def _start(self) -> None:
        """Import Prefect and send the first update here, not in the sender: Prefect's client sets
        itself up on first use (atexit hooks among it), which fails once a short training is exiting."""
        import atexit
        from uuid import UUID

        try:
            if not prefect_api_url():  # without a server Prefect would start one of its own
                raise RuntimeError("no Prefect API URL is configured")
            from prefect.artifacts import update_progress_artifact

            quiet_event_drain()
            if (first := self._next()) is not None:
                update_progress_artifact(UUID(os.environ[PROGRESS_ARTIFACT_ENV]), progress=first[0],
                                         description=first[1])
        except Exception as error:
            self._warn(error)
            return
        self.thread = threading.Thread(target=self._send_updates, args=(update_progress_artifact,),
                                       name="prefect-progress", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _next(self) -> tuple[float, str] | None:
        """The newest update not sent yet; None once closing and nothing is left."""
        with self.wake:
            while self.latest is None and not self.closing:
                self.wake.wait()
            update, self.latest = self.latest, None
            return update

    def _send_updates(self, update_progress_artifact: Callable[..., Any]) -> None:
        from uuid import UUID

        try:
            artifact_id = UUID(os.environ[PROGRESS_ARTIFACT_ENV])
            while (update := self._next()) is not None:
                update_progress_artifact(artifact_id, progress=update[0], description=update[1])
        except Exception as error:
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        self.failed = True
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        artifact = os.environ[PROGRESS_ARTIFACT_ENV]
        print(f"{self.module}: warning: cannot update the Prefect progress artifact {artifact} "
              f"({type(error).__name__}: {reason}); training goes on without it", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Let the last update go out (a few seconds at most) and end the sender (atexit calls it)."""
        with self.wake:
            self.closing = True
            self.wake.notify()
        if self.thread is not None:
            self.thread.join(timeout=self.exit_wait_s)


def _values(logs: dict) -> str:
    return " ".join(f"{key}={float(value):.4g}" for key, value in sorted(logs.items()))


def finished_text(stage: str, epoch: int, epochs: int, logs: dict) -> str:
    """`train@heart: stopped early at epoch 43 of 200 (val/loss=0.41 …)`, or `… trained all 200 epochs (…)`."""
    done = f"stopped early at epoch {epoch} of {epochs}" if epoch < epochs else f"trained all {epochs} epochs"
    values = _values(logs)
    return f"{stage}: {done}" + (f" ({values})" if values else "")


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
