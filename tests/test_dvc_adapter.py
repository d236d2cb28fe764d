"""flows.dvc_adapter, the one door to DVC, against the real DVC on a tiny repository of shell-command
stages; and the contract on DVC's internals it relies on (names, signatures, the plan's order), so a
DVC upgrade that changes them fails here rather than in a flow run. requirements.lock pins dvc==3.67.1.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from flows import dvc_adapter
from flows.dvc_adapter import DvcError, DvcProject
from stages.core.contract import STAGE_REPORT_ENV
from tests.conftest import repo_env, run

# d needs b and c, b needs a; c writes a git-tracked metrics file.
TINY_DVC_YAML = {"stages": {
    "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
    "b": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
    "c": {"cmd": "echo '{\"score\": 1}' > metrics.json", "metrics": [{"metrics.json": {"cache": False}}]},
    "d": {"cmd": "cat b.txt metrics.json > d.txt", "deps": ["b.txt", "metrics.json"], "outs": ["d.txt"]},
    "e": {"cmd": "echo e > e.txt", "outs": ["e.txt"]},
}}


@pytest.fixture
def env() -> dict[str, str]:
    return repo_env(Path("."))


def make_repo(root: Path, dvc_yaml: dict, env: dict[str, str], params: dict | None = None) -> Path:
    root.mkdir()
    run(["git", "init", "-q", "-b", "main"], root, env)
    run(["dvc", "init", "-q"], root, env)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    if params is not None:
        (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny"], root, env)
    return root


@pytest.fixture
def tiny(tmp_path: Path, env: dict[str, str], monkeypatch) -> Path:
    """A git + DVC repository with TINY_DVC_YAML, committed, nothing built yet; the working directory,
    as the flows make their repository's root (DVC names targets relative to it)."""
    monkeypatch.chdir(tmp_path)
    root = make_repo(tmp_path / "tiny", TINY_DVC_YAML, env)
    monkeypatch.chdir(root)
    return root


def built(root: Path, env: dict[str, str]) -> Path:
    run(["dvc", "repro", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "built"], root, env)
    return root


def head(root: Path, env: dict[str, str]) -> str:
    return run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()


# --- the internals the adapter uses: their shape ---

def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_dvc_internals_keep_the_names_and_signatures_the_adapter_calls():
    from dvc.repo import Repo
    from dvc.repo.experiments.queue.base import QueueEntry
    from dvc.repo.experiments.queue.celery import LocalCeleryQueue
    from dvc.repo.experiments.remove import remove
    from dvc.repo.experiments.run import run as experiments_run
    from dvc.repo.experiments.utils import exp_refs_by_baseline, exp_refs_by_rev
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro
    from dvc.stage import Stage
    from dvc.utils.hydra import apply_overrides

    assert parameters(collect_stages) == ["repo", "targets", "recursive", "glob"]
    assert parameters(get_active_graph) == ["graph"]
    assert parameters(plan_repro) == ["graph", "stages", "pipeline", "downstream"]
    assert parameters(Stage.changed) == ["self", "allow_missing", "upstream"]
    assert parameters(Repo.find_root) == ["root", "fs"]
    assert parameters(apply_overrides) == ["path", "overrides"]
    from dvc.stage.cache import StageCache
    from dvc.stage.serialize import to_single_stage_lockfile
    assert parameters(StageCache._create_stage) == ["self", "cache", "wdir"]  # restore_recorded_outputs
    assert parameters(to_single_stage_lockfile)[:1] == ["stage"]
    assert parameters(exp_refs_by_rev) == ["scm", "rev"]
    assert parameters(exp_refs_by_baseline) == ["scm", "revs", "url"]
    assert parameters(remove)[:2] == ["repo", "exp_names"]
    assert {"targets", "params", "queue", "name"} <= set(parameters(experiments_run)) | {"name"}  # name: **kwargs
    assert "kwargs" in parameters(experiments_run)
    assert parameters(LocalCeleryQueue.iter_queued) == parameters(LocalCeleryQueue.iter_active) == ["self"]
    assert {"name", "stash_rev"} <= set(QueueEntry.__dataclass_fields__)


