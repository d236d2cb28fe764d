"""The whole DVC pipeline in a temporary repo copy, on the real data (mirror) with tiny epochs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import TINY_RUN, repo_env, run, set_params

ALL_STAGES = {
    "generate", "fetch@heart", "fetch@mnist", "preprocess@synthetic", "preprocess@heart", "preprocess@mnist",
    "configure@synthetic", "configure@heart", "configure@mnist",
    "train@synthetic", "train@heart", "train@mnist", "evaluate@synthetic", "evaluate@heart", "evaluate@mnist",
    "figures@synthetic", "figures@heart", "figures@mnist", "report",
}


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_builds_every_output(built_repo: Path):
    for path in ["data/raw/synthetic/domain.parquet", "data/raw/heart/heart.csv", "data/raw/mnist/x_train.npy",
                 "data/processed/mnist/train.parquet", "data/processed/heart/test.parquet",
                 "models/synthetic.keras", "models/heart.keras", "models/mnist.keras",
                 "reports/plots/synthetic/evaluation/predictions.csv", "reports/plots/heart/evaluation/roc.csv",
                 "reports/plots/mnist/evaluation/confusion.csv", "reports/report.html"]:
        assert (built_repo / path).is_file(), path
    for dataset in ("synthetic", "heart", "mnist"):
        document = json.loads((built_repo / f"reports/metrics/{dataset}.json").read_text())
        assert sorted(document["seeds"], key=int) == [str(42 + k) for k in range(TINY_RUN[f"{dataset}.train.seeds"])]
        for values in document["seeds"].values():
            assert values["train/epochs_run"] <= TINY_RUN[f"{dataset}.train.epochs"]
    assert json.loads((built_repo / "reports/metrics/mnist.json").read_text())["mean"]["test/accuracy"] > 0.8


def test_second_repro_runs_nothing_and_noise_change_reruns_the_synthetic_chain(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    again = run(["dvc", "repro"], workspace, env)
    assert stages_run(again.stdout) == set()
    assert run(["dvc", "status", "--json"], workspace, env).stdout.strip() == "{}"

    set_params(workspace, {"synthetic.data.noise_sigma": 0.5})
    changed = run(["dvc", "repro"], workspace, env)
    assert stages_run(changed.stdout) == {
        "generate", "preprocess@synthetic", "train@synthetic", "evaluate@synthetic", "figures@synthetic", "report"}
