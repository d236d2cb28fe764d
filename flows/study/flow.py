"""The `study` flow and its command line (`python -m flows.study`): plan, baseline, the variations on DVC's
queue or a work pool, the report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger
from prefect.states import Failed

import flows.study
from flows.git_workspace import GitSource, RemoteError, credentials_env, fresh_clone
from flows.notices import notify_failure
from flows.pipeline import pipeline
from flows.processes import (Interrupted, end_if_server_lost, interrupted_line, prefect_server_for_run,
                             signals_interrupt, stage_env, storage_failure_line)
from flows.run_spec import DEFAULT_ATTEMPTS, DEFAULT_JOBS, RunSpec, RunSpecError
from flows.study.local_queue import run_on_local_queue, stop_study_queue
from flows.study.on_pool import current_branch, git_remote_of, require_pushed, run_on_pool
from flows.study.plan import StudyError, head_commit, plan, require_tracked_results
from flows.study.results import collect, publish_summary, write_report


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
                run_on_local_queue(root, head, variations, spec.jobs, stage_report)
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


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.study", description=flows.study.__doc__,
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
