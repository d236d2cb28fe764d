"""The Prefect layer against a real (temporary, SQLite) Prefect server, on throwaway repo copies.

The network boundary is faked honestly: the flow runs without the data mirror, so stages.fetch
calls `kagglehub.dataset_download`, and PYTHONPATH puts a stand-in `kagglehub` package first
for the stage subprocesses (it fails the first N calls with ConnectionError, then serves the
mirror's heart.csv). No product code knows about it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.conftest import REPO_ROOT, copy_source_tree, repo_env, run, set_params

prefect = pytest.importorskip("prefect")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter, ArtifactFilterFlowRunId, DeploymentFilter, DeploymentFilterName, FlowRunFilter,
    FlowRunFilterName, FlowRunFilterParentFlowRunId, LogFilter, LogFilterFlowRunId, TaskRunFilter,
    TaskRunFilterFlowRunId)

from flows.deployments import DEPLOYMENTS, FROM_GIT, PREFECT_YAML, prefect_yaml_text, runner_deployments  # noqa: E402
from flows.dvc_adapter import DvcProject  # noqa: E402
from flows.pipeline import NETWORK_EXIT_CODE, failure_line, headline, pipeline  # noqa: E402
from flows import processes  # noqa: E402
from flows.processes import server_lost, server_state, stream_command  # noqa: E402

ALL_STAGES = [
    "generate", "fetch@heart", "fetch@mnist", "preprocess@synthetic", "preprocess@heart", "preprocess@mnist",
    "configure@synthetic", "configure@heart", "configure@mnist",
    "train@synthetic", "train@heart", "train@mnist", "evaluate@synthetic", "evaluate@heart", "evaluate@mnist",
    "figures@synthetic", "figures@heart", "figures@mnist", "report",
]
SYNTHETIC_CHAIN = ["generate", "preprocess@synthetic", "train@synthetic", "evaluate@synthetic", "figures@synthetic",
                   "report"]

FAKE_KAGGLEHUB = '''"""Stand-in for kagglehub in tests: the first FAKE_KAGGLEHUB_FAILURES calls fail like a dead network."""
import os
from pathlib import Path


def dataset_download(handle, force_download=False, output_dir=None):
    calls = Path(os.environ["FAKE_KAGGLEHUB_CALLS"])
    count = (int(calls.read_text()) if calls.exists() else 0) + 1
    calls.write_text(str(count))
    if count <= int(os.environ["FAKE_KAGGLEHUB_FAILURES"]):
        raise ConnectionError(f"fake network: api.kaggle.com unreachable (call {count})")
    return os.environ["FAKE_KAGGLEHUB_FOLDER"]
'''


# --- fixtures and helpers ---

@pytest.fixture
def fake_kaggle(monkeypatch, tmp_path: Path, mirror: Path, stage_env) -> Callable[[int], Path]:
    """No mirror; kagglehub is the stand-in above. Returns set_failures(n) -> the call-counter file."""
    package = tmp_path / "fake_network" / "kagglehub"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_KAGGLEHUB)
    calls = tmp_path / "kaggle_calls"
    monkeypatch.delenv("DNNLAB_DATA_MIRROR")
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    monkeypatch.setenv("FAKE_KAGGLEHUB_CALLS", str(calls))
    monkeypatch.setenv("FAKE_KAGGLEHUB_FOLDER", str(mirror / "heart"))

    def set_failures(count: int) -> Path:
        monkeypatch.setenv("FAKE_KAGGLEHUB_FAILURES", str(count))
        return calls

    return set_failures


def eventually(read: Callable[[], object], done: Callable[[object], bool], timeout: float = 20.0) -> object:
    """Task runs, logs and artifacts reach the server asynchronously: poll until they are there."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def child_runs(parent_id) -> dict:
    """name -> FlowRun of the child flow runs of one flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))
    return {run.name: run for run in runs}


def child_flow_runs(parent_id) -> dict[str, str]:
    return {name: run.state.type.value for name, run in child_runs(parent_id).items()}


def task_runs(flow_run_id) -> dict[str, tuple[str, int]]:
    """name -> (final state type, run_count) of the task runs of one flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    return {run.name: (run.state.type.value if run.state else "", run.run_count) for run in runs}


