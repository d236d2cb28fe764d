"""The pool path's real components on 127.0.0.1, for tests/test_study_pool.py and benchmarks/study_pool.py:
a bare git remote and a DVC remote (local folders) for a built repo copy, `prefect server start`, a
process work pool, and `prefect worker` processes, each with its own HOME and git identity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import psutil

from tests.conftest import run


def add_remotes(repo: Path, folder: Path, env: dict[str, str]) -> tuple[str, Path]:
    """A bare git remote `origin` and a default DVC remote (directories under `folder`), the repo's
    commit and data pushed there; the git remote's URL and the DVC remote."""
    git_remote, dvc_remote = folder / "remote.git", folder / "dvc-remote"
    run(["git", "init", "-q", "--bare", "-b", "main", str(git_remote)], folder, env)
    run(["dvc", "remote", "add", "-d", "shared", str(dvc_remote)], repo, env)
    run(["git", "commit", "-qm", "the shared DVC remote", ".dvc/config"], repo, env)
    run(["git", "remote", "add", "origin", str(git_remote)], repo, env)
    run(["git", "push", "-q", "-u", "origin", "main"], repo, env)
    run(["dvc", "push", "-q"], repo, env)
    return str(git_remote), dvc_remote


def create_pool(pool: str, env: dict[str, str], cwd: Path) -> None:
    run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"], cwd, env)


def worker_env(env: dict[str, str], home: Path, name: str) -> dict[str, str]:
    """A worker machine's environment: its own HOME (and so git and DVC user config) and git identity."""
    home.mkdir(parents=True, exist_ok=True)
    identity = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": f"{name}@dnnlab.invalid",
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": f"{name}@dnnlab.invalid"}
    return {**env, "HOME": str(home), "PREFECT_HOME": str(home / ".prefect"), **identity}


def start_worker(pool: str, name: str, env: dict[str, str], cwd: Path, log: IO, limit: int = 1) -> subprocess.Popen:
    """`prefect worker start --pool POOL --limit N` in a session of its own (so it can be stopped whole)."""
    return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name,
                             "--limit", str(limit)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_machine(process: subprocess.Popen) -> None:
    """SIGKILL a worker and everything it started, as a machine that dies: its process group and the
    flow-run processes (Prefect starts each in a session of its own) with their `dvc` and stage processes."""
    tree = descendants(process.pid)
    for group in {os.getpgid(p.pid) for p in tree if p.is_running()} | {process.pid}:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def runs_under(process: subprocess.Popen, pid: int) -> bool:
    """Whether process `pid` (a flow run's infrastructure pid) was started by this worker."""
    return any(child.pid == pid for child in descendants(process.pid))
