"""stages.core.tracking: every place Prefect 3 reads its API URL from counts as a configured server,
none means no Prefect import at all; the record a stage leaves for the flow that started it.

Each check runs in a fresh process whose working directory and Prefect home are temporary folders,
so neither the developer's Prefect profile nor this test process's settings leak in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stages.core.contract import PROGRESS_ARTIFACT_ENV, STAGE_REPORT_ENV
from stages.core.tracking import PrefectProgress, dvc_stage_name, finished_text, read_stage_records, training_progress
from tests.conftest import REPO_ROOT, repo_env, run

URL = "http://127.0.0.1:4299/api"
# Ask tracking for the URL, then say whether that asked Prefect (a `prefect` module was imported).
PROBE = ("import sys; sys.path.insert(0, sys.argv[1]); from stages.core.tracking import prefect_api_url; "
         "print(prefect_api_url()); print('prefect' in sys.modules)")


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty working directory and an environment with no Prefect settings and an empty Prefect home."""
    cwd, home = tmp_path / "cwd", tmp_path / "prefect_home"
    cwd.mkdir()
    home.mkdir()
    return cwd, repo_env(Path("."), PREFECT_HOME=str(home))


def probe(cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    url, imported = run([sys.executable, "-c", PROBE, str(REPO_ROOT)], cwd, env).stdout.split()
    return url, imported


def test_with_no_server_configured_anywhere_prefect_is_not_imported(place):
    cwd, env = place
    (cwd / "pyproject.toml").write_text('[project]\nname = "x"\n')  # a pyproject without [tool.prefect]
    (Path(env["PREFECT_HOME"]) / "profiles.toml").write_text(  # a URL, but not in the active profile
        f'active = "ephemeral"\n[profiles.ephemeral]\n[profiles.local]\nPREFECT_API_URL = "{URL}"\n')
    assert probe(cwd, env) == ("None", "False")


@pytest.mark.parametrize("where", ["environment", "dotenv", "profile", "prefect.toml", "pyproject.toml"])
def test_each_place_prefect_reads_its_api_url_from_counts_as_configured(place, where: str):
    cwd, env = place
    if where == "environment":
        env["PREFECT_API_URL"] = URL
    elif where == "dotenv":
        (cwd / ".env").write_text(f"PREFECT_API_URL={URL}\n")
    elif where == "profile":
        (Path(env["PREFECT_HOME"]) / "profiles.toml").write_text(
            f'active = "local"\n\n[profiles.local]\nPREFECT_API_URL = "{URL}"\n')
    elif where == "prefect.toml":
        (cwd / "prefect.toml").write_text(f'[api]\nurl = "{URL}"\n')
    else:
        (cwd / "pyproject.toml").write_text(f'[project]\nname = "x"\n\n[tool.prefect.api]\nurl = "{URL}"\n')
    assert probe(cwd, env) == (URL, "True")


def test_a_prefect_toml_without_a_url_asks_prefect_and_finds_none(place):
    cwd, env = place
    (cwd / "prefect.toml").write_text('[logging]\nlevel = "INFO"\n')
    assert probe(cwd, env) == ("None", "True")


def test_a_stage_run_with_no_server_imports_no_prefect_and_leaves_its_record(place, tmp_path: Path):
    cwd, env = place
    report = tmp_path / "stage_report.jsonl"
    env.update({STAGE_REPORT_ENV: str(report), "DVC_STAGE": "fetch@heart"})
    stage = ("import sys; sys.path.insert(0, sys.argv[1]); from stages.core.errors import StageError, run_stage\n"
             "def fails():\n    error = StageError('no network'); error.exit_code = 75; raise error\n"
             "run_stage('generate', lambda: print('prefect' in sys.modules))\n"
             "run_stage('fetch', fails)\n")
    result = run([sys.executable, "-c", stage, str(REPO_ROOT)], cwd, env, check=False)
    assert result.returncode == 75 and result.stdout.strip() == "False"
    assert result.stderr.strip() == "fetch: error: no network"
    assert read_stage_records(report) == [
        {"stage": "fetch@heart", "experiment": None, "exit_code": 0, "line": ""},
        {"stage": "fetch@heart", "experiment": None, "exit_code": 75, "line": "fetch: error: no network"}]
    assert json.loads(report.read_text().splitlines()[1])["exit_code"] == 75
    assert read_stage_records(tmp_path / "missing.jsonl") == []


def test_the_stage_name_is_dvcs_own_else_read_from_the_arguments(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert dvc_stage_name("train", ["/repo/stages/train.py", "mnist", "--data", "x"]) == "train@mnist"
    assert dvc_stage_name("report", ["/repo/stages/report.py", "--metrics", "reports/metrics"]) == "report"
    monkeypatch.setenv("DVC_STAGE", "train@heart")
    assert dvc_stage_name("train", ["/repo/stages/train.py", "mnist"]) == "train@heart"


def test_the_finished_text_says_when_early_stopping_ended_training():
    logs = {"val/loss": 0.412345, "train/loss": 0.3}
    assert finished_text("train@heart", 43, 200, logs) == \
        "train@heart: stopped early at epoch 43 of 200 (train/loss=0.3 val/loss=0.4123)"
    assert finished_text("train@mnist", 20, 20, {}) == "train@mnist: trained all 20 epochs"


def test_the_progress_artifact_follows_the_engines_epoch_log_and_ends_at_100(monkeypatch):
    """PrefectProgress is a subscriber of the epoch log: it counts the epochs from the rows it is handed and
    keeps the newest update; leaving it normally says how training ended. (Sending: tests/test_prefect_ui.py.)"""
    monkeypatch.setenv("DVC_STAGE", "train@heart")
    progress = PrefectProgress("train", 200)
    monkeypatch.setattr(progress, "_start", lambda: None)  # the sender: Prefect's client, not under test here
    with progress:
        progress.log_epochs([{"train/loss": 0.9, "val/loss": 1.0}])
        progress.log_epochs([{"train/loss": 0.5, "val/loss": 0.6}, {"train/loss": 0.4, "val/loss": 0.41234}])
        assert progress.latest == (1.5, "train@heart: epoch 3/200 train/loss=0.4 val/loss=0.4123")
    assert progress.latest == (100.0, "train@heart: stopped early at epoch 3 of 200 (train/loss=0.4 val/loss=0.4123)")
    failed = PrefectProgress("train", 5)
    monkeypatch.setattr(failed, "_start", lambda: None)
    with pytest.raises(KeyboardInterrupt), failed:
        failed.log_epochs([{"val/loss": 1.0}])
        raise KeyboardInterrupt
    assert failed.latest == (20.0, "train@heart: epoch 1/5 val/loss=1")  # no 100 %: the flow says it failed


def test_without_a_progress_artifact_there_is_no_subscriber(monkeypatch):
    monkeypatch.delenv(PROGRESS_ARTIFACT_ENV, raising=False)
    assert training_progress("train", 10) is None
    monkeypatch.setenv(PROGRESS_ARTIFACT_ENV, "0b7ad5a8-7f47-4b8e-9d55-b0a3f8c3f0a1")
    assert isinstance(training_progress("train", 10), PrefectProgress)
