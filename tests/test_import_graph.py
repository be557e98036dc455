"""The import graph of mxfp4lab runs one way: every import (module-level or inside a function) goes to the
same layer or a lower one, and there is no cycle. The layer table below IS the architecture; a new module
must be placed in it (an unplaced module fails the test)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mxfp4lab"

#: Lowest first. A module belongs to the first entry that equals its dotted name (relative to mxfp4lab) or is
#: a package prefix of it ("backends" covers backends.*).
LAYERS = [
    # 0: numerics, model shapes, provenance; leaf utilities with no mxfp4lab imports
    ("formats", "models", "provenance", "bench.harness", "kernels.tiles", "flashinfer_build"),
    # 1: the data model, the results store, roofline floors
    ("moe_tensors", "results", "roofline"),
    # 2: physical layouts and the references (both only read the data model)
    ("layout", "reference"),
    # 3: checkpoint formats
    ("checkpoints",),
    # 4: checkpoint -> logical tensors; synthetic data in the real types
    ("prepare", "synthetic"),
    # 5: mxfp4lab's own kernels
    ("kernels",),
    # 6: backends (each derives its layout from the logical tensors)
    ("backends",),
    # 7: measuring and using backends
    ("bench", "dispatch", "distributed"),
    # 8: the studies and their figures
    ("studies",),
    # 9: interactive and report front ends
    ("widgets", "report"),
    # 10: the command
    ("cli", "__main__"),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (PKG / Path(*name.split(".")) / "__init__.py").exists() if name else True


def exists(name: str) -> bool:
    p = PKG / Path(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports_of(path: Path) -> set:
    """Every mxfp4lab module ``path`` imports, anywhere in the file (function-level imports included)."""
    me = module_name(path)
    base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    if path.name == "__init__.py" and me == "":
        base = []
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mxfp4lab" or a.name.startswith("mxfp4lab."):
                    out.add(a.name[len("mxfp4lab."):] if "." in a.name else "")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module is None or not (node.module == "mxfp4lab" or node.module.startswith("mxfp4lab.")):
                    continue
                pkg = node.module.split(".")[1:]
            else:
                pkg = base[: len(base) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            target = ".".join(pkg)
            out.add(target)
            for a in node.names:  # `from .pkg import submodule`
                sub = ".".join(pkg + [a.name])
                if exists(sub):
                    out.add(sub)
    out.discard(me)
    return {t for t in out if t}


def with_parents(name: str) -> set:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too; a package ``__init__`` that imports nothing adds no
    dependency (``bench/__init__`` is a docstring, so a tuner may use ``bench.harness``)."""
    parts = name.split(".")
    parents = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {name} | {p for p in parents if imports_of(PKG / Path(*p.split(".")) / "__init__.py")}


def build_graph() -> dict:
    graph = {}
    for path in sorted(PKG.rglob("*.py")):
        name = module_name(path)
        if not name:  # mxfp4lab/__init__.py: docstring only (checked below)
            continue
        deps = set()
        for t in imports_of(path):
            deps |= {p for p in with_parents(t) if p != name and not name.startswith(p + ".")}
        graph[name] = deps
    return graph


def layer_of(name: str) -> int:
    for i, entries in enumerate(LAYERS):
        for e in entries:
            if name == e or name.startswith(e + "."):
                return i
    raise AssertionError(f"mxfp4lab.{name} is in no layer of LAYERS: place it in tests/test_import_graph.py")


def find_cycle(graph: dict):
    """A cycle as a list of modules, or None (iterative DFS, three colours)."""
    state, stack_path = {}, []

    def visit(start):
        todo = [(start, iter(sorted(graph.get(start, ()))))]
        state[start] = 1
        stack_path.append(start)
        while todo:
            node, it = todo[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack_path.pop()
                todo.pop()
            elif state.get(nxt) == 1:
                return stack_path[stack_path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                stack_path.append(nxt)
                todo.append((nxt, iter(sorted(graph.get(nxt, ())))))
        return None

    for n in sorted(graph):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_every_import_runs_down_or_sideways():
    graph = build_graph()
    assert len(graph) > 40
    up = [(a, b) for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a)]
    assert not up, "imports that run back up (importer -> imported): " + ", ".join(f"{a} -> {b}" for a, b in up)


def test_no_import_cycle():
    cyc = find_cycle(build_graph())
    assert cyc is None, "import cycle: " + " -> ".join(cyc)


def test_the_package_root_imports_nothing():
    assert imports_of(PKG / "__init__.py") == set()


def test_the_checker_has_teeth():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # a relative import two levels up inside a function is seen
    assert "results" in imports_of(PKG / "studies" / "latency.py")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("brand_new_module")


def test_no_module_over_500_lines_without_a_reason():
    long = []
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        n = text.count("\n")
        head = text[:2000].lower()
        if n > 500 and "longer than most modules" not in head:
            long.append(f"{path.relative_to(PKG)} ({n} lines)")
    assert not long, "modules over 500 lines without a stated reason at the top: " + ", ".join(long)
