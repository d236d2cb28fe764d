"""Runs that work from git and a record that never lies: a bare git remote, a DVC remote on a local
directory, a real Prefect server and `flows.serve`, all on this machine.

A "team" is set up from the tiny built repo: its DVC remote committed in .dvc/config, the data
pushed there, the commits in a bare git remote; the user's checkout and a teammate's are clones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import yaml

from flows.dvc_adapter import DvcProject
from flows.git_workspace import RecordRefused, record_results, uncommitted_inputs
from flows.processes import stop_process_group
from tests.conftest import repo_env, run, set_params
from tests.test_flows import dvc_is_clean, eventually

prefect = pytest.importorskip("prefect")


@dataclass
class Team:
    remote: Path      # the bare git remote
    env: dict
    store: Optional[Path] = None  # the DVC remote, where it is a local directory

    def clone(self, destination: Path, pull: bool = True) -> Path:
        run(["git", "clone", "-q", str(self.remote), str(destination)], destination.parent, self.env)
        if pull:
            run(["dvc", "pull", "-q"], destination, self.env)
        return destination

    def head(self) -> str:
        return run(["git", "rev-parse", "main"], self.remote, self.env).stdout.strip()

    def push_commit(self, teammate: Path, path: str, text: str, message: str) -> str:
        """A teammate's commit that appends `text` to `path`, pushed to the remote: its sha."""
        run(["git", "pull", "-q", "--ff-only"], teammate, self.env)
        file = teammate / path
        file.write_text(file.read_text() + text)
        run(["git", "commit", "-qam", message], teammate, self.env)
        run(["git", "push", "-q", "origin", "main"], teammate, self.env)
        return self.head()


@pytest.fixture
def team(workspace: Path, mirror: Path, tmp_path: Path) -> Team:
    env = repo_env(mirror)
    store = tmp_path / "dvc-store"
    run(["dvc", "remote", "add", "-d", "-f", "store", str(store)], workspace, env)
    run(["git", "commit", "-qm", "the team's DVC remote", "--", ".dvc/config"], workspace, env)
    run(["dvc", "push", "-q"], workspace, env)
    remote = tmp_path / "remote.git"
    run(["git", "clone", "-q", "--bare", str(workspace), str(remote)], tmp_path, env)
    return Team(remote, env, store)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a checkout but git's own (.git) and Python's bytecode caches."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file() and ".git" not in path.parts and "__pycache__" not in path.parts}


def in_store(store: Path, md5: str) -> bool:
    return (store / "files" / "md5" / md5[:2] / md5[2:]).is_file()


def report_md5(repo: Path) -> str:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["report"]["outs"][0]["md5"]