def skip_tasks(flow_run_id, expected: set[str]) -> set[str]:
    def read() -> set[str]:
        return {name for name, (state, _) in task_runs(flow_run_id).items()
                if name.startswith("skip:") and state == "COMPLETED"}
    return eventually(read, lambda names: names >= expected)


def flow_run_by_name(name: str):
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    return runs


def statuses(summary: dict) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in summary["stages"]}


def dvc_is_clean(repo: Path, mirror: Path) -> bool:
    return run(["dvc", "status", "--json"], repo, repo_env(mirror)).stdout.strip() == "{}"


def repro_runs_nothing(repo: Path, mirror: Path) -> bool:
    return "Running stage" not in run(["dvc", "repro"], repo, repo_env(mirror)).stdout


def git_head(repo: Path, mirror: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], repo, repo_env(mirror)).stdout.strip()


# --- the pipeline flow ---

def test_stale_stages_run_as_named_child_flow_runs_then_a_second_run_skips_every_stage(
        workspace: Path, mirror: Path, prefect_api: str, stage_env):
    # A noise change makes only `generate` stale up front; the rest of the synthetic chain turns stale
    # as `generate` writes new data. fetch@heart is re-fetched identically: nothing below it reruns.
    set_params(workspace, {"synthetic.data.noise_sigma": 0.5})
    shutil.rmtree(workspace / "data/raw/heart")

    state = pipeline(repo=str(workspace), return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert [stage["name"] for stage in summary["stages"]] == ALL_STAGES
    ran = [*SYNTHETIC_CHAIN[:1], "fetch@heart", *SYNTHETIC_CHAIN[1:]]
    assert [name for name, status in statuses(summary).items() if status == "ran"] == ran
    parent = state.state_details.flow_run_id
    assert child_flow_runs(parent) == {name: "COMPLETED" for name in ran}
    skipped = {f"skip:{name}" for name in ALL_STAGES if name not in ran}
    assert skip_tasks(parent, skipped) == skipped
    # The stage's own log lines are in its child run.
    train_run = child_runs(parent)["train@synthetic"]
    with get_client(sync_client=True) as client:
        read_logs = lambda: [log.message for log in client.read_logs(  # noqa: E731
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[train_run.id])))]
        logs = eventually(read_logs, lambda lines: any(line.startswith("train@synthetic: ") for line in lines))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[parent])))
    assert "Running stage 'train@synthetic':" in logs
    assert any(line.startswith("train@synthetic: ") for line in logs)
    assert sorted(artifact.key for artifact in artifacts) == ["pipeline-metrics", "pipeline-report", "pipeline-run"]
    table = next(json.loads(artifact.data) for artifact in artifacts if artifact.key == "pipeline-run")
    assert {"stage": "train@synthetic", "status": "ran"}.items() <= table[ALL_STAGES.index("train@synthetic")].items()
    assert {"stage": "train@mnist", "status": "skipped"}.items() <= table[ALL_STAGES.index("train@mnist")].items()
    new_mse = json.loads((workspace / "reports/headline/synthetic.json").read_text())["synthetic/rel_mse"]
    assert summary["metrics"]["reports/headline/synthetic.json"]["synthetic/rel_mse"]["new"] == new_mse
    assert summary["experiment"] is None and summary["commit"] is None
    assert dvc_is_clean(workspace, mirror) and repro_runs_nothing(workspace, mirror)

    again = pipeline(repo=str(workspace), return_state=True)

    assert again.is_completed()
    assert set(statuses(again.result()).values()) == {"skipped"}
    assert child_flow_runs(again.state_details.flow_run_id) == {}
    all_skips = {f"skip:{name}" for name in ALL_STAGES}
    assert skip_tasks(again.state_details.flow_run_id, all_skips) == all_skips
    assert dvc_is_clean(workspace, mirror)


