"""The docs' "Add your own task", followed word for word in a throwaway copy of the built repo.

The blocks come from docs/add-a-task.md, or from the README while the walk-through still lives there.
A block neither has yet (the task's figures module, which the walk-through gained when tasks came to
own their figures) is taken from PENDING_BLOCKS below, the text of the walk-through's next version;
delete it once the docs page carries the block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import REPO_ROOT, repo_env, run
from tests.test_pipeline_e2e import stages_run

NEW_STAGES = {"fetch@breast_cancer", "preprocess@breast_cancer", "configure@breast_cancer", "train@breast_cancer",
              "evaluate@breast_cancer", "figures@breast_cancer", "report"}
SOURCES = ("docs/add-a-task.md", "README.md")  # where the walk-through lives, first found first
PENDING_BLOCKS = {
    "stages/tasks/breast_cancer_figures.py": '''\
"""The breast-cancer task's part of the report: its ROC curve, captioned with the test accuracy."""

from __future__ import annotations

from stages.core.results import TaskResults
from stages.reporting.figures import image, roc_figure
from stages.reporting.page import Section, percent


def report_sections(results: TaskResults) -> list[Section]:
    roc = results.plots["roc.csv"]
    return [Section("Breast cancer classifier", f"Test accuracy {percent(results.metrics, 'test/accuracy')}.",
                    (image(roc_figure(roc, "Breast cancer ROC"), "breast cancer ROC curve"),))]
''',
}


def readme_block(target: str) -> str:
    """The fenced block the walk-through marks with `<!-- add-a-task: TARGET -->` (see the module's docstring)."""
    for source in SOURCES:
        path = REPO_ROOT / source
        text = path.read_text() if path.is_file() else ""
        if match := re.search(rf"<!-- add-a-task: {re.escape(target)} -->\n```\w+\n(.*?)```", text, re.S):
            return match.group(1)
    assert target in PENDING_BLOCKS, f"{' and '.join(SOURCES)} have no add-a-task block for {target}"
    return PENDING_BLOCKS[target]


def test_a_new_task_is_its_modules_its_params_and_one_matrix_entry(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    for module in ("stages/tasks/breast_cancer.py", "stages/tasks/breast_cancer_figures.py"):
        (workspace / module).write_text(readme_block(module))
    with (workspace / "params.yaml").open("a") as params:
        params.write("\n" + readme_block("params.yaml"))
    pipeline = (workspace / "dvc.yaml").read_text()
    for line in readme_block("dvc.yaml").splitlines():
        if match := re.match(r"\s+- (\w+):", line):
            pipeline, count = re.subn(rf"^\s+- {match.group(1)}:.*$", line, pipeline, count=1, flags=re.M)
            assert count == 1, f"dvc.yaml has no `- {match.group(1)}:` line in vars"
    (workspace / "dvc.yaml").write_text(pipeline)

    assert stages_run(run(["dvc", "repro"], workspace, env).stdout) == NEW_STAGES
    assert json.loads(run(["dvc", "status", "--json"], workspace, env).stdout) == {}
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], workspace, env).stdout)
    metrics = shown[""]["data"]["reports/metrics/breast_cancer.json"]["data"]
    assert metrics["test/roc_auc"] > 0.9 and metrics["train/epochs_run"] > 0
    report = (workspace / "reports/report.html").read_text()
    assert "<h2>Breast cancer classifier</h2>" in report and "<figcaption>Breast cancer: " in report
