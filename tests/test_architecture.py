"""The layering the folders show, checked on every import statement, function-level ones included.

The order is the one written in the README's "Layout and layers" section (the block between the
`layers:` markers): a package imports only packages on lines above its own, never one on its own line.
A package is `nas.<subpackage>`, `search_spaces`, `latency`, or `nas` itself (the API modules directly in
nas/; `nas/__main__.py` belongs to the CLI). Also: no import cycles among the files of the three packages.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "search_spaces", "latency")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[mod.removesuffix(".__init__")] = f
    return out


def _imports(files: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(importing module, line, imported module of ours) for every import statement."""

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    out = []
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
                    out.append((mod, node.lineno, t))
    return out


def _graph() -> dict[str, set[str]]:
    files = _modules()
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, _, target in _imports(files):
        graph[mod].add(target)
    return graph


def readme_layers(text: str | None = None) -> list[list[str]]:
    """The package order from the README: one line per layer, lowest first."""
    text = (ROOT / "README.md").read_text() if text is None else text
    m = re.search(r"<!-- layers: begin -->\n```\n(.*?)```\n<!-- layers: end -->", text, re.S)
    if m is None:
        raise AssertionError("README.md has no layer order between <!-- layers: begin/end --> markers")
    rows = []
    for line in m.group(1).splitlines():
        names = line.split("#")[0].split()
        if names:
            rows.append(names)
    return rows


def unit(mod: str) -> str:
    """The package a module belongs to, as the layer order names it."""
    parts = mod.split(".")
    if parts[0] != "nas":
        return parts[0]
    if mod == "nas.__main__":
        return "nas.cli"
    if len(parts) > 1 and (ROOT / "nas" / parts[1]).is_dir():
        return f"nas.{parts[1]}"
    return "nas"


def violations(layers: list[list[str]]) -> list[str]:
    rank = {name: i for i, row in enumerate(layers) for name in row}
    files = _modules()
    bad = []
    for mod, line, target in _imports(files):
        a, b = unit(mod), unit(target)
        if a == b:
            continue
        where = f"{files[mod].relative_to(ROOT)}:{line}"
        if a not in rank or b not in rank:
            bad.append(f"{where}: {a} -> {b}: {a if a not in rank else b} is not in the README's layer order")
        elif rank[b] >= rank[a]:
            how = "on the same layer as" if rank[b] == rank[a] else "above"
            bad.append(f"{where}: {a} imports {b}, which is {how} it")
    return sorted(set(bad))


def test_every_import_points_down_the_layers() -> None:
    assert violations(readme_layers()) == []


def test_every_package_is_in_the_layer_order() -> None:
    named = {name for row in readme_layers() for name in row}
    present = {unit(m) for m in _modules()}
    assert present - named == set(), "packages missing from the README's layer order"
    assert named - present == set(), "the README's layer order names packages that do not exist"


def test_the_order_check_names_file_and_line_of_an_upward_import() -> None:
    """Swap two layers the code depends on: the check must report the imports by file and line."""
    layers = readme_layers()
    i = next(k for k, row in enumerate(layers) if "nas.store" in row)
    j = next(k for k, row in enumerate(layers) if "nas.pipeline" in row)
    swapped = [list(r) for r in layers]
    swapped[i].remove("nas.store")
    swapped[j].append("nas.store")   # now the store sits beside the pipeline, above the strategies
    bad = violations(swapped)
    assert any(re.match(r"nas/strategies/\S+\.py:\d+: nas\.strategies imports nas\.store, which is above it", b)
               for b in bad), bad[:5]
    assert any("nas.pipeline imports nas.store, which is on the same layer as it" in b for b in bad)


def test_a_readme_without_the_order_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="no layer order"):
        readme_layers("no markers here")
    empty = readme_layers("<!-- layers: begin -->\n```\n```\n<!-- layers: end -->")
    assert empty == [] and violations(empty)   # every cross-package import is then reported


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
    # nas.pipeline.search imports the strategy catalog inside plan(): the checker must see that edge
    assert "nas.strategies.catalog" in graph["nas.pipeline.search"]
    assert unit("nas.core.arch") == "nas.core" and unit("nas.cli.latency") == "nas.cli"
    assert unit("nas.api") == "nas" and unit("latency.devices.pixel1") == "latency"
    rank = {name: i for i, row in enumerate(readme_layers()) for name in row}
    assert rank["nas.core"] < rank["search_spaces"] < rank["latency"] < rank["nas.pipeline"] < rank["nas"] < rank["nas.cli"]


def test_core_imports_no_heavy_library() -> None:
    """Importing the core (and listing registries) loads no torch, onnxruntime or ray."""
    import subprocess
    import sys
    code = ("import sys, nas.core.arch, nas.core.space, nas.core.layer, nas.core.errors, nas.core.registry, "
            "nas.core.ops, nas.core.files; print(sorted(m for m in ('torch', 'onnxruntime', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
