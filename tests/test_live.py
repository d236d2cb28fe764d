"""dvclive in training (one step per epoch, one write per compiled call), what `dvc exp show` shows
of a running experiment, and the progress display (a bar on a terminal, throttled lines elsewhere)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages.core.io import json_bytes, parquet_bytes, write_outputs
from stages.core.params import ModelConfig, TrainConfig, training_config
from stages.tasks import apply_overrides, load_params, synthetic
from stages.training.engine import train_compiled, train_model
from stages.training.live import LiveLog
from stages.training.model import build_model
from stages.training.progress import ProgressBar, ProgressLines, progress_display
from tests.conftest import REPO_ROOT, repo_env, run
from tests.test_engine import REGRESSION, regression_data

CURVE = ["train/loss", "val/loss"]


def tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


@pytest.fixture
def live_dir(tmp_path, monkeypatch) -> Path:
    """A folder outside any git or DVC repo, as cwd: dvclive finds no repo to signal to."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "live"


# --- the dvclive log ---

def test_each_batch_of_epochs_is_one_write_of_its_steps(live_dir: Path):
    with LiveLog(live_dir, "synthetic") as log:
        log.log_epochs([{"train/loss": 4.0, "val/loss": 5.0}])
        with log.live.one_write_per_batch():  # what log_epochs does around a call's epochs
            for epoch in range(2, 5):
                log.live.log_metric("train/loss", 4.0 / epoch)
                log.live.log_metric("val/loss", 5.0 / epoch)
                log.live.next_step()
            # Nothing written inside the batch: the files still hold the first epoch alone.
            assert len(tsv(live_dir / "plots/metrics/train/loss.tsv")) == 1
            assert json.loads((live_dir / "metrics.json").read_text()) == {"synthetic/epoch": 1}
        assert tsv(live_dir / "plots/metrics/val/loss.tsv").to_dict("list") == {
            "step": [0, 1, 2, 3], "loss": [5.0, 2.5, 5 / 3, 1.25]}
        # The epoch is log_epochs' own count (this block logged none); the losses are in the .tsv files only.
        assert json.loads((live_dir / "metrics.json").read_text()) == {"synthetic/epoch": 1}
        log.log_epochs([{"train/loss": 0.5, "val/loss": 0.75}, {"train/loss": 0.25, "val/loss": 0.5}])
    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary == {"synthetic/epoch": 6}  # one `dvc exp show` column, named after the task
    assert tsv(live_dir / "plots/metrics/train/loss.tsv")["step"].tolist() == list(range(6))
    assert not (live_dir.parent / ".dvc").exists()  # no repo made where there was none


class RecordingLog:
    def __init__(self):
        self.calls: list[list[dict[str, float]]] = []

    def log_epochs(self, rows):
        self.calls.append([dict(row) for row in rows])


def _train(engine: str, log, epochs: int = 9, **options) -> pd.DataFrame:
    data = regression_data()
    model = build_model(ModelConfig(width=16, depth=2, activation="relu", l2=0.0, dropout=0.0), 1, REGRESSION, 1)
    config = TrainConfig(engine=engine, epochs=epochs, batch_size=16, learning_rate=0.01, validation_split=0.2,
                         early_stopping_patience=0)
    if options:
        return train_compiled(model, REGRESSION, config, *data, 1, log=log, **options)
    return train_model(model, REGRESSION, config, *data, 1, log=log)


def test_compiled_engine_logs_every_epoch_once_per_call_and_the_same_curve():
    log = RecordingLog()
    curve = _train("compiled", log, max_epochs_per_call=3)
    assert [len(call) for call in log.calls] == [1, 1, 3, 3, 1]  # calls grow from one epoch, capped at 3
    logged = pd.DataFrame([row for call in log.calls for row in call])
    pd.testing.assert_frame_equal(logged, curve[CURVE])
    pd.testing.assert_frame_equal(_train("compiled", None, max_epochs_per_call=3), curve)


