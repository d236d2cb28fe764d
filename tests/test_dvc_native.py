"""The pipeline as a DVC user drives it (issue 18), with real DVC on a tiny built copy: a params change
reruns exactly the stages whose resolved config changed, params run before come back from DVC's run
cache (locally and through the remote), and a failed stage's outputs can be brought back."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import pytest
import yaml

from flows.dvc_adapter import apply_param_overrides, push_run_cache
from flows.dvc_adapter import override_text
from stages.core.params import ModelConfig, training_config
from stages.tasks import TASK_NAMES
from tests.conftest import point_local_remote, repo_env, run, set_params
from tests.test_pipeline_e2e import stages_run


def stale(repo: Path) -> dict[str, list]:
    """What `dvc status --json` prints: each stale stage and DVC's reasons (DVC's own status, in this
    process: the same answer without a second of start-up per call)."""
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as dvc:  # DVC names stages relative to the working directory
        return dvc.status()


def restored_from_run_cache(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", output))


def outputs(repo: Path) -> dict[str, bytes]:
    """Every file the stages write (data, models, metrics, plot data, the tasks' figures, the report), by path."""
    folders = ["data", "models", "reports/metrics", "reports/headline", "reports/plots", "reports/figures"]
    files = [path for folder in folders for path in (repo / folder).rglob("*") if path.is_file()]
    files += [*(repo / "reports/live").glob("*/metrics.json"), repo / "reports/report.html"]
    return {path.relative_to(repo).as_posix(): path.read_bytes() for path in files
            if ".gitignore" not in path.name}


def git_diff_lines(repo: Path, env: dict[str, str], path: str = "params.yaml") -> list[str]:
    """The changed lines of `git diff` (without the header and the context), comments cut off."""
    diff = run(["git", "diff", "-U0", "--", path], repo, env).stdout.splitlines()
    return [line.split("#")[0].rstrip() for line in diff
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def different_value(key: str, current, raw: dict):
    """A value for `key` that differs from what it holds now (an override: from what it resolves to)."""
    leaf = key.split(".")[-1]
    if current is None:
        current = raw["model"][leaf]
    if leaf == "activation":
        return "tanh" if current != "tanh" else "relu"
    return current + (1 if isinstance(current, int) else 0.25)  # width, depth; l2, dropout (below 1)


def override_cases() -> list[tuple[str, object]]:
    """Each shared `model.*` key, and per task: one override set, one set to null (the shared value again),
    and one set to exactly the shared value (which changes nothing the task trains with)."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    cases = [(f"model.{key}", different_value(f"model.{key}", raw["model"][key], raw))
             for key in ModelConfig.model_fields]
    for task in TASK_NAMES:
        overridden = [key for key, value in raw[task]["model"].items() if value is not None]
        free = [key for key in ModelConfig.model_fields if key not in overridden]
        cases.append((f"{task}.model.{free[0]}", different_value(f"{task}.model.{free[0]}", None, raw)))
        cases.append((f"{task}.model.{free[-1]}", raw["model"][free[-1]]))  # the same value, explicitly
        if overridden:
            cases.append((f"{task}.model.{overridden[0]}", None))
    return cases


def test_a_model_change_makes_exactly_the_tasks_whose_resolved_config_changed_stale(workspace: Path, mirror: Path):
    env = repo_env(mirror)
    params = workspace / "params.yaml"
    original = params.read_bytes()
    base = yaml.safe_load(original)
    # What `dvc repro configure` rewrites, as the built copy has it: put back after each case.
    written = {path: path.read_bytes() for path in [workspace / "dvc.lock", *(workspace / "data/config").iterdir()]}
    checked = set()
    for key, value in override_cases():
        apply_param_overrides(params, [override_text(key, value)])
        raw = yaml.safe_load(params.read_text())
        changed = {task for task in TASK_NAMES if training_config(raw, task) != training_config(base, task)}
        readers = {task for task in TASK_NAMES if not key.startswith(tuple(f"{other}." for other in TASK_NAMES))
                   or key.startswith(f"{task}.")}
        # DVC sees the params change at the stages that resolve it: cheap, and nothing else.
        assert set(stale(workspace)) == {f"configure@{task}" for task in readers}, key
        run(["dvc", "repro", "configure"], workspace, env)
        # Now exactly the tasks whose resolved config changed are stale, and DVC says why.
        assert stale(workspace) == {f"train@{task}": [{"changed deps": {f"data/config/{task}.json": "modified"}}]
                                         for task in changed}, key
        checked.add((key, frozenset(changed)))
        params.write_bytes(original)
        for path, content in written.items():
            path.write_bytes(content)
        assert stale(workspace) == {}
    # The hard cases are among them: the shared width leaves MNIST (its width is its own) alone, and an
    # override set to the shared value changes nothing.
    assert ("model.width", frozenset({"synthetic", "heart"})) in checked
    assert any(changed == frozenset() for _, changed in checked)
    assert ("mnist.model.width", frozenset({"mnist"})) in checked


def test_exp_run_of_the_shared_width_trains_no_mnist_and_a_revert_trains_nothing(
        workspace: Path, mirror: Path, tmp_path: Path):
    env = repo_env(mirror)
    before = outputs(workspace)

    experiment = run(["dvc", "exp", "run", "-S", "model.width=16"], workspace, env)
    ran = stages_run(experiment.stdout)
    assert {"train@synthetic", "train@heart", "report"} <= ran
    assert not ran & {"train@mnist", "evaluate@mnist", "preprocess@mnist", "fetch@mnist"}
    after_experiment = outputs(workspace)
    assert git_diff_lines(workspace, env) == ["-  width: 64", "+  width: 16"]  # DVC's `-S`: one line
    # `dvc exp show`: one live epoch column per task, no per-step values, no per-digit accuracies.
    columns = run(["dvc", "exp", "show", "--csv"], workspace, env).stdout.splitlines()[0].split(",")
    assert {f"{task}/epoch" for task in TASK_NAMES} <= set(columns)
    assert not [column for column in columns if "digit" in column or column.endswith(("train.loss", "step"))]
    assert after_experiment["models/heart.keras"] != before["models/heart.keras"]

    run(["git", "checkout", "params.yaml"], workspace, env)
    revert = run(["dvc", "repro"], workspace, env)
    assert stages_run(revert.stdout) == set(), revert.stdout
    assert {"train@synthetic", "train@heart", "evaluate@heart", "figures@heart", "report"} <= restored_from_run_cache(
        revert.stdout)
    assert outputs(workspace) == before  # byte-identical: what was trained before, not a retrain
    assert run(["git", "status", "--porcelain"], workspace, env).stdout == ""

    # A teammate's identical experiment, through the DVC remote: no training in a fresh clone either.
    remote = tmp_path / "dvc-remote"
    point_local_remote(workspace, remote)
    run(["dvc", "push"], workspace, env)
    assert push_run_cache(workspace) > 0
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path, env)
    point_local_remote(clone, remote)
    run(["dvc", "pull", "--run-cache"], clone, env)
    teammate = run(["dvc", "exp", "run", "--pull", "-S", "model.width=16"], clone, env)
    assert stages_run(teammate.stdout) == set(), teammate.stdout
    assert {"train@synthetic", "train@heart", "evaluate@heart", "figures@heart", "report"} <= restored_from_run_cache(
        teammate.stdout)
    assert outputs(clone) == after_experiment


def test_a_failed_stage_loses_nothing_and_a_revert_brings_its_outputs_back(workspace: Path, mirror: Path,
                                                                           tmp_path: Path):
    env = repo_env(mirror)
    before = outputs(workspace)
    # A broken heart file at the source: fetch (the one persisted output) keeps the last download.
    broken = tmp_path / "broken_mirror"
    shutil.copytree(mirror, broken)
    (broken / "heart/heart.csv").write_text("age,sex\n63,1\n")
    failed = run(["dvc", "repro", "--force", "fetch@heart"], workspace, repo_env(broken), check=False)
    assert failed.returncode != 0 and "fetch: error: " in failed.stderr
    assert outputs(workspace) == before

    # A value train@heart cannot use: DVC has removed its outputs before the command failed...
    apply_param_overrides(workspace / "params.yaml", ["heart.train.validation_split=0.999"])
    failed = run(["dvc", "repro"], workspace, env, check=False)
    assert failed.returncode != 0 and "train: error: heart.train.validation_split: " in failed.stderr
    assert not (workspace / "models/heart.keras").exists()
    # ... and the documented way back (README): undo the change, `dvc repro`, nothing trains.
    run(["git", "checkout", "params.yaml"], workspace, env)
    revert = run(["dvc", "repro"], workspace, env)
    assert stages_run(revert.stdout) == set(), revert.stdout
    assert "train@heart" in restored_from_run_cache(revert.stdout)
    assert outputs(workspace) == before
    assert stale(workspace) == {}


@pytest.mark.parametrize("override, changed", [
    ("model.width=128", ["-  width: 64", "+  width: 128"]),                           # int
    ("heart.train.learning_rate=0.0003", ["-    learning_rate: 0.001", "+    learning_rate: 0.0003"]),  # float
    ("synthetic.data.extrapolation=[5,9]", ["-    - 8", "+    - 9"]),                 # list: its changed item
    ("synthetic.model.width=32", ["-    width:", "+    width: 32"]),                 # null -> an override
    ("mnist.model.depth=null", ["-    depth: 3", "+    depth:"]),                     # an override -> null
])
def test_a_dvc_override_changes_the_lines_of_its_key_and_no_other(tmp_path: Path, override, changed):
    """params.yaml is laid out as DVC writes it back: `dvc exp run -S` (dvc.utils.hydra.apply_overrides),
    `flows.pipeline --set` and the study (both through it) give a diff of the key's own lines."""
    env = repo_env(Path("."))
    shutil.copy(Path("params.yaml"), tmp_path / "params.yaml")
    run(["git", "init", "-q"], tmp_path, env)
    run(["git", "add", "params.yaml"], tmp_path, env)
    apply_param_overrides(tmp_path / "params.yaml", [override])
    assert git_diff_lines(tmp_path, env) == changed
    header = (tmp_path / "params.yaml").read_text().splitlines()[0]
    assert header == "# yaml-language-server: $schema=params.schema.json"  # comments survive
    run(["git", "checkout", "params.yaml"], tmp_path, env)

    key, text = override.split("=", 1)
    set_params(tmp_path, {key: yaml.safe_load(text)})  # flows.pipeline's --set (checked, then DVC's writer)
    assert git_diff_lines(tmp_path, env) == changed
