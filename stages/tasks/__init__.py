"""The lab's tasks: one module each in this package, all behind one interface (`TaskModule`).

A task module is everything one task is: where its raw data comes from (`generate` from params,
or `fetch` from the network or a mirror) and how it is checked, how it becomes Parquet splits,
its features and target, its metrics and plot data. Its part of the report (sections, captions and
the figures only it draws) is the module beside it, `<task>_figures.py`, which only the task's
`figures@<task>` stage imports: a figure's change redraws that task's figures, not its training.
The stages are generic over the modules found here. Adding a task is its two modules, its section
in params.yaml and its name in dvc.yaml's `vars: tasks` (README: "Add your own task").

The modules are found by listing this package, not by importing it: a stage that runs one task
imports only that task's module, so dvc.yaml can make each task's stages depend on its own module.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from stages.core import params as core_params
from stages.core.params import Params, ParamsError, ParamsModel
from stages.core.problem import Problem
from stages.core.results import TaskResults

if TYPE_CHECKING:  # annotations only: configure, which reads no data, loads none of them
    import numpy as np
    import pandas as pd
    import pyarrow as pa

FIGURES_SUFFIX = "_figures"  # `<task>_figures.py`: the task's report sections, beside its module
TASK_NAMES = tuple(sorted(info.name for info in pkgutil.iter_modules(__path__)
                          if not info.name.startswith("_") and not info.name.endswith(FIGURES_SUFFIX)))


class TaskModule(Protocol):
    """What a task module defines (module-level names; see stages/tasks/heart.py for one)."""

    TITLE: str                                   # in the report: "Heart disease"
    LAB_PART: int                                # the report shows the tasks in this order
    PROBLEM: Problem                             # regression / binary / multiclass, output units
    HEADLINE_METRIC: str                         # the one metric a run's summary shows
    # optional: HEADLINE_METRICS: Mapping[str, str], `dvc exp show`'s columns, short name -> metric, HEADLINE_METRIC
    # among them (see headline_choice); HIGHER_IS_BETTER: Mapping[str, bool], metric -> which way it improves,
    # where its name does not say (see higher_is_better)
    RAW_FILES: tuple[str, ...]                   # what generate/fetch writes to data/raw/<task>/
    EVALUATION_SPLITS: tuple[str, ...]           # processed splits `evaluate` takes
    REPORT_SPLITS: tuple[str, ...]               # processed splits its figures module's report_sections takes
    PLOT_COLUMNS: Mapping[str, tuple[str, ...]]  # evaluate's plot CSVs and their columns
    DataParams: type[ParamsModel]                # its `<task>.data` section of params.yaml

    # and one of: generate(data, seed) -> {file: bytes}, fetch(mirror, force) -> {file: bytes}
    def read_raw(self, files: Mapping[str, bytes], source: str) -> Any: ...
    def preprocess(self, raw: Any, data: Any, seed: int) -> dict[str, pa.Table | dict]: ...
    def features_and_target(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]: ...
    def evaluate(self, predict, splits: Mapping[str, pa.Table]) -> tuple[dict, dict[str, pd.DataFrame]]: ...


class TaskFiguresModule(Protocol):
    """What a task's figures module (`stages/tasks/<task>_figures.py`) defines."""

    def report_sections(self, results: TaskResults) -> list: ...  # stages.reporting.page.Section, in page order


