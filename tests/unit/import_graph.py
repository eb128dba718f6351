"""The package's own import graph, read from the source with ``ast`` (nothing is imported).

Every import statement counts, wherever it stands: at the top, inside a function, or under
``if TYPE_CHECKING:``. A deferred or type-only import still ties the two modules together
(one cannot be read, moved or tested without the other), so it is no way around a cycle.

An edge goes to the module named: ``from inference_club.services import jobs`` points at
``inference_club.services.jobs``, ``from inference_club.services.jobs import JobService``
too, and ``from inference_club import errors`` at ``inference_club.errors``. Importing a
module also runs its parents' ``__init__``; those implicit edges are left out, as the
package's ``__init__`` files hold no imports of their own siblings.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import inference_club

PACKAGE_ROOT = Path(inference_club.__file__).parent


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted module name → source file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, imported attribute or None) for each import statement of the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                yield source, alias.name


def import_graph(files: Mapping[str, Path] | None = None) -> dict[str, set[str]]:
    """Module → the package's modules it imports (itself excluded)."""
    files = module_files() if files is None else files
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for source, name in _imported_names(module, path):
            if name is not None and f"{source}.{name}" in files:
                targets.add(f"{source}.{name}")
            elif source in files:
                targets.add(source)
        targets.discard(module)
        graph[module] = targets
    return graph


def cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """One closed import path per group of modules that import each other, round or longer.

    Each returned path starts and ends with the same module, e.g. ``[a, b, a]``.
    """
    # Tarjan's strongly connected components, iteratively: no recursion limit to meet.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: Mapping[str, Set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    first = min(group)
    previous: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child not in group:
                    continue
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(previous[path[-1]])
                    return [first, *reversed(path[:-1]), first]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no path closes the group {sorted(group)}")  # a strong component always has one