def test_a_transient_fetch_failure_is_retried_and_the_run_completes(
        workspace: Path, mirror: Path, prefect_api: str, fake_kaggle):
    calls = fake_kaggle(1)

    state = pipeline(targets=["fetch@heart"], force_fetch=True, fetch_retries=2, fetch_retry_delay_seconds=0,
                     repo=str(workspace), return_state=True)

    assert state.is_completed(), state.message
    assert statuses(state.result()) == {"fetch@heart": "ran"}
    assert calls.read_text() == "2"
    child = child_runs(state.state_details.flow_run_id)["fetch@heart"]
    assert child.state.is_completed()
    retried = {"dvc repro fetch@heart": ("COMPLETED", 2)}  # Prefect's own retry: one task run, run twice
    assert eventually(lambda: task_runs(child.id), lambda runs: runs == retried) == retried
    assert (workspace / "data/raw/heart/heart.csv").read_bytes() == (mirror / "heart/heart.csv").read_bytes()
    assert dvc_is_clean(workspace, mirror)


def test_a_permanent_fetch_failure_fails_the_run_with_the_stage_error_and_keeps_the_raw_data(
        workspace: Path, mirror: Path, prefect_api: str, fake_kaggle):
    calls = fake_kaggle(1000)
    raw_before = (workspace / "data/raw/heart/heart.csv").read_bytes()

    state = pipeline(force_fetch=True, fetch_retries=2, fetch_retry_delay_seconds=0, repo=str(workspace),
                     return_state=True)

    assert state.is_failed()
    assert state.message.startswith("fetch: error: could not download johnsmith88/heart-disease-dataset")
    assert "fake network: api.kaggle.com unreachable" in state.message
    assert calls.read_text() == "3"  # one try and two retries
    summary = statuses(state.result(raise_on_failure=False))
    assert summary["fetch@heart"] == "failed"
    assert {summary[name] for name in ("preprocess@heart", "train@heart", "evaluate@heart", "figures@heart",
                                       "report")} == {"not run"}
    # No network for Keras either: MNIST's fetch fails on its own, and both failures are reported.
    assert summary["fetch@mnist"] == "failed" and "could not download MNIST through keras.datasets" in state.message
    assert summary["generate"] == "skipped"
    assert child_flow_runs(state.state_details.flow_run_id) == {"fetch@heart": "FAILED", "fetch@mnist": "FAILED"}
    assert (workspace / "data/raw/heart/heart.csv").read_bytes() == raw_before
    assert dvc_is_clean(workspace, mirror)


