"""No module of the package imports one that imports it back, however indirectly.

The rule for what counts as an import is in :mod:`tests.unit.import_graph`: every import
statement, including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.import_graph import cycles, import_graph, module_files


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(path) for path in found)


def test_the_graph_reads_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("from ..top import thing\n")
    (package / "top.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.sub.leaf import x\n"
        "def later() -> None:\n    import pkg.other\n"
    )
    (package / "other.py").write_text("import os\n")
    graph = import_graph(module_files(package))
    assert graph == {
        "pkg": set(),
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": {"pkg.top"},
        "pkg.top": {"pkg.sub.leaf", "pkg.other"},
        "pkg.other": set(),
    }
    assert cycles(graph) == [["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]]


def test_a_longer_cycle_is_named_in_order() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
