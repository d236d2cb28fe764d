"""The layer contract: imports point down only (DESIGN.md, "Layers").

An AST walk over every module under stages/ (module- and function-level imports; `if TYPE_CHECKING:`
blocks skipped, they never run), checked against the rules below. A failure names the file, the
line and the import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import REPO_ROOT

STAGE_MAINS = ("generate", "fetch", "preprocess", "train", "evaluate", "figures", "report")
PROJECT_PACKAGES = ("stages", "flows", "benchmarks", "tests")


@dataclass(frozen=True)
class Import:
    path: Path      # relative to the repository root
    line: int
    module: str     # the module imported, absolute (`stages.core.io`)


@dataclass(frozen=True)
class Rule:
    name: str
    applies_to: Callable[[str], bool]   # the importing module's name
    allows: Callable[[str], bool]       # an imported module's name
    watches: tuple[str, ...] = PROJECT_PACKAGES  # the packages whose imports the rule looks at


INTEGRATION = "stages.core.tracking"  # the one module through which stages reach Prefect (DESIGN.md, "Layers")


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def is_task_figures(module: str) -> bool:
    """A task's figures module, `stages.tasks.<task>_figures`: its report sections, beside the task module."""
    return within(module, "stages.tasks") and module.endswith("_figures")


RULES = (
    Rule("stages never import flows, benchmarks or tests",
         lambda importer: within(importer, "stages"),
         lambda imported: not within(imported, "flows", "benchmarks", "tests")),
    Rule("stages.core imports no other stages subpackage",
         lambda importer: within(importer, "stages.core"), lambda imported: within(imported, "stages.core")),
    Rule("stages.training imports only stages.core",
         lambda importer: within(importer, "stages.training"),
         lambda imported: within(imported, "stages.core", "stages.training")),
    Rule("stages.reporting imports only stages.core and stages.spread",
         lambda importer: within(importer, "stages.reporting"),
         lambda imported: within(imported, "stages.core", "stages.spread", "stages.reporting")),
    Rule("stages.spread (results over seeds) imports no other stages module",
         lambda importer: importer == "stages.spread", lambda imported: not within(imported, "stages")),
    Rule("stages.tasks imports only stages.core (its task modules, which every stage of a task imports)",
         lambda importer: within(importer, "stages.tasks") and not is_task_figures(importer),
         lambda imported: within(imported, "stages.core", "stages.tasks") and not is_task_figures(imported)),
    Rule("a task's figures module imports only stages.core, stages.spread, stages.tasks and stages.reporting",
         is_task_figures,
         lambda imported: within(imported, "stages.core", "stages.spread", "stages.tasks", "stages.reporting")),
    Rule("only the integration module imports Prefect in stages/",
         lambda importer: within(importer, "stages") and importer != INTEGRATION,
         lambda imported: not within(imported, "prefect"), watches=("prefect",)),
    Rule("nothing in stages/training or stages/tasks imports the integration",
         lambda importer: within(importer, "stages.training", "stages.tasks"),
         lambda imported: not within(imported, INTEGRATION)),
    Rule("a stage main imports only stages.tasks, training, reporting, spread and core",
         lambda importer: importer in {f"stages.{main}" for main in STAGE_MAINS},
         lambda imported: within(imported, "stages.tasks", "stages.training", "stages.reporting", "stages.spread",
                                 "stages.core")),
)


# --- reading the imports ---