def test_a_failing_stage_stops_its_chain_while_the_other_chains_complete_and_are_committed(
        workspace: Path, mirror: Path, prefect_api: str, stage_env, monkeypatch, tmp_path: Path):
    broken = tmp_path / "broken_mirror"
    shutil.copytree(mirror, broken)
    (broken / "heart/heart.csv").write_text("age,sex\n63,1\n")
    monkeypatch.setenv("DNNLAB_DATA_MIRROR", str(broken))
    set_params(workspace, {"seed": 7})  # every chain stale
    raw_before = (workspace / "data/raw/heart/heart.csv").read_bytes()
    heart_before = {path: (workspace / path).read_bytes()
                    for path in ("models/heart.keras", "reports/metrics/heart.json", "reports/report.html")}

    state = pipeline(force_fetch=True, fetch_retry_delay_seconds=0, repo=str(workspace), return_state=True)

    assert state.is_failed()
    assert state.message == (f"fetch: error: {broken}/heart/heart.csv: header is 'age,sex'; expected "
                             "'age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,target' "
                             "(a column is missing, renamed or reordered)")
    summary = statuses(state.result(raise_on_failure=False))
    heart_chain = ["preprocess@heart", "train@heart", "evaluate@heart", "figures@heart", "report"]
    assert summary["fetch@heart"] == "failed" and [summary[name] for name in heart_chain] == ["not run"] * 5
    assert {name for name, status in summary.items() if status == "ran"} == {
        "generate", "fetch@mnist", "preprocess@synthetic", "train@synthetic", "evaluate@synthetic", "figures@synthetic",
        "preprocess@mnist", "train@mnist", "evaluate@mnist", "figures@mnist",
        "configure@synthetic", "configure@heart", "configure@mnist"}
    fetch_run = child_runs(state.state_details.flow_run_id)["fetch@heart"]
    assert fetch_run.state.message == state.message
    once = {"dvc repro fetch@heart": ("FAILED", 1)}  # not a network error: no retry
    assert eventually(lambda: task_runs(fetch_run.id), lambda runs: runs == once) == once
    assert (workspace / "data/raw/heart/heart.csv").read_bytes() == raw_before
    assert {path: (workspace / path).read_bytes() for path in heart_before} == heart_before
    env = repo_env(mirror)
    stale = set(json.loads(run(["dvc", "status", "--json"], workspace, env).stdout))
    assert stale == {"preprocess@heart", "train@heart", "report"}  # the other chains are committed


def test_independent_stages_run_at_once_and_leave_dvc_as_a_serial_run_does(
        built_repo: Path, mirror: Path, prefect_api: str, stage_env, tmp_path: Path):
    """The flow, two stages at a time, reruns every stage of the built repo (its outputs and DVC's cache
    removed): the same dvc.lock and metrics, byte for byte, as the serial `dvc repro` that built it."""
    repo = Path(shutil.copytree(built_repo, tmp_path / "repo", symlinks=True))
    # Else DVC would check each stage's outputs out of its cache (dvc.lock still matches) instead of running it.
    shutil.rmtree(repo / ".dvc/cache")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            target = repo / out["path"]
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    state = pipeline(repo=str(repo), max_parallel=2, return_state=True)
    assert state.is_completed(), state.message
    stages = {stage["name"]: stage for stage in state.result()["stages"]}
    assert {name: stage["status"] for name, stage in stages.items()} == dict.fromkeys(lock["stages"], "ran")
    assert dvc_is_clean(repo, mirror) and repro_runs_nothing(repo, mirror)
    overlaps = [(a, b) for a in stages for b in stages if a < b
                and stages[a]["started"] < stages[b]["ended"] and stages[b]["started"] < stages[a]["ended"]]
    with contextlib.chdir(repo):  # DVC names stages relative to the working directory
        project = DvcProject(repo)
        needs = {name: project.upstream(name) for name in stages}
        project.close()
    # Independent stages at the same time, never a stage beside one it needs.
    assert overlaps and all(a not in needs[b] and b not in needs[a] for a, b in overlaps), overlaps
    results = ["dvc.lock", *(f"reports/{kind}/{name}.json" for name in ("synthetic", "heart", "mnist")
                             for kind in ("metrics", "headline"))]
    for path in results:
        assert (repo / path).read_bytes() == (built_repo / path).read_bytes(), path


