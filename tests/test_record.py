"""flows.git_workspace's record on the real git and DVC, with a repository of shell-command stages (seconds,
no training): results that changed because committed inputs changed are recorded; an uncommitted input
is refused; a refused push says the remote's own reason. The pipeline flow's record over real training is
in tests/test_shared_runs.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from flows.dvc_adapter import DvcProject
from flows.git_workspace import RecordRefused, RemoteError, push_refusal, record_results, uncommitted_inputs
from tests.conftest import repo_env, run
from tests.test_dvc_adapter import make_repo

# `score` writes a git-tracked metric into results/, a folder that `summary` reads as a whole: the shape
# of the lab's evaluate@<task> and report stages (reports/metrics).
SCORED_DVC_YAML = {"stages": {
    "score": {"cmd": "mkdir -p results && echo \"{\\\"score\\\": ${level}}\" > results/score.json",
              "params": ["level"], "metrics": [{"results/score.json": {"cache": False}}]},
    "summary": {"cmd": "cat results/score.json > summary.txt", "deps": ["results"], "outs": ["summary.txt"]},
}}
LOG = logging.getLogger("test")


@pytest.fixture
def env() -> dict[str, str]:
    return repo_env(Path("."))


@pytest.fixture
def scored(tmp_path: Path, env: dict[str, str], monkeypatch) -> Path:
    """SCORED_DVC_YAML at level 1, built and committed; the working directory."""
    root = make_repo(tmp_path / "scored", SCORED_DVC_YAML, env, params={"level": 1})
    monkeypatch.chdir(root)
    run(["dvc", "repro", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "built"], root, env)
    return root


def commit_level(root: Path, level: int, env: dict[str, str]) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"level": level}))
    run(["git", "commit", "-qam", f"level {level}"], root, env)


def record(root: Path, env: dict[str, str], push_branch: str | None = None) -> str | None:
    project = DvcProject(root)
    try:
        return record_results(project, "nightly results", LOG, env, push_branch)
    finally:
        project.close()


def uncommitted(root: Path) -> list[str]:
    project = DvcProject(root)
    try:
        return uncommitted_inputs(project)
    finally:
        project.close()


def test_results_that_a_committed_params_change_moved_are_recorded_and_diffed(scored: Path, env):
    commit_level(scored, 2, env)
    run(["dvc", "repro", "-q"], scored, env)
    assert uncommitted(scored) == []  # results/score.json changed inside the folder `summary` reads: a result

    sha = record(scored, env)

    assert sha == run(["git", "rev-parse", "HEAD"], scored, env).stdout.strip()
    files = run(["git", "show", "--name-only", "--format=", sha], scored, env).stdout.split()
    assert files == ["dvc.lock", "results/score.json"]
    diff = yaml.safe_load(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], scored, env).stdout)
    assert diff == {"results/score.json": {"score": {"old": 1, "new": 2, "diff": 1}}}
    assert run(["git", "status", "--porcelain"], scored, env).stdout == ""
    assert record(scored, env) is None  # nothing changed since: no commit


def test_an_uncommitted_input_is_refused_even_inside_a_folder_of_results(scored: Path, env):
    (scored / "params.yaml").write_text(yaml.safe_dump({"level": 3}))
    (scored / "results" / "notes.txt").write_text("a file nobody's stage writes: an input of `summary`\n")
    assert uncommitted(scored) == ["params.yaml", "results/notes.txt"]
    head = run(["git", "rev-parse", "HEAD"], scored, env).stdout

    with pytest.raises(RecordRefused) as refused:
        record(scored, env)

    assert str(refused.value) == ("record: uncommitted changes to pipeline inputs (params.yaml, results/notes.txt): "
                                  "commit them, or run without --record; nothing recorded")
    assert run(["git", "rev-parse", "HEAD"], scored, env).stdout == head


def test_a_refused_push_names_the_remote_and_its_reason(scored: Path, env, tmp_path: Path):
    remote = tmp_path / "remote.git"
    run(["git", "clone", "-q", "--bare", str(scored), str(remote)], tmp_path, env)
    run(["git", "remote", "add", "origin", str(remote)], scored, env)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("a DVC remote cannot live under a file\n")
    run(["dvc", "remote", "add", "-d", "store", str(not_a_folder / "store")], scored, env)
    run(["git", "commit", "-qm", "the team's DVC remote", "--", ".dvc/config"], scored, env)
    run(["git", "push", "-q", "origin", "main"], scored, env)
    commit_level(scored, 2, env)
    run(["git", "push", "-q", "origin", "main"], scored, env)
    run(["dvc", "repro", "-q"], scored, env)
    head = run(["git", "rev-parse", "main"], remote, env).stdout

    with pytest.raises(RecordRefused) as dvc_refused:
        record(scored, env, push_branch="main")

    message = str(dvc_refused.value)
    assert message.startswith(f"record: `dvc push` to the DVC remote store ({not_a_folder / 'store'}) failed, "
                              "nothing recorded: ")
    assert "Not a directory" in message or "not a directory" in message, message
    assert "\n" not in message and run(["git", "rev-parse", "main"], remote, env).stdout == head
    assert len(run(["git", "log", "--format=%H"], scored, env).stdout.split()) == 4  # no commit made

    run(["dvc", "remote", "modify", "store", "url", str(tmp_path / "store")], scored, env)
    run(["git", "commit", "-qm", "a reachable DVC remote", "--", ".dvc/config"], scored, env)
    run(["git", "push", "-q", "origin", "main"], scored, env)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is frozen for the release: ask the lead' >&2\nexit 1\n")
    hook.chmod(0o755)
    head = run(["git", "rev-parse", "main"], remote, env).stdout

    with pytest.raises(RemoteError) as git_refused:
        record(scored, env, push_branch="main")

    assert str(git_refused.value) == (f"record: git push to main at {remote} was refused: main is frozen for the "
                                      "release: ask the lead; pre-receive hook declined; nothing recorded (the data "
                                      "did reach the DVC remote)")
    assert run(["git", "rev-parse", "main"], remote, env).stdout == head
    assert list((tmp_path / "store" / "runs").rglob("*")), "the run cache did not go with the data"


def test_a_push_refusal_is_the_remotes_words_not_gits_closing_line():
    hook = ("remote: main is frozen: ask the lead        \nTo /srv/lab.git\n"
            " ! [remote rejected] HEAD -> main (pre-receive hook declined)\n"
            "error: failed to push some refs to '/srv/lab.git'\n")
    assert push_refusal(hook) == "main is frozen: ask the lead; pre-receive hook declined"
    assert push_refusal(" ! [rejected]        HEAD -> main (fetch first)\nerror: failed to push some refs\n") == \
        "fetch first"
    assert push_refusal("fatal: unable to access the remote\n") == "fatal: unable to access the remote"
    assert push_refusal("") == "(no output)"
