"""What a flow run tells people besides its logs: a link artifact to the report it wrote, and the opt-in
failure notification (a Prefect notification block named by the run's `notify_block` parameter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.states import State


def publish_report_link(key: str, path: Path, link_text: str, description: str) -> None:
    """A link artifact to a report file (a file:// URL: open it on the machine that ran the flow)."""
    from prefect.artifacts import create_link_artifact

    create_link_artifact(key=key, link=path.resolve().as_uri(), link_text=link_text, description=description)


def notify_failure(flow: Any, flow_run: Any, state: State) -> None:
    """on_failure hook: send the run's name and its one-line error through the Prefect notification
    block the run's `notify_block` parameter names (`<block-type>/<name>`); nothing if it names none."""
    name = (flow_run.parameters or {}).get("notify_block")
    if not name:
        return
    from prefect.blocks.core import Block
    from prefect.utilities.urls import url_for

    failed = failed_child_runs(flow_run.id) if flow.name == "pipeline" else []  # its children are its stages
    where = f" at stage{'s' if len(failed) > 1 else ''} {', '.join(failed)}" if failed else ""  # stages fail in parallel
    lines = [f"{flow.name} run {flow_run.name} failed{where}: {state.message or 'no message'}"]
    if link := url_for(flow_run):
        lines.append(link)
    Block.load(name).notify(body="\n".join(lines), subject=f"dnnlab: {flow.name} run {flow_run.name} failed")


def failed_child_runs(flow_run_id: Any) -> list[str]:
    """The names of a flow run's failed child flow runs (its failed stages), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED]))),
            sort=FlowRunSort.START_TIME_ASC)
    return [run.name for run in runs]
