"""The `pipeline` flow: the DVC graph, independent stages at once, each stage that runs its own Prefect flow run.

DVC stays the authority on what is stale. The flow asks DVC once (in-process) for the stage
graph and checks each stage with `Stage.changed()` when its upstream stages are done, so a
stage whose upstream really changed its outputs runs and one whose upstream wrote identical
bytes does not. A stale stage runs as `dvc --wait-for-lock repro --single-item <stage>` in a
subprocess, inside a child flow run named after the stage, so DVC writes `dvc.lock`, the cache
and the run cache exactly as `dvc repro` would; up to `max_parallel` stages whose inputs are
ready run at once (the three tasks' chains, the fetches); an up-to-date stage is recorded as a
cheap `skip:<stage>` task run.

    python -m flows.pipeline [--target STAGE]... [--force-fetch] [--set KEY=VALUE]... [--record]
                             [--max-parallel N] [--git-remote URL [--branch NAME]] [--json]
    python -m flows.pipeline --restore   # after a killed run: the last good outputs back, nothing run
"""

import argparse
import contextlib
import contextvars
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.states import Failed, State

from flows.dvc_adapter import (DvcError, DvcProject, apply_param_overrides, error_line, find_root,
                               override_text, parse_param_overrides, repro_args, restore_recorded_outputs,
                               save_experiment, stream_dvc)
from flows.git_workspace import (GitSource, RecordRefused, RemoteError, credentials_env, fresh_clone, record_results,
                                 require_committed_inputs)
from flows.notices import notify_failure, publish_report_link
from flows.processes import (CheckoutBusy, Interrupted, end_if_server_lost, interrupted_line,
                             log_without_tracebacks, one_run_per_checkout, prefect_server_for_run, signals_interrupt,
                             stage_env, stop_running_commands, storage_failure_line)
from flows.run_spec import RunSpec, RunSpecError
from stages.core.contract import NETWORK_EXIT_CODE, PROGRESS_ARTIFACT_ENV, STAGE_REPORT_ENV
from stages.core.tracking import STAGE_FLOW, read_stage_records, stage_tag

RETRIED_STAGES = ("fetch",)  # the stages with network I/O
PROGRESS_STAGES = ("train",)  # the stages that update a progress artifact (stages.core.tracking)
ARTIFACT_KEY = "pipeline-run"  # table: stage, status, seconds
METRICS_ARTIFACT_KEY = "pipeline-metrics"  # table: file, metric, old, new, change
REPORT_ARTIFACT_KEY = "pipeline-report"  # link: file:// URL of the report


class StageFailed(Exception):
    """A stage's command failed: its one-line error and its exit code."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.line, self.exit_code = line, exit_code


log_without_tracebacks(StageFailed)  # its line says it all: Prefect would log a traceback with it


@dataclass
class StageRecord:
    name: str
    status: str  # "ran" | "skipped" | "failed" | "not run" (an upstream stage failed)
    seconds: float
    started: float = 0.0  # wall-clock times (time.time()): when the stage's turn began and ended
    ended: float = 0.0
    message: str = ""     # a failed stage's one line


# --- running one stage: a subprocess whose lines go to the Prefect run logger ---

def failure_line(stage: str, returncode: int, records: list[dict], stderr: list[str]) -> tuple[str, int]:
    """The failed stage's one-line error and exit code, as the stage itself recorded them (run_stage);
    without a record (the stage crashed, or DVC failed around it) DVC's error line and exit code."""
    failed = [record for record in records if record.get("exit_code")]
    if failed:
        return failed[-1]["line"], failed[-1]["exit_code"]
    return error_line(stderr, f"{stage}: `dvc repro` exited {returncode}"), returncode


def _is_network_failure(task: Any, task_run: Any, state: State) -> bool:
    error = state.data
    return isinstance(error, StageFailed) and error.exit_code == NETWORK_EXIT_CODE


