"""The docs' "Add your own task" page (docs/add-a-task.md), followed word for word in a throwaway copy of
the built repo: the page is the single source of the blocks, so what it shows is what runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import REPO_ROOT, repo_env, run
from tests.test_pipeline_e2e import stages_run

NEW_STAGES = {"fetch@breast_cancer", "preprocess@breast_cancer", "configure@breast_cancer", "train@breast_cancer",
              "evaluate@breast_cancer", "figures@breast_cancer", "report"}
PAGE = REPO_ROOT / "docs" / "add-a-task.md"


def page_block(target: str) -> str:
    """The fenced block the page marks with `<!-- add-a-task: TARGET -->`."""
    match = re.search(rf"<!-- add-a-task: {re.escape(target)} -->\n```\w+\n(.*?)```", PAGE.read_text(), re.S)
    assert match, f"{PAGE.relative_to(REPO_ROOT)} has no add-a-task block for {target}"
    return match.group(1)


def test_a_new_task_is_its_modules_its_params_and_one_matrix_entry(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    for module in ("stages/tasks/breast_cancer.py", "stages/tasks/breast_cancer_figures.py"):
        (workspace / module).write_text(page_block(module))
    with (workspace / "params.yaml").open("a") as params:
        params.write("\n" + page_block("params.yaml"))
    pipeline = (workspace / "dvc.yaml").read_text()
    for line in page_block("dvc.yaml").splitlines():
        if match := re.match(r"\s+- (\w+):", line):
            pipeline, count = re.subn(rf"^\s+- {match.group(1)}:.*$", line, pipeline, count=1, flags=re.M)
            assert count == 1, f"dvc.yaml has no `- {match.group(1)}:` line in vars"
    (workspace / "dvc.yaml").write_text(pipeline)

    assert stages_run(run(["dvc", "repro"], workspace, env).stdout) == NEW_STAGES
    assert json.loads(run(["dvc", "status", "--json"], workspace, env).stdout) == {}
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], workspace, env).stdout)
    # Without HEADLINE_METRICS of its own, its headline is its HEADLINE_METRIC and its validation loss.
    assert set(shown[""]["data"]) >= {"reports/headline/breast_cancer.json"}
    assert sorted(shown[""]["data"]["reports/headline/breast_cancer.json"]["data"]) == [
        "breast_cancer/roc_auc", "breast_cancer/val_loss"]
    metrics = json.loads((workspace / "reports/metrics/breast_cancer.json").read_text())["mean"]
    assert metrics["test/roc_auc"] > 0.9 and metrics["train/epochs_run"] > 0
    report = (workspace / "reports/report.html").read_text()
    assert "<h2>Breast cancer classifier</h2>" in report and "<figcaption>Breast cancer: " in report
