"""Each task module's pure core on real or tiny in-memory data: raw checks, splits, features, metrics."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stages.core.errors import StageError
from stages.core.io import parquet_bytes, write_outputs
from stages.tasks import TASK_NAMES, heart, load_params, load_task, load_task_figures, mnist, synthetic
from tests.conftest import REPO_ROOT


@pytest.fixture
def params():
    return load_params(REPO_ROOT / "params.yaml")


def test_generate_draws_n_points_on_the_domain_and_a_grid_outside(params):
    frames = synthetic.generate_frames(params.task("synthetic").data, params.seed)
    domain, grid = frames["domain"], frames["grid"]
    assert len(domain) == 1000 and domain.x.between(-5, 5).all()
    np.testing.assert_allclose(domain.y_true, np.abs(domain.x) * (1 + np.sin(domain.x) ** 2) + 1)
    assert 0.8 < (domain.y - domain.y_true).std() < 1.2  # noise_sigma = 1
    outside = grid[grid.region == "extrapolation"].x
    assert outside.abs().between(5, 8).all() and (outside < 0).any() and (outside > 0).any()
    assert synthetic.generate_frames(params.task("synthetic").data, params.seed)["domain"].equals(domain)
    assert not synthetic.generate_frames(params.task("synthetic").data, params.seed + 1)["domain"].equals(domain)


@pytest.fixture
def heart_bytes(mirror) -> bytes:
    return (mirror / "heart" / "heart.csv").read_bytes()


def test_heart_from_the_mirror_is_written_byte_identical(tmp_path, mirror, heart_bytes):
    write_outputs({tmp_path / name: content for name, content in heart.fetch(mirror, force=False).items()})
    assert (tmp_path / "heart.csv").read_bytes() == heart_bytes


def test_heart_through_the_network_boundary_writes_the_same_bytes(tmp_path, monkeypatch, mirror, heart_bytes):
    # kagglehub is the network boundary: a local folder stands in for Kaggle's download.
    kaggle_folder = tmp_path / "kaggle"
    kaggle_folder.mkdir()
    shutil.copy(mirror / "heart" / "heart.csv", kaggle_folder / "heart.csv")
    import kagglehub
    asked = []

    def dataset_download(handle, force_download=False, output_dir=None):
        asked.append(output_dir)
        return str(kaggle_folder)

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)  # the download cache (.cache/) is relative to the repository root
    write_outputs({tmp_path / "out" / name: content for name, content in heart.fetch(None, force=False).items()})
    assert (tmp_path / "out" / "heart.csv").read_bytes() == heart_bytes
    # The cache folder is passed to kagglehub, not left in the process environment for whoever comes next.
    assert asked == [str(tmp_path / ".cache" / "kagglehub" / heart.KAGGLE_HANDLE)]
    assert "KAGGLEHUB_CACHE" not in os.environ


def test_mnist_arrays_are_checked_whatever_their_source():
    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.uint8),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.zeros(10000, np.uint8)}
    with pytest.raises(StageError, match="differs from published MNIST"):
        mnist.check_arrays(arrays, "keras")
    with pytest.raises(StageError, match=r"expected uint8 \(10000,\)"):
        mnist.check_arrays({**arrays, "y_test": np.zeros(10, np.uint8)}, "keras")
    with pytest.raises(StageError, match="labels are 0..9"):
        mnist.check_arrays({**arrays, "y_train": np.full(60000, 11, np.uint8)}, "keras")


def test_heart_is_deduplicated_split_stratified_scaled_on_train_and_one_hot(params, heart_bytes):
    raw = heart.read_raw({"heart.csv": heart_bytes}, "heart.csv")
    tables = heart.preprocess(raw, params.task("heart").data, params.seed)
    train, test = tables["train"].to_pandas(), tables["test"].to_pandas()
    assert len(train) + len(test) == 302  # distinct patients of the 1025 rows
    assert abs(len(test) - 0.2 * 302) <= 1
    assert abs(train.target.mean() - test.target.mean()) < 0.03  # stratified
    np.testing.assert_allclose(train[list(heart.SCALED)].mean(), 0, atol=1e-5)
    assert not np.allclose(test[list(heart.SCALED)].mean(), 0, atol=1e-3)
    cp = train[[f"cp_{code}" for code in range(4)]].to_numpy()
    assert (cp.sum(axis=1) == 1).all()
    assert tables["train"].schema == heart.schema()

    keep_duplicates = params.task("heart").data.model_copy(update={"deduplicate": False})
    with_duplicates = heart.preprocess(raw, keep_duplicates, params.seed)
    assert with_duplicates["train"].num_rows + with_duplicates["test"].num_rows == 1025


def test_mnist_images_round_trip_through_parquet_without_784_columns(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), "y_train": np.arange(7, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_test": np.arange(3, dtype=np.uint8)}
    tables = mnist.preprocess(arrays, mnist.DataParams(), seed=0)
    write_outputs({tmp_path / "train.parquet": parquet_bytes(tables["train"])})
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.column_names == ["image", "label"]
    np.testing.assert_array_equal(mnist.images(table), arrays["x_train"])
    np.testing.assert_array_equal(mnist.images(table.slice(2, 3)), arrays["x_train"][2:5])
    x, y = mnist.features_and_target(table)
    assert x.shape == (7, 784) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(y, np.arange(7))


def test_synthetic_split_keeps_every_draw_once(params):
    frames = synthetic.generate_frames(params.task("synthetic").data, params.seed)
    tables = synthetic.preprocess(frames, params.task("synthetic").data, params.seed)
    together = pd.concat([tables["train"].to_pandas(), tables["test"].to_pandas()]).sort_values("x")
    pd.testing.assert_frame_equal(together.reset_index(drop=True),
                                  frames["domain"].sort_values("x").reset_index(drop=True))
    assert tables["test"].num_rows == 200


def test_synthetic_metrics_against_a_perfect_and_a_constant_predictor(params):
    frames = synthetic.generate_frames(params.task("synthetic").data, params.seed)
    tables = synthetic.preprocess(frames, params.task("synthetic").data, params.seed)
    truth = lambda x: synthetic.true_function(x)  # noqa: E731 - a predictor that knows f
    metrics, plots = synthetic.evaluate(truth, tables)
    assert metrics["domain/mse_vs_truth"] == pytest.approx(0, abs=1e-9)
    assert metrics["ood/mse_vs_truth"] == pytest.approx(0, abs=1e-9)
    assert 0.02 < metrics["test/relative_mse"] < 0.06  # noise only: sigma^2 / mean(y)^2
    constant, _ = synthetic.evaluate(lambda x: np.full(len(x), 5.0), tables)
    assert constant["ood/mse_vs_truth"] > constant["domain/mse_vs_truth"] > 1
    assert set(plots["predictions.csv"].region) == {"domain", "extrapolation"}


def test_classifier_metrics_of_known_predictions():
    test = pa.table({"a": pa.array([0.0, 1.0, 2.0, 3.0], pa.float32()), "target": pa.array([0, 1, 1, 0], pa.int8())})
    probabilities = {0.0: 0.1, 1.0: 0.9, 2.0: 0.4, 3.0: 0.2}
    metrics, plots = heart.evaluate(lambda x: np.array([probabilities[v] for v in x[:, 0]]), {"test": test})
    assert metrics["test/accuracy"] == 0.75 and metrics["test/precision"] == 1.0 and metrics["test/recall"] == 0.5
    assert metrics["test/roc_auc"] == 1.0
    assert plots["confusion.csv"].predicted.tolist() == [0, 1, 0, 0]


def test_mnist_metrics_per_digit():
    tables = mnist.preprocess({
        "x_train": np.zeros((1, 28, 28), np.uint8), "y_train": np.zeros(1, np.uint8),
        "x_test": np.zeros((4, 28, 28), np.uint8), "y_test": np.array([0, 1, 1, 2], np.uint8)}, mnist.DataParams(), 0)
    scores = np.eye(10)[[0, 1, 2, 2]]
    metrics, plots = mnist.evaluate(lambda x: scores, tables)
    assert metrics["test/accuracy"] == 0.75
    assert not [name for name in metrics if "digit" in name]  # a plot, not ten `dvc exp show` columns
    per_digit = plots["digit_accuracy.csv"]
    assert per_digit.to_dict("list") == {"digit": [0, 1, 2], "accuracy": [1.0, 0.5, 1.0]}  # no 5: no row
    assert plots["confusion.csv"]["index"].tolist() == [0, 1, 2, 3]


def test_a_raw_patient_row_is_scored_with_the_preprocessing_written_beside_the_splits(params, heart_bytes):
    raw = heart.read_raw({"heart.csv": heart_bytes}, "heart.csv")
    outputs = heart.preprocess(raw, params.task("heart").data, params.seed)
    preprocessing = json.loads(json.dumps(outputs[heart.PREPROCESSING]))  # as the stage writes and a user reads it
    test_features, _ = heart.features_and_target(outputs["test"])
    # The test rows, found again among the raw rows: encoding them gives exactly the processed features.
    raw_rows = raw.drop_duplicates()
    encoded = heart.encode(raw_rows, preprocessing).to_numpy()
    matches = [np.flatnonzero((encoded == row).all(axis=1)) for row in test_features]
    assert all(len(match) >= 1 for match in matches)
    one_row = raw.iloc[[0]].drop(columns="target")  # a new patient: no target column
    assert heart.encode(one_row, preprocessing).shape == (1, len(heart.feature_names()))


def test_every_task_module_has_the_interface_and_dvc_yaml_runs_every_task():
    for name in TASK_NAMES:
        task = load_task(name)
        for attribute in ("TITLE", "LAB_PART", "PROBLEM", "HEADLINE_METRIC", "HEADLINE_METRICS", "RAW_FILES",
                          "EVALUATION_SPLITS",
                          "REPORT_SPLITS", "PLOT_COLUMNS", "DataParams", "read_raw", "preprocess",
                          "features_and_target", "evaluate"):
            assert hasattr(task, attribute), f"stages/tasks/{name}.py lacks {attribute}"
        assert hasattr(load_task_figures(name), "report_sections"), f"stages/tasks/{name}_figures.py lacks report_sections"
        assert hasattr(task, "generate") != hasattr(task, "fetch"), f"{name}: generate or fetch, one of them"
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    variables = {key: value for entry in pipeline["vars"] for key, value in entry.items()}
    assert sorted(variables["tasks"]) == sorted(TASK_NAMES)
    assert sorted(variables["downloaded"]) == sorted(n for n in TASK_NAMES if hasattr(load_task(n), "fetch"))
