"""The package's shape: its imports form no cycle, and the layers import only downwards.

Imports are read from the source with ``ast`` (module level and inside functions alike), so a
lazy import that would close a circle is caught as well.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rapids_geovq"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str, modules: dict) -> str | None:
    """The package module an import names (a module, or the package holding a name)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _package_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    prefix = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
            for t in targets:
                if not t.startswith("rapids_geovq"):
                    continue
                dep = _resolve(t, modules)
                if dep and dep != mod:
                    graph[mod].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph):
    """Edges to a package's ``__init__`` from inside that package are how Python loads it, not a
    dependency of the module on its siblings; keep only module-to-module edges."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
    cycles = _cycles(_without_package_inits(import_graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downwards():
    """common <- cpu, gpu <- backends <- geodesic <- pipeline <- cli: the GPU and CPU
    implementations see only the neutral helpers, never the math that uses them."""
    graph = import_graph()
    allowed = {
        "rapids_geovq.common": {"rapids_geovq.common"},
        "rapids_geovq.cpu": {"rapids_geovq.common", "rapids_geovq.cpu"},
        "rapids_geovq.gpu": {"rapids_geovq.common", "rapids_geovq.gpu"},
        "rapids_geovq.backends": {"rapids_geovq.common", "rapids_geovq.cpu", "rapids_geovq.gpu",
                                  "rapids_geovq.backends"},
    }
    for mod, deps in graph.items():
        for layer, ok in allowed.items():
            if mod == layer or mod.startswith(layer + "."):
                bad = [d for d in deps if not any(d == a or d.startswith(a + ".") for a in ok)]
                assert not bad, f"{mod} imports {bad}, above its layer"
