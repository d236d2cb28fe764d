"""Interrupts and faults on real processes: the pipeline flow's command line started as a terminal
starts it (a process group of its own), then sent SIGINT (Ctrl-C, to the whole group), SIGTERM (to the
flow's process only, as a process manager or a Prefect worker sends it) or SIGKILL (to the group: a
closed terminal, an OOM kill), or its Prefect server SIGKILLed, mid-training, in a throwaway copy of the
built repo; the study interrupted and killed with its DVC queue running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

from flows.processes import stop_process_group
from tests.conftest import TINY_RUN, repo_env, run, set_params
from tests.servers import free_port, start_prefect_server

# Long enough that train@synthetic is still running whenever the signal comes (minutes), train@heart
# running at once (it may finish first: then DVC has recorded it).
STARTUP_S = 10.0  # a stage process's imports (TensorFlow, pandas) on a loaded 2-core machine
LONG_TRAINING = {"synthetic.train.epochs": 100_000, "heart.train.epochs": 300, "heart.train.early_stopping_patience": 0}


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def start_flow(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """`python -m flows.pipeline` as a terminal's foreground job: a process group of its own."""
    return subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--max-parallel", "2", *args], cwd=repo,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(what: str, found: Callable[[], list], runner: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until `found()` lists something (then a few seconds more: past TensorFlow's start, into the epochs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert runner.poll() is None, f"it ended before {what}: {runner.communicate()}"
        if found():
            time.sleep(3)
            return
        time.sleep(0.3)
    raise AssertionError(f"no {what}")


def training_stages(flow: subprocess.Popen) -> list[psutil.Process]:
    """The flow's training stage processes, once train@synthetic's has started (train@heart's may be there
    too: short, it may also have finished, and then DVC recorded it)."""
    training = [p for p in group_members(flow.pid) if "stages.train" in " ".join(p.cmdline())]
    synthetic = any("stages.train synthetic" in " ".join(p.cmdline()) for p in training)
    # Past their imports, into the epochs (a stage cut while importing has a line of its own, tested below).
    started = all(time.time() - p.create_time() > STARTUP_S for p in training)
    return training if synthetic and started else []


def seconds_until_none(found: Callable[[], list], timeout: float = 60.0) -> float:
    """Until `found()` lists nothing; fails naming what is left."""
    started = time.monotonic()
    while found() and time.monotonic() - started < timeout:
        time.sleep(0.1)
    assert not found(), f"left running: {[p.cmdline() for p in found()]}"
    return time.monotonic() - started


def dvc_locks(repo: Path) -> dict:
    """The entries of DVC's per-path read/write lock file (empty once every DVC process released them)."""
    path = repo / ".dvc" / "tmp" / "rwlock"
    return {mode: entries for mode, entries in json.loads(path.read_text() or "{}").items() if entries} \
        if path.exists() else {}


def synthetic_outputs(repo: Path) -> dict[str, bytes]:
    """The outputs of train@synthetic, whose training is still running whenever the signal comes."""
    return {path: (repo / path).read_bytes() for path in (
        "models/synthetic.keras", "reports/plots/synthetic/learning_curve.csv", "reports/live/synthetic/metrics.json")}


def half_done(repo: Path, env: dict[str, str]) -> dict:
    """Stages whose outputs differ from what dvc.lock records (a stage that finished a heavier chain may be
    recorded in dvc.lock; one whose new outputs are missing from it is half-done)."""
    status = json.loads(run(["dvc", "status", "--json"], repo, env).stdout)
    return {stage: changes for stage, changes in status.items() if any("changed outs" in c for c in changes)}