def test_a_served_nightly_run_works_in_its_own_clone_and_pushes_data_then_one_commit(
        team: Team, mirror: Path, prefect_api: str, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.variables import Variable

    user = team.clone(tmp_path / "user")  # the checkout `flows.serve` runs from
    teammate = team.clone(tmp_path / "teammate", pull=False)
    # A committed code change to the report stage: tonight's run must rerun it and record dvc.lock.
    moved = team.push_commit(teammate, "stages/report.py", "\n# touched by the nightly-run test\n",
                             "touch the report stage")
    Variable.set("dnnlab_git_remote", str(team.remote), overwrite=True)
    before = tree_digest(user)

    env = repo_env(mirror, PREFECT_API_URL=prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=user, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            def registered() -> bool:
                try:
                    return bool(client.read_deployment_by_name("pipeline/nightly"))
                except Exception:
                    return False
            assert eventually(registered, bool, timeout=90), (tmp_path / "serve.log").read_text()[-3000:]
            deployment = client.read_deployment_by_name("pipeline/nightly")
        assert deployment.parameters["git_remote"] == str(team.remote)  # the Prefect variable, resolved

        first = run_deployment("pipeline/nightly", timeout=400, poll_interval=1)

        assert first.state.is_completed(), (first.state.message, (tmp_path / "serve.log").read_text()[-3000:])
        recorded = team.head()
        assert run(["git", "rev-parse", f"{recorded}~1"], team.remote, team.env).stdout.strip() == moved
        files = run(["git", "show", "--name-only", "--format=", recorded], team.remote, team.env).stdout.split()
        assert files == ["dvc.lock"]
        message = run(["git", "log", "-1", "--format=%B", recorded], team.remote, team.env).stdout
        assert message.startswith(f"pipeline run {first.name}: synthetic/rel_mse ")
        assert tree_digest(user) == before  # nobody's working tree is touched

        second = run_deployment("pipeline/nightly", timeout=400, poll_interval=1)

        assert second.state.is_completed(), second.state.message
        assert team.head() == recorded  # nothing changed, nothing pushed
        assert tree_digest(user) == before
    finally:
        stop_process_group(server, grace_s=30)
        log.close()

    # A teammate's fresh clone of the pushed commit gets the results without recomputing them.
    fresh = team.clone(tmp_path / "fresh")
    assert in_store(team.store, report_md5(fresh))
    assert dvc_is_clean(fresh, mirror)
    assert (fresh / "reports/report.html").is_file()
    assert run(["dvc", "metrics", "diff", "HEAD~1", "--json"], fresh, team.env).stdout.strip() in ("{}", "")


def results_of_a_code_change(team: Team, tmp_path: Path) -> tuple[Path, Path]:
    """A run's clone with new results (the report stage's code changed upstream), and a teammate's clone."""
    teammate = team.clone(tmp_path / "teammate", pull=False)
    team.push_commit(teammate, "stages/report.py", "\n# changed upstream\n", "touch the report stage")
    clone = team.clone(tmp_path / "run")
    run(["dvc", "repro", "-q"], clone, team.env)
    return clone, teammate


def record(clone: Path, env: dict) -> str:
    project = DvcProject(clone)
    try:
        return record_results(project, "nightly results", logging.getLogger("test"), env, push_branch="main")
    finally:
        project.close()


def test_a_branch_moved_by_a_params_commit_during_the_run_records_nothing(team: Team, tmp_path: Path):
    clone, teammate = results_of_a_code_change(team, tmp_path)
    moved = team.push_commit(teammate, "params.yaml", "\n# a params edit pushed during the run\n", "params")

    with pytest.raises(RecordRefused) as refused:
        record(clone, team.env)

    assert str(refused.value).startswith("record: main moved during the run (1 commit(s) changing params.yaml)")
    assert "nothing recorded" in str(refused.value) and "\n" not in str(refused.value)
    assert team.head() == moved


def test_a_branch_moved_by_a_readme_commit_during_the_run_is_rebased_onto_and_pushed(team: Team, tmp_path: Path):
    clone, teammate = results_of_a_code_change(team, tmp_path)
    moved = team.push_commit(teammate, "README.md", "\nA line of prose pushed during the run.\n", "readme")

    sha = record(clone, team.env)

    assert team.head() == sha
    assert run(["git", "rev-parse", f"{sha}~1"], team.remote, team.env).stdout.strip() == moved
    assert run(["git", "show", f"{sha}:dvc.lock"], team.remote, team.env).stdout == (clone / "dvc.lock").read_text()
    assert in_store(team.store, report_md5(clone))  # the data went first


def test_record_with_an_uncommitted_params_change_is_refused_before_any_stage_runs(
        workspace: Path, mirror: Path, prefect_api: str, stage_env):
    from flows.pipeline import pipeline

    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 20", "epochs: 21", 1))
    head = run(["git", "rev-parse", "HEAD"], workspace, repo_env(mirror)).stdout
    lock = (workspace / "dvc.lock").read_bytes()
    project = DvcProject(workspace)
    try:
        assert uncommitted_inputs(project) == ["params.yaml"]
    finally:
        project.close()

    state = pipeline(repo=str(workspace), record=True, return_state=True)

    assert state.is_failed()
    assert state.message == ("record: uncommitted changes to pipeline inputs (params.yaml): commit them, "
                             "or run without --record; nothing recorded")
    assert run(["git", "rev-parse", "HEAD"], workspace, repo_env(mirror)).stdout == head
    assert (workspace / "dvc.lock").read_bytes() == lock  # no stage ran

    # Committed, the same change is what a record is for: its new results are committed on top of it.
    run(["git", "commit", "-qam", "train synthetic one epoch longer"], workspace, repo_env(mirror))
    state = pipeline(repo=str(workspace), record=True, return_state=True)

    assert state.is_completed(), state.message
    files = run(["git", "show", "--name-only", "--format=", "HEAD"], workspace, repo_env(mirror)).stdout.split()
    assert "dvc.lock" in files and "reports/headline/synthetic.json" in files
    assert not [name for name in files if "heart" in name or "mnist" in name]  # their chains did not run
    # Its headline metrics (4 significant digits) moved; which of them depends on the epoch's draw.
    changed = metric_changes(workspace, "HEAD~1", mirror).get("reports/headline/synthetic.json", {})
    assert changed and all(value["diff"] != 0 for value in changed.values()), changed
    assert run(["git", "status", "--porcelain"], workspace, repo_env(mirror)).stdout == ""


def metric_changes(repo: Path, rev: str, mirror: Path) -> dict:
    """`dvc metrics diff REV --json`: the metrics that differ between REV and the workspace."""
    return json.loads(run(["dvc", "metrics", "diff", rev, "--json"], repo, repo_env(mirror)).stdout or "{}")


def test_nightlies_record_one_commit_per_night_whose_results_changed(
        team: Team, mirror: Path, prefect_api: str, stage_env, tmp_path: Path):
    from flows.pipeline import pipeline

    teammate = team.clone(tmp_path / "teammate", pull=False)
    recorded, epochs = [], 20
    for night in range(4):  # every other night a teammate pushes a params change that moves the metrics
        if night % 2:
            epochs += 2
            run(["git", "pull", "-q", "--ff-only"], teammate, team.env)
            set_params(teammate, {"synthetic.train.epochs": epochs})
            run(["git", "commit", "-qam", f"synthetic: {epochs} epochs"], teammate, team.env)
            run(["git", "push", "-q", "origin", "main"], teammate, team.env)
        before = team.head()

        state = pipeline(git_remote=str(team.remote), record=True, return_state=True)

        assert state.is_completed(), (night, state.message)
        if night % 2:
            assert run(["git", "rev-parse", f"{team.head()}~1"], team.remote, team.env).stdout.strip() == before
            recorded.append(team.head())
        else:
            assert team.head() == before, night  # nothing changed, nothing pushed
        if night == 1:  # the first change, seen from a fresh clone
            fresh = team.clone(tmp_path / "fresh")
            changed = metric_changes(fresh, "HEAD~1", mirror)["reports/headline/synthetic.json"]
            assert changed["synthetic/rel_mse"]["diff"] != 0
            assert dvc_is_clean(fresh, mirror)

    assert len(recorded) == 2
    log = run(["git", "log", "--format=%s", "main"], team.remote, team.env).stdout.splitlines()
    assert [line.startswith("pipeline run ") for line in log[:4]] == [True, False] * 2
    # Later, in a teammate's fresh clone: HEAD~2 is the first recorded night's results, HEAD the last's.
    later = team.clone(tmp_path / "later")
    trend = metric_changes(later, "HEAD~2", mirror)["reports/headline/synthetic.json"]["synthetic/rel_mse"]
    first = json.loads(run(["git", "show", f"{recorded[0]}:reports/headline/synthetic.json"], later, team.env).stdout)
    last = json.loads((later / "reports/headline/synthetic.json").read_text())
    assert (trend["old"], trend["new"]) == (first["synthetic/rel_mse"], last["synthetic/rel_mse"]) != (None, None)


def test_a_run_from_a_missing_git_remote_or_secret_fails_in_one_line_before_anything_runs(
        prefect_api: str, tmp_path: Path):
    from flows.pipeline import pipeline

    missing = tmp_path / "missing.git"
    unset = pipeline(git_remote="", return_state=True)  # the deployment's variable was never set
    unreachable = pipeline(git_remote=str(missing), return_state=True)
    no_secret = pipeline(git_remote=str(missing), credentials_block="no-such-block", return_state=True)

    assert unset.message.startswith("git_remote is empty: set the Prefect variable dnnlab_git_remote")
    assert unreachable.message.startswith(f"{missing}: git clone failed: fatal: repository '{missing}' does not exist")
    assert no_secret.message.startswith("no Prefect Secret block 'no-such-block': create it")
    for state in (unset, unreachable, no_secret):
        assert state.is_failed() and "\n" not in state.message


def test_a_recorded_run_from_git_reaches_an_s3_remote_with_credentials_only_from_a_prefect_secret(
        workspace: Path, mirror: Path, s3_server, prefect_api: str, stage_env, tmp_path: Path, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.pipeline import pipeline
    from tests.test_remotes import object_path, without_aws

    for key, value in without_aws({}, tmp_path).items():  # no credentials from this machine: only the block's
        monkeypatch.setenv(key, value)
    for key in [key for key in os.environ if key.startswith("AWS_") and key not in without_aws({}, tmp_path)]:
        monkeypatch.delenv(key)
    credentials = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    env = without_aws(repo_env(mirror), tmp_path)
    run(["dvc", "remote", "add", "-d", "s3store", f"s3://{s3_server.bucket}/dnnlab"], workspace, env)
    run(["dvc", "remote", "modify", "s3store", "endpointurl", s3_server.endpoint], workspace, env)
    run(["git", "commit", "-qm", "the team's S3 remote", "--", ".dvc/config"], workspace, env)
    run(["dvc", "push", "-q"], workspace, {**env, **credentials})
    team = Team(tmp_path / "remote.git", env)
    run(["git", "clone", "-q", "--bare", str(workspace), str(team.remote)], tmp_path, env)
    teammate = team.clone(tmp_path / "teammate", pull=False)
    moved = team.push_commit(teammate, "stages/report.py", "\n# changed upstream\n", "touch the report stage")

    refused = pipeline(git_remote=str(team.remote), record=True, return_state=True)
    assert refused.is_failed() and team.head() == moved
    assert refused.message.startswith("`dvc pull` from the DVC remote failed: failed to connect to s3")
    assert refused.message.endswith("Unable to locate credentials")

    Secret(value=credentials).save("dnnlab-test-s3", overwrite=True)
    state = pipeline(git_remote=str(team.remote), record=True, credentials_block="dnnlab-test-s3", return_state=True)

    assert state.is_completed(), state.message
    recorded = team.head()
    assert run(["git", "rev-parse", f"{recorded}~1"], team.remote, env).stdout.strip() == moved
    lock = yaml.safe_load(run(["git", "show", f"{recorded}:dvc.lock"], team.remote, env).stdout)
    assert object_path(s3_server, "dnnlab", lock["stages"]["report"]["outs"][0]["md5"]).is_file()
