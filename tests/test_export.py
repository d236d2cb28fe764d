"""The network train exports for LiteRT: the same outputs as Keras, served without TensorFlow, and
one clear line when it or its runtime is missing.

Parity bound (docs, evaluation): each exported output within 1e-5 + 1e-5·|y| of Keras' `predict`
on the same rows, about 100 float32 ulps (eps 1.2e-7). LiteRT's kernels (XNNPACK) sum each
layer's products in another order than TensorFlow's, so the last bits of every layer differ, and a
softmax's exp turns the logits' small relative error into an absolute one on the probabilities
(lab defaults, measured: synthetic 2.9e-6, heart 1.2e-7, MNIST 5.2e-6 at most). The class decisions
(heart at 0.5, MNIST's arg max) must be the same row for row.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import evaluate
from stages.core.errors import StageError
from stages.evaluate import INSTALL, load_exported
from stages.core.io import read_split
from stages.core.params import TrainingConfig
from stages.tasks import TASK_NAMES, load_task
from tests.conftest import REPO_ROOT, repo_env
from tests.test_stages import assert_one_line_error, run_main, snapshot

RTOL, ATOL = 1e-5, 1e-5

# The serving example of the docs ("Scoring a raw patient row"), word for word: the ai-edge-litert
# interpreter, numpy and pandas, and the fitted preprocessing heart writes beside its splits.
def serving_example() -> str:
    """The docs' serving example, the block docs/pipeline.md marks with `<!-- serving-example -->`: the page
    is its one home, and the test runs it as it stands there."""
    page = (REPO_ROOT / "docs" / "pipeline.md").read_text()
    match = re.search(r"<!-- serving-example -->\n```python\n(.*?)```", page, re.S)
    assert match, "docs/pipeline.md has no serving-example block"
    return match.group(1)


# Run after the example in the same process: what it computed and which heavy modules it loaded.
REPORT = """
import sys
loaded = sorted({name.split('.')[0] for name in sys.modules} & {'tensorflow', 'keras', 'tf_keras'})
print(json.dumps({"probability": probability.tolist(), "loaded": loaded}))
"""


def keras_and_exported(repo: Path, task_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split's outputs from the trained `.keras` model and from its LiteRT export."""
    import keras

    task = load_task(task_name)
    x, _ = task.features_and_target(read_split(repo / "data/processed" / task_name, "test"))
    model = keras.saving.load_model(repo / f"models/{task_name}.keras")
    return np.asarray(model.predict(x, verbose=0)), load_exported(repo / f"models/{task_name}.tflite")(x)


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_the_export_gives_keras_outputs_to_float32_rounding_and_the_same_classes(built_repo: Path, task_name: str):
    expected, served = keras_and_exported(built_repo, task_name)
    assert served.shape == expected.shape and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, rtol=RTOL, atol=ATOL)
    print(f"{task_name}: largest difference {np.max(np.abs(served - expected)):.3g}")
    kind = load_task(task_name).PROBLEM.kind
    if kind == "binary":
        assert np.array_equal(served >= 0.5, expected >= 0.5)
    elif kind == "multiclass":
        assert np.array_equal(served.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_every_seed_is_exported_and_the_first_is_the_model_a_user_scores_with(built_repo: Path, task_name: str):
    config = TrainingConfig.model_validate_json((built_repo / f"data/config/{task_name}.json").read_bytes())
    folder = built_repo / f"models/{task_name}.seeds"
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        f"seed-{seed}.tflite" for seed in config.training_seeds)
    first = (folder / f"seed-{config.seed}.tflite").read_bytes()
    assert first == (built_repo / f"models/{task_name}.tflite").read_bytes()
    if config.train.seeds > 1:  # each seed its own network
        assert (folder / f"seed-{config.seed + 1}.tflite").read_bytes() != first


def test_rows_of_another_width_are_refused_in_one_line(built_repo: Path):
    predict = load_exported(built_repo / "models/heart.tflite")
    with pytest.raises(StageError, match="heart.tflite takes rows of 27 features"):
        predict(np.zeros((3, 784), np.float32))