def test_overrides_run_as_a_dvc_experiment_and_bad_input_fails_before_any_stage(workspace: Path, mirror: Path, prefect_api: str,
                                                                 stage_env):
    state = pipeline(targets=["generate"], overrides={"synthetic.data.noise_sigma": 0.25}, repo=str(workspace),
                     return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert statuses(summary) == {"generate": "ran"}
    with get_client(sync_client=True) as client:
        run_name = client.read_flow_run(state.state_details.flow_run_id).name
    assert summary["experiment"] == run_name  # the experiment is named after the flow run
    shown = json.loads(run(["dvc", "exp", "show", "--json"], workspace, repo_env(mirror)).stdout)
    experiment = next(exp for commit in shown for exp in (commit.get("experiments") or [])
                      if exp.get("name") == summary["experiment"])
    assert experiment["revs"][0]["data"]["params"]["params.yaml"]["data"]["synthetic"]["data"]["noise_sigma"] == 0.25

    params_before = (workspace / "params.yaml").read_text()
    refused = pipeline(overrides={"synthetic.data.noise_sigma": -1}, repo=str(workspace), return_state=True)
    assert refused.is_failed() and "synthetic.data.noise_sigma" in refused.message
    assert (workspace / "params.yaml").read_text() == params_before
    both = pipeline(overrides={"model.width": 8}, record=True, repo=str(workspace), return_state=True)
    assert both.is_failed() and "record" in both.message
    unknown = pipeline(targets=["train@imagenet"], repo=str(workspace), return_state=True)
    assert unknown.is_failed() and unknown.message.startswith("dvc: ") and "train@imagenet" in unknown.message


def test_the_flow_finds_the_repository_root_from_a_subfolder(workspace: Path, mirror: Path, prefect_api: str,
                                                             stage_env):
    state = pipeline(targets=["generate"], repo=str(workspace / "reports" / "metrics"), return_state=True)

    assert state.is_completed(), state.message
    assert statuses(state.result()) == {"generate": "skipped"}


def test_the_command_line_prints_one_json_summary(workspace: Path, mirror: Path, prefect_api: str):
    result = run([sys.executable, "-m", "flows.pipeline", "--json"], workspace,
                 repo_env(mirror, PREFECT_API_URL=prefect_api))

    summary = json.loads(result.stdout)
    assert set(summary) == {"stages", "metrics", "experiment", "commit"}
    assert [(stage["name"], stage["status"]) for stage in summary["stages"]] == [(n, "skipped") for n in ALL_STAGES]
    accuracy = json.loads((workspace / "reports/headline/mnist.json").read_text())["mnist/accuracy"]
    assert summary["metrics"]["reports/headline/mnist.json"]["mnist/accuracy"] == {
        "old": accuracy, "new": accuracy, "diff": 0}
    assert summary["experiment"] is None and summary["commit"] is None


# --- `dvc repro` and Prefect ---

def test_dvc_repro_reports_each_stage_as_a_flow_run_only_when_a_server_is_configured(
        workspace: Path, mirror: Path, prefect_api: str, tmp_path: Path):
    env = repo_env(mirror, PREFECT_API_URL=prefect_api)
    before = len(flow_run_by_name("fetch@heart"))

    run(["dvc", "repro", "--force", "--single-item", "fetch@heart"], workspace, env)

    runs = flow_run_by_name("fetch@heart")
    assert len(runs) == before + 1
    assert [run.state.type.value for run in runs if not run.parent_task_run_id][-1:] == ["COMPLETED"]
    assert dvc_is_clean(workspace, mirror)

    probe = ("import sys; from stages.core.errors import run_stage; run_stage('generate', lambda: None); "
             "print('prefect' in sys.modules)")
    no_server = repo_env(mirror, PREFECT_HOME=str(tmp_path / "prefect_home"))
    assert run([sys.executable, "-c", probe], REPO_ROOT, no_server).stdout.strip() == "False"
    in_flow = repo_env(mirror, PREFECT_API_URL=prefect_api, DNNLAB_PREFECT_PARENT="1")
    assert run([sys.executable, "-c", probe], REPO_ROOT, in_flow).stdout.strip() == "False"
    # dvc_stage_name and each place Prefect reads its URL from: tests/test_tracking.py


# --- deployments ---

def _registered(names: list[str]) -> dict[str, tuple]:
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=names)))
    return {d.name: (d.entrypoint, d.parameters,
                     [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]) for d in deployments}


