"""The study on a Prefect process work pool: each variation a run of the `variation` flow here, on any
machine with a worker, trained in its own clone of the git remote and pushed; the study checks the
remotes first, waits for the runs (flows/pool.py) and pulls their experiments."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger, task
from prefect.exceptions import TerminationSignal
from prefect.states import Failed

from flows import dvc_adapter, pool as work_pool
from flows.git_workspace import GitSource, RemoteError, credentials_env, fresh_clone, git_output, uncommitted_inputs
from flows.processes import Interrupted, interrupted_line, stage_env
from flows.study.plan import TARGETS, StudyError, set_params
from stages.core.contract import STAGE_REPORT_ENV
from stages.core.params import StudyVariation
from stages.core.tracking import read_stage_records


def stage_failure(records: list[dict]) -> Optional[str]:
    """The last failed stage's own one-line error in a run's stage records, if a stage failed."""
    failed = [record for record in records if record.get("exit_code")]
    return failed[-1]["line"] if failed else None


@flow(name="variation")
def variation(git_remote: str, commit: str, name: str, params: list[str], branch: str = "main",
              credentials_block: Optional[str] = None) -> Any:
    """One study variation as a DVC experiment, in a fresh clone of `git_remote` at `commit`.

    Trains it (`dvc exp run -n NAME --pull --allow-missing -S PARAM… evaluate`) unless the remote has
    experiment NAME of this commit already, pushes its data (`dvc push`) and only then the experiment
    (`dvc exp push origin NAME`): an experiment at the remote always has its data at the DVC remote.
    """
    log = get_run_logger()
    try:
        source = GitSource(git_remote, branch or "main", credentials_env(credentials_block))
        env = {**stage_env(False), **source.env}
        with fresh_clone(source, stage_env(False), log, commit=commit, pull_data=False) as clone:
            if name in dvc_adapter.remote_experiments(clone, "origin", commit):
                log.info(f"{name}: experiment already at {git_remote}; nothing to train")
                return {"name": name, "trained": False}
            with tempfile.TemporaryDirectory(prefix="dnnlab-variation-") as folder:
                report = Path(folder) / "stage-reports.jsonl"
                code, _, stderr = dvc_adapter.stream_dvc(
                    clone, dvc_adapter.experiment_run_args(name, params, TARGETS),
                    {**env, STAGE_REPORT_ENV: str(report)}, log)
                if code != 0:
                    raise StudyError(stage_failure(read_stage_records(report))
                                     or f"`dvc exp run` exited {code}: {dvc_adapter.error_line(stderr, 'no output')}")
            push_experiment(clone, name, commit, env, log)
    except (StudyError, RemoteError, dvc_adapter.DvcError) as error:
        return Failed(message=str(error))
    except (KeyboardInterrupt, TerminationSignal) as stop:  # its worker cancelled it, or the machine shuts down
        # stream_dvc stopped `dvc exp run` and its stage already; the clone went with fresh_clone. One line
        # says so, then Prefect records the run as crashed (the study resubmits it while attempts are left).
        signum = getattr(stop, "signal", None) or getattr(stop, "signum", signal.SIGINT)
        log.error(interrupted_line(f"variation {name}", Interrupted(signum), "its clone is removed, nothing more pushed"))
        raise
    return {"name": name, "trained": True}


def push_experiment(clone: Path, name: str, commit: str, env: dict[str, str], log: Any) -> None:
    """The data first, then the experiment's ref, unless another run of it pushed one meanwhile (one ref
    per variation: a run the server thought dead may have lived on)."""
    code, _, stderr = dvc_adapter.stream_dvc(clone, dvc_adapter.PUSH_ARGS, env, log)
    if code != 0:
        raise StudyError(f"`dvc push` failed: {dvc_adapter.error_line(stderr, 'no output')}")
    if name in dvc_adapter.remote_experiments(clone, "origin", commit):
        log.info(f"{name}: another run pushed this experiment meanwhile; keeping that one")
        return
    code, _, stderr = dvc_adapter.stream_dvc(clone, dvc_adapter.experiment_push_args("origin", name), env, log)
    if code != 0:
        raise StudyError(f"`dvc exp push` failed: {dvc_adapter.error_line(stderr, 'no output')}")
    log.info(f"{name}: experiment pushed")


def git_remote_of(root: Path, git_remote: Optional[str]) -> str:
    """The git remote the workers clone: the one given, else the repository's `origin`."""
    if git_remote:
        return git_remote
    return git_output(root, "remote", "get-url", "origin", error=lambda text: StudyError(
        f"the pool path needs a git remote the workers can clone: add `origin` or pass git_remote ({text})")).strip()


