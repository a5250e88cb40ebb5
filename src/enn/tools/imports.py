"""The import graph of ``enn``'s sources, read with ``ast``, and the layering it must keep.

    python -m enn.tools.imports [--modules] [SRC]

Each package is a layer and may import only the layers before it (``LAYERS``); the package
``enn`` itself offers the layer (``nn``, ``ops``). Every import counts, also those inside
functions. Reported: an import of a later layer, of a private name or module (``_name``) of
another layer, and a cycle between modules. Exit code 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("ops", "nn", "models", "data", "analysis", "train", "cli", "tools")
ROOT_LAYER = "nn"  # enn/__init__.py re-exports the layer's API


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module, e.g. "enn.train.run"
    target: str  # the imported module
    name: str | None  # the name imported from it (``from target import name``), if any
    line: int


def modules_of(src: Path, package: str = "enn") -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``src/<package>``."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def edges_of(src: Path, package: str = "enn") -> list[Edge]:
    """Every import of a module of ``package`` by a module of ``package``."""
    modules = modules_of(src, package)
    edges = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        edges.append(Edge(module, alias.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                if target.split(".")[0] != package:
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:  # ``from . import native``: the module itself
                        edges.append(Edge(module, submodule, None, node.lineno))
                    else:
                        edges.append(Edge(module, target, alias.name, node.lineno))
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_LAYER


def _private(edge: Edge) -> bool:
    parts = edge.target.split(".")[1:] + ([edge.name] if edge.name else [])
    return any(p.startswith("_") for p in parts)


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Cycles between modules (at least one through every knot), each as the modules along
    it, from its smallest."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.source != e.target:
            graph.setdefault(e.source, set()).add(e.target)
    found: set[tuple[str, ...]] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                first = cycle.index(min(cycle))
                found.add(tuple(cycle[first:] + cycle[:first]))
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return [[*c, c[0]] for c in sorted(found)]


def violations(edges: list[Edge]) -> list[str]:
    """One line per broken rule (empty: the layering holds)."""
    problems = []
    for e in edges:
        source, target = layer_of(e.source), layer_of(e.target)
        where = f"{e.source}:{e.line}"
        imported = e.target + (f".{e.name}" if e.name else "")
        if source == target:
            continue
        if target not in LAYERS or source not in LAYERS:
            problems.append(f"{where}: {imported}: a package outside LAYERS")
        elif LAYERS.index(target) > LAYERS.index(source):
            problems.append(f"{where}: imports {imported}, of the later layer {target}")
        if _private(e):
            problems.append(f"{where}: imports the private {imported} of the layer {target}")
    problems += [f"cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def layer_graph(edges: list[Edge]) -> dict[str, list[str]]:
    """Each layer -> the other layers it imports, in ``LAYERS`` order."""
    uses: dict[str, set[str]] = {layer: set() for layer in LAYERS}
    for e in edges:
        source, target = layer_of(e.source), layer_of(e.target)
        if source != target:
            uses.setdefault(source, set()).add(target)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    return {k: sorted(v, key=lambda t: order.get(t, len(order))) for k, v in uses.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enn.tools.imports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parents[2]),
                        help="the folder holding enn/ (default: this package's)")
    parser.add_argument("--modules", action="store_true", help="also every module's imports")
    args = parser.parse_args(argv)
    edges = edges_of(Path(args.src))
    print("layers, lowest first: " + " -> ".join(LAYERS))
    for layer, targets in layer_graph(edges).items():
        print(f"  {layer:<9} imports {', '.join(targets) or 'no other layer'}")
    if args.modules:
        by_source: dict[str, set[str]] = {}
        for e in edges:
            by_source.setdefault(e.source, set()).add(e.target)
        for source, targets in sorted(by_source.items()):
            print(f"{source} -> {', '.join(sorted(targets - {source}))}")
    problems = violations(edges)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)" if problems else "no upward, private or cyclic import")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