def test_plan_repro_orders_stages_after_what_they_need_and_changed_says_what_repro_runs(tiny: Path, env):
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(tiny)) as repo:
        graph = get_active_graph(repo.index.graph)
        assert [s.addressing for s in plan_repro(graph, collect_stages(repo, ["d"]))] == ["a", "b", "c", "d"]
        assert [s.addressing for s in plan_repro(graph, collect_stages(repo, ["b"]))] == ["a", "b"]
        everything = [s.addressing for s in plan_repro(graph, None)]
        assert everything == ["a", "b", "c", "d", "e"]  # what the flows' summaries list, in this order
        assert everything.index("a") < everything.index("b") < everything.index("d")
        assert everything.index("c") < everything.index("d")
        with repo.lock:  # changed() asserts the caller holds it (dvc/stage/decorators.py: rwlocked)
            assert all(stage.changed() for stage in repo.index.stages)  # nothing built yet
    built(tiny, env)
    with Repo(str(tiny)) as repo, repo.lock:
        assert not any(stage.changed() for stage in repo.index.stages)
        stage_c = next(stage for stage in repo.index.stages if stage.addressing == "c")
        assert [(out.use_cache, Path(out.fs_path).name) for out in stage_c.outs] == [(False, "metrics.json")]


# --- the adapter, on the real DVC ---

def test_the_project_plans_checks_staleness_and_lists_git_tracked_outputs(tiny: Path, env, tmp_path: Path):
    with pytest.raises(DvcError, match="nope"):
        DvcProject(tiny, ["nope"])
    with pytest.raises(DvcError, match=r"^dvc: "):
        DvcProject(tmp_path)  # not a DVC repository
    built(tiny, env)
    (tiny / "a.txt").write_text("changed\n")
    project = DvcProject(tiny, ["d"])
    try:
        assert project.order == ["a", "b", "c", "d"]
        assert [name for name in project.order if project.changed(name)] == ["a", "b"]  # its output, b's input
        assert project.git_tracked_outputs() == ["dvc.lock", "metrics.json"]
        assert project.report_path() is None and not project.has_remote()
    finally:
        project.close()
    (tiny / "sub").mkdir()
    assert dvc_adapter.find_root(tiny / "sub") == tiny
    assert dvc_adapter.find_root(tmp_path) == tmp_path


def test_metrics_diff_is_dvcs_json_and_a_failing_command_says_dvcs_error(tiny: Path, env):
    built(tiny, env)
    assert dvc_adapter.metrics_diff(tiny, env) == {"metrics.json": {"score": {"old": 1, "new": 1, "diff": 0}}}
    with pytest.raises(DvcError, match=r"^`dvc repro nope` failed: .*nope"):
        dvc_adapter.run_dvc(tiny, ["repro", "nope"], env)


def test_the_projects_metrics_diff_in_process_is_the_commands_json(tiny: Path, env):
    project = DvcProject(tiny)
    try:
        assert project.metrics_diff() == {} == dvc_adapter.metrics_diff(tiny, env)  # no metrics yet
    finally:
        project.close()
    built(tiny, env)
    (tiny / "metrics.json").write_text('{"score": 3, "extra": 0.5}\n')  # a changed metric and a new one
    project = DvcProject(tiny)
    try:
        assert project.metrics_diff() == dvc_adapter.metrics_diff(tiny, env) == {"metrics.json": {
            "score": {"old": 1, "new": 3, "diff": 2}, "extra": {"old": None, "new": 0.5}}}
    finally:
        project.close()


def test_a_failed_dvc_command_is_reported_by_its_error_not_its_closing_footer():
    stderr = ["WARNING: some warning", "ERROR: unexpected error - boom", "",
              "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!"]
    assert dvc_adapter.error_line(stderr, "no output") == "unexpected error - boom"
    assert dvc_adapter.error_line([], "no output") == "no output"


def test_saved_experiments_are_named_and_removed_through_dvcs_refs(tiny: Path, env):
    built(tiny, env)
    (tiny / "e.txt").write_text("other\n")
    assert dvc_adapter.save_experiment(tiny, "first") == "first"
    taken = dvc_adapter.save_experiment(tiny, "first")  # the name is taken: DVC picks one
    assert taken and taken != "first"
    shown = json.loads(run(["dvc", "exp", "show", "--json"], tiny, env).stdout)
    names = {exp["name"] for commit in shown for exp in (commit.get("experiments") or [])}
    assert names == {"first", taken}

    assert dvc_adapter.remove_experiments(tiny, head(tiny, env), ["first", "absent"]) == ["first"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], tiny, env).stdout)
    assert {exp["name"] for commit in shown for exp in (commit.get("experiments") or [])} == {taken}
    assert dvc_adapter.remove_experiments(tiny, "0" * 40, [taken]) == []  # another commit's: kept


