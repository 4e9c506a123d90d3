"""The shape of the package (issue 19): imports run one way down the layers with no cycle
(imports inside functions counted), no module over 900 lines, no function over 100 lines."""

from __future__ import annotations

from ._imports import cycles, function_lengths, import_graph, module_lengths

# Low to high: a module may import modules of its own package and of lower layers only; the
# packages of one layer are independent of each other.
LAYERS: list[set[str]] = [
    {"_io", "_validation", "_config", "_indices", "_device"},
    {"metrics", "analysis", "attribution", "debias", "discover"},
    {"data"},
    {"models"},
    {"augment"},
    {"train"},
    {"report"},
    {"experiments"},
    {"cli"},
]
MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 100


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package stratalab.{package} is in no layer of tests/test_architecture.py; add it to one.")


def test_no_import_cycle_among_stratalab_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_imports_run_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        if not _package(module):
            continue
        src = _layer(_package(module))
        for t in targets:
            if _package(t) != _package(module) and _package(t) and _layer(_package(t)) >= src:
                upward.append(f"{module} -> {t}")
    assert not upward, "imports that do not run down the layers: " + ", ".join(sorted(upward))


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check itself: a lower layer importing a higher one is reported."""
    pkg = tmp_path / "stratalab"
    for sub in ("data", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "x.py").write_text("def f():\n    from ..train import y\n")
    (pkg / "train" / "y.py").write_text("from ..data import x\n")
    graph = import_graph(pkg)
    assert graph["stratalab.data.x"] == {"stratalab.train.y"}
    assert cycles(graph) == [["stratalab.data.x", "stratalab.train.y"]]


def test_no_module_is_longer_than_900_lines():
    long = [(n, m) for n, m in module_lengths() if n > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_100_lines():
    long = [(n, m, f) for n, m, f in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"