def test_prefect_yaml_and_flows_serve_define_the_same_deployments(tmp_path: Path, mirror: Path, prefect_api: str):
    assert PREFECT_YAML.read_text() == prefect_yaml_text(), "run python -m flows.deployments --write-prefect-yaml"
    names = [spec.name for spec in DEPLOYMENTS]
    assert {"nightly", "on-demand"} <= set(names)
    nightly = next(spec for spec in DEPLOYMENTS if spec.name == "nightly")
    assert (nightly.cron, nightly.timezone, nightly.parameters) == (
        "0 3 * * *", "UTC", {"force_fetch": True, "record": True, **FROM_GIT})
    assert next(spec for spec in DEPLOYMENTS if spec.name == "on-demand").cron is None
    # Both resolve the Prefect variables when they create the deployments; an unset one is "".
    from prefect.variables import Variable
    Variable.set("dnnlab_git_remote", "file:///srv/git/dnnlab.git", overwrite=True)

    for deployment in runner_deployments():  # what `flows.serve` registers before serving
        deployment.apply()
    served = _registered(names)

    source = copy_source_tree(tmp_path / "checkout")
    env = repo_env(mirror, PREFECT_API_URL=prefect_api)
    run(["prefect", "work-pool", "create", "dnnlab", "--type", "process", "--overwrite"], source, env)
    run(["prefect", "--no-prompt", "deploy", "--all"], source, env)
    deployed = _registered(names)

    assert served == deployed
    from_git = {"git_remote": "file:///srv/git/dnnlab.git", "branch": "", "credentials_block": ""}
    assert served["nightly"] == ("flows/pipeline.py:pipeline", {"force_fetch": True, "record": True, **from_git},
                                 [("0 3 * * *", "UTC", True)])
    assert served["on-demand"] == ("flows/pipeline.py:pipeline", from_git, [])
    assert served["study"] == ("flows/study/flow.py:study", {**from_git, "from_git": True, "pool": "dnnlab"}, [])
    assert yaml.safe_load(PREFECT_YAML.read_text())["deployments"][0]["work_pool"] == {"name": "dnnlab"}


# --- small pieces, no server ---

def test_failure_line_prefers_the_stage_error_and_reads_the_exit_code():
    # The stage's own line and exit code come from the record run_stage leaves (stages.core.tracking).
    stderr = ["I0000 oneDNN custom operations are on.",
              "fetch: error: could not download x (ConnectionError: boom); offline?",
              "ERROR: failed to reproduce 'fetch@heart': failed to run: python -m stages.fetch heart, exited with 75"]
    records = [{"stage": "fetch@heart", "experiment": None, "exit_code": NETWORK_EXIT_CODE, "line": stderr[1]}]
    assert failure_line("fetch@heart", 255, records, stderr) == (stderr[1], NETWORK_EXIT_CODE)
    # No record (the stage crashed, or DVC failed around it): DVC's error line and exit code.
    assert failure_line("report", 255, [], ["ERROR: failed to reproduce 'report': boom"]) == (
        "failed to reproduce 'report': boom", 255)
    # (DVC's error line, not its footer: tests/test_dvc_adapter.py)


def test_network_exit_code_and_headline_match_the_stages():
    from stages.core.errors import NetworkError

    assert NETWORK_EXIT_CODE == NetworkError.exit_code
    metrics = {"reports/headline/mnist.json": {"mnist/accuracy": {"new": 0.98123, "old": 0.97},
                                               "mnist/val_loss": {"new": 0.1}},
               "reports/headline/heart.json": {"heart/roc_auc": {"new": 0.9012}, "heart/accuracy": {"new": 0.8}}}
    assert headline(metrics) == "heart/roc_auc 0.9012, mnist/accuracy 0.9812"  # in lab order


