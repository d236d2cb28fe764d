"""Same params, same seed, same machine: byte-identical synthetic data, model file, metrics and
plot data, for both training engines; another seed gives other results.

Each test reruns the synthetic chain (generate → preprocess → train → evaluate, tiny epochs) in a
private repo copy and compares it with the copy's committed results from the run before.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from stages.core.params import ENGINES
from tests.conftest import repo_env, run, set_params

MODEL = "models/synthetic.keras"
# Everything the synthetic chain writes after the data, the model file included (the train stage
# drops the save time and memory addresses Keras writes into it), and its LiteRT export.
OUTPUTS = [MODEL, "models/synthetic.tflite", "models/synthetic.seeds/seed-43.tflite", "reports/metrics/synthetic.json",
           "reports/plots/synthetic/learning_curve.csv", "reports/plots/synthetic/learning_curve_band.csv",
           "reports/plots/synthetic/seed_curves.csv", "reports/plots/synthetic/evaluation/predictions.csv"]
DATA_STAGES = ["generate", "preprocess@synthetic"]  # their outputs are compared by the hashes in dvc.lock


def outputs(repo: Path) -> dict[str, bytes]:
    return {path: (repo / path).read_bytes() for path in OUTPUTS}


def data_hashes(repo: Path) -> dict[str, list[str]]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {stage: [out["md5"] for out in lock[stage]["outs"]] for stage in DATA_STAGES}


def weights(model: Path) -> dict[str, np.ndarray]:
    """Every array in the model's weights file (inside the .keras zip), by its HDF5 path."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(model) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        h5.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays, f"no weights found in {model}"
    return arrays


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def engine_of(repo: Path) -> str:
    return yaml.safe_load((repo / "params.yaml").read_text())["synthetic"]["train"]["engine"]


def commit_results(repo: Path, env: dict[str, str], message: str) -> None:
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", message], repo, env)


@pytest.mark.parametrize("engine", ENGINES)
def test_same_params_and_seed_give_byte_identical_results(workspace: Path, mirror: Path, engine: str):
    env = repo_env(mirror)
    if engine_of(workspace) != engine:  # the built copy trained with the other engine: train once with this one
        set_params(workspace, {"synthetic.train.engine": engine})
        run(["dvc", "repro", "evaluate@synthetic"], workspace, env)
        commit_results(workspace, env, f"synthetic with the {engine} engine")
    first, first_data = outputs(workspace), data_hashes(workspace)

    # --force reruns the whole chain, data generation and split included.
    again = run(["dvc", "repro", "--force", "evaluate@synthetic"], workspace, env)
    assert "Running stage 'generate'" in again.stdout and "Running stage 'train@synthetic'" in again.stdout

    second = outputs(workspace)
    for path in OUTPUTS:
        assert second[path] == first[path], f"{path} differs between two runs with the same params and seed"
    assert data_hashes(workspace) == first_data
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], workspace, env).stdout)
    assert diff == {}


def test_another_seed_gives_other_data_weights_and_metrics(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    first_data, first_weights = data_hashes(workspace), weights(workspace / MODEL)
    seed = yaml.safe_load((workspace / "params.yaml").read_text())["seed"]

    set_params(workspace, {"seed": seed + 1})
    run(["dvc", "repro", "evaluate@synthetic"], workspace, env)

    assert data_hashes(workspace)["generate"] != first_data["generate"]
    assert not same_weights(weights(workspace / MODEL), first_weights)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], workspace, env).stdout)
    changed = diff["reports/headline/synthetic.json"]
    assert {"synthetic/rel_mse", "synthetic/val_loss"} <= set(changed)
    assert all(changed[name]["diff"] != 0 for name in ("synthetic/rel_mse", "synthetic/val_loss"))
