"""The `study` flow: the lab's hyperparameter study as DVC experiments, compared in one report.

    python -m flows.study [--only NAME]... [--jobs N] [--json]
    python -m flows.study --pool NAME [--attempts N] [--only NAME]... [--json]

Each variation in params.yaml's `study:` section becomes a DVC experiment named after it:
the flow checks every entry first (nothing is queued if one is bad), brings the workspace's
pipeline up to date (the `pipeline` flow; nothing runs when it is built) and checks that git
tracks its results (an experiment starts from git's view of the workspace), removes this commit's
earlier experiments of the same names (a re-run replaces them), queues each variation with
`dvc exp run --queue -n NAME -S key=value evaluate` (the evaluate stages and what they need;
not the lab's report.html), runs the queue (`dvc exp run --run-all -j N`:
N Celery workers, each experiment in its own temporary copy, the workspace untouched), reads
the results back with `dvc exp show --json` (params, metrics) and from each experiment's commit
(learning curve, predictions), and writes `reports/study.html`.

With `--pool NAME` the variations run on a Prefect process work pool instead of DVC's queue, on
any machine with a worker (`prefect worker start --pool NAME`): each is a run of the `variation`
flow below, which trains it in its own clone of the git remote at the study's commit and pushes
its data and its experiment; the study waits for them (flows/pool.py: resubmitting the runs of
dead workers), `dvc exp pull`s them and writes the same report. Variations whose experiment is
already at the git remote are reused, not trained; a variation that fails is one line of the
result while the others finish.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from flows import dvc_adapter, pool as work_pool
from flows.git_workspace import GitSource, RemoteError, credentials_env, fresh_clone, git_output, uncommitted_inputs
from flows.pipeline import notify_failure, override_text, pipeline, publish_report_link, stage_env
from flows.run_spec import DEFAULT_ATTEMPTS, DEFAULT_JOBS, RunSpec, RunSpecError
from flows.processes import (Interrupted, end_if_server_lost, interrupted_line, log_without_tracebacks,
                             prefect_server_for_run, signals_interrupt, storage_failure_line)
from stages.core.contract import STAGE_REPORT_ENV
from stages.core.params import ParamsError, StudyVariation
from stages.core.tracking import read_stage_records
from stages.tasks import headline_choice, headline_name, load_params, parse_params

REPORT = Path("reports/study.html")
# `dvc exp show` has the headline metrics (HEADLINE's values); every metric is in DETAILS, in DVC's cache.
METRICS = "reports/headline/synthetic.json"
DETAILS = "reports/metrics/synthetic.json"
CURVE = "reports/plots/synthetic/learning_curve.csv"
PREDICTIONS = "reports/plots/synthetic/evaluation/predictions.csv"
# What each experiment reproduces: every `evaluate@…` stage and what it needs, so metrics, learning
# curves and predictions are fresh whatever a variation changes; the lab's report.html is left out
# (the study writes its own page; `dvc exp apply NAME && dvc repro` brings it up to date).
TARGETS = ("evaluate",)
ARTIFACT_KEY = "study-run"  # table: the experiments, best val/loss first
REPORT_ARTIFACT_KEY = "study-report"  # link: file:// URL of reports/study.html
HEADLINE = ("val/loss", "test/relative_mse", "ood/mse_vs_truth")  # each in synthetic.HEADLINE_METRICS: in dvc exp show


class StudyError(Exception):
    """A study that cannot run or finish: one line that says what to do."""


log_without_tracebacks(StudyError, RemoteError)  # their line says it all: Prefect would log a traceback too


# --- choosing and queueing the variations ---

def select_variations(variations: Sequence[StudyVariation], only: Optional[Sequence[str]]) -> list[StudyVariation]:
    """The study's variations, or those named in `only` (in the study's order); unknown names are refused."""
    if not only:
        return list(variations)
    known = [variation.name for variation in variations]
    unknown = [name for name in dict.fromkeys(only) if name not in known]
    if unknown:
        raise StudyError(f"unknown study variation(s) {', '.join(unknown)}; params.yaml study.variations "
                         f"has: {', '.join(known) or 'none'} (a variation listed twice runs under its first name)")
    return [variation for variation in variations if variation.name in only]


def plan(root: Path, only: Optional[Sequence[str]]) -> list[StudyVariation]:
    """Validate params.yaml (every study entry included) and choose the variations; nothing touched yet."""
    if not (root / "params.yaml").is_file():
        raise StudyError(f"no params.yaml in {root}: run the study from the repository root")
    try:
        variations = select_variations(load_params(root / "params.yaml").study, only)
    except ParamsError as error:
        raise StudyError(str(error)) from None
    if not variations:
        raise StudyError("params.yaml has no study.variations; add {name, params} entries under study:")
    return variations


def set_params(variation: StudyVariation) -> list[str]:
    """The `-S` values of `dvc exp run`: `key=value`, as a user types them (params.yaml holds every key)."""
    return [override_text(key, value) for key, value in variation.overrides]


def head_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyError("DVC experiments hang off a commit and this repository has none: commit first")
    return result.stdout.strip()


def untracked_results(root: Path) -> list[str]:
    """Pipeline results (dvc.lock, `cache: false` metrics and plot data) that git does not track.

    A queued experiment starts from git's view of the workspace (the last commit plus tracked
    changes): an untracked result is missing there, so every experiment would rebuild it (an
    untracked learning curve of MNIST: the MNIST training, in each experiment).
    """
    try:
        project = dvc_adapter.DvcProject(root)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    try:
        paths = [path for path in project.git_tracked_outputs() if (root / path).exists()]
    finally:
        project.close()
    if not paths:
        return []
    return git_output(root, "ls-files", "--others", "--exclude-standard", "--", *paths, error=StudyError).split()


def require_tracked_results(root: Path) -> None:
    untracked = untracked_results(root)
    if untracked:
        shown = ", ".join(untracked[:3]) + (f" and {len(untracked) - 3} more" if len(untracked) > 3 else "")
        raise StudyError(f"git does not track the pipeline results {shown}: queued experiments start from git's "
                         "view of the workspace and would each rebuild them; commit them first "
                         "(`python -m flows.pipeline --record`, or git add and commit them)")


@task(name="clear previous")
def clear_previous(root: Path, head: str, names: list[str]) -> list[str]:
    """Stop the study's own experiments left in the queue (a study killed mid-run: its queue workers live on),
    refuse a queue busy with others; remove this commit's experiments with the study's names (a re-run
    replaces them)."""
    leftover = [name for name in dvc_adapter.busy_queue_entries(root) if name in names]
    if leftover:
        get_run_logger().warning(f"stopping experiments an earlier study left in the queue: {', '.join(leftover)}")
        dvc_adapter.stop_queue_entries(root, leftover)
    busy = dvc_adapter.busy_queue_entries(root)
    if busy:
        raise StudyError(f"the DVC experiment queue already holds {', '.join(busy)}: let it finish "
                         "(`dvc queue status`) or empty it (`dvc queue remove --queued`), then run the study again")
    try:
        previous = dvc_adapter.remove_experiments(root, head, names)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    if previous:
        get_run_logger().info(f"removed earlier experiments: {', '.join(previous)}")
    return previous


@task(name="queue", task_run_name="queue:{variation.name}")
def queue_experiment(root: Path, variation: StudyVariation) -> None:
    """`dvc exp run --queue -n NAME -S key=value ... evaluate`: stashed for the queue, the workspace untouched."""
    try:
        dvc_adapter.queue_experiment(root, TARGETS, set_params(variation), variation.name)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None


@task(name="run queue")
def run_queue(root: Path, jobs: int, names: list[str], stage_report: Path) -> None:
    """`dvc exp run --run-all -j N`: start N queue workers and follow every experiment's log to its end.

    The workers inherit STAGE_REPORT_ENV: every stage of every experiment appends its record there."""
    env = {**stage_env(False), STAGE_REPORT_ENV: str(stage_report)}
    log = get_run_logger()
    returncode, stderr, hung = dvc_adapter.follow_queue(root, jobs, names, env, log,
                                                        "the experiment queue (`dvc exp run --run-all`)")
    if hung:
        log.warning(f"every experiment of the study had ended in DVC's queue, but `dvc exp run --run-all` "
                    f"was still following them {dvc_adapter.QUEUE_HANG_GRACE_S:.0f} s later (a DVC hang): "
                    "stopped it and the queue's idle workers; the results are read from the experiments")
    elif returncode != 0:
        raise StudyError(f"`dvc exp run --run-all` exited {returncode}: {dvc_adapter.error_line(stderr, 'no output')}")


# --- each variation of the local queue as a task run of its own ---

FOLLOW_INTERVAL_S = 2.0
_STOPPED: set[Path] = set()  # the stage reports of studies whose queue run ended on an error or interrupt


@task(name="variation", task_run_name="{name}", cache_policy=NO_CACHE)
def follow_variation(root: Path, head: str, name: str, stage_report: Path) -> State:
    """One queued variation, from its start in DVC's queue to its end: Completed with its headline
    metrics, or Failed with the line of the stage that failed."""
    while name in dvc_adapter.busy_queue_entries(root):
        if stage_report in _STOPPED:  # the study does not wait for the queue any more: neither do we
            return Failed(message=f"{name}: the study stopped following the queue before it ended")
        time.sleep(FOLLOW_INTERVAL_S)
    records = read_stage_records(stage_report)
    if any(record.get("experiment") == name and record.get("exit_code") for record in records):
        return Failed(message=failure_reason(records, name))
    try:
        found = experiments_of(dvc_adapter.show_experiments(root, stage_env(False)), head)
    except dvc_adapter.DvcError as error:
        return Failed(message=str(error))
    if name not in found:
        return Failed(message=failure_reason(records, name))
    shown = found[name]["metrics"]  # the headline file's names: synthetic/val_loss for val/loss
    columns = {metric: headline_name("synthetic", short) for short, metric in headline_choice("synthetic").items()}
    metrics = {metric: shown.get(columns[metric]) for metric in HEADLINE}
    text = ", ".join(f"{metric} {value:.4g}" for metric, value in metrics.items() if isinstance(value, (int, float)))
    get_run_logger().info(f"{name}: {text}")
    return Completed(message=text, data=metrics)


def follow_variations(root: Path, head: str, names: list[str], stage_report: Path, done: threading.Event) -> list:
    """Start a `follow_variation` task run for each variation when the queue starts it (in a thread of
    the flow run, while `run_queue` follows the queue); the others once `done` is set. Their futures."""
    followed: dict[str, Any] = {}
    while True:
        finished = done.wait(FOLLOW_INTERVAL_S)
        try:
            started = names if finished else dvc_adapter.running_queue_entries(root)
        except Exception:  # the queue's state unreadable for a moment: ask again
            started = []
        for name in started:
            if name in names and name not in followed:
                followed[name] = follow_variation.submit(root, head, name, stage_report)
        if finished:
            return list(followed.values())


# --- the pool path: variations as flow runs on a Prefect work pool ---

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


# --- reading the results back ---

def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def experiments_of(shown: list[dict], head: str) -> dict[str, dict]:
    """name -> {rev, params, metrics} for the experiments of commit `head` in `dvc exp show --json` output."""
    found: dict[str, dict] = {}
    for commit in shown:
        if commit.get("rev") != head:
            continue
        for experiment in commit.get("experiments") or []:
            rev = (experiment.get("revs") or [{}])[0]
            data = rev.get("data") or {}
            metrics = data.get("metrics") or {}
            # A failed run is listed too, with an error and its starting point's data: not a result.
            if experiment.get("name") and METRICS in metrics and not rev.get("error"):
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
                found[experiment["name"]] = {"rev": rev["rev"], "params": params,
                                             "metrics": metrics[METRICS].get("data") or {}}
    return found


def failure_reason(records: list[dict], name: str) -> str:
    """The failed stage's own one-line error (`train: error: …`), as the stage recorded it in experiment `name`."""
    failed = [record for record in records if record.get("experiment") == name and record.get("exit_code")]
    return failed[-1]["line"] if failed else "no stage reported an error (a crash, or DVC failed around it)"