def test_an_interrupted_stage_command_stops_with_what_it_started(tmp_path: Path):
    """A flow run interrupted while a stage runs (a cancelled run's SIGTERM arrives as an exception,
    Ctrl-C as KeyboardInterrupt) stops `dvc repro` and the stage process it started, too."""
    import psutil

    # Like `dvc repro` running a stage: a process that starts a child, says its pid, and waits.
    command = [sys.executable, "-c", "import subprocess, sys, time; "
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
               "print(child.pid, flush=True); time.sleep(120)"]

    class InterruptedAtFirstLine:
        child_pid = 0

        def info(self, line: str) -> None:
            self.child_pid = int(line)
            raise KeyboardInterrupt

        def warning(self, line: str) -> None:
            pass

    log = InterruptedAtFirstLine()
    with pytest.raises(KeyboardInterrupt):
        stream_command(command, tmp_path, dict(os.environ), log)

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 15
    while running(log.child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log.child_pid and not running(log.child_pid), "the command's child outlived the interrupted flow run"


def test_a_command_ends_when_it_exits_though_a_daemon_it_started_holds_its_output_open(tmp_path: Path):
    """`dvc exp run --run-all` starts DVC's queue workers, which keep its stdout and stderr open while they
    live (minutes, when one hangs): the command's end is its exit, not the end of its streams."""
    import psutil

    command = [sys.executable, "-c", "import subprocess, sys; "
               "daemon = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
               "print(daemon.pid, flush=True); print('the last line', flush=True)"]

    class Lines:
        def __init__(self):
            self.lines = []

        def info(self, line: str) -> None:
            self.lines.append(line)

    log = Lines()
    started = time.monotonic()
    returncode, stdout, _ = stream_command(command, tmp_path, dict(os.environ), log)
    took = time.monotonic() - started
    daemon = psutil.Process(int(stdout[0]))
    try:
        assert daemon.is_running()  # it still holds the streams
        assert returncode == 0 and stdout[1] == "the last line" and log.lines == stdout
        assert took < 30, took  # the exit and DRAIN_S (typically 3 s), not the daemon's 60 s
    finally:
        daemon.kill()


def test_a_server_is_judged_lost_by_how_it_fails_to_answer(monkeypatch):
    """Refused connections (nothing listens: killed) make a server lost after 15 s; no reply (a server only
    slow on a loaded machine, as a study's was) only after 45 s; an answer never."""
    import http.server
    import socket
    import threading

    monkeypatch.setattr(processes, "SERVER_CHECK_S", 0.5)  # the health check's timeout
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    assert server_state(f"http://127.0.0.1:{closed_port}/api") == "refused"

    with socket.socket() as mute:  # accepts connections (the kernel's backlog) and never replies
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        assert server_state(f"http://127.0.0.1:{mute.getsockname()[1]}/api") == "silent"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server_state(f"http://127.0.0.1:{server.server_address[1]}/api") == "up"
        assert server_state(f"http://127.0.0.1:{server.server_address[1]}/elsewhere") == "silent"  # a 404
    finally:
        server.shutdown()

    assert not server_lost("refused", 14.9) and server_lost("refused", 15.0)
    assert not server_lost("silent", 44.9) and server_lost("silent", 45.0)
    assert not server_lost("up", 600.0)


def test_a_process_that_ends_itself_stops_everything_it_started_first(tmp_path: Path):
    """What the lost-server watch does before os._exit: every child and grandchild ends, even one that ignores
    Ctrl-C, so nothing the flow started outlives it or holds its output open."""
    import psutil

    script = tmp_path / "ends_itself.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "from flows.processes import stop_own_children\n"
        "stubborn = 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(300)'\n"
        "grandparent = ('import subprocess, sys, time; '\n"
        "               f'subprocess.Popen([sys.executable, \"-c\", {stubborn!r}]); time.sleep(300)')\n"
        "subprocess.Popen([sys.executable, '-c', grandparent])\n"
        "import psutil, time\n"
        "deadline = time.monotonic() + 30\n"
        "while len(psutil.Process().children(recursive=True)) < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
        "print(' '.join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)\n"
        "stop_own_children(grace_s=2)\n"
        "os._exit(1)\n")
    ended = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    started = [int(pid) for pid in ended.stdout.split()]
    assert ended.returncode == 1 and len(started) == 2, ended.stderr
    time.sleep(0.5)
    assert not [pid for pid in started if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
