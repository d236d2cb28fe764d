"""What the Prefect UI shows of the lab: the Flows page lists the lab's flows only (every stage run is a
run of the one `stage` flow, named and tagged after its DVC stage), and a training stage's progress
artifact ends at 100 % when training ends, early or not, and says failed when the stage fails.

Against a real (temporary, SQLite) Prefect server and real DVC and Keras runs on a tiny repo copy.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT, repo_env, run, set_params

prefect = pytest.importorskip("prefect")

from prefect.client.orchestration import get_client  # noqa: E402

from flows.pipeline import pipeline  # noqa: E402
from tests.test_flows import child_runs  # noqa: E402
from tests.test_prefect_results import artifacts_of, log_levels  # noqa: E402

LAB_FLOWS = {"pipeline", "stage", "study", "variation"}  # flows.pipeline, flows.study, flows.pool


def flow_names() -> dict:
    """id -> name of every flow the server knows: what its Flows page lists."""
    with get_client(sync_client=True) as client:
        return {flow.id: flow.name for flow in client.read_flows()}


def test_stage_runs_are_runs_of_one_stage_flow_and_training_progress_ends_at_100_or_failed(
        workspace: Path, mirror: Path, prefect_api: str, stage_env):
    # A tiny patience over many epochs: early stopping ends training long before the last epoch.
    set_params(workspace, {"heart.train.epochs": 200, "heart.train.early_stopping_patience": 1})

    state = pipeline(repo=str(workspace), targets=["train@heart"], return_state=True)

    assert state.is_completed(), state.message
    train_run = child_runs(state.state_details.flow_run_id)["train@heart"]
    seeds = pd.read_csv(workspace / "reports/plots/heart/seed_curves.csv")
    epochs_run = int((seeds["seed"] == seeds["seed"].min()).sum())  # the progress follows the first seed
    assert 0 < epochs_run < 200
    progress = artifacts_of(train_run.id)["train-heart-progress"]
    assert progress.data == 100.0
    assert progress.description.startswith(f"train@heart: stopped early at epoch {epochs_run} of 200 ("), \
        progress.description
    lines = log_levels(train_run.id, "Updating lock file")  # DVC's, after the stage process exited
    assert not [line for line in lines if "Still processing items" in line]  # Prefect's event drain at exit

    # `dvc repro` with a server configured: the stage process makes its own run of the same flow.
    probe = "from stages.core.errors import run_stage; run_stage('generate', lambda: None)"
    run([sys.executable, "-c", probe], REPO_ROOT, repo_env(mirror, PREFECT_API_URL=prefect_api, DVC_STAGE="generate"))

    flows = flow_names()
    assert set(flows.values()) <= LAB_FLOWS and "stage" in flows.values(), flows
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["stage:generate"])))
    assert [(run.name, flows[run.flow_id]) for run in tagged] == [("generate", "stage")]
    assert flows[train_run.flow_id] == "stage" and "stage:train@heart" in train_run.tags

    # A training stage that fails: its artifact says so, with the stage's own line.
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["heart"]["train"]["validation_split"] = 0.999  # valid to configure; no training rows for train
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = pipeline(repo=str(workspace), targets=["train@heart"], return_state=True)

    assert failed.is_failed()
    failed_run = child_runs(failed.state_details.flow_run_id)["train@heart"]
    progress = artifacts_of(failed_run.id)["train-heart-progress"]
    assert progress.description == f"train@heart: failed: {failed_run.state.message}", progress.description
    assert failed_run.state.message.startswith("train: error: ")


def test_each_variation_of_the_local_queue_is_a_task_run_with_its_state_and_headline_metrics(
        workspace: Path, mirror: Path, prefect_api: str):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    from tests.test_study import experiments_at_head, study_params

    env = repo_env(mirror, PREFECT_API_URL=prefect_api)
    study_params(workspace, [{"name": "narrow", "params": {"synthetic.model.width": 16}},
                             {"name": "broken", "params": {"synthetic.train.validation_split": 0.0001}}])
    run(["git", "commit", "-qam", "a study with a variation that fails"], workspace, env)

    result = run([sys.executable, "-m", "flows.study", "--jobs", "2"], workspace, env, check=False)

    assert result.returncode == 1 and "broken" in result.stderr.splitlines()[-1], result.stderr[-2000:]
    assert "No hostname was supplied" not in result.stdout + result.stderr  # kombu, on DVC's filesystem broker
    # DVC's queue chatter goes to DEBUG, out of the console (Prefect's default level is INFO).
    assert "Use Ctrl+C to stop following logs" not in result.stdout + result.stderr
    assert not re.search(r"Ran experiment\(s\):\s*$", result.stdout + result.stderr, re.M)
    with get_client(sync_client=True) as client:
        (study_run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["study"])),
                                             sort=FlowRunSort.START_TIME_DESC, limit=1)
        task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[study_run.id])))
    variations = {run.name: run.state for run in task_runs if run.task_key.startswith("follow_variation")}
    assert set(variations) == {"narrow", "broken"}, [run.name for run in task_runs]
    assert variations["broken"].type.value == "FAILED"
    assert variations["broken"].message.startswith("train: error: ") and "validation_split" in variations["broken"].message
    assert variations["narrow"].type.value == "COMPLETED"
    metrics = experiments_at_head(workspace, env)["narrow"]["data"]["metrics"]["reports/headline/synthetic.json"]["data"]
    assert f"synthetic/val_loss {metrics['synthetic/val_loss']:.4g}" in variations["narrow"].message, \
        variations["narrow"].message


def test_a_variations_task_run_shows_the_headline_of_the_tasks_it_changes():
    from flows.study.local_queue import headline_of, variation_tasks
    from stages.core.params import StudyVariation

    def tasks(*keys):
        return variation_tasks(StudyVariation(name="v", overrides=tuple((key, 1) for key in keys)))

    assert tasks("heart.model.width") == ["heart"]
    assert tasks("synthetic.model.l2", "mnist.train.epochs") == ["mnist", "synthetic"]  # in TASK_NAMES order
    assert tasks() == tasks("model.width") == tasks("seed") == ["synthetic"]  # the baseline, shared keys
    shown = {"synthetic/val_loss": 1.2, "heart/val_loss": 0.45, "heart/roc_auc": 0.9, "heart/accuracy": 0.8,
             "heart/roc_auc±": 0.01, "mnist/accuracy": "n/a"}
    assert list(headline_of(shown, ["heart"]).items()) == \
        [("heart/roc_auc", 0.9), ("heart/accuracy", 0.8), ("heart/val_loss", 0.45)]  # the task's headline order
    assert headline_of(shown, ["mnist"]) == {}  # not a number: left out


def test_a_variation_stops_waiting_when_the_study_stops_following_the_queue(tmp_path: Path, monkeypatch):
    from flows.study import local_queue as study

    report = tmp_path / "stage-reports.jsonl"
    polls = iter([["narrow"]] * 3)  # still running at the first polls (then a bounded fake: no hang if broken)
    monkeypatch.setattr(study.dvc_adapter, "busy_queue_entries", lambda root: next(polls, []))
    monkeypatch.setattr(study, "FOLLOW_INTERVAL_S", 0.0)
    monkeypatch.setattr(study, "_STOPPED", {report})  # run_queue ended on an error or Ctrl-C
    state = study.follow_variation.fn(tmp_path, "0" * 40, "narrow", ["synthetic"], report)
    assert state.is_failed() and state.message == "narrow: the study stopped following the queue before it ended"
