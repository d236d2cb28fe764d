"""The `study` flow: the lab's hyperparameter study as DVC experiments, compared in one report.

    python -m flows.study [--only NAME]... [--jobs N] [--json]

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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import flow, get_run_logger, task
from prefect.states import Failed

from flows import dvc_adapter
from flows.git_workspace import git_output
from flows.pipeline import notify_failure, override_text, pipeline, publish_report_link, stage_env
from stages.core.contract import STAGE_REPORT_ENV
from stages.core.params import ParamsError, StudyVariation
from stages.core.tracking import read_stage_records
from stages.tasks import load_params, parse_params

REPORT = Path("reports/study.html")
METRICS = "reports/metrics/synthetic.json"
CURVE = "reports/plots/synthetic/learning_curve.csv"
PREDICTIONS = "reports/plots/synthetic/evaluation/predictions.csv"
# What each experiment reproduces: every `evaluate@…` stage and what it needs, so metrics, learning
# curves and predictions are fresh whatever a variation changes; the lab's report.html is left out
# (the study writes its own page; `dvc exp apply NAME && dvc repro` brings it up to date).
TARGETS = ("evaluate",)
# On 2 cores the default study took 110-136 s with 2 workers and 150 s with one (same machine, same hour).
DEFAULT_JOBS = 2
ARTIFACT_KEY = "study-run"  # table: the experiments, best val/loss first
REPORT_ARTIFACT_KEY = "study-report"  # link: file:// URL of reports/study.html
HEADLINE = ("val/loss", "test/relative_mse", "ood/mse_vs_truth")


class StudyError(Exception):
    """A study that cannot run or finish: one line that says what to do."""


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
    """Refuse a busy queue; remove this commit's experiments with the study's names (a re-run replaces them)."""
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
def run_queue(root: Path, jobs: int, stage_report: Path) -> None:
    """`dvc exp run --run-all -j N`: start N queue workers and follow every experiment's log to its end.

    The workers inherit STAGE_REPORT_ENV: every stage of every experiment appends its record there."""
    env = {**stage_env(False), STAGE_REPORT_ENV: str(stage_report)}
    returncode, _, stderr = dvc_adapter.stream_dvc(root, dvc_adapter.run_queue_args(jobs), env, get_run_logger())
    if returncode != 0:
        raise StudyError(f"`dvc exp run --run-all` exited {returncode}: {dvc_adapter.error_line(stderr, 'no output')}")


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
            seed=params.seed, config=params.task("synthetic"), metrics=shown["metrics"],
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


def publish_summary(result: dict, root: Path) -> None:
    """The study's experiments as a table artifact, its report as a link artifact."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=ARTIFACT_KEY, table=experiment_rows(result),
                          description=f"Study: {len(result['experiments'])} experiments in {result['seconds']:.0f} s; "
                                      "compare them with `dvc exp show`")
    publish_report_link(REPORT_ARTIFACT_KEY, root / result["report"], result["report"], "The study's report")


# --- the flow ---

@flow(name="study", on_failure=[notify_failure])
def study(only: Optional[list[str]] = None, jobs: int = DEFAULT_JOBS, repo: Optional[str] = None,
          notify_block: Optional[str] = None) -> Any:
    """Run params.yaml's study variations as DVC experiments and write reports/study.html.

    only: variation names to run (default: all). jobs: experiments run at a time (queue workers).
    repo: the repository root (default: the working directory).
    notify_block: a Prefect notification block, `<block-type>/<name>`: a failed study sends its one-line error.
    """
    started = time.perf_counter()
    root = Path(repo or os.getcwd()).resolve()
    try:
        if not isinstance(jobs, int) or jobs < 1:
            raise StudyError(f"jobs = {jobs!r}: expected an integer >= 1")
        variations = plan(root, only)
        head = head_commit(root)
        baseline = pipeline(repo=str(root), return_state=True)  # the queued experiments start from built outputs
        if not baseline.is_completed():
            raise StudyError(f"the baseline pipeline failed: {baseline.message}")
        require_tracked_results(root)
        clear_previous(root, head, [variation.name for variation in variations])
        for variation in variations:
            queue_experiment(root, variation)
        with tempfile.TemporaryDirectory(prefix="dnnlab-study-") as folder:
            stage_report = Path(folder) / "stage-reports.jsonl"
            run_queue(root, jobs, stage_report)
            experiments = collect(root, head, variations, stage_report)
        report = write_report(root, head, experiments)
    except StudyError as error:
        return Failed(message=str(error))
    result = {
        "experiments": [{"name": exp.name, "params": dict(exp.overrides), "metrics": dict(exp.metrics)}
                        for exp in experiments],
        "report": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    publish_summary(result, root)
    return result


# --- command line ---

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this variation of params.yaml's study (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help=f"experiments at a time: `dvc exp run --run-all -j N` workers (default {DEFAULT_JOBS})")
    parser.add_argument("--notify-block", metavar="TYPE/NAME",
                        help="a Prefect notification block to tell if the study fails (custom-webhook/NAME)")
    parser.add_argument("--json", action="store_true", help="print the experiments, report path and seconds as JSON")
    args = parser.parse_args(argv)
    try:  # refuse bad entries and unknown names before Prefect starts (the flow checks again)
        if args.jobs < 1:
            raise StudyError(f"--jobs {args.jobs}: expected an integer >= 1")
        plan(Path.cwd(), args.only)
    except StudyError as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    state = study(only=args.only, jobs=args.jobs, notify_block=args.notify_block, return_state=True)
    result = state.result(raise_on_failure=False)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
