"""The architecture's import rule, checked on the source: no import cycles, and imports run downward only.

Imports are read with ``ast``, so an import inside a function (or under ``TYPE_CHECKING``) counts as much as one at
the top of a module: a cycle through a deferred import is still a cycle. The package root (``modelprint``: the
version and lazy re-exports of the public API) stands outside the layers.

Source files stay under 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "modelprint"
MAX_LINES = 500

LAYERS: tuple[tuple[str, ...], ...] = (
    # ground floor
    ("errors", "atomic", "config", "seeding", "registry", "scores", "artefacts", "manifest", "executor"),
    ("io",),  # decoding, datasets, the real-image pool
    ("residuals", "spectra", "gallery"),  # the gallery stores and compares embeddings: nothing above io
    ("synthesis", "zoo"),  # generators: the synthetic space and the zoo of small real ones
    ("extractor",),  # the extractor's network, features, data and training
    ("methods",),  # black-box fingerprint methods (the extractor among them)
    ("evaluation",),  # metrics, protocols, and measurements of methods (the fallback thresholds)
    ("probes",),  # white-box probes of candidate diffusion models (scored with evaluation's metrics)
    ("provenance",),  # member / generated / external and attribution with reject, over the probes' adapters
    ("causal",),  # causal fingerprints: reconstruction residuals through the probes' adapters
    ("reports",),
    ("api",),  # the path-level public API
    ("demo",),
    ("service",),  # the REST service and web page over the API
    ("cli",),
)
"""The architecture's rule, lowest first: a module may import from its own layer or any lower one, never higher.
Each name is a top-level module or subpackage of ``modelprint``."""



def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``src``."""
    mods = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere in its source (the root package left out)."""
    mods = module_files(src, package)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = m.split(".") if is_pkg else m.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t == package or t.startswith(package + ".") else None
                if r and r != package and r != m and not m.startswith(r + "."):
                    graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str, layers: tuple[tuple[str, ...], ...], package: str) -> int:
    top = module.removeprefix(package + ".").split(".")[0]
    for i, names in enumerate(layers):
        if top in names:
            return i
    raise LookupError(f"{module} is in no layer: add {top!r} to LAYERS")


def upward_imports(
    graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...], package: str
) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where the imported module sits in a higher layer."""
    return sorted(
        (m, d)
        for m, deps in graph.items()
        if m != package
        for d in deps
        if layer_of(d, layers, package) > layer_of(m, layers, package)
    )


def big_files(src: Path, package: str, max_lines: int) -> dict[str, int]:
    """Source files of more than ``max_lines`` lines, by path relative to ``src``."""
    out = {}
    for f in module_files(src, package).values():
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > max_lines:
            out[f.relative_to(src).as_posix()] = n
    return out


GRAPH = import_graph(SRC, PACKAGE)


# ----------------------------------------------------------------------------------------------- the checker


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_cycles_through_deferred_and_relative_imports(tmp_path):
    src = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n",  # deferred: still an edge
        "pkg/high/__init__.py": "from . import core\n",
        "pkg/high/core.py": "from ..low import f\nimport pkg.other\n",
        "pkg/other.py": "",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high.core"] == {"pkg.low", "pkg.other"}
    assert cycles(graph) == [("pkg.high", "pkg.high.core", "pkg.low")]
    layers = (("low", "other"), ("high",))
    assert upward_imports(graph, layers, "pkg") == [("pkg.low", "pkg.high")]
    with pytest.raises(LookupError, match="'other' to LAYERS"):
        upward_imports(graph, (("low",), ("high",)), "pkg")


def test_checker_finds_big_files(tmp_path):
    src = _write(tmp_path, {"pkg/__init__.py": "", "pkg/long.py": "x = 1\n" * 11, "pkg/short.py": "x = 1\n" * 10})
    assert big_files(src, "pkg", 10) == {"pkg/long.py": 11}


# ----------------------------------------------------------------------------------------------- the rule


def test_every_module_is_in_a_layer():
    for m in GRAPH:
        if m != PACKAGE:
            layer_of(m, LAYERS, PACKAGE)


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_imports_run_downward():
    assert upward_imports(GRAPH, LAYERS, PACKAGE) == []


def test_no_source_file_over_500_lines():
    assert big_files(SRC, PACKAGE, MAX_LINES) == {}


def test_gallery_imports_nothing_above_io():
    allowed = {"errors", "atomic", "config", "seeding", "registry", "scores", "artefacts", "io", "gallery"}
    for m, deps in GRAPH.items():
        if m.startswith("modelprint.gallery"):
            assert {d.split(".")[1] for d in deps} <= allowed, m
