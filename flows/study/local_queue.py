"""The study on DVC's local queue: queue each variation, run the queue (`dvc exp run --run-all -j N`), and
follow each variation as a task run of its own; stop the study's experiments when it is interrupted."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from flows import dvc_adapter
from flows.processes import stage_env
from flows.study.plan import TARGETS, StudyError, set_params
from flows.study.results import LAB_TASK, experiments_of, failure_reason
from stages.core.contract import STAGE_REPORT_ENV
from stages.core.params import StudyVariation
from stages.core.tracking import read_stage_records
from stages.tasks import TASK_NAMES, headline_choice, headline_name


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


def variation_tasks(variation: StudyVariation) -> list[str]:
    """The tasks whose headline a variation's task run shows: those its overrides name (`heart.model.width`:
    heart), in TASK_NAMES order; the lab's own task when it names none (the baseline, a shared `model` key)."""
    named = {key.split(".", 1)[0] for key, _ in variation.overrides}
    return [task for task in TASK_NAMES if task in named] or [LAB_TASK]


def headline_of(shown: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """The headline columns of `tasks` (synthetic/val_loss, heart/roc_auc, ...) in an experiment's metrics
    as `dvc exp show` has them, those with a number."""
    columns = [headline_name(task, short) for task in tasks for short in headline_choice(task)]
    return {column: shown[column] for column in columns if isinstance(shown.get(column), (int, float))}


@task(name="variation", task_run_name="{name}", cache_policy=NO_CACHE)
def follow_variation(root: Path, head: str, name: str, tasks: list[str], stage_report: Path) -> State:
    """One queued variation, from its start in DVC's queue to its end: Completed with the headline metrics
    of `tasks`, or Failed with the line of the stage that failed."""
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
    metrics = headline_of(found[name]["headline"], tasks)
    text = ", ".join(f"{column} {value:.4g}" for column, value in metrics.items())
    get_run_logger().info(f"{name}: {text}")
    return Completed(message=text, data=metrics)


def follow_variations(root: Path, head: str, tasks: dict[str, list[str]], stage_report: Path,
                      done: threading.Event) -> list:
    """Start a `follow_variation` task run for each variation when the queue starts it (in a thread of
    the flow run, while `run_queue` follows the queue); the others once `done` is set. Their futures."""
    followed: dict[str, Any] = {}
    while True:
        finished = done.wait(FOLLOW_INTERVAL_S)
        try:
            started = list(tasks) if finished else dvc_adapter.running_queue_entries(root)
        except Exception:  # the queue's state unreadable for a moment: ask again
            started = []
        for name in started:
            if name in tasks and name not in followed:
                followed[name] = follow_variation.submit(root, head, name, tasks[name], stage_report)
        if finished:
            return list(followed.values())


def run_on_local_queue(root: Path, head: str, variations: list[StudyVariation], jobs: int, stage_report: Path) -> None:
    """Every variation through DVC's queue, each followed as a task run that ends Completed or Failed."""
    names = [variation.name for variation in variations]
    clear_previous(root, head, names)
    for variation in variations:
        queue_experiment(root, variation)
    done, follower = threading.Event(), ThreadPoolExecutor(1, thread_name_prefix="follow")
    following = follower.submit(contextvars.copy_context().run, follow_variations, root, head,
                                {variation.name: variation_tasks(variation) for variation in variations}, stage_report, done)
    try:
        run_queue(root, jobs, names, stage_report)
    except BaseException:
        _STOPPED.add(stage_report)
        raise
    finally:
        done.set()
        wait(following.result())  # each variation's task run ends Completed or Failed
        follower.shutdown()


def stop_study_queue(names: list[str], pooled: bool) -> list[str]:
    """After Ctrl-C, SIGTERM or a lost server: the study's experiments in DVC's queue stopped too (its workers
    are daemons of their own session); `experiment NAME` for each one stopped."""
    if not names or pooled:  # a pool's runs are the workers' (a study run again waits for them)
        return []
    try:
        return [f"experiment {name}" for name in dvc_adapter.stop_queue_entries(Path.cwd(), names)]
    except Exception:  # interrupted before anything was queued: no queue to stop
        return []
