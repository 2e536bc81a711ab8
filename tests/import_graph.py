"""The package's module import graph, read with `ast` (nothing is imported), and code statistics.

Used by tests/test_layers.py; run as a script for the numbers a change reports:

    python -m tests.import_graph [--exclude unmasked.cli] [--top 10]

prints the import cycles (strongly connected modules) of the top-level imports alone and with
the imports inside functions added, the imports inside functions, the longest functions and the
lines of src/.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "unmasked"


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the package
    line: int
    in_function: bool  # inside a def (run when the function runs, not when the module loads)
    type_only: bool  # under `if TYPE_CHECKING:`


def module_files(src: Path = SRC) -> dict[str, Path]:
    """{module name: file} of every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False, type_only: bool = False):
    """(import node, in_function, type_only) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function, type_only
        func = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        typed = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _walk(child, func, typed)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module `name` loads: itself, or its longest prefix that is a module."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def imports(modules: dict[str, Path] | None = None) -> list[Import]:
    """Every import of a package module by a package module."""
    modules = module_files() if modules is None else modules
    out = []
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node, in_func, typed in _walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for a in node.names:  # `from pkg import submodule` loads the submodule
                    sub = f"{prefix}.{a.name}"
                    targets.append(sub if sub in modules else prefix)
            for t in targets:
                r = _resolve(t, modules)
                if r is not None and r != mod:
                    out.append(Import(mod, r, node.lineno, in_func, typed))
    return out


def graph(edges: list[Import], in_function: bool) -> dict[str, set[str]]:
    """Adjacency of the top-level imports (plus those inside functions when `in_function`);
    imports only for type checkers never run and are left out."""
    g: dict[str, set[str]] = {}
    for e in edges:
        if e.type_only or (e.in_function and not in_function):
            continue
        g.setdefault(e.source, set()).add(e.target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    nodes = set(g) | {w for ws in g.values() for w in ws}
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sorted(out)


def in_function_imports(modules: dict[str, Path] | None = None,
                        exclude: tuple[str, ...] = ()) -> list[tuple[str, int, str, str]]:
    """(module, line, statement, enclosing function) of every import statement inside a function."""
    modules = module_files() if modules is None else modules
    out = []

    def visit(node, mod, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and func:
                out.append((mod, child.lineno, ast.unparse(child), func))
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            visit(child, mod, inner)

    for mod, path in modules.items():
        if not _excluded(mod, exclude):
            visit(ast.parse(path.read_text(), str(path)), mod, "")
    return out


def functions(modules: dict[str, Path] | None = None,
              exclude: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """(lines, "module:qualified name") of every function and method, longest first; a function's
    lines run from its `def` (decorators left out) to its last line, nested functions included."""
    modules = module_files() if modules is None else modules
    out = []

    def visit(node, mod, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((child.end_lineno - child.lineno + 1, f"{mod}:{name}"))
                visit(child, mod, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, mod, prefix + child.name + ".")
            else:
                visit(child, mod, prefix)

    for mod, path in modules.items():
        if not _excluded(mod, exclude):
            visit(ast.parse(path.read_text(), str(path)), mod, "")
    return sorted(out, key=lambda t: (-t[0], t[1]))


def _excluded(mod: str, exclude: tuple[str, ...]) -> bool:
    return any(mod == e or mod.startswith(e + ".") for e in exclude)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exclude", action="append", default=[],
                   help="module (and its submodules) left out of the in-function and function counts")
    p.add_argument("--top", type=int, default=10, help="how many of the longest functions to list")
    p.add_argument("--list-imports", action="store_true", help="list every import inside a function")
    a = p.parse_args(argv)
    exclude = tuple(a.exclude)
    modules = module_files()
    edges = imports(modules)
    lines = sum(len(f.read_text().splitlines()) for f in modules.values())
    print(f"src/{PACKAGE}: {len(modules)} modules, {lines} lines")
    for label, with_func in (("top-level imports", False), ("with imports inside functions", True)):
        cyc = cycles(graph(edges, with_func))
        print(f"cycles, {label}: {len(cyc)}")
        for c in cyc:
            print("   ", " <-> ".join(c))
    inner = in_function_imports(modules, exclude)
    print(f"imports inside functions{' (excluding ' + ', '.join(exclude) + ')' if exclude else ''}: "
          f"{len(inner)}")
    if a.list_imports:
        for mod, line, stmt, func in inner:
            print(f"    {mod}:{line} ({func}): {stmt}")
    print("longest functions:")
    for n, name in functions(modules, exclude)[: a.top]:
        print(f"    {n:4d}  {name}")


if __name__ == "__main__":
    main()