def artifact_key(text: str) -> str:
    """A Prefect artifact key from a name: lower-case letters, digits and dashes (`train@mnist` -> `train-mnist`)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def progress_env(stage: str) -> dict[str, str]:
    """For a training stage: a progress artifact in this run, and what the stage needs to update it
    (its id, and the API URL this process talks to: a temporary server's too)."""
    if stage.split("@")[0] not in PROGRESS_STAGES:
        return {}
    from prefect.artifacts import create_progress_artifact
    from prefect.client.orchestration import get_client

    artifact_id = create_progress_artifact(0.0, key=artifact_key(f"{stage}-progress"),
                                           description=f"{stage}: starting")
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    return {PROGRESS_ARTIFACT_ENV: str(artifact_id), "PREFECT_API_URL": url}


@task(name="dvc repro")
def repro_stage(stage: str, root: str, force: bool, extra_env: Optional[dict[str, str]] = None) -> str:
    """`dvc repro --single-item [--force] <stage>`: "ran" if the stage's command ran, "skipped" if DVC
    did not run it (up to date by now, or restored from DVC's run cache)."""
    with tempfile.TemporaryDirectory(prefix="dnnlab-stage-") as folder:
        report = Path(folder) / "stage-report.jsonl"  # fresh for every try: the stage writes its record here
        env = {**stage_env(force), **(extra_env or {}), STAGE_REPORT_ENV: str(report)}
        returncode, _, stderr = stream_dvc(Path(root), repro_args(stage, force), env, get_run_logger(), stage)
        records = read_stage_records(report)
    if returncode != 0:
        raise StageFailed(*failure_line(stage, returncode, records, stderr))
    return "ran" if records else "skipped"


@flow(name=STAGE_FLOW)
def stage_flow(stage: str, root: str, force: bool = False, retries: int = 0,
               retry_delay_seconds: float = 0.0) -> Any:
    """One DVC stage; network failures (exit 75) are retried with exponential backoff."""
    options: dict[str, Any] = {"task_run_name": f"dvc repro {stage}"}
    if retries > 0:
        options.update(retries=retries, retry_condition_fn=_is_network_failure,
                       retry_delay_seconds=[retry_delay_seconds * 2 ** attempt for attempt in range(retries)])
    extra_env = progress_env(stage)
    state = repro_stage.with_options(**options)(stage, root, force, extra_env, return_state=True)
    if state.is_failed():
        error = state.result(raise_on_failure=False)
        line = error.line if isinstance(error, StageFailed) else f"{stage}: {error}"
        if extra_env:  # the bar stays where training got to; the text says it will go no further
            update_progress_failed(UUID(extra_env[PROGRESS_ARTIFACT_ENV]), stage, line)
        return Failed(message=line)
    if extra_env and state.result() == "skipped":
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(UUID(extra_env[PROGRESS_ARTIFACT_ENV]), 100.0,
                                 description=f"{stage}: not trained (restored from DVC's run cache)")
    return state.result()


def update_progress_failed(artifact_id: UUID, stage: str, line: str) -> None:
    """Mark a training stage's progress artifact failed, at the progress its last update reached."""
    from prefect.artifacts import update_progress_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    reached = float(progress[0].data) if progress and isinstance(progress[0].data, (int, float)) else 0.0
    update_progress_artifact(artifact_id, reached, description=f"{stage}: failed: {line}")


@task(name="skip", task_run_name="skip:{stage}")
def skip_stage(stage: str) -> str:
    """An up-to-date stage, recorded: a task run costs a fraction of a child flow run."""
    return "skipped"


# --- the stages, as many at once as their dependencies and max_parallel allow ---

def _run_one(stage: str, root: Path, force: bool, retries: int, retry_delay_seconds: float) -> tuple[str, str]:
    """A stale stage as a child run of the `stage` flow, named and tagged after it (in a worker thread):
    its status and message."""
    from prefect import tags

    with tags(stage_tag(stage)):
        state = stage_flow.with_options(flow_run_name=stage)(
            stage, str(root), force, retries, retry_delay_seconds, return_state=True)
    if not state.is_completed():
        return "failed", state.message or f"{stage} failed"
    return state.result(), ""


def run_stages(project: DvcProject, root: Path, force_fetch: bool, fetch_retries: int,
               retry_delay_seconds: float, max_parallel: int) -> list[StageRecord]:
    """Every planned stage once its upstream stages are done: up-to-date ones as skips, stale ones as
    child flow runs, up to `max_parallel` at a time. A failed stage stops the stages that need it;
    the others go on. DVC decides staleness, just before a stage's turn, and runs each stage."""
    records: dict[str, StageRecord] = {}
    pending, running = list(project.order), {}
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="stage") as pool, stop_stages_if_interrupted():
        while pending or running:
            for stage in [stage for stage in pending if project.upstream(stage) <= records.keys()]:
                started = time.time()
                force = force_fetch and stage.split("@")[0] == "fetch"
                if any(records[up].status in ("failed", "not run") for up in project.upstream(stage)):
                    records[stage] = StageRecord(stage, "not run", 0.0, started, started)
                elif not force and not project.changed(stage):
                    skip_stage(stage)
                    records[stage] = StageRecord(stage, "skipped", round(time.time() - started, 2), started,
                                                 time.time())
                elif len(running) < max_parallel:
                    retries = fetch_retries if stage.split("@")[0] in RETRIED_STAGES else 0
                    # Prefect's run context lives in context variables: the thread gets the flow's.
                    running[pool.submit(contextvars.copy_context().run, _run_one, stage, root, force, retries,
                                        retry_delay_seconds)] = (stage, started)
                else:
                    continue  # stale, and no slot free: it waits
                pending.remove(stage)
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stage, started = running.pop(future)
                    status, message = future.result()
                    ended = time.time()
                    records[stage] = StageRecord(stage, status, round(ended - started, 2), started, ended, message)
    return [records[stage] for stage in project.order]