def test_fit_engine_logs_each_epoch_from_its_callback():
    log = RecordingLog()
    curve = _train("fit", log, epochs=4)
    assert [len(call) for call in log.calls] == [1, 1, 1, 1]
    pd.testing.assert_frame_equal(pd.DataFrame([call[0] for call in log.calls])[CURVE], curve[CURVE])


# --- progress display ---

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_are_throttled_and_the_last_epoch_always_shown():
    out = io.StringIO()
    progress = progress_display(500, out)
    assert isinstance(progress, ProgressLines)
    for epoch in range(1, 501):
        progress.update(epoch, {"loss": 1.0 / epoch})
    progress.close()
    assert out.getvalue() == "  epoch 500/500 loss=0.002\n"


def test_a_terminal_gets_a_bar_with_eta():
    out = Terminal()
    progress = progress_display(500, out)
    assert isinstance(progress, ProgressBar)
    for epoch in (1, 100, 500):
        progress.update(epoch, {"loss": 0.25})
    progress.close()
    text = out.getvalue()
    assert "\r" in text and "500/500" in text and "epoch/s" in text and "loss=0.25" in text
    assert "<" in text  # tqdm's "elapsed<remaining"


def test_an_interrupted_training_puts_the_last_good_metrics_back(live_dir: Path):
    """metrics.json is rewritten as training goes; Ctrl-C (or a failure) mid-training must not leave the
    partial one, which DVC would show as a changed output of a stage it never recorded."""
    with LiveLog(live_dir, "synthetic") as log:
        log.log_epochs([{"train/loss": 1.0, "val/loss": 2.0}])
    good = (live_dir / "metrics.json").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with LiveLog(live_dir, "synthetic") as log:
            log.log_epochs([{"train/loss": 9.0, "val/loss": 9.0}] * 3)
            assert (live_dir / "metrics.json").read_bytes() != good  # live, while it trains
            raise KeyboardInterrupt
    assert (live_dir / "metrics.json").read_bytes() == good


# --- the train stage: a terminal, a pipe, and its dvclive folder ---

@pytest.fixture
def processed(tmp_path: Path) -> tuple[Path, Path]:
    """Synthetic processed data and a params file with 60 epochs: (data folder, params file)."""
    params = load_params(REPO_ROOT / "params.yaml")
    config = params.task("synthetic").data
    tables = synthetic.preprocess(synthetic.generate_frames(config, params.seed), config, params.seed)
    data = tmp_path / "processed"
    write_outputs({data / f"{name}.parquet": parquet_bytes(table) for name, table in tables.items()})
    config_file = tmp_path / "config.json"  # as configure@synthetic writes it
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    config = training_config(apply_overrides(raw, {"synthetic.train.epochs": 60}), "synthetic")
    config_file.write_bytes(json_bytes(config.model_dump(mode="json")))
    return data, config_file


def train_command(tmp_path: Path, data: Path, config_file: Path) -> list[str]:
    return [sys.executable, "-m", "stages.train", "synthetic", "--config", str(config_file), "--data", str(data),
            "--model", str(tmp_path / "m.keras"), "--curve", str(tmp_path / "curve.csv"),
            "--seed-curves", str(tmp_path / "seed_curves.csv"), "--live", str(tmp_path / "live")]


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_train_stage_through_a_pipe_prints_lines_and_writes_dvclive(tmp_path, processed):
    result = subprocess.run(train_command(tmp_path, *processed), cwd=tmp_path, env=stage_env(),
                            capture_output=True, text=True, check=True)
    assert "  epoch 60/60 loss=" in result.stderr and "\r" not in result.stderr
    seeds = pd.read_csv(tmp_path / "seed_curves.csv")
    curve = seeds[seeds["seed"] == seeds["seed"].min()]  # dvclive follows the first seed
    history = tsv(tmp_path / "live/plots/metrics/val/loss.tsv")
    assert history["step"].tolist() == list(range(60))
    np.testing.assert_allclose(history["loss"], curve["val/loss"], rtol=1e-5)  # the CSV has 6 digits
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary == {"synthetic/epoch": 60}


