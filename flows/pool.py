"""A study's variations as flow runs on a Prefect process work pool, on any machine with a worker.

The study registers (or updates) the deployment `variation/<pool>`: the `variation` flow of
flows/study/on_pool.py, its code cloned from the git remote by each run (so a worker needs the venv, not
a checkout), tagged VARIATION_TAG. Each variation is one flow run of it, created with an
idempotency key of (commit, variation, overrides, attempt): creating it again returns the same run
(a study started twice at one commit, or a parent that died and was started again, waits for the
run already there instead of training a second time).

Dead workers: a flow run whose machine died stays Running for ever unless something notices.
The variation runs send heartbeats (HEARTBEAT_SECONDS, set on the deployment, whatever the
worker's settings) and the automation ZOMBIE_AUTOMATION, which Prefect documents for self-hosted
servers ("Detect zombie flows"), marks a run Crashed when they stop for SILENCE_SECONDS. The study
resubmits a Crashed run (the next attempt's key) up to `attempts` times. A Failed run is the
variation's own failure (a stage's error): reported once, never resubmitted.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Optional

VARIATION_FLOW = "variation"
VARIATION_ENTRYPOINT = "flows/study/on_pool.py:variation"
VARIATION_TAG = "dnnlab-variation"  # the zombie automation watches only these runs
HEARTBEAT_SECONDS = 30  # Prefect's minimum; its default (180 s) would make the automation crash live runs
SILENCE_SECONDS = 75  # no heartbeat for this long: Crashed (two beats missed, and slack for a busy machine)
ZOMBIE_AUTOMATION = "dnnlab: crash variation runs whose heartbeats stopped"
POLL_SECONDS = 2.0
WAITING_HINT_SECONDS = 60  # a run nobody took for this long: say how to start a worker


class PoolError(Exception):
    """The pool cannot run the study: one line that says what to do."""


# --- Prefect objects the pool path needs ---

def zombie_automation() -> Any:
    """Prefect's documented zombie-detection automation, narrowed to the variation runs (a pipeline run
    with the default 180 s heartbeat must not be crashed) and to our heartbeat."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks a dnnlab variation run Crashed when its heartbeats stop (its worker died): "
                    "the study then resubmits it. Created by flows/pool.py.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{VARIATION_TAG}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENCE_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {SILENCE_SECONDS} s: its worker died")],
    )


def ensure_zombie_automation() -> str:
    """Create the zombie automation, or bring the server's up to this version's (enabled, same trigger
    and action): "created", "updated" or "unchanged"."""
    from prefect.automations import Automation

    wanted = zombie_automation()
    try:
        found = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:  # Prefect's "Automation with name … not found"
        wanted.create()
        return "created"
    fields = {"trigger", "actions", "enabled"}
    if found.model_dump(include=fields) == wanted.model_dump(include=fields):
        return "unchanged"
    for field in fields:
        setattr(found, field, getattr(wanted, field))
    found.update()
    return "updated"


def require_process_pool(pool: str) -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            raise PoolError(f"no work pool {pool!r}: create it with `prefect work-pool create {pool} --type process` "
                            f"and start workers with `prefect worker start --pool {pool}`") from None
    if found.type != "process":
        raise PoolError(f"work pool {pool!r} is of type {found.type!r}; the study needs a process pool "
                        f"(`prefect work-pool create NAME --type process`)")


def register_variation_deployment(variation_flow: Any, pool: str, git_remote: str, branch: str) -> str:
    """`variation/<pool>`, its code pulled from the git remote by each run; its full name."""
    from prefect.runner.storage import GitRepository

    deployment = variation_flow.from_source(
        source=GitRepository(url=git_remote, branch=branch), entrypoint=VARIATION_ENTRYPOINT,
    ).to_deployment(
        name=pool, work_pool_name=pool, tags=[VARIATION_TAG],
        description="One variation of the dnnlab study: `dvc exp run` in a fresh clone at the study's commit, "
                    "its data and experiment pushed. Registered by `python -m flows.study --pool`.",
        job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}},
    )
    deployment.apply(work_pool_name=pool)
    return f"{VARIATION_FLOW}/{pool}"


