"""dnnlab's deployments, defined once: served by `python -m flows.serve`, rendered into prefect.yaml.

    python -m flows.deployments --write-prefect-yaml   # regenerate prefect.yaml after editing DEPLOYMENTS
    python -m flows.deployments --check                # exit 1 if prefect.yaml is out of date
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flows.run_spec import Flow, RunSpec

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

PIPELINE = "flows/pipeline.py:pipeline"
STUDY = "flows/study/flow.py:study"
WORK_POOL = "dnnlab"  # a process work pool: `prefect work-pool create dnnlab --type process`
TAGS = ("dnnlab",)
# Scheduled and triggered runs work in a fresh clone of the git remote, never in a working tree.
# Where that remote is, and the Secret block with the remotes' credentials, are Prefect variables,
# read when the deployments are created (`prefect deploy` and `flows.serve` both resolve them).
FROM_GIT = {
    "git_remote": "{{ prefect.variables.dnnlab_git_remote }}",
    "branch": "{{ prefect.variables.dnnlab_git_branch }}",  # unset: main
    "credentials_block": "{{ prefect.variables.dnnlab_credentials_block }}",  # unset: none
}
PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def from_git(flow: Flow, **modes: Any) -> dict[str, Any]:
    """A `flow`'s parameters for a run in a fresh clone of the git remote with these `modes`, checked as a
    run's are (flows/run_spec.py): a deployment that could never run fails here, not at 03:00."""
    return RunSpec.for_flow(flow, **FROM_GIT, **modes).parameters(flow)


@dataclass(frozen=True)
class Deployment:
    """One deployment: a name, the flow (entrypoint), an optional cron schedule, default parameters."""

    name: str
    description: str
    entrypoint: str = PIPELINE
    cron: str | None = None
    timezone: str = "UTC"
    parameters: dict[str, Any] = field(default_factory=dict)


DEPLOYMENTS = (
    Deployment(
        name="nightly",
        description="Every night at 03:00 UTC, in a fresh clone of the git remote: download the data again, "
                    "rerun what changed, and when the results changed push them (data to the DVC remote, "
                    "then a commit of dvc.lock and the metrics).",
        cron="0 3 * * *",
        parameters={"force_fetch": True, **from_git("pipeline", record=True)},
    ),
    Deployment(
        name="on-demand",
        description="Run the pipeline now, in a fresh clone of the git remote: the stale stages run, "
                    "nothing is committed (`-p record=true` pushes the results like the nightly run).",
        parameters=from_git("pipeline"),
    ),
    Deployment(
        name="study",
        entrypoint=STUDY,
        description="The lab's hyperparameter study, in a fresh clone of the git remote: params.yaml's study "
                    "variations as DVC experiments on the work pool's workers, pushed to the git remote and "
                    "compared in the study-run artifact.",
        parameters=from_git("study", from_git=True, pool=WORK_POOL),
    ),
)


def _flow(entrypoint: str):
    """The flow object an entrypoint (`flows/study/flow.py:study`) names."""
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def runner_deployments() -> list[RunnerDeployment]:
    """The deployments as `prefect.serve` takes them, their parameters' variables resolved as
    `prefect deploy` resolves them."""
    from prefect.schedules import Cron
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.templating import resolve_variables

    return [
        _flow(spec.entrypoint).to_deployment(
            name=spec.name,
            description=spec.description,
            schedules=[Cron(spec.cron, timezone=spec.timezone)] if spec.cron else [],
            parameters=run_coro_as_sync(resolve_variables(dict(spec.parameters))),
            tags=list(TAGS),
        )
        for spec in DEPLOYMENTS
    ]


def prefect_yaml_text() -> str:
    """prefect.yaml for `prefect deploy --all` with the process work pool WORK_POOL."""
    deployments = []
    for spec in DEPLOYMENTS:
        deployments.append({
            "name": spec.name,
            "description": spec.description,
            "entrypoint": spec.entrypoint,
            "parameters": dict(spec.parameters),
            "schedules": [{"cron": spec.cron, "timezone": spec.timezone, "active": True}] if spec.cron else [],
            "tags": list(TAGS),
            "work_pool": {"name": WORK_POOL},
        })
    header = (
        "# Generated from flows/deployments.py by `python -m flows.deployments --write-prefect-yaml`:\n"
        "# edit that file, not this one. The pipeline runs in a fresh clone of the git remote the Prefect\n"
        "# variable dnnlab_git_remote names (read at deploy time). Deploy from the repository root:\n"
        "#   prefect variable set dnnlab_git_remote <git URL>\n"
        f"#   prefect work-pool create {WORK_POOL} --type process\n"
        "#   prefect --no-prompt deploy --all\n"
        f"#   prefect worker start --pool {WORK_POOL}\n"
    )
    body = {"name": "dnnlab", "build": None, "push": None, "pull": None, "deployments": deployments}
    return header + yaml.safe_dump(body, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-prefect-yaml", action="store_true", help=f"write {PREFECT_YAML.name}")
    action.add_argument("--check", action="store_true", help=f"fail if {PREFECT_YAML.name} is out of date")
    args = parser.parse_args(argv)
    if args.write_prefect_yaml:
        PREFECT_YAML.write_text(prefect_yaml_text())
        print(f"wrote {PREFECT_YAML}")
        return 0
    if not PREFECT_YAML.exists() or PREFECT_YAML.read_text() != prefect_yaml_text():
        print(f"deployments: error: {PREFECT_YAML.name} differs from flows/deployments.py; "
              "run `python -m flows.deployments --write-prefect-yaml`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
