"""The project modules a module runs: its `stages.*`/`flows.*` imports, followed transitively.

Read from the source (AST), at module and function level, without `if TYPE_CHECKING:` blocks;
importing `a.b.c` also runs the packages `a` and `a.b` (their `__init__.py`). Used by the
dvc.yaml dependency test and the layer contract test.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("stages", "flows", "benchmarks")


def module_path(module: str, root: Path = REPO_ROOT) -> Path | None:
    """The file of a project module (`stages.core.io` -> stages/core/io.py), or None if it is not one."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_runtime(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (child for orelse in node.orelse for child in [orelse, *_walk_runtime(orelse)])
            continue
        yield node
        yield from _walk_runtime(node)


def direct_imports(module: str, root: Path = REPO_ROOT) -> set[str]:
    """The project modules one module imports directly (with the packages those imports run)."""
    path = module_path(module, root)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk_runtime(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PROJECT_PACKAGES and module_path(name, root) is not None:
                parts = name.split(".")
                found.update(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    found.discard(module)
    return found


def closure(module: str, root: Path = REPO_ROOT) -> set[str]:
    """`module` and every project module it runs, transitively."""
    seen, todo = set(), [module] + [".".join(module.split(".")[:d]) for d in range(1, module.count(".") + 1)]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(current, root) - seen)
    return seen


def closure_files(module: str, root: Path = REPO_ROOT) -> set[str]:
    """The closure as repository-relative file paths (`stages/core/io.py`), as dvc.yaml lists them."""
    return {module_path(name, root).relative_to(root).as_posix() for name in closure(module, root)}