def test_the_serving_example_scores_raw_rows_as_keras_does_without_tensorflow(built_repo: Path, tmp_path: Path,
                                                                               mirror: Path):
    import keras

    from stages.tasks import heart

    rows = pd.read_csv(mirror / "heart" / "heart.csv").drop(columns="target").iloc[::50]
    (tmp_path / "new_patients.csv").write_text(rows.to_csv(index=False))
    for folder in ("data", "models"):  # the built pipeline's outputs, as in a checkout after `dvc repro`
        (tmp_path / folder).symlink_to(built_repo / folder)
    result = subprocess.run([sys.executable, "-c", serving_example() + REPORT], cwd=tmp_path,
                            env=repo_env(mirror, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.splitlines()[-1])
    assert served["loaded"] == [], f"the serving example imported {served['loaded']}"

    preprocessing = json.loads((built_repo / "data/processed/heart/preprocessing.json").read_text())
    model = keras.saving.load_model(built_repo / "models/heart.keras")
    expected = model.predict(heart.encode(rows, preprocessing).to_numpy(), verbose=0).reshape(-1)
    assert len(served["probability"]) == len(rows) == len(expected)
    np.testing.assert_allclose(served["probability"], expected, rtol=RTOL, atol=ATOL)


# --- bad input: one line, exit 2, earlier outputs untouched ---

def evaluate_args(folder: Path, models: Path) -> list[str]:
    return ["heart", "--data", str(folder / "processed"), "--models", str(models),
            "--seed-curves", str(folder / "seed_curves.csv"),
            "--metrics", str(folder / "out" / "heart.json"), "--headline", str(folder / "out" / "headline.json"),
            "--plots", str(folder / "out" / "evaluation")]


@pytest.fixture
def old_outputs(tmp_path: Path) -> dict[str, bytes]:
    (tmp_path / "out" / "evaluation").mkdir(parents=True)
    (tmp_path / "out" / "heart.json").write_text('{"test/accuracy": 0.5}\n')
    (tmp_path / "out" / "evaluation" / "roc.csv").write_text("fpr,tpr\n0,0\n")
    return snapshot(tmp_path / "out")


@pytest.mark.parametrize(("name", "content", "fragments"), [
    (None, None, ["heart.seeds holds no trained networks", "dvc repro"]),
    ("seed-42.tflite", b"not a flatbuffer", ["seed-42.tflite is not a LiteRT model", "dvc repro --force"]),
    ("seed-42.tflite", b"TFL3" * 64, ["seed-42.tflite is not a LiteRT model"]),
    ("best.tflite", b"TFL3" * 64, ["best.tflite: not a seed export (seed-<n>.tflite)", "dvc repro --force"]),
])
def test_a_missing_or_damaged_export_is_one_line_naming_it(tmp_path, capsys, old_outputs, name, content, fragments):
    models = tmp_path / "heart.seeds"
    models.mkdir()
    if content is not None:
        (models / name).write_bytes(content)
    assert run_main("evaluate", evaluate.main, evaluate_args(tmp_path, models)) == 2
    assert_one_line_error(capsys, str(models / (name or "")), *fragments)
    assert snapshot(tmp_path / "out") == old_outputs


def test_seed_curves_of_another_run_are_one_line_naming_both_files(built_repo, tmp_path, capsys, old_outputs):
    models = tmp_path / "heart.seeds"
    models.mkdir()
    (models / "seed-42.tflite").write_bytes((built_repo / "models/heart.tflite").read_bytes())
    (tmp_path / "seed_curves.csv").write_text("seed,epoch,train/loss,val/loss\n7,1,0.5,0.6\n")
    assert run_main("evaluate", evaluate.main, evaluate_args(tmp_path, models)) == 2
    assert_one_line_error(capsys, "seed_curves.csv and", "come from different runs (seeds [7] against [42])",
                          "dvc repro")
    assert snapshot(tmp_path / "out") == old_outputs


def test_no_runtime_installed_is_one_line_with_the_install_command(tmp_path, old_outputs, mirror):
    model = tmp_path / "heart.seeds" / "seed-42.tflite"
    model.parent.mkdir()
    model.write_bytes(b"whatever: the runtime is looked for first")
    # `None` in sys.modules makes `import ai_edge_litert` raise ImportError, as when it is not installed.
    probe = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["ai_edge_litert"] = None
        sys.argv = ["stages.evaluate", *{evaluate_args(tmp_path, model.parent)!r}]
        runpy.run_module("stages.evaluate", run_name="__main__", alter_sys=True)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=repo_env(mirror),
                            capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert INSTALL in lines[0] and "not installed" in lines[0]
    assert snapshot(tmp_path / "out") == old_outputs


def test_an_export_name_litert_cannot_write_is_refused_before_training(tmp_path, capsys):
    from stages import train

    argv = ["heart", "--config", str(tmp_path / "heart.json"), "--data", str(tmp_path), "--model",
            str(tmp_path / "m.keras"), "--curve", str(tmp_path / "curve.csv"), "--export", str(tmp_path / "m.onnx")]
    assert run_main("train", train.main, argv) == 2
    assert "m.onnx: a LiteRT model's name ends in .tflite" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
