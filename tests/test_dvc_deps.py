"""dvc.yaml's code dependencies: every stage lists exactly the project modules it runs, and an edit
of one module makes exactly the stages that run it stale."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from stages.tasks import TASK_NAMES
from tests.conftest import REPO_ROOT, TINY_RUN, repo_env, run, set_params
from tests.imports import closure_files
from tests.test_pipeline_e2e import stages_run


def resolved_stages(root: Path = REPO_ROOT) -> dict[str, tuple[str, list[str]]]:
    """name -> (cmd, deps) of every stage, matrix entries expanded, as DVC itself reads dvc.yaml."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC names stages relative to the working directory
        return {stage.addressing: (stage.cmd, [Path(dep.def_path).as_posix() for dep in stage.deps])
                for stage in repo.index.stages}


def modules_run_by(cmd: str) -> set[str]:
    """`python -m stages.train heart ...` runs stages.train and the heart task's module (figures@heart: and
    the heart task's figures module; the report: no task's)."""
    words = cmd.split()
    module = words[words.index("-m") + 1]
    argument = words[words.index("-m") + 2] if len(words) > words.index("-m") + 2 else ""
    if argument not in TASK_NAMES or module == "stages.configure":  # configure reads params.yaml only
        return {module}
    figures = {f"stages.tasks.{argument}_figures"} if module == "stages.figures" else set()
    return {module, f"stages.tasks.{argument}", *figures}


def declared_code(deps: list[str], root: Path = REPO_ROOT) -> set[str]:
    """The .py files a stage's deps name, folders expanded (without __pycache__, which .dvcignore hides)."""
    files = set()
    for dep in deps:
        path = root / dep
        if path.is_dir() and dep.split("/")[0] in ("stages", "flows"):
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif dep.endswith(".py"):
            files.add(dep)
    return files


def test_every_stage_lists_exactly_the_project_modules_it_runs():
    problems = []
    for name, (cmd, deps) in resolved_stages().items():
        expected = set().union(*(closure_files(module) for module in modules_run_by(cmd)))
        declared = declared_code(deps)
        if missing := sorted(expected - declared):
            problems.append(f"{name} runs but does not list: {', '.join(missing)}")
        if extra := sorted(declared - expected):
            problems.append(f"{name} lists but does not run: {', '.join(extra)}")
    assert not problems, "dvc.yaml code deps are wrong:\n" + "\n".join(problems)


def test_the_check_sees_a_missing_dependency(tmp_path: Path):
    """The test above must fail when dvc.yaml misses a module: drop one from a copy and look."""
    import shutil

    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(REPO_ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    text = (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("      - stages/training\n", "", 1))
    cmd, deps = resolved_stages(tmp_path)["train@heart"]
    expected = set().union(*(closure_files(module) for module in modules_run_by(cmd)))
    assert "stages/training/engine.py" in expected - declared_code(deps, tmp_path)


def stale_stages(repo: Path, env: dict[str, str]) -> set[str]:
    """The stages `dvc status` finds changed: what the next `dvc repro` runs first."""
    return set(json.loads(run(["dvc", "status", "--json"], repo, env).stdout))


@pytest.mark.parametrize("module, stale", [
    ("stages/training/model.py", {"train@synthetic", "train@heart", "train@mnist"}),
    ("stages/reporting/page.py", {"figures@synthetic", "figures@heart", "figures@mnist", "report"}),
    ("stages/reporting/lab.py", {"report"}),
    ("stages/tasks/heart.py", {"fetch@heart", "preprocess@heart", "train@heart", "evaluate@heart", "figures@heart"}),
    ("stages/tasks/heart_figures.py", {"figures@heart"}),
])
def test_an_edited_module_makes_exactly_the_stages_that_run_it_stale(workspace: Path, mirror: Path, module, stale):
    env = repo_env(mirror)
    assert stale_stages(workspace, env) == set()
    with (workspace / module).open("a") as file:
        file.write("\n# an edit\n")
    assert stale_stages(workspace, env) == stale
    # They rerun, write the same bytes (the code still does the same), so nothing after them reruns.
    assert stages_run(run(["dvc", "repro"], workspace, env).stdout) == stale


def test_a_change_to_one_task_redraws_that_tasks_figures_and_the_page_only(workspace: Path, mirror: Path):
    """One heart key: heart's chain reruns, its figures are redrawn and the page reassembled; the other
    tasks' figures stages do not run (their inputs did not change)."""
    env = repo_env(mirror)
    figures_before = {task: (workspace / f"reports/figures/{task}.json").read_bytes() for task in TASK_NAMES}
    set_params(workspace, {"heart.train.epochs": TINY_RUN["heart.train.epochs"] + 1})
    ran = stages_run(run(["dvc", "repro"], workspace, env).stdout)
    assert {"train@heart", "evaluate@heart", "figures@heart", "report"} <= ran
    assert not {"figures@synthetic", "figures@mnist"} & ran, ran
    assert (workspace / "reports/figures/heart.json").read_bytes() != figures_before["heart"]
    assert all((workspace / f"reports/figures/{task}.json").read_bytes() == figures_before[task]
               for task in TASK_NAMES if task != "heart")
    report = (workspace / "reports/report.html").read_text()
    assert f"Heart disease: {TINY_RUN['heart.train.epochs'] + 1} epochs" in report