def load_task(name: str) -> TaskModule:
    """The task module `stages/tasks/<name>.py`; an unknown name is a ParamsError listing the known ones."""
    if name not in TASK_NAMES:
        raise ParamsError(f"unknown task {name!r}; the tasks are the modules in stages/tasks/: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def significant(value: Any, digits: int = 4) -> Any:
    """A float to `digits` significant digits (what the headline files and tables show); other values as they are."""
    return float(f"{value:.{digits}g}") if isinstance(value, float) else value


def headline_name(task: str, short: str) -> str:
    """`heart/roc_auc`: unique across tasks, so `dvc exp show` names its column without the file's path."""
    return f"{task}/{short}"


def headline_choice(name: str) -> dict[str, str]:
    """Short name -> metric: the task's HEADLINE_METRICS, or by default its HEADLINE_METRIC and val/loss."""
    task = load_task(name)
    default = {task.HEADLINE_METRIC.rsplit("/", 1)[-1]: task.HEADLINE_METRIC, "val_loss": "val/loss"}
    return dict(getattr(task, "HEADLINE_METRICS", default))


def headline_metrics(name: str, metrics: Mapping[str, Any], margins: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The task's headline_choice out of evaluate's metrics (their means over the seeds), under their headline
    names, to 4 significant digits; with several seeds, the task's HEADLINE_METRIC's margin (the half-width of
    its mean's 95 % interval, 2 digits) beside it as `<name>±`. One margin, not one per column: `dvc exp show`
    stays narrow; the seed count is a param (`<task>.train.seeds`), every other spread in evaluate's metrics file."""
    chosen = headline_choice(name)
    missing = [key for key in chosen.values() if key not in metrics]
    if missing:
        raise KeyError(f"stages/tasks/{name}.py HEADLINE_METRICS names {', '.join(missing)}, "
                       "which evaluate does not write")
    headline: dict[str, Any] = {}
    main = load_task(name).HEADLINE_METRIC
    for short, key in chosen.items():
        headline[headline_name(name, short)] = significant(metrics[key])
        if key == main and margins is not None and margins.get(key) is not None:
            headline[f"{headline_name(name, short)}±"] = significant(float(margins[key]), 2)
    return headline


LOWER_IS_BETTER_WORDS = ("loss", "mse", "error")  # in a metric's name: smaller is better (the rest: accuracy, auc, f1)


def higher_is_better(name: str, metric: str) -> bool:
    """Which way a metric of task `name` improves: its module's HIGHER_IS_BETTER says, else its name does
    (a loss, an MSE or an error falls as it improves, anything else rises)."""
    declared = getattr(load_task(name), "HIGHER_IS_BETTER", {})
    if metric in declared:
        return bool(declared[metric])
    return not any(word in metric.rsplit("/", 1)[-1] for word in LOWER_IS_BETTER_WORDS)


def load_task_figures(name: str) -> TaskFiguresModule:
    """The task's figures module `stages/tasks/<name>_figures.py` (its report sections)."""
    load_task(name)
    return importlib.import_module(f"{__name__}.{name}{FIGURES_SUFFIX}")


def raw_stage(name: str) -> str:
    """The DVC stage that writes a task's raw data: `generate` or `fetch@<task>`."""
    return "generate" if hasattr(load_task(name), "generate") else f"fetch@{name}"


def params_model(tasks: Iterable[str] | None = None, *, with_study: bool = True) -> type[core_params.ParamsFile]:
    """The model of params.yaml checking the `tasks` (default: all, and then the study) by their own `data`
    models; the other tasks' sections are left alone. Its JSON Schema is params.schema.json."""
    sections = tuple((name, load_task(name).DataParams, f"Part {load_task(name).LAB_PART} of the lab: "
                      f"{load_task(name).TITLE}.") for name in (TASK_NAMES if tasks is None else tasks))
    return core_params.params_model(sections, TASK_NAMES, with_study=with_study)


def parse_params(raw: Any, tasks: Iterable[str] | None = None, *, with_study: bool = True) -> Params:
    """Validate a params mapping: the shared keys and the `tasks` (default: all) by their own models."""
    return core_params.parse_params(raw, params_model(tasks, with_study=with_study))


def load_params(path: str | Path = "params.yaml", tasks: Iterable[str] | None = None) -> Params:
    """Read and validate params.yaml; a stage of one task passes it, so it loads no other task's module."""
    return parse_params(core_params.read_params_file(path), tasks, with_study=tasks is None)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a params mapping with `dvc exp run -S`-style dotted overrides applied, validated."""
    return core_params.apply_overrides(raw, overrides, params_model(with_study=False))


def build_splits(name: str, params: Params, mirror: Path | None) -> dict[str, pa.Table | dict]:
    """A task's processed splits built in memory (generated, or fetched from `mirror`): for tests and benchmarks."""
    task, data = load_task(name), params.task(name).data
    files = task.generate(data, params.seed) if hasattr(task, "generate") else task.fetch(mirror, force=False)
    return task.preprocess(task.read_raw(files, name), data, params.seed)