# --- submitting and waiting ---

def idempotency_key(commit: str, name: str, params: list[str], attempt: int) -> str:
    """The same variation (name and overrides) of the same commit, same attempt: the same flow run."""
    digest = hashlib.sha256("\n".join([commit, name, *params]).encode()).hexdigest()[:16]
    return f"dnnlab-study/{commit[:12]}/{name}/{digest}/attempt-{attempt}"


def verdict(state_type: str, attempt: int, attempts: int) -> str:
    """What a run's state means for the study: wait, completed, failed, or resubmit (a crash, attempts left)."""
    if state_type == "COMPLETED":
        return "completed"
    if state_type == "CRASHED":
        return "resubmit" if attempt < attempts else "failed"
    if state_type in ("FAILED", "CANCELLED"):
        return "failed"
    return "wait"  # SCHEDULED, PENDING, RUNNING, CANCELLING, PAUSED


@dataclass
class Outcome:
    """A variation's fate on the pool: completed or failed (with the run's one-line reason), and its runs."""

    name: str
    completed: bool
    reason: str
    runs: list[str]


def failure_text(state_type: str, message: Optional[str], attempt: int) -> str:
    """A failed run's own message (a stage's one-line error); a crash or a cancellation says so."""
    message = ((message or "").strip().splitlines() or ["no message"])[0]
    if state_type == "CRASHED":
        return f"crashed {attempt} time(s), the last: {message}"
    if state_type == "CANCELLED":
        return f"cancelled: {message}"
    return message


def run_variations(deployment: str, parameters: dict[str, dict], commit: str, attempts: int, log: Any,
                   submit: Optional[Callable[..., Any]] = None) -> dict[str, Outcome]:
    """Submit one flow run per variation and wait for all; Crashed runs are resubmitted up to `attempts`."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    submit = submit or run_deployment

    def create(name: str, attempt: int) -> Any:
        key = idempotency_key(commit, name, parameters[name]["params"], attempt)
        run = submit(name=deployment, parameters=parameters[name], idempotency_key=key, timeout=0,
                     flow_run_name=f"{name}-{commit[:7]}-{attempt}")
        log.info(f"{name}: flow run {run.name} ({run.id}), attempt {attempt}/{attempts}, "
                 f"{run.state.name if run.state else 'submitted'}")
        return run

    pending = {name: (create(name, 1), 1, time.monotonic()) for name in parameters}
    outcomes: dict[str, Outcome] = {name: Outcome(name, False, "", []) for name in parameters}
    hinted = False
    with get_client(sync_client=True) as client:
        while pending:
            for name, (run, attempt, since) in list(pending.items()):
                current = client.read_flow_run(run.id)
                state_type = current.state.type.value if current.state else "SCHEDULED"
                decision = verdict(state_type, attempt, attempts)
                if decision == "wait":
                    if not hinted and state_type in ("SCHEDULED", "PENDING") and \
                            time.monotonic() - since > WAITING_HINT_SECONDS:
                        pool = deployment.split("/", 1)[1]
                        log.warning(f"{name}: no worker has taken its run for {WAITING_HINT_SECONDS} s; "
                                    f"start one with `prefect worker start --pool {pool}`")
                        hinted = True
                    continue
                outcomes[name].runs.append(str(run.id))
                del pending[name]
                message = current.state.message if current.state else ""
                if decision == "resubmit":
                    log.warning(f"{name}: run {current.name} crashed ({message}); resubmitting")
                    pending[name] = (create(name, attempt + 1), attempt + 1, time.monotonic())
                elif decision == "completed":
                    outcomes[name].completed = True
                    log.info(f"{name}: run {current.name} completed")
                else:
                    outcomes[name].reason = failure_text(state_type, message, attempt)
                    log.error(f"{name}: {outcomes[name].reason}")
            if pending:
                time.sleep(POLL_SECONDS)
    return outcomes