def test_train_stage_on_a_terminal_shows_a_bar(tmp_path, processed):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(train_command(tmp_path, *processed), cwd=tmp_path, env=stage_env(),
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:  # read until the child closes the terminal
        ready, _, _ = select.select([controller], [], [], 120)
        try:
            chunk = os.read(controller, 4096) if ready else b""
        except OSError:  # EIO: no writer left
            chunk = b""
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "60/60" in text and "epoch/s" in text and "\r" in text
    assert "  epoch 60/60" not in text  # the bar, not the lines


# --- what DVC shows of a running experiment ---

def running_experiments(repo: Path, env: dict[str, str]) -> list[dict]:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    return [exp for commit in shown for exp in (commit.get("experiments") or [])
            if ((exp.get("executor") or exp["revs"][0].get("executor") or {}).get("state")) == "running"]


def live_metrics(experiment: dict) -> dict | None:
    metrics = (experiment["revs"][0].get("data") or {}).get("metrics") or {}
    return (metrics.get("reports/live/synthetic/metrics.json") or {}).get("data")


def test_exp_show_shows_the_live_epoch_of_a_queued_experiment_while_it_trains(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    # fit runs ~10-20 epochs/s here: 200 epochs give `dvc exp show` (~1.5 s a call) time to see several.
    run(["dvc", "exp", "run", "--queue", "-n", "live", "-S", "synthetic.train.engine=fit",
         "-S", "synthetic.train.epochs=200", "evaluate@synthetic"], workspace, env)
    # The worker it starts keeps the output streams it inherits: none to wait on.
    subprocess.run(["dvc", "queue", "start"], cwd=workspace, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_steps: list[int] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            running = running_experiments(workspace, env)
            if not running and seen_steps:
                break
            data = live_metrics(running[0]) if running else None  # none for a moment: dvclive starts over
            # past the baseline's 20 epochs, copied into the run's folder
            if data and data.get("synthetic/epoch", 0) > 20:
                seen_steps.append(data["synthetic/epoch"])
            if len(set(seen_steps)) >= 2:
                break
            time.sleep(0.5)
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=workspace, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert len(set(seen_steps)) >= 2, f"live steps seen while the experiment ran: {seen_steps}"
    assert seen_steps == sorted(seen_steps) and all(20 < epoch < 200 for epoch in seen_steps)


# --- the train stage's subscribers of the epoch log ---

def test_the_train_stage_subscribes_dvclive_and_the_prefect_progress_to_one_epoch_log(tmp_path: Path, monkeypatch):
    from stages import train
    from stages.core.contract import PROGRESS_ARTIFACT_ENV

    monkeypatch.delenv(PROGRESS_ARTIFACT_ENV, raising=False)
    with train.epoch_log("heart", None, 10) as log:
        assert log is None  # nothing subscribed: the engine logs nothing
    monkeypatch.setenv(PROGRESS_ARTIFACT_ENV, "0b7ad5a8-7f47-4b8e-9d55-b0a3f8c3f0a1")
    with pytest.raises(KeyboardInterrupt), train.epoch_log("heart", tmp_path / "live", 10) as log:
        assert [type(subscriber).__name__ for subscriber in log.logs] == ["LiveLog", "PrefectProgress"]
        live, progress = log.logs
        monkeypatch.setattr(progress, "_start", lambda: None)  # no server here: see tests/test_prefect_ui.py
        log.log_epochs([{"train/loss": 0.5, "val/loss": 0.6}, {"train/loss": 0.4, "val/loss": 0.5}])
        assert live.live.step == 2 and progress.epoch == 2  # each subscriber got every row
        raise KeyboardInterrupt  # leave on an error: no 100 % sent, dvclive's metrics.json put back
    assert not (tmp_path / "live" / "metrics.json").exists()
