"""No import cycles between the project's modules, not even through an import inside a function.

Every module of ``vggjit/`` and of each package in ``drivers/`` is parsed (not imported), every
``import`` and ``from ... import`` at any depth is read, relative imports are resolved, and
the imports between project modules form a graph that must have no cycle. A package's
``__init__`` is the module named after the package; importing a submodule is not counted as
importing its parent package (Python runs the parent first, but a parent importing its own
submodules is the ordinary layout, not a cycle).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_modules(roots: list[Path]) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the top-level packages ``roots``."""
    modules = {}
    for package in roots:
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(package.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` (in file ``path``) imports, at any depth."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()

    def add(dotted: str) -> None:
        # `import a.b.c` of a name that is not a module (an attribute) counts as its module
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        if dotted:
            found.add(dotted)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in known else base)
    found.discard(name)  # a package's __init__ reading its own names: no cycle
    return found


def import_graph(roots: list[Path]) -> dict[str, set[str]]:
    modules = project_modules(roots)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a → b → ... → a) per strongly connected component that has one."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def connect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(min(c), c, graph) for c in components]


def _cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start → ... → start inside ``component`` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_no_import_cycles_in_the_project():
    roots = [ROOT / "vggjit"] + sorted(p for p in (ROOT / "drivers").iterdir()
                                       if (p / "__init__.py").is_file())
    graph = import_graph(roots)
    assert "vggjit.network" in graph and "vggjit_naive" in graph  # it did find the modules
    assert "vggjit.errors" in graph["vggjit.network"]  # and read their imports
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import thing\n")
    (package / "a.py").write_text("import pkg.sub.b\nthing = 1\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def late():\n    from .. import a\n")
    (package / "c.py").write_text("from pkg.sub import b\nfrom pkg import a\n")
    graph = import_graph([package])
    assert graph["pkg.sub.b"] == {"pkg.a"}  # `from .. import a` resolved to the module
    assert graph["pkg.c"] == {"pkg.sub.b", "pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