def test_experiments_pushed_to_a_git_remote_are_listed_there_by_baseline(tiny: Path, env, tmp_path: Path):
    built(tiny, env)
    remote = tmp_path / "remote.git"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path, env)
    run(["git", "push", "-q", str(remote), "main"], tiny, env)
    assert dvc_adapter.remote_experiments(tiny, str(remote), head(tiny, env)) == []
    (tiny / "e.txt").write_text("other\n")
    dvc_adapter.save_experiment(tiny, "pushed")
    dvc_adapter.save_experiment(tiny, "local-only")
    run(dvc_adapter.dvc_command(*dvc_adapter.experiment_push_args(str(remote), "pushed")), tiny, env)
    assert dvc_adapter.remote_experiments(tiny, str(remote), head(tiny, env)) == ["pushed"]
    assert dvc_adapter.remote_experiments(tiny, str(remote), "0" * 40) == []
    with pytest.raises(DvcError, match=r"^cannot list the experiments at .*absent\.git: "):
        dvc_adapter.remote_experiments(tiny, str(tmp_path / "absent.git"), head(tiny, env))


def test_the_queue_lists_queued_experiments_by_name(tiny: Path, env):
    built(tiny, env)
    assert dvc_adapter.busy_queue_entries(tiny) == []
    dvc_adapter.queue_experiment(tiny, ["d"], [], "queued-one")
    assert dvc_adapter.busy_queue_entries(tiny) == ["queued-one"]
    with pytest.raises(DvcError, match=r"^cannot queue bad: "):
        dvc_adapter.queue_experiment(tiny, ["d"], ["=1"], "bad")
    run(["dvc", "queue", "remove", "--queued"], tiny, env)
    assert dvc_adapter.busy_queue_entries(tiny) == []