@contextlib.contextmanager
def stop_stages_if_interrupted() -> Any:
    """An interrupt (Ctrl-C, a cancelled run's SIGTERM) reaches the main thread only: stop the stages the
    worker threads run, or the pool would wait for them to finish."""
    try:
        yield
    except BaseException:
        stop_running_commands()
        raise


# --- overrides (a DVC experiment), record, summary ---

def apply_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Check overrides against the params models (one line naming a bad key), then edit params.yaml
    with DVC's own `-S` code; restore it if that fails."""
    from stages.core.params import ParamsError, read_params_file
    from stages.tasks import apply_overrides as checked

    path = root / "params.yaml"
    texts = [override_text(key, value) for key, value in overrides.items()]
    try:
        checked(read_params_file(path), parse_param_overrides(texts))
    except ParamsError as error:
        raise ValueError(str(error)) from None
    original = path.read_bytes()
    try:
        apply_param_overrides(path, texts)
    except Exception as error:  # hydra's struct errors arrive wrapped by DVC
        path.write_bytes(original)
        cause = error.__cause__ or error
        raise ValueError(f"cannot apply {' '.join(texts)} to params.yaml: {cause}".splitlines()[0]) from None


def headline(metrics: dict) -> str:
    """`synthetic/rel_mse 0.049, …` from a metrics diff: each task's HEADLINE_METRIC, in lab order."""
    from stages.tasks import TASK_NAMES, headline_choice, headline_name, load_task

    parts = []
    for name in sorted(TASK_NAMES, key=lambda name: load_task(name).LAB_PART):
        shorts = [short for short, key in headline_choice(name).items() if key == load_task(name).HEADLINE_METRIC]
        metric = headline_name(name, shorts[0]) if shorts else None
        for values in metrics.values() if metric else ():
            value = values.get(metric, {}).get("new")
            if isinstance(value, (int, float)):
                parts.append(f"{metric} {value:.4g}")
    return ", ".join(parts)


def stage_rows(stages: list[StageRecord]) -> list[dict]:
    return [{"stage": s.name, "status": s.status, "seconds": s.seconds} for s in stages]


def metric_rows(metrics: dict, verdicts: Optional[dict] = None) -> list[dict]:
    """One row per metric of a `dvc metrics diff --json` (the headline files: dvc.yaml's `metrics`): file,
    metric, old (HEAD), new (this run), change, and whether the change is beyond the seeds' noise (`verdicts`,
    by file and metric: seed_verdicts); numbers to 4 significant digits (the table is read, not computed
    with), the changed metrics first."""
    from stages.tasks import significant

    rows = [{"file": path, "metric": name, "old": significant(value.get("old")),
             "new": significant(value.get("new")), "change": significant(value.get("diff")),
             "beyond seed noise?": (verdicts or {}).get((path, name), "")}
            for path, values in metrics.items() for name, value in values.items()]
    return sorted(rows, key=lambda row: not row["change"])  # stable: DVC's order within each group


