"""What a Prefect user sees of a run: table and link artifacts, a training stage's progress artifact,
stage output at INFO and real warnings at WARNING, and an opt-in failure notification.

Against a real (temporary, SQLite) Prefect server and real DVC runs on throwaway repo copies; the
notification goes to a webhook server this module starts on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import logging
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from dvc.api import read as dvc_read

from stages.spread import paired_verdict
from tests.conftest import REPO_ROOT, TINY_SEEDS, repo_env, run, set_params

prefect = pytest.importorskip("prefect")

from prefect.blocks.notifications import CustomWebhookNotificationBlock  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId)

from flows.pipeline import metric_rows, pipeline  # noqa: E402
from flows.processes import line_level  # noqa: E402
from flows.study.flow import study  # noqa: E402
from flows.study.results import experiment_rows  # noqa: E402
from tests.test_flows import child_runs, eventually  # noqa: E402

BLOCK = "custom-webhook/dnnlab-test-alerts"
# Started by the Python of every process on PYTHONPATH: the training stage says a Python warning.
STAGE_WARNING = '''import os, warnings
if os.environ.get("DVC_STAGE", "").startswith("train@"):
    warnings.warn("a warning the training stage printed", UserWarning)
'''


@pytest.fixture
def webhook(prefect_api: str) -> list[dict]:
    """A webhook server on 127.0.0.1 that records each POST's JSON, and the notification block that posts to it."""
    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CustomWebhookNotificationBlock(
        name="dnnlab tests", url=f"http://127.0.0.1:{server.server_port}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save(BLOCK.split("/")[1], overwrite=True)
    yield received
    server.shutdown()


def artifacts_of(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def log_levels(flow_run_id, last_line: str) -> dict[str, int]:
    """line -> level of one flow run's logs, once the line `last_line` starts with has arrived."""
    def read() -> dict[str, int]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return {log.message: log.level for log in logs}
    return eventually(read, lambda levels: any(line.startswith(last_line) for line in levels))


def test_a_run_publishes_tables_a_report_link_and_training_progress_and_notifies_no_one(
        workspace: Path, prefect_api: str, stage_env, webhook: list, monkeypatch, tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(STAGE_WARNING)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    set_params(workspace, {"synthetic.data.noise_sigma": 0.5})  # the synthetic chain reruns, trained 20 epochs

    state = pipeline(repo=str(workspace), notify_block=BLOCK, return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert {key: artifact.type for key, artifact in artifacts.items()} == {
        "pipeline-run": "table", "pipeline-metrics": "table", "pipeline-report": "markdown"}  # a link: markdown
    assert json.loads(artifacts["pipeline-run"].data) == [
        {"stage": stage["name"], "status": stage["status"], "seconds": stage["seconds"]} for stage in summary["stages"]]
    metrics = {(row["file"], row["metric"]): row for row in json.loads(artifacts["pipeline-metrics"].data)}
    document = json.loads((workspace / "reports/metrics/synthetic.json").read_text())
    row = metrics[("reports/headline/synthetic.json", "synthetic/rel_mse")]
    assert row["new"] == float(f"{document['mean']['test/relative_mse']:.4g}")  # the artifact's 4 significant digits
    assert row["change"] == pytest.approx(row["new"] - row["old"], abs=1e-3 * max(abs(row["new"]), abs(row["old"])))
    # Beyond the seeds' noise? This run's seeds against the last commit's (DVC's cache), seed by seed.
    before = json.loads(dvc_read("reports/metrics/synthetic.json", repo=str(workspace), rev="HEAD"))
    seeds = sorted(document["seeds"], key=int)
    assert len(seeds) == TINY_SEEDS and seeds == sorted(before["seeds"], key=int)
    expected = paired_verdict([document["seeds"][s]["test/relative_mse"] for s in seeds],
                              [before["seeds"][s]["test/relative_mse"] for s in seeds], higher_is_better=False)
    assert row["beyond seed noise?"] == expected.sentence() and f"{TINY_SEEDS} seeds" in expected.sentence()
    unchanged = metrics[("reports/headline/mnist.json", "mnist/accuracy")]
    assert unchanged["change"] == 0 and unchanged["beyond seed noise?"] == ""
    report_url = (workspace / "reports/report.html").resolve().as_uri()
    assert artifacts["pipeline-report"].data == f"[reports/report.html]({report_url})"

    train_run = child_runs(state.state_details.flow_run_id)["train@synthetic"]
    progress = artifacts_of(train_run.id)["train-synthetic-progress"]  # updated by the stage process itself
    assert (progress.type, progress.data) == ("progress", 100.0)
    assert progress.description.startswith("train@synthetic: trained all 20 epochs (") and "val" in progress.description

    levels = log_levels(train_run.id, "train@synthetic: ")
    assert levels["Running stage 'train@synthetic':"] == logging.INFO
    epoch_lines = [line for line in levels if line.startswith("  epoch ")]  # the stage's stderr
    assert epoch_lines and {levels[line] for line in epoch_lines} == {logging.INFO}
    warned = [line for line, level in levels.items() if level == logging.WARNING]
    assert len(warned) == 1 and warned[0].endswith("UserWarning: a warning the training stage printed")
    assert not any(level >= logging.ERROR for level in levels.values())
    assert webhook == []  # a passing run sends nothing


def test_a_failing_run_logs_its_error_at_error_and_posts_one_message_naming_the_run_and_the_stage(
        workspace: Path, mirror: Path, prefect_api: str, stage_env, webhook: list, monkeypatch, tmp_path: Path):
    broken = tmp_path / "broken_mirror"
    shutil.copytree(mirror, broken, ignore=shutil.ignore_patterns("*.gz", "mnist*"))
    (broken / "heart/heart.csv").write_text("age,sex\n63,1\n")
    monkeypatch.setenv("DNNLAB_DATA_MIRROR", str(broken))

    state = pipeline(targets=["fetch@heart"], force_fetch=True, repo=str(workspace), notify_block=BLOCK,
                     return_state=True)

    assert state.is_failed() and state.message.startswith("fetch: error: ")
    with get_client(sync_client=True) as client:
        run_name = client.read_flow_run(state.state_details.flow_run_id).name
    assert len(eventually(lambda: webhook, bool)) == 1
    assert webhook[0]["subject"] == f"dnnlab: pipeline run {run_name} failed"
    first_line, link = webhook[0]["body"].splitlines()  # the run's page in the UI
    assert first_line == f"pipeline run {run_name} failed at stage fetch@heart: {state.message}"
    assert link.endswith(f"/runs/flow-run/{state.state_details.flow_run_id}")
    fetch_run = child_runs(state.state_details.flow_run_id)["fetch@heart"]
    levels = log_levels(fetch_run.id, "ERROR: failed to reproduce")
    assert levels[state.message] == logging.ERROR  # the stage's one line
    assert [level for line, level in levels.items() if line.startswith("ERROR: failed to reproduce")] == [logging.ERROR]
    assert levels["Running stage 'fetch@heart':"] == logging.INFO


def test_a_study_publishes_its_experiments_as_a_table_and_a_link_to_its_report(
        workspace: Path, mirror: Path, prefect_api: str):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    from tests.test_study import study_params

    env = repo_env(mirror, PREFECT_API_URL=prefect_api)
    study_params(workspace, [{"name": "narrow", "params": {"synthetic.model.width": 16}}])
    run(["git", "commit", "-qam", "a one-variation study"], workspace, env)

    result = json.loads(run([sys.executable, "-m", "flows.study", "--json", "--jobs", "1"], workspace, env)
                        .stdout.strip().splitlines()[-1])

    with get_client(sync_client=True) as client:
        (study_run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["study"])),
                                             sort=FlowRunSort.START_TIME_DESC, limit=1)
    artifacts = artifacts_of(study_run.id)
    assert {key: artifact.type for key, artifact in artifacts.items()} == {
        "study-run": "table", "study-report": "markdown"}  # a link: markdown
    (row,) = json.loads(artifacts["study-run"].data)
    assert (row["experiment"], row["changes"]) == ("narrow", "synthetic.model.width=16")
    assert row["val/loss"] == result["experiments"][0]["metrics"]["val/loss"]
    report_url = (workspace / "reports/study.html").resolve().as_uri()
    assert artifacts["study-report"].data == f"[reports/study.html]({report_url})"


def test_a_study_that_fails_posts_its_one_line_error(tmp_path: Path, prefect_api: str, webhook: list):
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")

    state = study(only=["no-such-variation"], repo=str(tmp_path), notify_block=BLOCK, return_state=True)

    assert state.is_failed() and state.message.startswith("unknown study variation(s) no-such-variation")
    assert len(eventually(lambda: webhook, bool)) == 1
    assert webhook[0]["body"].startswith("study run ") and state.message in webhook[0]["body"]
    assert study(only=["no-such-variation"], repo=str(tmp_path), return_state=True).is_failed()
    assert len(webhook) == 1  # no block named: nothing sent


# --- the stage side of the progress artifact, no flow ---

# As the train stage wires it: a subscriber of the engine's epoch log, only when the flow made an artifact.
REPORT = ("import sys, time; sys.path.insert(0, sys.argv[1]); started = time.monotonic()\n"
          "from stages.core.tracking import training_progress\n"
          "progress = training_progress('train', 3)\n"
          "if progress is not None:\n"
          "    with progress:\n"
          "        for epoch in range(1, 4): progress.log_epochs([{'val/loss': 0.5}])\n"
          "print('prefect' in sys.modules)\n")


def test_without_a_progress_artifact_the_hook_imports_no_prefect(tmp_path: Path, mirror: Path):
    result = subprocess.run([sys.executable, "-c", REPORT, str(REPO_ROOT)], cwd=tmp_path, env=repo_env(mirror),
                            capture_output=True, text=True, check=True)
    assert (result.stdout.strip(), result.stderr) == ("False", "")


def test_an_unreachable_server_costs_one_warning_and_the_stage_goes_on(tmp_path: Path, mirror: Path):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = repo_env(mirror, DNNLAB_PROGRESS_ARTIFACT=str(uuid.uuid4()), PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    result = subprocess.run([sys.executable, "-c", REPORT + "print('done')", str(REPO_ROOT)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.split()[-1] == "done"
    warnings = [line for line in result.stderr.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith("train: warning: cannot update the Prefect progress artifact")


# --- small pieces ---

def test_line_level_tells_real_warnings_and_errors_from_progress():
    assert line_level("ERROR: failed to reproduce 'train@mnist': failed to run") == "error"
    assert line_level("train: error: reports/x.csv is empty") == "error"
    assert line_level("WARNING: 'data/raw' is empty.") == "warning"
    assert line_level("fetch: warning: no Prefect flow run for fetch@heart (boom); running without it") == "warning"
    assert line_level("/venv/lib/keras/src/trainer.py:81: UserWarning: the model is not built") == "warning"
    # The queue's own chatter, not the experiments': out of sight; a summary that names experiments is not.
    following = ("Following logs for experiment 'narrow'. Use Ctrl+C to stop following logs (experiment execution "
                 "will continue).")  # dvc/repo/experiments/queue/celery.py, as `--run-all` prints it
    all_queued = ("Following logs for all queued experiments. Use Ctrl+C to stop following logs (experiment "
                  "execution will continue).")  # dvc/repo/experiments/__init__.py
    assert line_level(following) == line_level(all_queued) == line_level("Ran experiment(s): ") == "debug"
    assert line_level("Ran experiment(s): baseline, narrow") == "info"
    for line in ("  epoch 20/2000 train/loss=0.1 val/loss=0.12", "  warnings.warn(message)",
                 "I0000 00:00:1700000000.1 oneDNN custom operations are on.", "Running stage 'generate':",
                 "Updating lock file 'dvc.lock'", "a line with error: in the middle",
                 "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"):
        assert line_level(line) == "info", line


def test_the_study_table_lists_experiments_best_val_loss_first():
    result = {"experiments": [
        {"name": "wide", "params": {"model.width": 128}, "metrics": {"val/loss": 0.2, "test/relative_mse": 0.3}},
        {"name": "baseline", "params": {}, "metrics": {"val/loss": 0.1, "ood/mse_vs_truth": 2.0}}]}
    assert experiment_rows(result) == [
        {"experiment": "baseline", "changes": "(lab defaults)", "val/loss": 0.1, "test/relative_mse": None,
         "ood/mse_vs_truth": 2.0},
        {"experiment": "wide", "changes": "model.width=128", "val/loss": 0.2, "test/relative_mse": 0.3,
         "ood/mse_vs_truth": None}]
    noise = "beyond seed noise?"
    assert metric_rows({"m.json": {"test/mse": {"old": 1.0, "new": 0.5, "diff": -0.5}}},
                       {("m.json", "test/mse"): "helps: -0.5 [-0.6, -0.4] over 5 seeds"}) == [
        {"file": "m.json", "metric": "test/mse", "old": 1.0, "new": 0.5, "change": -0.5,
         noise: "helps: -0.5 [-0.6, -0.4] over 5 seeds"}]
    # Rounded to 4 significant digits, the changed ones first (an unchanged metric has no diff).
    assert metric_rows({"m.json": {"train/epochs_run": {"old": 20, "new": 20},
                                   "val/loss": {"old": 1.23456789, "new": 1.11111111, "diff": -0.12345678}}}) == [
        {"file": "m.json", "metric": "val/loss", "old": 1.235, "new": 1.111, "change": -0.1235, noise: ""},
        {"file": "m.json", "metric": "train/epochs_run", "old": 20, "new": 20, "change": None, noise: ""}]
