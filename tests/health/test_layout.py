"""The layout stays as CONTRIBUTING.md describes it: lint, import contracts, no private imports, no cycles."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "napari_medseg"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(module: str, node: ast.ImportFrom, is_pkg: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(top_level_only: bool):
    mods = _modules()
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, path.name == "__init__.py")
                if target and target.startswith("napari_medseg"):
                    yield name, target, node
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("napari_medseg"):
                        yield name, a.name, node


def test_no_private_name_is_imported_from_another_module() -> None:
    bad = []
    for name, target, node in _imports(top_level_only=False):
        if isinstance(node, ast.ImportFrom) and target != name:
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{name} imports {target}.{a.name} (line {node.lineno})")
    assert not bad, "\n".join(bad)


def test_no_module_level_import_cycles() -> None:
    mods = set(_modules())
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, target, node in _imports(top_level_only=True):
        cands = [f"{target}.{a.name}" for a in node.names] + [target] if isinstance(node, ast.ImportFrom) else [target]
        for c in cands:
            if c in mods and c != name:
                graph[name].add(c)
                break
    # packages import their own submodules at top level (the facade); that is not a cycle
    seen: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                cyc = stack[stack.index(n):] + [n]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cyc, cyc[1:], strict=False)):
                    cycles.append(" -> ".join(cyc))
            elif n not in seen:
                visit(n, stack)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: `pip install -e .[testing]` installs it")
    return exe


def test_ruff_passes() -> None:
    r = subprocess.run([_tool("ruff"), "check", "--no-fix", "src", "tests", "benchmarks", "scripts"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts_hold() -> None:
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert r.returncode == 0, r.stdout + r.stderr