def seed_verdicts(root: Path, metrics: dict) -> dict[tuple[str, str], str]:
    """(headline file, metric) -> whether this run's change of a headline metric is beyond the seeds' noise:
    its seeds against HEAD's, seed by seed (stages/spread.py, `paired_verdict`), for each changed metric of a
    task whose evaluate wrote several seeds on both sides. HEAD's values come from DVC's cache."""
    changed = {(path, name): Path(path).stem for path, values in metrics.items() for name, value in values.items()
               if value.get("diff")}  # (headline file, metric) -> its task
    if not changed:  # nothing moved (a run that found every stage up to date): nothing to load or read
        return {}
    from dvc.api import read
    from dvc.exceptions import DvcException

    from stages.core.contract import METRICS_DOCUMENT
    from stages.spread import paired_verdict
    from stages.tasks import TASK_NAMES, headline_choice, higher_is_better

    documents: dict[str, tuple] = {}

    def both_sides(task: str) -> tuple:
        if task not in documents:
            path = METRICS_DOCUMENT.format(task=task)
            try:
                old = json.loads(read(path, repo=str(root), rev="HEAD"))
                new = json.loads((root / path).read_text())
                documents[task] = (old["seeds"], new["seeds"])
            except (DvcException, OSError, ValueError, KeyError, TypeError) as error:
                # not in the local cache, written before seeds, no commit yet: the table says so, the run goes on
                documents[task] = (None, f"HEAD's seeds unreadable ({type(error).__name__}): `dvc pull` them")
        return documents[task]

    verdicts = {}
    for (path, name), owner in changed.items():
        metric = headline_choice(owner).get(name.partition("/")[2]) if owner in TASK_NAMES else None
        if metric is None:
            continue
        old, new = both_sides(owner)
        if old is None:
            verdicts[(path, name)] = new
            continue
        seeds = sorted(set(old) & set(new), key=int)
        if len(seeds) < 2:
            verdicts[(path, name)] = "cannot tell: fewer than 2 seeds on both sides"
            continue
        verdicts[(path, name)] = paired_verdict([new[s][metric] for s in seeds], [old[s][metric] for s in seeds],
                                                higher_is_better(owner, metric)).sentence()
    return verdicts


def publish_summary(run_name: str, outcome: str, stages: list[StageRecord], metrics: dict,
                    report: Optional[str], experiment: Optional[str], commit: Optional[str],
                    verdicts: Optional[dict] = None) -> None:
    """The run's results as Prefect artifacts: the stages and the metrics as tables, the report as a link."""
    from prefect.artifacts import create_table_artifact

    notes = [f"Pipeline run `{run_name}`: {outcome}."]
    if experiment:
        notes.append(f"Experiment `{experiment}` (`dvc exp show`).")
    if commit:
        notes.append(f"Recorded as commit `{commit[:10]}`.")
    create_table_artifact(key=ARTIFACT_KEY, table=stage_rows(stages), description=" ".join(notes))
    create_table_artifact(key=METRICS_ARTIFACT_KEY, table=metric_rows(metrics, verdicts),
                          description=f"Metrics of pipeline run `{run_name}` against the last commit "
                                      "(`dvc metrics diff --all HEAD`)" + ("" if metrics else ": no metrics yet"))
    if report and Path(report).exists():
        publish_report_link(REPORT_ARTIFACT_KEY, Path(report), os.path.relpath(report),  # the cwd is the root
                            f"The report of pipeline run `{run_name}`")


def _run_name() -> str:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.name if context and context.flow_run else "local"


# --- the flow ---

