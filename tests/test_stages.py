"""Stage cores on tiny in-memory data, and each stage's main() on bad input.

A bad input must give one clear line, a non-zero exit, and leave earlier outputs byte-identical.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stages import evaluate, fetch, generate, preprocess
from stages.core.errors import StageError, run_stage
from stages.core.io import parquet_bytes, write_outputs
from stages.core.params import apply_overrides, parse_params
from stages.datasets import features_and_target, mnist_images
from tests.conftest import REPO_ROOT


@pytest.fixture
def params():
    return parse_params(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))


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

def test_generate_draws_n_points_on_the_domain_and_a_grid_outside(params):
    frames = generate.generate(params.synthetic, params.seed)
    domain, grid = frames["domain"], frames["grid"]
    assert len(domain) == 1000 and domain.x.between(-5, 5).all()
    np.testing.assert_allclose(domain.y_true, np.abs(domain.x) * (1 + np.sin(domain.x) ** 2) + 1)
    assert 0.8 < (domain.y - domain.y_true).std() < 1.2  # noise_sigma = 1
    outside = grid[grid.region == "extrapolation"].x
    assert outside.abs().between(5, 8).all() and (outside < 0).any() and (outside > 0).any()
    assert generate.generate(params.synthetic, params.seed)["domain"].equals(domain)
    assert not generate.generate(params.synthetic, params.seed + 1)["domain"].equals(domain)


# --- fetch ---

@pytest.fixture
def heart_bytes(mirror) -> bytes:
    return (mirror / "heart" / "heart.csv").read_bytes()


def test_heart_from_the_mirror_is_written_byte_identical(tmp_path, mirror, heart_bytes):
    fetch.fetch_heart(tmp_path, mirror)
    assert (tmp_path / "heart.csv").read_bytes() == heart_bytes


def test_heart_through_the_network_boundary_writes_the_same_bytes(tmp_path, monkeypatch, mirror, heart_bytes):
    # kagglehub is the network boundary: a local folder stands in for Kaggle's download.
    kaggle_folder = tmp_path / "kaggle"
    kaggle_folder.mkdir()
    shutil.copy(mirror / "heart" / "heart.csv", kaggle_folder / "heart.csv")
    import kagglehub
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, force_download=False: str(kaggle_folder))
    fetch.fetch_heart(tmp_path / "out", mirror=None)
    assert (tmp_path / "out" / "heart.csv").read_bytes() == heart_bytes


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
        patch.setenv(fetch.MIRROR_ENV, str(mirror))
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
        patch.setenv(fetch.MIRROR_ENV, str(mnist_mirror))
        assert run_main("fetch", fetch.main, ["mnist", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "fetch: error:", *fragments)
    assert snapshot(out) == {"x_train.npy": b"old", "y_test.npy": b"old too"}


def test_mnist_arrays_are_checked_whatever_their_source():
    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.zeros(10000, np.uint8)}
    with pytest.raises(StageError, match="differs from published MNIST"):
        fetch.check_mnist_arrays(arrays, "keras")
    with pytest.raises(StageError, match=r"expected uint8 \(10000,\)"):
        fetch.check_mnist_arrays({**arrays, "y_test": np.zeros(10, np.uint8)}, "keras")
    with pytest.raises(StageError, match="labels are 0..9"):
        fetch.check_mnist_arrays({**arrays, "y_train": np.full(60000, 11, np.uint8)}, "keras")


def test_no_network_and_no_mirror_says_so_and_exits_with_the_retryable_code(tmp_path, capsys, monkeypatch):
    import kagglehub

    def offline(handle, force_download=False):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")
    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_main("fetch", fetch.main, ["heart", "--out", str(tmp_path / "raw")]) == fetch.NETWORK_EXIT_CODE
    assert_one_line_error(capsys, "could not download", "DNNLAB_DATA_MIRROR")
    assert not (tmp_path / "raw").exists()


# --- preprocess ---

def test_heart_is_deduplicated_split_stratified_scaled_on_train_and_one_hot(params, heart_bytes):
    raw = fetch.check_heart_csv(heart_bytes, "heart.csv")
    tables = preprocess.preprocess_heart(raw, params.heart, params.seed)
    train, test = tables["train"].to_pandas(), tables["test"].to_pandas()
    assert len(train) + len(test) == 302  # distinct patients of the 1025 rows
    assert abs(len(test) - 0.2 * 302) <= 1
    assert abs(train.target.mean() - test.target.mean()) < 0.03  # stratified
    np.testing.assert_allclose(train[list(preprocess.HEART_SCALED)].mean(), 0, atol=1e-5)
    assert not np.allclose(test[list(preprocess.HEART_SCALED)].mean(), 0, atol=1e-3)
    cp = train[[f"cp_{code}" for code in range(4)]].to_numpy()
    assert (cp.sum(axis=1) == 1).all()
    assert tables["train"].schema == preprocess.heart_schema()

    with_duplicates = preprocess.preprocess_heart(raw, dataclasses.replace(params.heart, deduplicate=False),
                                                  params.seed)
    assert with_duplicates["train"].num_rows + with_duplicates["test"].num_rows == 1025


def test_mnist_images_round_trip_through_parquet_without_784_columns(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), "y_train": np.arange(7, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_test": np.arange(3, dtype=np.uint8)}
    tables = preprocess.preprocess_mnist(arrays)
    write_outputs({tmp_path / "train.parquet": parquet_bytes(tables["train"])})
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.column_names == ["image", "label"]
    np.testing.assert_array_equal(mnist_images(table), arrays["x_train"])
    np.testing.assert_array_equal(mnist_images(table.slice(2, 3)), arrays["x_train"][2:5])
    x, y = features_and_target("mnist", table)
    assert x.shape == (7, 784) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(y, np.arange(7))


def test_synthetic_split_keeps_every_draw_once(params):
    frames = generate.generate(params.synthetic, params.seed)
    tables = preprocess.preprocess_synthetic(frames["domain"], frames["grid"], params.synthetic, params.seed)
    together = pd.concat([tables["train"].to_pandas(), tables["test"].to_pandas()]).sort_values("x")
    pd.testing.assert_frame_equal(together.reset_index(drop=True),
                                  frames["domain"].sort_values("x").reset_index(drop=True))
    assert tables["test"].num_rows == 200


def test_preprocess_refuses_bad_params_before_reading_data(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["heart"]["test_size"] = 1.5
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "processed"
    write_outputs({out / "train.parquet": b"old"})
    code = run_main("preprocess", preprocess.main, ["heart", "--params", str(params_file),
                                                    "--raw", str(tmp_path / "does-not-exist"), "--out", str(out)])
    assert code == 2
    assert_one_line_error(capsys, "heart.test_size", "allowed")
    assert snapshot(out) == {"train.parquet": b"old"}


# --- evaluate ---

def test_synthetic_metrics_against_a_perfect_and_a_constant_predictor(params):
    frames = generate.generate(params.synthetic, params.seed)
    tables = preprocess.preprocess_synthetic(frames["domain"], frames["grid"], params.synthetic, params.seed)
    truth = lambda x: generate.true_function(x)  # noqa: E731 - a predictor that knows f
    metrics, plots = evaluate.evaluate_synthetic(truth, tables["test"], tables["grid"])
    assert metrics["domain/mse_vs_truth"] == pytest.approx(0, abs=1e-9)
    assert metrics["ood/mse_vs_truth"] == pytest.approx(0, abs=1e-9)
    assert 0.02 < metrics["test/relative_mse"] < 0.06  # noise only: sigma^2 / mean(y)^2
    constant, _ = evaluate.evaluate_synthetic(lambda x: np.full(len(x), 5.0), tables["test"], tables["grid"])
    assert constant["ood/mse_vs_truth"] > constant["domain/mse_vs_truth"] > 1
    assert set(plots["predictions.csv"].region) == {"domain", "extrapolation"}


def test_classifier_metrics_of_known_predictions():
    test = pa.table({"a": pa.array([0.0, 1.0, 2.0, 3.0], pa.float32()), "target": pa.array([0, 1, 1, 0], pa.int8())})
    probabilities = {0.0: 0.1, 1.0: 0.9, 2.0: 0.4, 3.0: 0.2}
    metrics, plots = evaluate.evaluate_heart(lambda x: np.array([probabilities[v] for v in x[:, 0]]), test)
    assert metrics["test/accuracy"] == 0.75 and metrics["test/precision"] == 1.0 and metrics["test/recall"] == 0.5
    assert metrics["test/roc_auc"] == 1.0
    assert plots["confusion.csv"].predicted.tolist() == [0, 1, 0, 0]


def test_mnist_metrics_per_digit():
    tables = preprocess.preprocess_mnist({
        "x_train": np.zeros((1, 28, 28), np.uint8), "y_train": np.zeros(1, np.uint8),
        "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.array([0, 1, 1, 2], np.uint8)})
    scores = np.eye(10)[[0, 1, 2, 2]]
    metrics, plots = evaluate.evaluate_mnist(lambda x: scores, tables["test"])
    assert metrics["test/accuracy"] == 0.75
    assert metrics["test/accuracy_digit_1"] == 0.5 and metrics["test/accuracy_digit_2"] == 1.0
    assert "test/accuracy_digit_5" not in metrics  # no 5 in this test set: nothing to average
    assert plots["confusion.csv"]["index"].tolist() == [0, 1, 2, 3]


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

def test_train_main_writes_model_and_curve_and_refuses_bad_params_first(tmp_path, capsys, params):
    from stages import train
    frames = generate.generate(params.synthetic, params.seed)
    tables = preprocess.preprocess_synthetic(frames["domain"], frames["grid"], params.synthetic, params.seed)
    data = tmp_path / "processed"
    write_outputs({data / f"{name}.parquet": parquet_bytes(table) for name, table in tables.items()})
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(apply_overrides(raw, {"synthetic.train.epochs": 3,
                                                                "synthetic.train.engine": "fit"})))
    outputs = ["--model", str(tmp_path / "m.keras"), "--curve", str(tmp_path / "curve.csv")]
    assert run_main("train", train.main, ["synthetic", "--params", str(params_file), "--data", str(data), *outputs]) == 0
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.columns.tolist() == ["epoch", "train/loss", "val/loss"] and curve.epoch.tolist() == [1, 2, 3]
    before = snapshot(tmp_path)

    raw_bad = apply_overrides(raw, {"synthetic.train.epochs": 3})
    raw_bad["synthetic"]["model"] = {"width": -1}
    params_file.write_text(yaml.safe_dump(raw_bad))
    capsys.readouterr()
    assert run_main("train", train.main, ["synthetic", "--params", str(params_file), "--data", str(data), *outputs]) == 2
    assert_one_line_error(capsys, "synthetic.model.width", "allowed")
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "params.yaml"} == {k: v for k, v in before.items() if k != "params.yaml"}


def test_validation_rows_are_the_last_share_as_keras_takes_them():
    from stages.training.core import split_validation
    x, y = np.arange(10).reshape(-1, 1), np.arange(10)
    (x_train, y_train), (x_val, y_val) = split_validation(x, y, 0.2)
    assert y_train.tolist() == list(range(8)) and y_val.tolist() == [8, 9]
    with pytest.raises(ValueError, match="no rows"):
        split_validation(x[:2], y[:2], 0.1)
