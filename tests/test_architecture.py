"""The layering the folders show (issue: one-way dependencies), checked on every import statement,
function-level ones included:

    nas/core                      imports only nas.core
    search_spaces/, latency/      import nas.core and their own package (not each other, not the engine)
    the engine (rest of nas/)     anything below; nothing below imports it
    the CLI (nas/cli*.py)         nothing imports it but itself

and no import cycles among the files of the three packages.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "search_spaces", "latency")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[mod.removesuffix(".__init__")] = f
    return out


def _graph() -> dict[str, set[str]]:
    files = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                t = resolve(n)
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def layer(mod: str) -> str:
    if mod == "nas.core" or mod.startswith("nas.core."):
        return "core"
    if mod.split(".")[0] in ("search_spaces", "latency"):
        return mod.split(".")[0]
    if mod.startswith("nas.cli"):
        return "cli"
    return "engine"


ALLOWED = {"core": {"core"}, "search_spaces": {"core", "search_spaces"}, "latency": {"core", "latency"},
           "engine": {"core", "search_spaces", "latency", "engine"},
           "cli": {"core", "search_spaces", "latency", "engine", "cli"}}


def test_every_import_points_down_the_layers() -> None:
    bad = sorted(f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, deps in _graph().items() for b in deps
                 if layer(b) not in ALLOWED[layer(a)])
    assert bad == []


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    """The rules above would miss violations if function-level imports were not read: a known one."""
    graph = _graph()
    # nas.pipeline imports the strategy catalog inside plan(): the checker must see that edge
    assert "nas.strategies.catalog" in graph["nas.pipeline"]
    assert layer("nas.core.arch") == "core" and layer("nas.cli_latency") == "cli"
    assert "latency" not in ALLOWED["search_spaces"] and "search_spaces" not in ALLOWED["latency"]


def test_core_imports_no_heavy_library() -> None:
    """Importing the core (and listing registries) loads no torch, onnxruntime or ray."""
    import subprocess
    import sys
    code = ("import sys, nas.core.arch, nas.core.space, nas.core.layer, nas.core.errors, nas.core.registry, "
            "nas.core.ops, nas.core.files; print(sorted(m for m in ('torch', 'onnxruntime', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
