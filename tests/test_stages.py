"""Each stage's main(): what it writes, and bad input.

A bad input must give one clear line, a non-zero exit, and leave earlier outputs byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from stages import fetch, generate, preprocess
from stages.core.contract import MIRROR_ENV, NETWORK_EXIT_CODE
from stages.core.errors import run_stage
from stages.core.io import parquet_bytes, write_outputs
from stages.tasks import apply_overrides, load_params, synthetic
from tests.conftest import REPO_ROOT


@pytest.fixture
def params():
    return load_params(REPO_ROOT / "params.yaml")


def run_main(name: str, main, argv: list[str]) -> int:
    """A stage's main() as `python -m` runs it: the exit status (0 on success)."""
    try:
        run_stage(name, lambda: main(argv))
    except SystemExit as exit_:
        return int(exit_.code)
    return 0


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(capsys, *fragments: str) -> None:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- generate ---


# --- fetch ---


@pytest.fixture
def heart_bytes(mirror) -> bytes:
    return (mirror / "heart" / "heart.csv").read_bytes()


def _heart_with(heart_bytes: bytes, edit) -> bytes:
    lines = heart_bytes.decode().split("\r\n")
    return "\r\n".join(edit(lines)).encode()


@pytest.mark.parametrize(("edit", "fragments"), [
    (lambda lines: [",".join(line.split(",")[:-2] + line.split(",")[-1:]) for line in lines if line],
     ["header", "missing"]),
    (lambda lines: [lines[0], lines[1].replace("52,", "fifty-two,", 1), *lines[2:]],
     ["'age'", "data row 1", "not a number"]),
    (lambda lines: [lines[0], lines[1].replace("52,", "520,", 1), *lines[2:]],
     ["'age'", "outside"]),
])


