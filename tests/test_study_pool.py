"""The study on a Prefect work pool (`python -m flows.study --pool`): how runs are judged and keyed, and
one end-to-end study on real components on 127.0.0.1 (a bare git remote, a DVC remote folder,
`prefect server start`, two `prefect worker` processes each with its own HOME and git identity), in
which a worker dies mid-run, one variation fails, and a second study trains nothing; and a variation run its
worker stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil

from flows.pool import (HEARTBEAT_SECONDS, SILENCE_SECONDS, VARIATION_TAG, ZOMBIE_AUTOMATION, ensure_zombie_automation,
                        failure_text, idempotency_key, verdict, zombie_automation)
from flows.study.flow import main as study_main, study
from tests.conftest import repo_env, run
from tests.pool_setup import add_remotes, create_pool, kill_machine, start_worker, worker_env
from tests.servers import free_port, start_prefect_server
from tests.test_study import study_params

# --- pieces, no server ---


def test_only_a_crash_with_attempts_left_is_resubmitted():
    assert verdict("CRASHED", 1, 3) == "resubmit" and verdict("CRASHED", 2, 3) == "resubmit"
    assert verdict("CRASHED", 3, 3) == "failed"
    assert verdict("FAILED", 1, 3) == "failed"  # the variation's own failure: never retried
    assert verdict("CANCELLED", 1, 3) == "failed"
    assert verdict("COMPLETED", 2, 3) == "completed"
    for waiting in ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"):
        assert verdict(waiting, 1, 3) == "wait"


def test_idempotency_keys_name_the_commit_variation_overrides_and_attempt():
    key = idempotency_key("a" * 40, "wide", ["synthetic.model.width=128"], 1)
    assert key == idempotency_key("a" * 40, "wide", ["synthetic.model.width=128"], 1)
    others = {idempotency_key("b" * 40, "wide", ["synthetic.model.width=128"], 1),
              idempotency_key("a" * 40, "wide", ["synthetic.model.width=256"], 1),
              idempotency_key("a" * 40, "wide", ["synthetic.model.width=128"], 2)}
    assert key not in others and len(others) == 3
    assert key.startswith("dnnlab-study/aaaaaaaaaaaa/wide/") and key.endswith("/attempt-1")


def test_a_failure_is_the_runs_own_line_and_a_crash_says_how_often():
    assert failure_text("FAILED", "train: error: bad split\nmore", 1) == "train: error: bad split"
    assert failure_text("CRASHED", "no heartbeat", 3) == "crashed 3 time(s), the last: no heartbeat"
    assert failure_text("CANCELLED", None, 1) == "cancelled: no message"


def test_the_zombie_automation_crashes_only_silent_variation_runs():
    automation = zombie_automation()
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.match_related.get("prefect.resource.id") == [f"prefect.tag.{VARIATION_TAG}"]
    assert trigger.within.total_seconds() == SILENCE_SECONDS > 2 * HEARTBEAT_SECONDS
    assert [action.type for action in automation.actions] == ["change-flow-run-state"]
    assert automation.actions[0].state.value == "CRASHED"


def test_the_zombie_automation_is_created_once_and_brought_back_when_changed(prefect_api: str):
    from prefect.automations import Automation

    assert ensure_zombie_automation() == "created"
    assert ensure_zombie_automation() == "unchanged"
    edited = Automation.read(name=ZOMBIE_AUTOMATION)
    edited.trigger.within = timedelta(seconds=500)
    edited.enabled = False
    edited.update()
    assert ensure_zombie_automation() == "updated"
    restored = Automation.read(name=ZOMBIE_AUTOMATION)
    assert restored.enabled and restored.trigger.within.total_seconds() == SILENCE_SECONDS


def test_the_pool_is_a_parameter_of_the_study_and_bad_attempts_are_one_line(capsys):
    assert {"pool", "attempts", "git_remote", "branch", "credentials_block"} <= set(study.parameters.properties)
    assert study_main(["--pool", "p", "--attempts", "0"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["study: error: --attempts 0: expected an integer >= 1"]


def test_a_pool_study_the_workers_could_not_reproduce_is_refused_in_one_line(
        workspace: Path, mirror: Path, prefect_api: str, tmp_path: Path):
    env = repo_env(mirror, PREFECT_API_URL=prefect_api)

    def refusal() -> str:
        result = run([sys.executable, "-m", "flows.study", "--pool", "nope"], workspace, env, check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("study: error: ")]
        assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
        return errors[0].removeprefix("study: error: ")

    assert refusal().startswith("the pool path needs a git remote the workers can clone: add `origin`")
    remote = tmp_path / "remote.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(remote)], workspace, env)
    run(["git", "push", "-q", "origin", "main"], workspace, env)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], workspace, env)  # one all reach
    run(["git", "commit", "-qm", "a DVC remote", ".dvc/config"], workspace, env)
    assert refusal() == f"commit {run(['git', 'rev-parse', 'HEAD'], workspace, env).stdout[:10]} is not on " \
                        f"{remote} main: push it first (`git push origin main`)"
    run(["git", "push", "-q", "origin", "main"], workspace, env)
    assert refusal() == ("no work pool 'nope': create it with `prefect work-pool create nope --type process` "
                         "and start workers with `prefect worker start --pool nope`")


# --- end to end ---

POOL = "study-test"
GOOD = {"narrow": {"synthetic.model.width": 16}, "batch-64": {"synthetic.train.batch_size": 64}}
BROKEN = {"broken": {"synthetic.train.validation_split": 0.0001}}  # valid params, the train stage refuses it


def variation_runs(api: str) -> list:
    """Every flow run of the `variation` flow: (name, state type), oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["variation"])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_ASC)
    return [(run.name, run.state.type.value, str(run.id)) for run in runs]