def test_interrupted_pipeline_stops_its_stages_in_one_line_and_leaves_no_lock(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    set_params(workspace, LONG_TRAINING)
    before = synthetic_outputs(workspace)

    for signum, to_group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        flow = start_flow(workspace, env)
        wait_for("training", lambda: training_stages(flow), flow)
        if signum == signal.SIGINT:  # meanwhile, a second run in the same checkout refuses at once, in one line
            second = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=workspace, env=env,
                                    capture_output=True, text=True, timeout=180)
            assert second.returncode == 1, second.stderr[-3000:]
            assert second.stderr.strip().splitlines()[-1].startswith(
                f"pipeline: error: {workspace} is in use by pipeline run "), second.stderr[-3000:]
            assert "Traceback" not in second.stderr and "Running stage" not in second.stderr
            assert flow.poll() is None
        if to_group:  # Ctrl-C: the terminal signals the whole foreground group
            os.killpg(flow.pid, signum)
        else:
            flow.send_signal(signum)
        _, stderr = flow.communicate(timeout=60)
        # Every process it started ended (generous bound for a loaded 2-core machine; typically 6-9 s).
        assert seconds_until_none(lambda: group_members(flow.pid)) < 30
        assert flow.returncode == 128 + signum, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        name = signal.Signals(signum).name
        assert last.startswith(f"pipeline: interrupted by {name}: stopped "), stderr[-3000:]
        assert "train@synthetic" in last.split(";")[0], last
        assert "Traceback" not in stderr, stderr[-5000:]
        assert dvc_locks(workspace) == {}
        # DVC removed the interrupted stage's outputs before running it: the command the line names puts
        # back the last good ones.
        assert "`python -m flows.pipeline --restore` puts back their last good outputs" in last, last
        run([sys.executable, "-m", "flows.pipeline", "--restore"], workspace, env)
        assert synthetic_outputs(workspace) == before
        assert half_done(workspace, env) == {}  # a stage that finished meanwhile (heart) is in dvc.lock

    # A SIGKILL of the group (a closed terminal, the OOM killer) takes the stages along: nothing of it
    # holds DVC's locks, and the next `dvc repro` runs (DVC drops locks of dead processes itself).
    flow = start_flow(workspace, env)
    wait_for("training", lambda: training_stages(flow), flow)
    # The temporary Prefect server has a session of its own (Ctrl-C must not stop it before the flow):
    # it ends with the flow all the same.
    server = [p for p in psutil.Process(flow.pid).children() if "server" in p.cmdline()]
    assert server, "no temporary Prefect server"
    os.killpg(flow.pid, signal.SIGKILL)
    flow.communicate(timeout=60)
    seconds_until_none(lambda: group_members(flow.pid), timeout=10)
    _, alive = psutil.wait_procs(server, timeout=30)
    assert not alive, "the temporary Prefect server outlived the killed flow"
    # Killed, it could put back nothing: `--restore` does what it can from the cache, a rerun the rest.
    run([sys.executable, "-m", "flows.pipeline", "--restore"], workspace, env)

    # A lost Prefect server (SIGKILLed mid-training) ends the run in one line naming it: the stages that
    # finished are committed by DVC, the others stopped with their last good outputs (nothing half-done
    # in `dvc status`), and with the server back a rerun completes.
    port, folder = free_port(), workspace.parent / "prefect"
    server_env = {**env, "PREFECT_HOME": str(folder)}
    folder.mkdir()
    server = start_prefect_server(server_env, port, folder / "server.log")
    url = f"http://127.0.0.1:{port}/api"
    try:
        flow = start_flow(workspace, {**env, "PREFECT_API_URL": url})
        wait_for("training", lambda: training_stages(flow), flow)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        lost = time.monotonic()
        _, stderr = flow.communicate(timeout=120)
        assert time.monotonic() - lost < 60
        seconds_until_none(lambda: group_members(flow.pid))
        assert flow.returncode == 1, stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith(f"pipeline: error: lost the Prefect server at {url} ")
        assert "Traceback" not in stderr, stderr[-5000:]
        run([sys.executable, "-m", "flows.pipeline", "--restore"], workspace, env)  # what DVC removed to run them
        assert half_done(workspace, env) == {}

        server = start_prefect_server(server_env, port, folder / "server-again.log")
        set_params(workspace, TINY_RUN)  # the same run, without minutes of training
        again = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=workspace,
                               env={**env, "PREFECT_API_URL": url}, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "is busy" not in again.stderr
        assert run(["dvc", "status", "--json"], workspace, env).stdout.strip() == "{}"
    finally:
        stop_process_group(server, grace_s=30)


# --- the study: DVC's queue workers and runs are daemons in sessions of their own ---

LONG_VARIATIONS = [{"name": "long-a", "params": {"synthetic.train.epochs": 1500}},
                   {"name": "long-b", "params": {"synthetic.train.epochs": 1500, "synthetic.model.width": 32}}]


def processes_in(repo: Path) -> list[psutil.Process]:
    """Every process working in the repo or in DVC's temporary copies of it (queue workers, experiment runs)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.cwd().startswith(str(repo)) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def experiment_training(repo: Path) -> list[psutil.Process]:
    """Training stage processes in DVC's temporary copies (a queued experiment running)."""
    return [p for p in processes_in(repo) if "stages.train" in " ".join(p.cmdline()) and "exps" in p.cwd()]