def test_bad_heart_csv_fails_in_one_line_and_keeps_the_old_output(tmp_path, capsys, heart_bytes, edit, fragments):
    mirror = tmp_path / "mirror"
    (mirror / "heart").mkdir(parents=True)
    (mirror / "heart" / "heart.csv").write_bytes(_heart_with(heart_bytes, edit))
    out = tmp_path / "raw" / "heart"
    write_outputs({out / "heart.csv": b"previous output"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIRROR_ENV, str(mirror))
        assert run_main("fetch", fetch.main, ["heart", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "fetch: error:", *fragments)
    assert snapshot(out) == {"heart.csv": b"previous output"}


@pytest.fixture
def mnist_mirror(tmp_path, mirror) -> Path:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "mnist", copy / "mnist")
    for path in (copy / "mnist").iterdir():
        path.chmod(0o644)
    return copy


@pytest.mark.parametrize(("damage", "fragments"), [
    (lambda data: data[: len(data) // 2], ["t10k-labels", "sha256", "corrupt or truncated"]),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), ["t10k-labels", "sha256", "published"]),
])


def test_damaged_mnist_file_fails_in_one_line_and_keeps_the_old_output(tmp_path, capsys, mnist_mirror, damage,
                                                                       fragments):
    labels = mnist_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(damage(labels.read_bytes()))
    out = tmp_path / "raw" / "mnist"
    write_outputs({out / "x_train.npy": b"old", out / "y_test.npy": b"old too"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIRROR_ENV, str(mnist_mirror))
        assert run_main("fetch", fetch.main, ["mnist", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "fetch: error:", *fragments)
    assert snapshot(out) == {"x_train.npy": b"old", "y_test.npy": b"old too"}


def test_no_network_and_no_mirror_says_so_and_exits_with_the_retryable_code(tmp_path, capsys, monkeypatch):
    import kagglehub

    def offline(handle, force_download=False, output_dir=None):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")
    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_main("fetch", fetch.main, ["heart", "--out", str(tmp_path / "raw")]) == NETWORK_EXIT_CODE
    assert_one_line_error(capsys, "could not download", "DNNLAB_DATA_MIRROR")
    assert not (tmp_path / "raw").exists()



def _http_error(status: int):
    import requests

    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} answer", response=response)


@pytest.mark.parametrize(("raised", "exit_code", "fragment"), [
    (lambda: _http_error(503), NETWORK_EXIT_CODE, "offline?"),
    (lambda: _http_error(429), NETWORK_EXIT_CODE, "offline?"),
    (lambda: TimeoutError("read timed out"), NETWORK_EXIT_CODE, "offline?"),
    (lambda: _http_error(404), 2, "HTTP 404"),
    (lambda: PermissionError(13, "Permission denied", ".cache/kagglehub/datasets"), 2, "cannot write"),
    (lambda: OSError(28, "No space left on device"), 2, "free space"),
], ids=["503", "429", "timeout", "404", "unwritable-cache", "disk-full"])
def test_only_network_failures_of_a_download_are_retryable(tmp_path, capsys, monkeypatch, raised, exit_code,
                                                           fragment):
    import kagglehub

    def failing(handle, force_download=False, output_dir=None):
        raise raised()
    monkeypatch.setattr(kagglehub, "dataset_download", failing)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_main("fetch", fetch.main, ["heart", "--out", str(tmp_path / "raw")]) == exit_code
    assert_one_line_error(capsys, "fetch: error: could not download", fragment)
    assert not (tmp_path / "raw").exists()


def test_a_bug_in_the_download_path_keeps_its_traceback(tmp_path, monkeypatch):
    import kagglehub

    def buggy(handle, force_download=False, output_dir=None):
        raise TypeError("unexpected keyword")
    monkeypatch.setattr(kagglehub, "dataset_download", buggy)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="unexpected keyword"):
        run_main("fetch", fetch.main, ["heart", "--out", str(tmp_path / "raw")])


def test_an_unusable_mnist_cache_is_one_line_and_not_retryable(tmp_path, capsys, monkeypatch):
    (tmp_path / ".cache").write_text("a file where the cache folder should be")  # unwritable, even for root
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_main("fetch", fetch.main, ["mnist", "--out", str(tmp_path / "raw")]) == 2
    assert_one_line_error(capsys, "could not download MNIST", "cannot write", ".cache")


# --- preprocess ---


def test_preprocess_refuses_bad_params_before_reading_data(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["heart"]["data"]["test_size"] = 1.5
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "processed"
    write_outputs({out / "train.parquet": b"old"})
    code = run_main("preprocess", preprocess.main, ["heart", "--params", str(params_file),
                                                    "--raw", str(tmp_path / "does-not-exist"), "--out", str(out)])
    assert code == 2
    assert_one_line_error(capsys, "heart.data.test_size", "allowed")
    assert snapshot(out) == {"train.parquet": b"old"}


# --- evaluate ---


def test_write_outputs_replaces_all_or_nothing(tmp_path, monkeypatch):
    write_outputs({tmp_path / "a": b"old a", tmp_path / "b": b"old b"})
    real_replace = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            raise OSError("disk full")
        real_replace(src, dst)
    monkeypatch.setattr("stages.core.io.os.replace", fail_second)
    with pytest.raises(OSError):
        write_outputs({tmp_path / "a": b"new a", tmp_path / "b": b"new b"})
    assert snapshot(tmp_path) == {"a": b"old a", "b": b"old b"}


# --- train ---


def synthetic_train_inputs(folder: Path, params, overrides: dict) -> tuple[Path, Path, Path, dict]:
    """The synthetic processed splits, a params file with `overrides` and the config configure resolves from it
    (train reads that, as dvc.yaml chains them), in `folder`: data, params file, config, raw params."""
    from stages import configure
    frames = synthetic.generate_frames(params.task("synthetic").data, params.seed)
    tables = synthetic.preprocess(frames, params.task("synthetic").data, params.seed)
    data = folder / "processed"
    write_outputs({data / f"{name}.parquet": parquet_bytes(table) for name, table in tables.items()})
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params_file, config = folder / "params.yaml", folder / "config" / "synthetic.json"
    params_file.write_text(yaml.safe_dump(apply_overrides(raw, overrides)))
    assert run_main("configure", configure.main, ["synthetic", "--params", str(params_file), "--out", str(config)]) == 0
    return data, params_file, config, raw


def test_train_main_writes_model_and_curve_and_refuses_bad_params_first(tmp_path, capsys, params):
    from stages import configure, train
    data, params_file, config, raw = synthetic_train_inputs(tmp_path, params, {"synthetic.train.epochs": 3,
                                                                               "synthetic.train.engine": "fit"})
    outputs = ["--model", str(tmp_path / "m.keras"), "--curve", str(tmp_path / "curve.csv")]
    assert run_main("train", train.main, ["synthetic", "--config", str(config), "--data", str(data), *outputs]) == 0
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.columns.tolist() == ["epoch", "train/loss", "val/loss"] and curve.epoch.tolist() == [1, 2, 3]
    before = snapshot(tmp_path)

    raw_bad = apply_overrides(raw, {"synthetic.train.epochs": 3})
    raw_bad["synthetic"]["model"] = {"width": -1}
    params_file.write_text(yaml.safe_dump(raw_bad))
    capsys.readouterr()
    assert run_main("configure", configure.main, ["synthetic", "--params", str(params_file), "--out", str(config)]) == 2
    assert_one_line_error(capsys, "synthetic.model.width", "allowed")
    # A config file that is not one (edited by hand, truncated): one line, nothing written.
    config.write_text('{"seed": 42}')
    assert run_main("train", train.main, ["synthetic", "--config", str(config), "--data", str(data), *outputs]) == 2
    assert_one_line_error(capsys, str(config), "dvc repro configure@synthetic")
    after = snapshot(tmp_path)
    unchanged = ("params.yaml", "config/synthetic.json")
    assert ({k: v for k, v in after.items() if k not in unchanged}
            == {k: v for k, v in before.items() if k not in unchanged})


def test_validation_rows_are_the_last_share_as_keras_takes_them():
    from stages.training.core import split_validation
    x, y = np.arange(10).reshape(-1, 1), np.arange(10)
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, 0.2)
    assert y_train.tolist() == list(range(8)) and y_val.tolist() == [8, 9]
    with pytest.raises(ValueError, match="no rows"):
        split_validation(x[:2], y[:2], 0.1)


# --- configurations that cannot fit in memory: refused before any work ---

def _params_file(tmp_path: Path, overrides: dict) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(raw, overrides)))
    return path


def test_generating_more_points_than_memory_holds_is_refused_naming_the_key(tmp_path, capsys):
    params_file = _params_file(tmp_path, {"synthetic.data.n": 50_000_000_000})
    out = tmp_path / "raw"
    write_outputs({out / "domain.parquet": b"old", out / "grid.parquet": b"old too"})
    assert run_main("generate", generate.main, ["synthetic", "--params", str(params_file), "--out", str(out)]) == 2
    assert_one_line_error(capsys, "generate: error:", "synthetic.data.n = 50000000000", "GiB of memory")
    assert snapshot(out) == {"domain.parquet": b"old", "grid.parquet": b"old too"}


@pytest.mark.parametrize(("task", "overrides", "named"), [
    ("mnist", {"mnist.model.width": 2_000_000_000}, "mnist.model.width = 2000000000"),
    ("heart", {"heart.model.depth": 100_000_000}, "heart.model.depth = 100000000"),
    ("synthetic", {"synthetic.train.batch_size": 10 ** 13}, "synthetic.train.batch_size = 10000000000000"),
])
def test_a_network_or_batch_too_large_for_memory_is_refused_before_training(tmp_path, capsys, mirror, task, overrides,
                                                                           named):
    from stages import train
    from stages.tasks import build_splits

    tables = build_splits(task, load_params(REPO_ROOT / "params.yaml"), mirror)
    data = tmp_path / "processed"
    write_outputs({data / f"{name}.parquet": parquet_bytes(table) for name, table in tables.items()
                   if isinstance(table, pa.Table)})
    outputs = tmp_path / "models"
    write_outputs({outputs / "m.keras": b"old model", outputs / "curve.csv": b"old curve"})
    from stages import configure  # train reads the config configure resolves from params.yaml
    config = tmp_path / "config.json"
    assert run_main("configure", configure.main, [task, "--params", str(_params_file(tmp_path, overrides)),
                                                  "--out", str(config)]) == 0
    argv = [task, "--config", str(config), "--data", str(data),
            "--model", str(outputs / "m.keras"), "--curve", str(outputs / "curve.csv")]
    assert run_main("train", train.main, argv) == 2
    assert_one_line_error(capsys, "train: error:", named, "GiB of memory")
    assert snapshot(outputs) == {"m.keras": b"old model", "curve.csv": b"old curve"}



@pytest.mark.parametrize(("width", "batch_size", "named"), [(4096, 32, "heart.model.width = 4096"),
                                                            (8, 10_000_000, "heart.train.batch_size = 10000000")])
def test_seeds_side_by_side_need_that_many_times_the_memory(monkeypatch, width, batch_size, named):
    """The guard counts the replicas: what fits once is refused five times over, naming the same key."""
    from stages.core import params as params_module

    model = params_module.ModelConfig(width=width, depth=2, activation="relu", l2=0.0, dropout=0.0)
    weights = params_module.network_weights(model, 13, 1) * params_module.BYTES_PER_WEIGHT
    activations = batch_size * width * 2 * params_module.BYTES_PER_ACTIVATION
    monkeypatch.setattr(params_module, "available_memory", lambda: 2 * (weights + activations))
    params_module.require_network_fits("heart", model, batch_size, 13, 1, replicas=2)  # just fits
    refused = f"^params.yaml: {named} needs about .* GiB of memory for .*, 5 seeds side by side; this machine has "
    with pytest.raises(params_module.ParamsError, match=refused + ".* available: use a smaller value$"):
        params_module.require_network_fits("heart", model, batch_size, 13, 1, replicas=5)

@pytest.mark.parametrize("error", [MemoryError(), type("ResourceExhaustedError", (Exception,), {})("OOM allocating")],
                         ids=["MemoryError", "tensorflow-ResourceExhausted"])
def test_running_out_of_memory_anyway_is_one_line_and_a_non_zero_exit(capsys, error):
    def main():
        raise error
    assert run_main("train", lambda argv: main(), []) == 2
    assert_one_line_error(capsys, "train: error: out of memory", "params.yaml")


def test_an_unexpected_error_keeps_its_traceback():
    def main():
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        run_main("train", lambda argv: main(), [])


def test_mnist_through_the_keras_download_writes_the_same_bytes_as_from_the_mirror(tmp_path, monkeypatch, mirror):
    """keras.utils.get_file is the network boundary: a stand-in serves mnist.npz, made from the mirror's arrays.
    The cache folder is passed to it (no KERAS_HOME set), and the file asked for is the one Keras' own
    keras.datasets.mnist.load_data asks for (same origin, same sha256)."""
    import keras
    import numpy as np
    from keras.src.datasets import mnist as keras_mnist

    from stages.tasks import mnist

    arrays = mnist.read_mirror(mirror)
    asked = []

    def get_file(fname, origin, file_hash, cache_dir=None, force_download=False):
        asked.append({"fname": fname, "origin": origin, "file_hash": file_hash, "cache_dir": cache_dir})
        path = Path(cache_dir or tmp_path / "keras-default") / "datasets" / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return str(path)
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    monkeypatch.setattr(keras_mnist, "get_file", get_file)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert mnist.fetch(None, force=True) == mnist.fetch(mirror, force=False)
    assert "KERAS_HOME" not in os.environ
    keras_mnist.load_data()  # what Keras itself asks for
    ours, keras_own = asked
    assert ours == {**keras_own, "cache_dir": str(tmp_path / ".cache" / "keras")}


# --- a full disk, and the other OS errors of writing ---


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB file system (tmpfs) at tmp_path/disk, if this test may mount one (root); else skipped, saying why."""
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` to the last byte."""
    handle = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(handle, b"\0" * size)
    finally:
        os.close(handle)


def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_old_outputs(tmp_path, capsys, small_disk, params):
    """generate writes through write_outputs, train through Keras' own save (staged_path): both end in one
    line naming the path and `no space left on device`, exit 2, the earlier outputs untouched."""
    from stages import train

    out = small_disk / "raw"
    write_outputs({out / "domain.parquet": b"old", out / "truth.parquet": b"old"})
    model, curve = small_disk / "m.keras", small_disk / "curve.csv"
    write_outputs({model: b"old model", curve: b"old curve"})
    before = snapshot(small_disk)
    fill(small_disk)

    assert run_main("generate", generate.main, ["synthetic", "--params", str(REPO_ROOT / "params.yaml"),
                                                "--out", str(out)]) == 2
    assert_one_line_error(capsys, "generate: error: cannot write", str(out), "no space left on device")

    data, _, config, _ = synthetic_train_inputs(tmp_path, params, {"synthetic.train.epochs": 2})
    assert run_main("train", train.main, ["synthetic", "--config", str(config), "--data", str(data),
                                          "--model", str(model), "--curve", str(curve)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]  # not its epochs
    assert len(errors) == 1 and errors[0].startswith("train: error: cannot write"), errors
    assert str(small_disk) in errors[0] and "no space left on device" in errors[0], errors
    after = snapshot(small_disk)
    assert {k: v for k, v in after.items() if not k.startswith("filler")} == before


def test_a_read_only_file_system_is_one_line(capsys, small_disk):
    """Another OS error of writing, real too: the file system remounted read-only (permission denied reads
    the same way, but root may write anywhere)."""
    import subprocess

    out = small_disk / "raw"
    write_outputs({out / "domain.parquet": b"old"})
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert run_main("generate", generate.main, ["synthetic", "--params", str(REPO_ROOT / "params.yaml"),
                                                "--out", str(out)]) == 2
    assert_one_line_error(capsys, "generate: error: cannot write", str(out), "read-only file system")
    assert snapshot(out) == {"domain.parquet": b"old"}


def test_a_flow_ending_on_a_full_disk_is_one_line_and_its_log_has_no_traceback(small_disk):
    """The flows' own writes (a study's report, a run's temp files) end as a stage's do: the commands'
    main() print `storage_failure_line` and exit 2, and Prefect's run log keeps the line, not a traceback."""
    import io
    import logging

    from flows.processes import ExpectedFailuresWithoutTraceback, storage_failure_line

    fill(small_disk)
    with pytest.raises(OSError) as full:
        write_outputs({small_disk / "study.html": b"<html>" * 1000})
    line = storage_failure_line("study", full.value)
    assert line.startswith(f"study: error: cannot write {small_disk / 'study.html'}: no space left on device; ")
    assert "\n" not in line and storage_failure_line("study", ValueError("a bug")) is None

    stream = io.StringIO()
    log = logging.getLogger("dnnlab-test-flow-run")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    log.addFilter(ExpectedFailuresWithoutTraceback(()))
    try:
        for error in (full.value, ValueError("a bug")):
            try:
                raise error
            except Exception:
                log.exception("Flow run encountered an exception")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().count("Traceback") == 1 and "ValueError: a bug" in stream.getvalue()  # a bug keeps its