def flow_runs_of(worker: subprocess.Popen) -> set[str]:
    """The flow runs this worker's processes are running (each flow-run process knows its id)."""
    found = set()
    for child in psutil.Process(worker.pid).children(recursive=True):
        try:
            found.add(child.environ().get("PREFECT__FLOW_RUN_ID", ""))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found - {""}


def deployment_env(api: str, name: str) -> dict:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).job_variables["env"]


def exp_refs(git_remote: str, env: dict[str, str], cwd: Path) -> list[str]:
    listed = run(["git", "ls-remote", git_remote, "refs/exps/*"], cwd, env).stdout.split()
    return sorted(ref.rsplit("/", 1)[1] for ref in listed[1::2])


def wait_for(read, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if done(value):
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: {value!r}")


def metrics_of(repo: Path, env: dict[str, str], name: str) -> dict:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    (found,) = [exp["revs"][0]["data"]["metrics"]["reports/headline/synthetic.json"]["data"]
                for commit in shown for exp in (commit.get("experiments") or []) if exp["name"] == name]
    return found


def test_a_pool_study_survives_a_dead_worker_reports_a_failure_and_a_rerun_trains_nothing(
        workspace: Path, mirror: Path, tmp_path: Path):
    from flows.processes import stop_process_group

    env = repo_env(mirror, PREFECT_HOME=str(tmp_path / "server-home"))
    study_params(workspace, [{"name": name, "params": params} for name, params in {**GOOD, **BROKEN}.items()])
    run(["git", "commit", "-qam", "a study for the pool"], workspace, env)
    git_remote, _ = add_remotes(workspace, tmp_path, env)
    port = free_port()
    server = start_prefect_server(env, port, tmp_path / "prefect-server.log")
    api = f"http://127.0.0.1:{port}/api"
    env = {**env, "PREFECT_API_URL": api}
    create_pool(POOL, env, tmp_path)
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("worker-a", "worker-b", "study")}
    workers = {name: start_worker(POOL, name, worker_env(env, tmp_path / "homes" / name, name), tmp_path, logs[name])
               for name in ("worker-a", "worker-b")}
    try:
        study = subprocess.Popen([sys.executable, "-m", "flows.study", "--pool", POOL, "--json"], cwd=workspace,
                                 env=env, stdout=subprocess.PIPE, stderr=logs["study"], text=True)
        # Each worker takes one run (--limit 1); once both are running, kill the one training a good variation.
        running = wait_for(lambda: {name: flow_runs_of(worker) for name, worker in workers.items()},
                           lambda found: all(found.values()), 240, "a run on each worker")
        time.sleep(5)  # mid-run: a heartbeat sent, the clone made or training
        names = {run_id: name for name, _, run_id in variation_runs(api)}
        victim = next(worker for worker, run_ids in running.items()
                      if any(names[run_id].split("-")[0] in {"narrow", "batch"} for run_id in run_ids))
        killed_variation = next(names[run_id] for run_id in running[victim]).rsplit("-", 2)[0]
        kill_machine(workers[victim])
        survivor = next(name for name in workers if name != victim)

        stdout, _ = study.communicate(timeout=600)
        assert study.returncode == 1, (tmp_path / "study.log").read_text()[-4000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert sorted(exp["name"] for exp in result["experiments"]) == sorted(GOOD)
        (failure,) = result["failed"]
        assert failure["name"] == "broken" and "validation_split" in failure["reason"] \
            and failure["reason"].startswith("train"), failure
        assert "study: error: broken failed: train" in (tmp_path / "study.log").read_text()

        runs = variation_runs(api)
        by_variation = {}
        for name, state, _ in runs:
            by_variation.setdefault(name.rsplit("-", 2)[0], []).append(state)
        assert by_variation[killed_variation] == ["CRASHED", "COMPLETED"]  # resubmitted once, on the survivor
        assert by_variation["broken"] == ["FAILED"]  # its own failure: not retried
        assert all(states == ["COMPLETED"] for name, states in by_variation.items()
                   if name not in (killed_variation, "broken"))

        # Exactly one experiment per good variation at the remote; the killed one committed by the survivor.
        assert exp_refs(git_remote, env, tmp_path) == sorted(GOOD)
        authors = {name: run(["git", "log", "-1", "--format=%an", ref], workspace, env).stdout.strip()
                   for name, ref in local_exp_refs(workspace, env).items()}
        assert authors[killed_variation] == survivor, authors
        page = (workspace / "reports/study.html").read_text()
        assert all(name in page for name in GOOD)

        # Again at the same commit: the experiments at the remote are reused, the failed run is reported
        # from Prefect (its idempotency key), no new run is made, nothing trains.
        again = run([sys.executable, "-m", "flows.study", "--pool", POOL, "--json"], workspace, env, check=False)
        assert again.returncode == 1, again.stderr[-3000:]
        rerun = json.loads(again.stdout.strip().splitlines()[-1])
        assert sorted(rerun["reused"]) == sorted(GOOD)
        assert [failure["name"] for failure in rerun["failed"]] == ["broken"]
        assert len(variation_runs(api)) == len(runs)
        assert exp_refs(git_remote, env, tmp_path) == sorted(GOOD)
        # The same from git, as the `study` deployment runs it: in a fresh clone, from a folder that is
        # no checkout; the same reuse, the same single failure, no new run.
        elsewhere = tmp_path / "not-a-checkout"
        elsewhere.mkdir()
        from_git = run([sys.executable, "-m", "flows.study", "--pool", POOL, "--from-git", "--git-remote",
                        git_remote, "--json"], elsewhere, env, check=False)
        assert from_git.returncode == 1, from_git.stderr[-3000:]
        cloned = json.loads(from_git.stdout.strip().splitlines()[-1])
        assert sorted(cloned["reused"]) == sorted(GOOD) and [f["name"] for f in cloned["failed"]] == ["broken"]
        assert sorted(exp["metrics"]["val/loss"] for exp in cloned["experiments"]) == \
            sorted(exp["metrics"]["val/loss"] for exp in rerun["experiments"])
        assert len(variation_runs(api)) == len(runs) and list(elsewhere.iterdir()) == []
        # Heartbeats every 30 s come with the deployment, whatever the workers' settings (Prefect's
        # default, 180 s, would let the automation crash every run longer than its 75 s).
        assert deployment_env(api, f"variation/{POOL}")["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)
    finally:
        for worker in workers.values():
            kill_machine(worker)
        stop_process_group(server, grace_s=20)
        for log in logs.values():
            log.close()

    # A fresh clone pulls the metrics a local serial `dvc exp run` of the same variation gives here.
    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", git_remote, str(fresh)], tmp_path, env)
    run(["dvc", "exp", "pull", "origin", "narrow"], fresh, env)
    run(["dvc", "exp", "run", "-n", "narrow-serial", "-S", "synthetic.model.width=16", "evaluate"], workspace, env)
    assert metrics_of(fresh, env, "narrow") == metrics_of(workspace, env, "narrow-serial")


def still_there(read, gone):
    """`read()` of a process, or `gone` if it ended meanwhile (a child that exits while the test looks at the
    worker's children: a git or dvc command, or a zombie not yet reaped)."""
    try:
        return read()
    except psutil.NoSuchProcess:  # ZombieProcess too
        return gone


def local_exp_refs(repo: Path, env: dict[str, str]) -> dict[str, str]:
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout.split()
    return {ref.rsplit("/", 1)[1]: ref for ref in refs}


def test_a_variation_run_its_worker_stops_ends_what_it_started_in_one_line(workspace: Path, mirror: Path,
                                                                          tmp_path: Path):
    """SIGTERM to a variation's flow-run process, as its worker sends it when the run is cancelled (or the
    machine shuts down): `dvc exp run` and its stage stop within seconds, the clone it trained in is gone,
    and its log says in one line what was stopped, without a traceback."""
    from flows.processes import stop_process_group

    env = repo_env(mirror, PREFECT_HOME=str(tmp_path / "server-home"))
    study_params(workspace, [{"name": "long", "params": {"synthetic.train.epochs": 100_000}}])
    run(["git", "commit", "-qam", "a long variation"], workspace, env)
    add_remotes(workspace, tmp_path, env)
    port = free_port()
    server = start_prefect_server(env, port, tmp_path / "prefect-server.log")
    env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    create_pool(POOL, env, tmp_path)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = start_worker(POOL, "worker", worker_env(env, tmp_path / "home", "worker"), tmp_path, log)
    study = subprocess.Popen([sys.executable, "-m", "flows.study", "--pool", POOL, "--attempts", "1"],
                             cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def training() -> list[psutil.Process]:
            # The Python process itself: where DVC's shell does not exec its command (dash, when SHELL is
            # unset, as in CI), a `sh -c "python -m stages.train …"` parent carries the same words.
            return [p for p in psutil.Process(worker.pid).children(recursive=True)
                    if still_there(p.cmdline, [])[1:3] == ["-m", "stages.train"] and time.time() - p.create_time() > 10]

        (stage,) = wait_for(training, bool, 300, "the variation training on the worker")
        flow_run = next(p for p in psutil.Process(worker.pid).children()
                        if still_there(p.environ, {}).get("PREFECT__FLOW_RUN_ID"))
        started = flow_run.children(recursive=True)
        clone = Path(stage.cwd())
        flow_run.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, alive = psutil.wait_procs([flow_run, *started], timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert time.monotonic() - stopped < 30  # typically 5-7 s (DVC's grace to release its locks), on a busy machine
        assert not clone.exists(), f"the run's clone is left: {clone}"
        said = log_path.read_text()
        assert "Traceback" not in said, said[-5000:]
        (line,) = [line for line in said.splitlines() if "interrupted by SIGTERM" in line]
        assert "variation long: interrupted by SIGTERM: stopped dvc exp run -n long " in line, line
        # The study (attempts 1) reports the crashed run in its own line and fails.
        _, study_err = study.communicate(timeout=120)
        assert study.returncode == 1 and "Traceback" not in study_err, study_err[-3000:]
        assert study_err.strip().splitlines()[-1] == ("study: error: every variation failed: long: crashed 1 time(s), "
                                                      "the last: Execution was aborted by a termination signal.")
    finally:
        if study.poll() is None:
            study.kill()
        kill_machine(worker)
        stop_process_group(server, grace_s=20)
