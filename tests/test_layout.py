"""The package layout of DESIGN.md §2: layers, no cycles, one lazy export map.

These tests fail CI when an import runs against the layer order, when two modules import
each other (directly or through others), when the lazy ``_EXPORTS`` map and the
``TYPE_CHECKING`` imports of ``mmie/__init__.py`` drift apart, or when a submodule would
shadow a name its package re-exports.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import mmie

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mmie"


def _all_modules() -> list[str]:
    names = ["mmie"]
    for info in pkgutil.walk_packages(mmie.__path__, "mmie."):
        if info.name != "mmie.__main__":  # runs the CLI
            names.append(info.name)
    return names


def test_layers_contract_is_kept() -> None:
    """import-linter's layers contract (pyproject.toml) holds for every import, local ones
    and TYPE_CHECKING ones included."""
    # In a subprocess: import-linter reconfigures logging, which would break caplog tests.
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_strongly_connected_finds_a_planted_cycle() -> None:
    """The cycle finder itself works (a control: it must see a cycle that is there)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    """No module imports itself through others (package ``__init__`` re-exports aside)."""
    graph_ = grimp.build_graph("mmie", include_external_packages=False)
    graph: dict[str, set[str]] = {}
    for module in graph_.modules:
        if module == "mmie":  # the lazy root re-exports everything by design
            continue
        graph[module] = {m for m in graph_.find_modules_directly_imported_by(module) if m != "mmie"}
    assert _strongly_connected(graph) == []


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = str(stmt.module)
    return found


def test_lazy_exports_and_type_checking_imports_agree() -> None:
    exports = dict(mmie._EXPORTS)
    assert _type_checking_imports() == exports
    for name, module in exports.items():
        assert getattr(importlib.import_module(module), name) is getattr(mmie, name)


def test_public_names_of_0_1_are_all_still_exported() -> None:
    before = (ROOT / "tests" / "public_api_0.1.txt").read_text(encoding="utf-8").split()
    missing = sorted(set(before) - set(mmie.__all__))
    assert missing == []


def test_interventions_stays_the_public_function_after_every_import() -> None:
    """A package named ``interventions`` would replace ``mmie.interventions`` the moment one
    of its modules is imported; import everything and check the function is still there."""
    for name in _all_modules():
        importlib.import_module(name)
    assert callable(mmie.interventions)
    assert mmie.interventions.__module__ == "mmie.models.hooks"


@pytest.mark.parametrize(
    "package",
    [
        m
        for m in _all_modules()
        if (SRC / m[5:].replace(".", "/") / "__init__.py").is_file() or m == "mmie"
    ],
)
def test_no_submodule_is_named_like_a_name_its_package_reexports(package: str) -> None:
    pkg = importlib.import_module(package)
    reexported = set(getattr(pkg, "__all__", ()))
    submodules = {info.name for info in pkgutil.iter_modules(pkg.__path__)}
    assert reexported & submodules == set()


def test_every_module_is_in_a_layer() -> None:
    """New top-level modules or packages must be placed in the layers contract."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    layered = set(re.findall(r"\bmmie\.([A-Za-z_]+)", text.split("[tool.importlinter]", 1)[1]))
    top = {info.name for info in pkgutil.iter_modules(mmie.__path__)} - {"__main__"}
    assert top - layered == set()


_LOCAL_IMPORT_REASON = re.compile(r"#\s*\S")


def test_function_local_mmie_imports_say_why() -> None:
    """An import of an mmie module inside a function saves nothing (every module imports
    torch at the top and ``mmie/__init__`` is lazy) unless it breaks a cycle or defers an
    optional dependency; such an import must carry a comment saying why."""
    offenders = []
    for path in SRC.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                module = None
                if isinstance(inner, ast.ImportFrom) and inner.level == 0:
                    module = inner.module
                elif isinstance(inner, ast.Import):
                    module = inner.names[0].name
                if module and (module == "mmie" or module.startswith("mmie.")):
                    # the reason: a comment on the statement or on the line above it
                    span = lines[inner.lineno - 2 : inner.end_lineno]
                    if not any(_LOCAL_IMPORT_REASON.search(line) for line in span):
                        where = f"{path.relative_to(ROOT)}:{inner.lineno}"
                        offenders.append(f"{where}: {lines[inner.lineno - 1].strip()}")
    assert offenders == []