def _git_show(root: Path, rev: str, path: str) -> str:
    result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyError(f"experiment commit {rev[:10]} has no {path}: does dvc.yaml still track it with cache: false?")
    return result.stdout


def _dvc_show(root: Path, rev: str, path: str) -> str:
    """A DVC-tracked file as experiment `rev` wrote it (from the local cache, which queued runs share)."""
    from dvc.api import read
    from dvc.exceptions import DvcException

    try:
        return read(path, repo=str(root), rev=rev)
    except (DvcException, OSError) as error:
        raise StudyError(f"experiment commit {rev[:10]}: cannot read {path} from DVC's cache ({error}); "
                         "`dvc exp apply` it and `dvc repro` to rebuild it") from None


def read_experiments(root: Path, head: str, variations: Sequence[StudyVariation], stage_report: Path) -> list:
    """Each variation's experiment: params and metrics from `dvc exp show --json`, CSVs from its commit."""
    import io

    import pandas as pd

    from stages.reporting.study import StudyExperiment

    try:
        found = experiments_of(dvc_adapter.show_experiments(root, stage_env(False)), head)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    failed = [variation.name for variation in variations if variation.name not in found]
    if failed:
        reason = failure_reason(read_stage_records(stage_report), failed[0])
        raise StudyError(f"experiment(s) {', '.join(failed)} failed; {failed[0]}: {reason} "
                         f"(`dvc queue logs {failed[0]}`)")
    experiments = []
    for variation in variations:
        shown = found[variation.name]
        params = parse_params(shown["params"], with_study=False)
        experiments.append(StudyExperiment(
            name=variation.name, rev=shown["rev"],
            overrides={key: _get(shown["params"], key) for key, _ in variation.overrides},
            seed=params.seed, config=params.task("synthetic"),
            metrics=json.loads(_dvc_show(root, shown["rev"], DETAILS)),
            curve=pd.read_csv(io.StringIO(_git_show(root, shown["rev"], CURVE))),
            predictions=pd.read_csv(io.StringIO(_git_show(root, shown["rev"], PREDICTIONS)))))
    return experiments


