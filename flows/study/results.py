"""Reading the study's experiments back (params and metrics from `dvc exp show --json`, CSVs from their
commits), its report page, and what it publishes to Prefect."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from prefect import get_run_logger, task

from flows import dvc_adapter
from flows.notices import publish_report_link
from flows.processes import stage_env
from flows.study.plan import StudyError
from stages.core.contract import METRICS_DOCUMENT
from stages.core.params import Params, StudyVariation
from stages.core.tracking import read_stage_records
from stages.tasks import TASK_NAMES, parse_params

REPORT = Path("reports/study.html")
# `dvc exp show` has the headline metrics (HEADLINE's values); every metric, over the seeds, is in
# reports/metrics/<task>.json, in DVC's cache.
HEADLINE_FOLDER = "reports/headline/"  # evaluate@<task>'s headline files (dvc.yaml): dvc exp show's columns
METRICS = f"{HEADLINE_FOLDER}synthetic.json"
LAB_TASK = "synthetic"  # the task of the lab's questions: read whatever the variations change
PREDICTIONS = "reports/plots/synthetic/evaluation/predictions.csv"
ARTIFACT_KEY = "study-run"  # table: the experiments, best val/loss first
REPORT_ARTIFACT_KEY = "study-report"  # link: file:// URL of reports/study.html
HEADLINE = ("val/loss", "test/relative_mse", "ood/mse_vs_truth")  # each in synthetic.HEADLINE_METRICS: in dvc exp show


def curve_file(task: str, name: str = "learning_curve.csv") -> str:
    return f"reports/plots/{task}/{name}"


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def experiments_of(shown: list[dict], head: str) -> dict[str, dict]:
    """name -> {rev, params, metrics, headline} for the experiments of commit `head` in `dvc exp show --json`
    output: `metrics` the lab task's headline file, `headline` every task's columns (`heart/roc_auc`, ...)."""
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
                headline = {column: value for path, file in metrics.items() if path.startswith(HEADLINE_FOLDER)
                            for column, value in ((file or {}).get("data") or {}).items()}
                found[experiment["name"]] = {"rev": rev["rev"], "params": params,
                                             "metrics": metrics[METRICS].get("data") or {}, "headline": headline}
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


def tasks_to_read(params: Mapping[str, Params]) -> list[str]:
    """The lab's task, and every task whose resolved config differs between the experiments (`params`: each
    one's params.yaml, resolved): the tasks the page answers for."""
    configs = list(params.values())
    changed = [name for name in TASK_NAMES if name != LAB_TASK and any(
        (p.seed, p.task(name)) != (configs[0].seed, configs[0].task(name)) for p in configs[1:])]
    return [LAB_TASK, *changed]


def read_task(root: Path, rev: str, name: str, params: Params):
    """One task's results in experiment `rev`: metrics over the seeds (DVC's cache), mean curve (its commit)."""
    import io

    import pandas as pd

    from stages.reporting.study import TaskRun
    from stages.tasks import headline_choice, higher_is_better, load_task

    document = json.loads(_dvc_show(root, rev, METRICS_DOCUMENT.format(task=name)))
    seed_curves = {}
    if name == LAB_TASK:  # the lab's questions follow each seed's curve
        table = pd.read_csv(io.StringIO(_dvc_show(root, rev, curve_file(name, "seed_curves.csv"))))
        seed_curves = {int(seed): curve.drop(columns="seed") for seed, curve in table.groupby("seed")}
    return TaskRun(title=load_task(name).TITLE, config=params.task(name), metrics=document["mean"],
                   seeds={int(seed): values for seed, values in document["seeds"].items()},
                   curve=pd.read_csv(io.StringIO(_git_show(root, rev, curve_file(name)))),
                   judged={metric: higher_is_better(name, metric) for metric in headline_choice(name).values()},
                   seed_curves=seed_curves)


def read_experiments(root: Path, head: str, variations: Sequence[StudyVariation], stage_report: Path) -> list:
    """Each variation's experiment: params from `dvc exp show --json`, metrics over the seeds and curves from its
    commit, for the lab's task and each task a variation changes."""
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
    params = {v.name: parse_params(found[v.name]["params"], with_study=False) for v in variations}
    tasks = tasks_to_read(params)
    experiments = []
    for variation in variations:
        shown, resolved = found[variation.name], params[variation.name]
        experiments.append(StudyExperiment(
            name=variation.name, rev=shown["rev"],
            overrides={key: _get(shown["params"], key) for key, _ in variation.overrides}, seed=resolved.seed,
            tasks={name: read_task(root, shown["rev"], name, resolved) for name in tasks},
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