def test_param_overrides_are_applied_as_dvc_exp_run_applies_them(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  width: 64\nseed: 42\n")
    dvc_adapter.apply_param_overrides(params, ["model.width=128", "++model.depth=3"])
    assert yaml.safe_load(params.read_text()) == {"model": {"width": 128, "depth": 3}, "seed": 42}


def test_the_command_line_helpers_build_the_commands_the_flows_run():
    # --wait-for-lock: stages of one flow run at once and take DVC's repository lock in turn.
    assert dvc_adapter.repro_args("fetch@heart", True) == [
        "--wait-for-lock", "repro", "--single-item", "--force", "fetch@heart"]
    assert dvc_adapter.repro_args("report", False) == ["--wait-for-lock", "repro", "--single-item", "report"]
    assert dvc_adapter.run_queue_args(2) == ["exp", "run", "--run-all", "-j", "2"]
    assert dvc_adapter.experiment_run_args("wide", ["model.width=128", "seed=7"], ["evaluate"]) == [
        "exp", "run", "-n", "wide", "--pull", "--allow-missing", "-S", "model.width=128", "-S", "seed=7", "evaluate"]
    assert dvc_adapter.experiment_push_args("origin", "wide") == ["exp", "push", "--no-cache", "origin", "wide"]
    assert dvc_adapter.experiment_pull_args("/r.git", ["a", "b"]) == ["exp", "pull", "-f", "/r.git", "a", "b"]
    command = dvc_adapter.dvc_command("version")
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0


def test_queued_experiments_run_with_the_queue_runners_environment_and_their_name(tmp_path: Path, env, monkeypatch):
    """The study hands STAGE_REPORT_ENV to `dvc exp run --run-all`; each experiment's stages must see it,
    and DVC_EXP_NAME, so a failed stage's record names its experiment."""
    command = 'test -z "$DNNLAB_STAGE_REPORT" || echo "$DVC_EXP_NAME" >> "$DNNLAB_STAGE_REPORT"; echo x > probe.txt'
    probe = {"stages": {"probe": {"cmd": command, "params": ["n"], "outs": ["probe.txt"]}}}
    root = make_repo(tmp_path / "probe", probe, env, params={"n": 1})
    monkeypatch.chdir(root)
    built(root, env)
    seen = tmp_path / "seen.txt"
    dvc_adapter.queue_experiment(root, ["probe"], ["n=2"], "exp-a")  # a changed param: the stage runs
    # DVC_NO_ANALYTICS: else a stopped worker forks a short-lived copy of itself to send DVC's usage report.
    queue_env = {**env, STAGE_REPORT_ENV: str(seen), "DVC_NO_ANALYTICS": "1"}
    returncode, _, hung = dvc_adapter.follow_queue(root, 1, ["exp-a"], queue_env, logging.getLogger("queue"),
                                                   "the queue")
    assert (returncode, hung) == (0, False)
    assert seen.read_text().split() == ["exp-a"]
    assert queue_workers_in(root) == []  # stopped once idle, not left to end by themselves (15 s or more)


def test_a_queue_follower_still_following_after_its_experiments_ended_is_stopped_with_the_idle_workers(
        tmp_path: Path, env, monkeypatch):
    """DVC's `dvc exp run --run-all` once went on following a queue whose experiments had all ended (in one
    CI run of about five; its idle worker lived on too). Here the follower is frozen (SIGSTOP) once its
    worker runs the experiment, so it can neither print nor end, as in that hang: `grace_s` after the
    experiment has left the queue, the follower is stopped, the idle worker too, and the result is DVC's."""
    probe = {"stages": {"probe": {"cmd": "sleep 2; echo x > probe.txt", "params": ["n"], "outs": ["probe.txt"]}}}
    root = make_repo(tmp_path / "probe", probe, env, params={"n": 1})
    monkeypatch.chdir(root)
    built(root, env)
    dvc_adapter.queue_experiment(root, ["probe"], ["n=2"], "exp-a")
    frozen: list[psutil.Process] = []

    def freeze_the_follower_once_the_experiment_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not frozen:
            followers = [p for p in psutil.Process().children() if "--run-all" in p.cmdline()]
            if followers and ("exp-a" in dvc_adapter.running_queue_entries(root)
                              or not dvc_adapter.busy_queue_entries(root)):
                followers[0].suspend()
                frozen.append(followers[0])
            time.sleep(0.2)
        # Bounded: without the fix the follower would be waited on forever. (Polled, not psutil's wait(),
        # which would reap the follower's exit status before the follow_queue's Popen does.)
        deadline = time.monotonic() + 120
        while frozen and running(frozen[0]) and time.monotonic() < deadline:
            time.sleep(0.5)
        if frozen and running(frozen[0]):
            frozen[0].kill()

    freezer = threading.Thread(target=freeze_the_follower_once_the_experiment_runs)
    freezer.start()
    returncode, _, hung = dvc_adapter.follow_queue(root, 1, ["exp-a"], {**env, "DVC_NO_ANALYTICS": "1"},
                                                   logging.getLogger("queue"), "the queue", grace_s=3)
    freezer.join()

    assert frozen and hung and returncode != 0
    assert not running(frozen[0])
    assert "exp-a" in {exp["name"] for commit in dvc_adapter.show_experiments(root, env)
                       for exp in commit.get("experiments") or []}
    assert queue_workers_in(root) == []


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def queue_workers_in(root: Path) -> list[str]:
    found = []
    for process in psutil.process_iter():
        try:
            if "queue-worker" in process.cmdline() and process.cwd() == str(root):
                found.append(" ".join(process.cmdline()))
        except psutil.Error:  # it ended while we looked
            pass
    return found


def test_restore_puts_back_the_outputs_dvc_lock_records_for_stages_that_lost_them(tiny: Path, env):
    built(tiny, env)
    recorded = (tiny / "b.txt").read_bytes()
    (tiny / "b.txt").unlink()  # what DVC does before running a stage, and a killed run leaves

    assert dvc_adapter.restore_recorded_outputs(tiny) == ["b"]

    assert (tiny / "b.txt").read_bytes() == recorded
    assert run(["dvc", "status", "--json"], tiny, env).stdout.strip() == "{}"
    assert dvc_adapter.restore_recorded_outputs(tiny) == []  # nothing missing: nothing touched

    # A stage stopped after its command wrote new outputs, before DVC recorded them: put back as recorded.
    (tiny / "b.txt").write_text("written by a run that DVC never recorded\n")
    assert dvc_adapter.restore_recorded_outputs(tiny) == ["b"]
    assert (tiny / "b.txt").read_bytes() == recorded
    assert run(["dvc", "status", "--json"], tiny, env).stdout.strip() == "{}"


def test_ctrl_c_pressed_again_and_again_stops_dvc_in_one_line_with_its_lock_released(tmp_path: Path, env):
    """The terminal's Ctrl-C and an interrupted flow's own SIGINT reach DVC one after the other: DVC stops
    its stage on the first, and the rest must not cut its clean-up short with a traceback."""
    root = make_repo(tmp_path / "slow", {"stages": {"slow": {"cmd": "echo started; sleep 60", "outs": ["s.txt"]}}},
                     env)
    dvc = subprocess.Popen(dvc_adapter.dvc_command("repro", "slow"), cwd=root, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    for line in dvc.stdout:
        if line.strip() == "started":  # the stage runs
            break
    signals = 0
    while dvc.poll() is None and signals < 300:  # one every 10 ms, as long as DVC runs (at most 3 s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dvc.pid, signal.SIGINT)
        signals += 1
        time.sleep(0.01)
    said = dvc.stdout.read()
    assert dvc.wait(timeout=30) != 0
    assert "Traceback" not in said, said
    assert said.strip().splitlines()[-1].startswith("ERROR: "), said
    assert signals > 3  # DVC did not end at the first one: the later ones landed in its clean-up
    status = subprocess.run(dvc_adapter.dvc_command("status"), cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr  # no lock of the stopped run is left