@task(name="collect")
def collect(root: Path, head: str, variations: list[StudyVariation], stage_report: Path) -> list:
    experiments = read_experiments(root, head, variations, stage_report)
    log = get_run_logger()
    for exp in experiments:
        log.info(f"{exp.name}: experiment {exp.rev[:10]}, val/loss {exp.metrics.get('val/loss', float('nan')):.4g}, "
                 f"test/relative_mse {exp.metrics.get('test/relative_mse', float('nan')):.4g}")
    return experiments


@task(name="report")
def write_report(root: Path, head: str, experiments: list) -> str:
    from stages.core.io import write_outputs
    from stages.reporting.study import build_study_report

    write_outputs({root / REPORT: build_study_report(experiments, head).encode()})
    return str(REPORT)


def experiment_rows(result: dict) -> list[dict]:
    """One row per experiment, best val/loss first: experiment, changes, and the headline metrics."""
    rows = []
    for exp in sorted(result["experiments"], key=lambda e: e["metrics"].get("val/loss", float("inf"))):
        changes = ", ".join(f"{k}={v}" for k, v in exp["params"].items()) or "(lab defaults)"
        rows.append({"experiment": exp["name"], "changes": changes,
                     **{metric: exp["metrics"].get(metric) for metric in HEADLINE}})
    return rows


