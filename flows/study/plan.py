"""Checking params.yaml's study and choosing its variations, before anything runs; the study's one error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional, Sequence

from flows import dvc_adapter
from flows.git_workspace import RemoteError, git_output
from flows.processes import log_without_tracebacks
from stages.core.params import ParamsError, StudyVariation
from stages.tasks import TASK_NAMES, load_params

# What each experiment reproduces: every `evaluate@…` stage and what it needs, so metrics, learning
# curves and predictions are fresh whatever a variation changes; the lab's report.html is left out
# (the study writes its own page; `dvc exp apply NAME && dvc repro` brings it up to date).
TARGETS = ("evaluate",)


class StudyError(Exception):
    """A study that cannot run or finish: one line that says what to do."""


log_without_tracebacks(StudyError, RemoteError)  # their line says it all: Prefect would log a traceback too


def select_variations(variations: Sequence[StudyVariation], only: Optional[Sequence[str]]) -> list[StudyVariation]:
    """The study's variations, or those named in `only` (in the study's order); unknown names are refused."""
    if not only:
        return list(variations)
    known = [variation.name for variation in variations]
    unknown = [name for name in dict.fromkeys(only) if name not in known]
    if unknown:
        raise StudyError(f"unknown study variation(s) {', '.join(unknown)}; params.yaml study.variations "
                         f"has: {', '.join(known) or 'none'} (a variation listed twice runs under its first name)")
    return [variation for variation in variations if variation.name in only]


def plan(root: Path, only: Optional[Sequence[str]]) -> list[StudyVariation]:
    """Validate params.yaml (every study entry included) and choose the variations; nothing touched yet."""
    if not (root / "params.yaml").is_file():
        raise StudyError(f"no params.yaml in {root}: run the study from the repository root")
    try:
        variations = select_variations(load_params(root / "params.yaml").study, only)
    except ParamsError as error:
        raise StudyError(str(error)) from None
    if not variations:
        raise StudyError("params.yaml has no study.variations; add {name, params} entries under study:")
    return variations


def set_params(variation: StudyVariation) -> list[str]:
    """The `-S` values of `dvc exp run`: `key=value`, as a user types them (params.yaml holds every key);
    then study.seeds as every task's `train.seeds` the variation does not set itself."""
    own = [key for key, _ in variation.overrides]
    seeds = [] if variation.seeds is None else [
        (key, variation.seeds) for key in (f"{task}.train.seeds" for task in TASK_NAMES) if key not in own]
    return [dvc_adapter.override_text(key, value) for key, value in [*variation.overrides, *seeds]]


def head_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyError("DVC experiments hang off a commit and this repository has none: commit first")
    return result.stdout.strip()


def untracked_results(root: Path) -> list[str]:
    """Pipeline results (dvc.lock, `cache: false` metrics and plot data) that git does not track.

    A queued experiment starts from git's view of the workspace (the last commit plus tracked
    changes): an untracked result is missing there, so every experiment would rebuild it (an
    untracked learning curve of MNIST: the MNIST training, in each experiment).
    """
    try:
        project = dvc_adapter.DvcProject(root)
    except dvc_adapter.DvcError as error:
        raise StudyError(str(error)) from None
    try:
        paths = [path for path in project.git_tracked_outputs() if (root / path).exists()]
    finally:
        project.close()
    if not paths:
        return []
    return git_output(root, "ls-files", "--others", "--exclude-standard", "--", *paths, error=StudyError).split()


def require_tracked_results(root: Path) -> None:
    untracked = untracked_results(root)
    if untracked:
        shown = ", ".join(untracked[:3]) + (f" and {len(untracked) - 3} more" if len(untracked) > 3 else "")
        raise StudyError(f"git does not track the pipeline results {shown}: queued experiments start from git's "
                         "view of the workspace and would each rebuild them; commit them first "
                         "(`python -m flows.pipeline --record`, or git add and commit them)")
