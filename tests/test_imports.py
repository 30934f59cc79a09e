"""The package's import structure: ``patchctl.api`` is a façade that only the CLI imports, and the
modules of ``patchctl`` import each other without a cycle at module level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "patchctl"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute name a ``from ... import`` statement imports from."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The patchctl modules an import statement loads (``from pkg import mod`` counts ``pkg.mod``)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {a.name for a in node.names}
    else:
        source = _resolve(module, node, MODULES[module].name == "__init__.py")
        names = {source}
        names |= {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
    return {n for n in names if n in MODULES}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(module: str) -> set[str]:
    """Imports run when the module is imported: module body statements, including those inside
    top-level if/try blocks, but not inside functions, classes or ``if TYPE_CHECKING``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        stmt = todo.pop()
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found |= _imported(module, stmt)
        elif isinstance(stmt, ast.If) and not _type_checking_block(stmt):
            todo += [*stmt.body, *stmt.orelse]
        elif isinstance(stmt, ast.Try):
            todo += [*stmt.body, *stmt.orelse, *stmt.finalbody, *(s for h in stmt.handlers for s in h.body)]
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return (found | parents) - {module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))}


def _all_imports(module: str) -> set[str]:
    """Every patchctl module the module imports anywhere (functions and TYPE_CHECKING included)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _imported(module, node)
    return found


def test_the_graph_sees_known_imports() -> None:
    assert "patchctl.registry.records" in _top_level_imports("patchctl.api")
    assert "patchctl.registry.store" not in _top_level_imports("patchctl.api")  # imported when a catalog opens
    assert "patchctl.registry.store" in _all_imports("patchctl.api")
    assert "patchctl.api" in _all_imports("patchctl.cli.patches")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_cli_imports_the_api_facade(module: str) -> None:
    if module.startswith("patchctl.cli.") or module in {"patchctl.cli", "patchctl.api"}:
        return
    assert "patchctl.api" not in _all_imports(module), f"{module} imports patchctl.api (only the CLI may)"


def test_no_import_cycle_at_module_level() -> None:
    graph = {m: _top_level_imports(m) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