def publish_summary(result: dict, root: Path, link_report: bool = True) -> None:
    """The study's experiments as a table artifact, its report as a link artifact."""
    from prefect.artifacts import create_table_artifact

    failed = "".join(f"; {failure['name']} failed: {failure['reason']}" for failure in result.get("failed", []))
    create_table_artifact(key=ARTIFACT_KEY, table=experiment_rows(result),
                          description=f"Study: {len(result['experiments'])} experiments in {result['seconds']:.0f} s; "
                                      f"compare them with `dvc exp show`{failed}")
    if link_report:
        publish_report_link(REPORT_ARTIFACT_KEY, root / result["report"], result["report"], "The study's report")


# --- the flow ---

@flow(name="study", on_failure=[notify_failure])
def study(only: Optional[list[str]] = None, jobs: int = DEFAULT_JOBS, repo: Optional[str] = None,
          notify_block: Optional[str] = None, pool: Optional[str] = None, attempts: int = DEFAULT_ATTEMPTS,
          git_remote: Optional[str] = None, branch: Optional[str] = None,
          credentials_block: Optional[str] = None, from_git: bool = False) -> Any:
    """Run params.yaml's study variations as DVC experiments and write reports/study.html.

    only: variation names to run (default: all). jobs: experiments run at a time (queue workers).
    repo: the repository root (default: the working directory).
    notify_block: a Prefect notification block, `<block-type>/<name>`: a failed study sends its one-line error.
    pool: a Prefect process work pool: each variation runs as a flow run of `variation/<pool>` on its
    workers instead of DVC's local queue (jobs is then unused). attempts: runs per variation when workers
    die (a Crashed run is resubmitted; a Failed one is not). git_remote, branch: what the workers clone
    (default: `origin` and the current branch). credentials_block: a Prefect Secret block of the
    environment variables git and DVC need on the workers.
    from_git: run the whole study in a fresh clone of `git_remote` (`branch`, default main) instead of
    `repo`, never in a working tree (the `study` deployment); it needs `pool`. The experiments stay at
    the git remote (`dvc exp pull origin NAME`), the results in the `study-run` artifact.
    """
    try:
        spec = RunSpec.for_flow("study", repo=repo, git_remote=git_remote, branch=branch,
                                credentials_block=credentials_block, from_git=from_git, pool=pool, jobs=jobs,
                                attempts=attempts)
    except RunSpecError as error:
        return Failed(message=str(error))
    if not spec.from_git:
        return _run_study(Path(spec.repo or os.getcwd()).resolve(), only, spec)
    try:
        source = GitSource(spec.git_remote, spec.branch or "main", credentials_env(spec.credentials_block))
        with fresh_clone(source, stage_env(False), get_run_logger()) as clone:
            return _run_study(clone, only, spec.model_copy(update={"branch": source.branch}), in_clone=True)
    except RemoteError as error:
        return Failed(message=str(error))


