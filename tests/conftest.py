"""Shared fixtures: the data mirror, and throwaway copies of this repo for DVC/Prefect runs.

Tests that run `dvc repro` or `dvc exp run` do so in a temporary copy with its own git and
DVC state, never in the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stages.core.contract import MIRROR_ENV

# The real S3-compatible and PostgreSQL servers' fixtures (s3_server, postgresql).
pytest_plugins = ["tests.servers"]

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Small enough for CI's 2 cores, big enough that every stage does real work: 3 seeds (a mean, a spread, a
# seed in the middle) for every task, which the study tests set as study.seeds, so their baseline trains nothing.
TINY_SEEDS = 3
TINY_RUN = {"synthetic.train.epochs": 20, "heart.train.epochs": 5, "mnist.train.epochs": 1,
            **{f"{task}.train.seeds": TINY_SEEDS for task in ("synthetic", "heart", "mnist")}}
# pytest-xdist's worker name ("gw0", "gw1"; empty without -n): what one worker keeps apart from the others.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def default_mirror() -> Path:
    """The read-only copy of the real datasets: DNNLAB_DATA_MIRROR, else ../shared/data (tests, benchmarks)."""
    return Path(os.environ.get(MIRROR_ENV) or REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only copy of the real datasets (DNNLAB_DATA_MIRROR, else ../shared/data)."""
    path = default_mirror()
    if not (path / "heart" / "heart.csv").exists():
        pytest.fail(f"no data mirror at {path}: set DNNLAB_DATA_MIRROR to a folder laid out like ../shared/data")
    return path


def repo_env(mirror: Path, **extra: str) -> dict[str, str]:
    """The environment a stage sees under `dvc repro`: venv first on PATH, mirror set, no Prefect
    server (neither from the environment nor from the developer's Prefect profile)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(Path(tempfile.gettempdir()) / f"dnnlab-tests-prefect-home{XDIST_WORKER}"),
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "DNNLAB_DATA_MIRROR": str(mirror),
        "GIT_AUTHOR_NAME": "dnnlab tests", "GIT_AUTHOR_EMAIL": "tests@dnnlab.invalid",
        "GIT_COMMITTER_NAME": "dnnlab tests", "GIT_COMMITTER_EMAIL": "tests@dnnlab.invalid",
    })
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def set_params(repo: Path, overrides: dict) -> None:
    """Apply dotted-key overrides to the copy's params.yaml, validated and written as `dvc exp run -S` does
    (so the copy's file keeps the layout of the committed one)."""
    from flows.pipeline import apply_overrides as apply_with_dvc  # Prefect's import: only where it is needed

    apply_with_dvc(repo, overrides)


def copy_source_tree(destination: Path) -> Path:
    """The files git would submit (tracked and untracked-not-ignored), with the DVC remote `local` aimed at
    a folder beside it (`point_local_remote`)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    point_local_remote(destination, destination.parent / f"{destination.name}-dvc-remote")
    return destination


def point_local_remote(repo: Path, folder: Path) -> None:
    """Aim the default DVC remote `local` at `folder` in the repo's git-ignored .dvc/config.local, so that
    a test's `dvc push` never writes to the machine's real ~/.cache/dnnlab/dvc-remote (.dvc/config).
    A `git clone` does not carry config.local: call this in a clone too."""
    (repo / ".dvc" / "config.local").write_text(f"['remote \"local\"']\n    url = {folder}\n")


def init_repo(repo: Path, env: dict[str, str]) -> None:
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "test copy"], repo, env)


def build_tiny_repo(destination: Path, mirror: Path) -> Path:
    """A committed copy of this checkout with tiny epochs, fully built by `dvc repro`."""
    repo = copy_source_tree(destination)
    # The lab-default results committed in this checkout would make the tiny run look up to date.
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = repo_env(mirror)
    set_params(repo, TINY_RUN)
    init_repo(repo, env)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline built"], repo, env)
    return repo


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory, mirror) -> Path:
    """A repo copy with tiny epochs, fully built and committed; copy it before changing it. Under
    pytest-xdist the first worker that needs it builds it and the others wait and share it."""
    if not XDIST_WORKER:
        return build_tiny_repo(tmp_path_factory.mktemp("built") / "repo", mirror)
    from filelock import FileLock  # DVC's dependency

    shared = tmp_path_factory.getbasetemp().parent / "built"  # the run's folder, above each worker's own
    with FileLock(str(shared) + ".lock"):
        if not (shared / "built.ok").exists():
            shutil.rmtree(shared, ignore_errors=True)  # what a worker that failed halfway left
            build_tiny_repo(shared / "repo", mirror)
            (shared / "built.ok").touch()
    return shared / "repo"


@pytest.fixture
def workspace(built_repo, tmp_path) -> Path:
    """A private copy of the built repo (git history, DVC cache and outputs included)."""
    return Path(shutil.copytree(built_repo, tmp_path / "repo", symlinks=True))


@pytest.fixture(scope="module")
def prefect_api() -> str:
    """A temporary Prefect server (SQLite) for a test module; in-process flows report to it."""
    import prefect
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield prefect.settings.PREFECT_API_URL.value()


@pytest.fixture
def stage_env(monkeypatch, mirror: Path) -> None:
    """What an in-process flow hands its stage subprocesses: the mirror and a git identity."""
    for key, value in repo_env(mirror).items():
        if key == "DNNLAB_DATA_MIRROR" or key.startswith("GIT_"):
            monkeypatch.setenv(key, value)


END_TO_END_FIXTURES = {"built_repo", "workspace", "prefect_api"}


def pytest_collection_modifyitems(items) -> None:
    """Tests that build the pipeline in a throwaway copy or run a Prefect server are `slow`: the quick
    loop (`-m "not slow"`) is the unit tests, in a minute or two."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
