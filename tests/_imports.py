"""The import graph of the stratalab package, read from its source with ast (every import,
inside functions too): the basis of the architecture tests and of the issue-19 measures."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import stratalab

ROOT = Path(stratalab.__file__).resolve().parent


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the package (packages by their __init__)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    skip.add(id(n))
    return skip


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the stratalab modules it imports (at module level or inside functions; not under
    ``if TYPE_CHECKING``). ``from pkg import name`` counts as importing ``pkg.name`` where that is a
    module, else ``pkg``; a module's own ancestor packages (always imported before it) are left out."""
    mods = modules(root)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for alias in node.names:
                    targets.append(f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in mods else mod)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in mods and t != name and t not in ancestors:
                    graph[name].add(t)
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def function_lengths(root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(lines, module, function) of every function and method, longest first."""
    out = []
    for name, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, name, node.name))
    return sorted(out, reverse=True)


def module_lengths(root: Path = ROOT) -> list[tuple[int, str]]:
    """(lines, module), longest first."""
    return sorted(((len(p.read_text().splitlines()), n) for n, p in modules(root).items()), reverse=True)