def _run_study(root: Path, only: Optional[list[str]], spec: RunSpec, in_clone: bool = False) -> Any:
    started = time.perf_counter()
    pooled = {"reused": [], "failed": {}, "runs": {}}
    try:
        variations = plan(root, only)
        head = head_commit(root)
        baseline = pipeline(repo=str(root), return_state=True)  # the experiments start from built outputs
        if not baseline.is_completed():
            raise StudyError(f"the baseline pipeline failed: {baseline.message}")
        require_tracked_results(root)
        with tempfile.TemporaryDirectory(prefix="dnnlab-study-") as folder:
            stage_report = Path(folder) / "stage-reports.jsonl"
            if spec.pool:
                source = GitSource(git_remote_of(root, spec.git_remote), spec.branch or current_branch(root),
                                   credentials_env(spec.credentials_block))
                require_pushed(root, head, source)
                pooled = run_on_pool(root, head, variations, spec.pool, spec.attempts, source, spec.credentials_block)
                variations = [v for v in variations if v.name not in pooled["failed"]]
                if not variations:
                    raise StudyError("every variation failed: " + "; ".join(
                        f"{name}: {reason}" for name, reason in pooled["failed"].items()))
            else:
                clear_previous(root, head, [variation.name for variation in variations])
                for variation in variations:
                    queue_experiment(root, variation)
                done, follower = threading.Event(), ThreadPoolExecutor(1, thread_name_prefix="follow")
                following = follower.submit(contextvars.copy_context().run, follow_variations, root, head,
                                            [variation.name for variation in variations], stage_report, done)
                try:
                    run_queue(root, spec.jobs, [variation.name for variation in variations], stage_report)
                except BaseException:
                    _STOPPED.add(stage_report)
                    raise
                finally:
                    done.set()
                    wait(following.result())  # each variation's task run ends Completed or Failed
                    follower.shutdown()
            experiments = collect(root, head, variations, stage_report)
        report = write_report(root, head, experiments)
    except (StudyError, RemoteError) as error:
        return Failed(message=str(error))
    result = {
        "experiments": [{"name": exp.name, "params": dict(exp.overrides), "metrics": dict(exp.metrics)}
                        for exp in experiments],
        "failed": [{"name": name, "reason": reason} for name, reason in pooled["failed"].items()],
        "reused": pooled["reused"],
        "report": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    publish_summary(result, root, link_report=not in_clone)  # a clone's report goes with the clone
    return result


# --- command line ---

def stop_study_queue(names: list[str], pooled: bool) -> list[str]:
    """After Ctrl-C, SIGTERM or a lost server: the study's experiments in DVC's queue stopped too (its workers
    are daemons of their own session); `experiment NAME` for each one stopped."""
    if not names or pooled:  # a pool's runs are the workers' (a study run again waits for them)
        return []
    try:
        return [f"experiment {name}" for name in dvc_adapter.stop_queue_entries(Path.cwd(), names)]
    except Exception:  # interrupted before anything was queued: no queue to stop
        return []


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this variation of params.yaml's study (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help=f"experiments at a time: `dvc exp run --run-all -j N` workers (default {DEFAULT_JOBS})")
    parser.add_argument("--pool", metavar="NAME",
                        help="run the variations on this Prefect process work pool's workers, not DVC's local queue")
    parser.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS, metavar="N",
                        help=f"with --pool: runs per variation when workers die (default {DEFAULT_ATTEMPTS})")
    parser.add_argument("--git-remote", metavar="URL", help="with --pool: the git remote workers clone (default: origin)")
    parser.add_argument("--credentials-block", metavar="NAME",
                        help="with --pool: a Prefect Secret block of the environment variables git and DVC need")
    parser.add_argument("--notify-block", metavar="TYPE/NAME",
                        help="a Prefect notification block to tell if the study fails (custom-webhook/NAME)")
    parser.add_argument("--from-git", action="store_true",
                        help="with --pool and --git-remote: run the study in a fresh clone of the git remote, "
                             "not in this checkout (what the study deployment does)")
    parser.add_argument("--json", action="store_true", help="print the experiments, report path and seconds as JSON")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_line()
    args = parser.parse_args(argv)
    try:  # refuse bad modes, entries and unknown names before Prefect starts (the flow checks again)
        spec = RunSpec.for_flow("study", flags=True, jobs=args.jobs, attempts=args.attempts, pool=args.pool,
                                git_remote=args.git_remote, credentials_block=args.credentials_block,
                                from_git=args.from_git)
        variations = [] if args.from_git else plan(Path.cwd(), args.only)  # from git, params.yaml is the clone's
    except (RunSpecError, StudyError) as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    names = [variation.name for variation in variations]
    try:
        with signals_interrupt(), prefect_server_for_run(), \
                end_if_server_lost("study", lambda: stop_study_queue(names, bool(args.pool))):
            state = study(only=args.only, notify_block=args.notify_block, **spec.parameters("study"),
                          return_state=True)
    except Interrupted as interrupt:
        stopped = stop_study_queue(names, bool(args.pool))
        after = ("the variations' runs on the pool go on, and the study run again waits for them" if args.pool else
                 "run the study again to rerun them")
        print(interrupted_line("study", interrupt, after, stopped), file=sys.stderr)
        return interrupt.exit_code
    result = state.result(raise_on_failure=False)
    if line := storage_failure_line("study", result):  # the flow's own write failed, as a stage's would
        print(line, file=sys.stderr)
        return 2
    if not state.is_completed():
        print(f"study: error: {state.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        for exp in result["experiments"]:
            metrics = exp["metrics"]
            print(f"{exp['name']:<16} val/loss {metrics.get('val/loss', float('nan')):<10.4g} "
                  f"test/relative_mse {metrics.get('test/relative_mse', float('nan')):<10.4g} "
                  f"ood/mse_vs_truth {metrics.get('ood/mse_vs_truth', float('nan')):.4g}")
        print(f"study: {len(result['experiments'])} experiments in {result['seconds']:.0f} s; "
              f"report {result['report']}; compare with `dvc exp show`")
    for failure in result["failed"]:  # the other variations finished and are in the report
        print(f"study: error: {failure['name']} failed: {failure['reason']}", file=sys.stderr)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