@flow(name="pipeline", on_failure=[notify_failure])
def pipeline(targets: Optional[list[str]] = None, force_fetch: bool = False,
             overrides: Optional[dict[str, Any]] = None, record: bool = False, repo: Optional[str] = None,
             fetch_retries: int = 3, fetch_retry_delay_seconds: float = 10.0,
             max_parallel: Optional[int] = None, notify_block: Optional[str] = None,
             git_remote: Optional[str] = None, branch: Optional[str] = None,
             credentials_block: Optional[str] = None) -> Any:
    """Run the DVC pipeline (`dvc repro` semantics), each stage that runs a child flow run, independent
    stages at the same time.

    targets: stage names (default: all), with their upstream stages as `dvc repro` takes them.
    force_fetch: download again; downstream stages rerun only if the data really changed.
    overrides: params, e.g. {"model.width": 128}: run as a DVC experiment (like `dvc exp run -S`).
    record: if results changed, commit dvc.lock and the git-tracked metrics/plots (data pushed to the
        DVC remote first); refused if a pipeline input is not committed.
    repo: the repository root (default: the working directory).
    fetch_retries, fetch_retry_delay_seconds: network failures of fetch stages are retried after
        delay, 2 x delay, 4 x delay, ... seconds.
    max_parallel: stages running at once (default: the number of CPU cores; 1: one after another).
    notify_block: a Prefect notification block, `<block-type>/<name>` (e.g. `custom-webhook/dnnlab-alerts`):
        a failed run sends its name and one-line error through it.
    git_remote: run in a fresh clone of this git remote's `branch` (default main), with the data pulled
        from its DVC remote, instead of in `repo`; with `record` the commit is pushed back.
    credentials_block: a Prefect Secret block of environment variables git and DVC need for the
        remotes (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    """
    try:
        spec = RunSpec.for_flow("pipeline", record=record, overrides=overrides, max_parallel=max_parallel, repo=repo,
                                git_remote=git_remote, branch=branch, credentials_block=credentials_block)
    except RunSpecError as error:
        return Failed(message=str(error))
    options = dict(targets=targets, force_fetch=force_fetch, overrides=spec.overrides, record=spec.record,
                   fetch_retries=fetch_retries, fetch_retry_delay_seconds=fetch_retry_delay_seconds,
                   max_parallel=spec.max_parallel or os.cpu_count() or 1)
    if not spec.from_git:
        root = find_root(Path(spec.repo or os.getcwd()).resolve())
        # DVC's Python API, like its CLI, names stages and files relative to the working directory.
        try:
            with one_run_per_checkout(root, f"pipeline run {_run_name()}"), contextlib.chdir(root):
                return _run_pipeline(root, **options)
        except CheckoutBusy as error:
            return Failed(message=str(error))
    try:
        source = GitSource(spec.git_remote, spec.branch or "main", credentials_env(spec.credentials_block))
        with fresh_clone(source, stage_env(False), get_run_logger()) as clone, contextlib.chdir(clone):
            return _run_pipeline(clone, remote_env=source.env, push_branch=source.branch if spec.record else None,
                                 in_clone=True, **options)
    except RemoteError as error:
        return Failed(message=str(error))


def _run_pipeline(root: Path, targets: Optional[list[str]], force_fetch: bool, overrides: Optional[dict[str, Any]],
                  record: bool, fetch_retries: int, fetch_retry_delay_seconds: float, max_parallel: int,
                  remote_env: Mapping[str, str] = {}, push_branch: Optional[str] = None,
                  in_clone: bool = False) -> Any:
    log = get_run_logger()
    run_name = _run_name()
    try:
        if overrides:
            apply_overrides(root, overrides)
        project = DvcProject(root, targets)
    except (ValueError, DvcError) as error:
        return Failed(message=str(error))
    try:
        if record:  # before any stage runs: results of uncommitted inputs are never recorded
            require_committed_inputs(project)
    except RecordRefused as error:
        project.close()
        return Failed(message=str(error))

    failure: Optional[str] = None
    try:
        records = run_stages(project, root, force_fetch, fetch_retries, fetch_retry_delay_seconds, max_parallel)
        failed = [record for record in records if record.status == "failed"]
        if failed:
            failure = "; ".join(record.message for record in failed)

        report = project.report_path()
        report = str(root / report) if report else None
        metrics: dict = {}
        verdicts: dict = {}
        experiment = commit = None
        try:
            metrics = project.metrics_diff()  # before `record` commits: the change this run made
            verdicts = seed_verdicts(root, metrics)
            if failure is None and overrides:
                experiment = save_as_experiment(root, run_name, log)
            if failure is None and record:
                ran = [r.name for r in records if r.status == "ran"]
                message = (f"pipeline run {run_name}: {headline(metrics) or 'no metrics'}\n\n"
                           f"Stages run: {', '.join(ran) if ran else 'none (all up to date)'}")
                commit = record_results(project, message, log, {**stage_env(False), **remote_env}, push_branch)
        except (RuntimeError, DvcError, RecordRefused, RemoteError) as error:
            failure = str(error)
    finally:
        project.close()

    summary = {"stages": [asdict(r) for r in records], "metrics": metrics, "experiment": experiment,
               "commit": commit}
    # A clone's report goes with the clone: with `record` it is in the pushed commit's data (`dvc pull`).
    publish_summary(run_name, "Failed" if failure else "Completed", records, metrics, None if in_clone else report,
                    experiment, commit, verdicts)
    counts = {status: sum(r.status == status for r in records) for status in ("ran", "skipped", "failed", "not run")}
    log.info(f"{counts['ran']} stage(s) ran, {counts['skipped']} skipped, {counts['failed']} failed, "
             f"{counts['not run']} not run" + (f"; report: {report}" if report else ""))
    if failure:
        return Failed(message=failure, data=summary)
    return summary


