"""The modes a pipeline or study run can take, as one typed value checked in one place.

Where it runs: this checkout (`repo`, default the working directory) or a fresh clone of `git_remote`
(`branch`, default main; `credentials_block`: a Prefect Secret block of the remotes' environment). The
pipeline runs in a clone whenever it is given a `git_remote`; the study only `from_git` (without it, its
`git_remote` is what a pool's workers clone). Whether the pipeline `record`s its results or runs
`overrides` as a DVC experiment, and how many stages run at once (`max_parallel`); whether the study's
variations go to DVC's local queue (`jobs` workers) or to a Prefect work `pool` (`attempts` per variation).

The CLIs build a RunSpec from their flags, the flows from their parameters, the deployments
(flows/deployments.py) their default parameters from one: `problem()` is the one check of what goes
together. The flows keep these as flat parameters, not one nested model: Prefect merges a run's
parameters into its deployment's key by key (prefect/server/api/deployments.py: `dehydrated_params.update`),
so `prefect deployment run pipeline/on-demand -p record=true` keeps the deployment's git remote.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

Flow = Literal["pipeline", "study"]
# A study's DVC queue workers: on 2 cores the default study took 110-136 s with 2 workers and 150 s with one.
DEFAULT_JOBS = 2
# A variation's run on the pool is resubmitted when its worker dies (Crashed), at most this many runs in all.
DEFAULT_ATTEMPTS = 3
# Each flow's parameters that are modes, in the order the flow and its deployments list them.
PARAMETERS = {
    "pipeline": ("record", "overrides", "max_parallel", "repo", "git_remote", "branch", "credentials_block"),
    "study": ("repo", "git_remote", "branch", "credentials_block", "from_git", "pool", "jobs", "attempts"),
}
COUNTS = ("max_parallel", "jobs", "attempts")  # each an integer >= 1

RECORD_OR_EXPERIMENT = ("record commits results to git; a run with overrides is a DVC experiment "
                        "(`dvc exp show`, `dvc exp apply`): use one or the other")
EMPTY_REMOTE = ("git_remote is empty: set the Prefect variable dnnlab_git_remote to the git remote's "
                "URL (`prefect variable set dnnlab_git_remote URL`), then deploy or serve again")
CLONE_TAKES_NEITHER = ("git_remote runs in a fresh clone: it takes neither repo nor overrides "
                       "(a variation of the params is the study's business: `flows.study`)")
STUDY_NEEDS_POOL = ("a study from git runs its variations on a work pool (its clone goes when it ends): "
                    "pass pool, e.g. `-p pool=dnnlab`")


class RunSpecError(ValueError):
    """A combination of modes that cannot run: one line."""


class RunSpec(BaseModel):
    """Where and how one run goes (module docstring); build it with `for_flow`, which checks it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: bool = False
    overrides: Optional[dict[str, Any]] = None
    max_parallel: Optional[int] = None
    repo: Optional[str] = None
    git_remote: Optional[str] = None
    branch: Optional[str] = None
    credentials_block: Optional[str] = None
    from_git: bool = False  # in a fresh clone of git_remote (the pipeline: whenever git_remote is given)
    pool: Optional[str] = None
    jobs: int = DEFAULT_JOBS
    attempts: int = DEFAULT_ATTEMPTS

    @classmethod
    def for_flow(cls, flow: Flow, flags: bool = False, **modes: Any) -> RunSpec:
        """The spec of a `flow` run from its parameters (or a CLI's flags), checked: a RunSpecError says what is
        wrong, naming `--flags` when `flags` (the CLIs) and parameters otherwise (the flows)."""
        if flow == "pipeline":
            modes["from_git"] = modes.get("git_remote") is not None
        try:
            spec = cls(**modes)
        except ValidationError as error:
            first = error.errors()[0]
            field = str(first["loc"][0])
            expected = "expected an integer >= 1" if field in COUNTS else first["msg"]
            raise RunSpecError(f"{_name(field, first['input'], flags)}: {expected}") from None
        if line := spec.problem(flow, flags):
            raise RunSpecError(line)
        return spec

    def problem(self, flow: Flow, flags: bool = False) -> Optional[str]:
        """Why these modes cannot run together for `flow`, in one line; None if they can."""
        for field in COUNTS:
            value = getattr(self, field)
            if value is not None and value < 1:
                return f"{_name(field, value, flags)}: expected an integer >= 1"
        if self.overrides and self.record:
            return RECORD_OR_EXPERIMENT
        if not self.from_git:
            return None
        if flags and flow == "study" and not (self.pool and self.git_remote):
            return "--from-git needs --pool and --git-remote"
        if not self.git_remote:  # a deployment's `{{ prefect.variables.dnnlab_git_remote }}` with no such variable
            return EMPTY_REMOTE
        if flow == "pipeline" and (self.repo or self.overrides):
            return CLONE_TAKES_NEITHER
        if flow == "study" and not self.pool:
            return STUDY_NEEDS_POOL
        return None

    def parameters(self, flow: Flow) -> dict[str, Any]:
        """The `flow`'s parameters for these modes, those that differ from the defaults (a deployment's)."""
        given = self.model_dump(exclude_defaults=True)
        return {name: given[name] for name in PARAMETERS[flow] if name in given}


def _name(field: str, value: Any, flags: bool) -> str:
    return f"--{field.replace('_', '-')} {value}" if flags else f"{field} = {value!r}"