def current_branch(root: Path) -> str:
    branch = git_output(root, "rev-parse", "--abbrev-ref", "HEAD", error=StudyError).strip()
    if branch == "HEAD":
        raise StudyError("the repository is on a detached HEAD: check out the branch the study's commit is on")
    return branch


@task(name="check remotes")
def require_pushed(root: Path, head: str, source: GitSource) -> None:
    """Workers see only what the remotes have: the commit on the git remote's branch, its inputs as
    committed, and the baseline's data at the DVC remote (pushed here; a no-op when it is there)."""
    env = {**stage_env(False), **source.env}
    try:
        project = dvc_adapter.DvcProject(root)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    try:
        changed = uncommitted_inputs(project, env)
        has_remote = project.has_remote()
    finally:
        project.close()
    if changed:
        raise StudyError(f"uncommitted changes to pipeline inputs ({', '.join(changed[:4])}): the workers run the "
                         "commit; commit and push them first")
    if not has_remote:
        raise StudyError("the pool path needs a DVC remote the workers can pull from and push to "
                         "(`dvc remote add -d NAME URL`, committed in .dvc/config)")
    git_output(root, "fetch", "-q", source.url, source.branch, env=env, error=lambda text: StudyError(
        f"{source.url}: {text}"))
    fetched = git_output(root, "rev-parse", "FETCH_HEAD", env=env).strip()
    if subprocess.run(["git", "merge-base", "--is-ancestor", head, fetched], cwd=root, env=env).returncode != 0:
        raise StudyError(f"commit {head[:10]} is not on {source.url} {source.branch}: push it first "
                         f"(`git push origin {source.branch}`)")
    code, _, stderr = dvc_adapter.stream_dvc(root, dvc_adapter.PUSH_ARGS, env, get_run_logger())
    if code != 0:
        raise StudyError(f"`dvc push` of the baseline's data failed: {dvc_adapter.error_line(stderr, 'no output')}")


@task(name="run on pool")
def run_on_pool(root: Path, head: str, variations: list[StudyVariation], pool: str, attempts: int,
                source: GitSource, credentials_block: Optional[str]) -> dict:
    """Reuse the variations whose experiments the git remote has; run the others on the pool; pull them all.

    {"reused": names, "failed": {name: reason}, "runs": {name: [flow run ids]}}"""
    log = get_run_logger()
    try:
        at_remote = set(dvc_adapter.remote_experiments(root, source.url, head))
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    reused = [v.name for v in variations if v.name in at_remote]
    if reused:
        log.info(f"already at {source.url}, not trained again: {', '.join(reused)}")
    to_run = {v.name: {"git_remote": source.url, "branch": source.branch, "commit": head, "name": v.name,
                       "params": set_params(v), "credentials_block": credentials_block}
              for v in variations if v.name not in at_remote}
    outcomes: dict = {}
    if to_run:
        try:
            work_pool.require_process_pool(pool)
            automation = work_pool.ensure_zombie_automation()
            if automation != "unchanged":
                log.info(f"{automation} the automation {work_pool.ZOMBIE_AUTOMATION!r}")
            deployment = work_pool.register_variation_deployment(variation, pool, source.url, source.branch)
        except work_pool.PoolError as error:
            raise StudyError(str(error)) from None
        outcomes = work_pool.run_variations(deployment, to_run, head, attempts, log)
    done = reused + [name for name, outcome in outcomes.items() if outcome.completed]
    if done:
        env = {**stage_env(False), **source.env}
        code, _, stderr = dvc_adapter.stream_dvc(root, dvc_adapter.experiment_pull_args(source.url, done), env, log)
        if code != 0:
            raise StudyError(f"`dvc exp pull` failed: {dvc_adapter.error_line(stderr, 'no output')}")
    return {"reused": reused,
            "failed": {name: outcome.reason for name, outcome in outcomes.items() if not outcome.completed},
            "runs": {name: outcome.runs for name, outcome in outcomes.items()}}