def save_as_experiment(root: Path, run_name: str, log: Any) -> str:
    """The workspace (overridden params and their results) as an experiment named after the run."""
    name = save_experiment(root, run_name)
    log.info(f"experiment saved as {name} (`dvc exp show`)")
    return name


# --- command line ---

def _parse_set(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. model.width=128")
    return key, value


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", dest="targets", metavar="STAGE",
                        help="a stage to reproduce, with its upstream stages (repeatable; default: all)")
    parser.add_argument("--force-fetch", action="store_true", help="download the raw data again")
    parser.add_argument("--set", action="append", dest="overrides", type=_parse_set, metavar="KEY=VALUE",
                        help="override a param, as a DVC experiment (repeatable)")
    parser.add_argument("--record", action="store_true",
                        help="commit dvc.lock and the metrics/plots if they changed (and dvc push)")
    parser.add_argument("--fetch-retries", type=int, default=3)
    parser.add_argument("--fetch-retry-delay", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--max-parallel", type=int, metavar="N",
                        help="stages running at once (default: the number of CPU cores; 1: one after another)")
    parser.add_argument("--notify-block", metavar="TYPE/NAME",
                        help="a Prefect notification block to tell if the run fails, e.g. custom-webhook/dnnlab-alerts")
    parser.add_argument("--git-remote", metavar="URL",
                        help="run in a fresh clone of this git remote (data from its DVC remote); "
                             "with --record, push the commit there")
    parser.add_argument("--branch", metavar="NAME", help="the git remote's branch (default: main)")
    parser.add_argument("--credentials-block", metavar="NAME",
                        help="a Prefect Secret block of environment variables for the remotes")
    parser.add_argument("--json", action="store_true", help="print the run's summary as one JSON object")
    parser.add_argument("--restore", action="store_true",
                        help="run nothing: put back the outputs dvc.lock records for every stage that lost them "
                             "(a run killed midway: DVC removes a stage's outputs before running it) or holds "
                             "outputs DVC never recorded (a stage stopped while DVC recorded them)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_line()
    args = parser.parse_args(argv)
    if args.restore:
        restored = restore_recorded_outputs(find_root(Path.cwd()))
        which = ", ".join(restored) or "no stage (none was missing or unrecorded)"
        print(f"pipeline: restored the recorded outputs of {which}", file=sys.stderr)
        return 0
    try:  # refuse modes that do not go together before Prefect starts
        spec = RunSpec.for_flow("pipeline", flags=True, record=args.record, max_parallel=args.max_parallel,
                                overrides=dict(args.overrides) if args.overrides else None,
                                git_remote=args.git_remote, branch=args.branch,
                                credentials_block=args.credentials_block)
    except RunSpecError as error:
        parser.error(str(error))
    try:
        with signals_interrupt(), prefect_server_for_run(), end_if_server_lost("pipeline"):
            state = pipeline(targets=args.targets, force_fetch=args.force_fetch, fetch_retries=args.fetch_retries,
                             fetch_retry_delay_seconds=args.fetch_retry_delay, notify_block=args.notify_block,
                             **spec.parameters("pipeline"), return_state=True)
    except Interrupted as interrupt:
        print(interrupted_line("pipeline", interrupt, "`python -m flows.pipeline --restore` puts back their last "
                                                      "good outputs (DVC removes a stage's outputs before running "
                                                      "it); run it again to finish"), file=sys.stderr)
        return interrupt.exit_code
    result = state.result(raise_on_failure=False)
    if line := storage_failure_line("pipeline", result):  # the flow's own write failed, as a stage's would
        print(line, file=sys.stderr)
        return 2
    if args.json:
        if not isinstance(result, dict):
            result = {"stages": [], "metrics": {}, "experiment": None, "commit": None}
        print(json.dumps(result))
    if not state.is_completed():
        print(f"pipeline: error: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