def experiment_names_at_head(repo: Path, env: dict[str, str]) -> list[str]:
    head = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    return sorted(exp["name"] for commit in shown if commit["rev"] == head for exp in (commit.get("experiments") or [])
                  if not exp["revs"][0].get("error"))


def test_interrupted_study_stops_its_queue_and_a_killed_ones_leftovers_are_stopped_by_the_next(
        workspace: Path, mirror: Path):
    from tests.test_study import study_params

    env = repo_env(mirror)
    study_params(workspace, LONG_VARIATIONS)
    run(["git", "commit", "-qam", "a study of long trainings"], workspace, env)
    command = [sys.executable, "-m", "flows.study", "--jobs", "1"]

    study = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    wait_for("an experiment training", lambda: experiment_training(workspace), study)
    os.killpg(study.pid, signal.SIGINT)
    _, stderr = study.communicate(timeout=120)
    assert seconds_until_none(lambda: processes_in(workspace)) < 30  # the queue's workers and its running experiment too
    assert study.returncode == 130, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("study: interrupted by SIGINT: stopped the experiment queue"), last
    assert "Traceback" not in stderr, stderr[-5000:]
    assert dvc_locks(workspace) == {}

    # Killed outright, the study leaves DVC's queue running (its own sessions); the next study stops those
    # leftovers and ends with exactly one experiment per variation.
    study = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    wait_for("an experiment training", lambda: experiment_training(workspace), study)
    os.killpg(study.pid, signal.SIGKILL)
    study.wait()
    assert processes_in(workspace), "nothing of the killed study's queue lived on: the case is not tested"
    again = run([*command, "--json"], workspace, env, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert experiment_names_at_head(workspace, env) == ["long-a", "long-b"]
    seconds_until_none(lambda: processes_in(workspace))


def test_serve_stops_on_ctrl_c_and_sigterm_in_one_line(prefect_api: str, tmp_path: Path, mirror: Path):
    env = repo_env(mirror, PREFECT_API_URL=prefect_api)
    for signum, to_group in ((signal.SIGINT, True), (signal.SIGTERM, False)):
        log = tmp_path / f"serve-{signum}.log"
        with log.open("w") as output:
            serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=Path(__file__).parents[1], env=env,
                                     stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        while "pipeline/nightly" not in log.read_text() and time.monotonic() < deadline:  # serving
            assert serve.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        if to_group:
            os.killpg(serve.pid, signum)
        else:
            serve.send_signal(signum)
        assert serve.wait(timeout=60) == 128 + signum, log.read_text()[-3000:]
        seconds_until_none(lambda: group_members(serve.pid))
        text = log.read_text()
        assert text.strip().splitlines()[-1].startswith(f"serve: stopped by {signal.Signals(signum).name}: "), text
        assert "Traceback" not in text, text[-3000:]


def test_ctrl_c_while_a_stage_still_imports_is_one_line_and_exit_130(tmp_path: Path, mirror: Path):
    """Ctrl-C in the middle of a stage's imports (pydantic, pandas, TensorFlow: seconds on a busy machine),
    before its main() runs: one line, exit 130, no traceback of the import it cut."""
    stage = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "stages.train", "synthetic"], cwd=tmp_path,
                             env=repo_env(mirror), stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    for line in stage.stderr:  # -X importtime names each module as its import ends
        lines.append(line)
        if line.rstrip().endswith("stages.core.contract"):  # the package is in; params, pandas still to come
            os.killpg(stage.pid, signal.SIGINT)
            break
    rest = stage.stderr.read()
    assert stage.wait(timeout=30) == 130, "".join(lines) + rest
    said = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert said == ["train: error: interrupted while starting; its outputs are as they were"], rest


def test_ctrl_c_inside_a_finalizer_leaves_no_traceback_and_other_errors_keep_theirs(monkeypatch, capsys):
    """A stage's Ctrl-C can land inside an object's __del__ (TensorFlow frees its functions whenever the
    collector runs), where Python drops it with a traceback: run_stage's hook drops only that traceback."""
    from stages.core.errors import _without_interrupts_in_finalizers

    class Finalized:
        def __init__(self, error: BaseException):
            self.error = error

        def __del__(self):
            raise self.error

    monkeypatch.setattr(sys, "unraisablehook", _without_interrupts_in_finalizers)
    Finalized(KeyboardInterrupt())
    assert capsys.readouterr().err == ""
    Finalized(ValueError("a bug in a finalizer"))
    assert "ValueError: a bug in a finalizer" in capsys.readouterr().err