def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in node, at any depth, except under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for branch in child.orelse:
                yield from _import_nodes(ast.Module(body=[branch], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _is_module(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(root: Path, path: Path, packages: tuple[str, ...] = PROJECT_PACKAGES) -> Iterator[Import]:
    """The modules of `packages` a file imports (`from stages import fetch` is stages.fetch)."""
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    relative = path.relative_to(root)
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if _is_module(root, f"{base}.{alias.name}") else base
                       for alias in node.names]
        for target in dict.fromkeys(targets):
            if within(target, *packages):
                yield Import(relative, node.lineno, target)


def violations(root: Path, rule: Rule) -> list[str]:
    """`path:line imports module` for every import under root/stages that breaks the rule."""
    found = []
    for path in sorted((root / "stages").rglob("*.py")):
        if not rule.applies_to(module_name(root, path)):
            continue
        found += [f"{item.path}:{item.line} imports {item.module}" for item in imports_of(root, path, rule.watches)
                  if not rule.allows(item.module)]
    return found


# --- the contract, on this checkout ---

@pytest.mark.parametrize("rule", [pytest.param(rule, id=rule.name) for rule in RULES])
def test_imports_point_down_only(rule: Rule):
    broken = violations(REPO_ROOT, rule)
    assert not broken, f"{rule.name}:\n  " + "\n  ".join(broken)


# --- the checker itself catches what it should ---

def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_broken_rule_is_named_with_its_file_line_and_import(tmp_path: Path):
    root = write(tmp_path, {
        "flows/__init__.py": "", "flows/pipeline.py": "",
        "stages/__init__.py": "", "stages/fetch.py": "", "stages/generate.py": "",
        "stages/core/__init__.py": "", "stages/core/io.py": "from stages.core import errors\n",
        "stages/core/tracking.py": "from prefect import flow\n",
        "stages/training/progress.py": "from stages.core import tracking\nimport prefect.artifacts\n",
        "stages/core/errors.py": "def run():\n    from flows import pipeline\n",
        "stages/training/__init__.py": "", "stages/training/model.py": "from ..reporting import page\n",
        "stages/reporting/__init__.py": "", "stages/reporting/page.py": "from . import figures\n",
        "stages/reporting/figures.py": "",
        "stages/tasks/__init__.py": "",
        "stages/tasks/mnist.py": "from stages.tasks import mnist_figures\n",
        "stages/tasks/mnist_figures.py": "from stages.reporting import figures\nfrom stages.training import model\n",
        "stages/tasks/heart.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import stages.fetch\n"
                                 "else:\n    import stages.training\n",
        "stages/preprocess.py": "from stages import fetch, generate\nimport stages.tasks.heart\n",
        "stages/spread.py": "from stages.core.io import csv_bytes\n",
    })
    found = {rule.name: violations(root, rule) for rule in RULES}
    assert found == {
        RULES[0].name: ["stages/core/errors.py:2 imports flows.pipeline"],
        RULES[1].name: ["stages/core/errors.py:2 imports flows.pipeline"],
        RULES[2].name: ["stages/training/model.py:1 imports stages.reporting.page"],
        RULES[3].name: [],
        RULES[4].name: ["stages/spread.py:1 imports stages.core.io"],
        RULES[5].name: ["stages/tasks/heart.py:5 imports stages.training",
                        "stages/tasks/mnist.py:1 imports stages.tasks.mnist_figures"],
        RULES[6].name: ["stages/tasks/mnist_figures.py:2 imports stages.training.model"],
        RULES[7].name: ["stages/training/progress.py:2 imports prefect.artifacts"],
        RULES[8].name: ["stages/training/progress.py:1 imports stages.core.tracking"],
        RULES[9].name: ["stages/preprocess.py:1 imports stages.fetch",
                        "stages/preprocess.py:1 imports stages.generate"],
    }


def test_a_missing_stages_tasks_package_is_no_error(tmp_path: Path):
    root = write(tmp_path, {"stages/__init__.py": "", "stages/train.py": "from stages.training import model\n",
                            "stages/training/__init__.py": "", "stages/training/model.py": ""})
    assert all(violations(root, rule) == [] for rule in RULES)


# --- no side effects on the process environment below the stage mains ---

def environment_writes(root: Path, packages: tuple[str, ...]) -> list[str]:
    """`path:line` of every `os.environ[...] = `, `os.environ.update/setdefault/pop`, `del os.environ[...]` and
    `os.putenv` in the modules of `packages`: a task or the training engine takes its settings as arguments."""
    found = []
    for path in sorted((root / "stages").rglob("*.py")):
        if not within(module_name(root, path), *packages):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
                       [node.target] if isinstance(node, ast.AugAssign) else [])
            writes = any(isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ"
                         for target in targets)
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                writes = called == "os.putenv" or called in {f"os.environ.{name}" for name in
                                                             ("update", "setdefault", "pop", "clear", "popitem")}
            if writes:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_tasks_and_training_set_no_environment_variables():
    found = environment_writes(REPO_ROOT, ("stages.tasks", "stages.training"))
    assert not found, "set in the process environment (pass the value where it is used):\n  " + "\n  ".join(found)


def test_the_environment_check_sees_each_kind_of_write(tmp_path: Path):
    root = write(tmp_path, {"stages/__init__.py": "", "stages/tasks/__init__.py": "",
                            "stages/tasks/heart.py": "import os\nos.environ['A'] = '1'\nos.environ.setdefault('B', '2')\n"
                                                     "os.putenv('C', '3')\nx = os.environ.get('D')\n",
                            "stages/fetch.py": "import os\nos.environ['E'] = '1'\n"})
    assert environment_writes(root, ("stages.tasks",)) == ["stages/tasks/heart.py:2", "stages/tasks/heart.py:3",
                                                          "stages/tasks/heart.py:4"]
