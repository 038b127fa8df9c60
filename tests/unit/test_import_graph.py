"""vidshard's modules import each other without cycles.

The graph is read from the source with :mod:`ast`, not by importing it: every ``import``
and ``from ... import`` statement whose target is a vidshard module is an edge, wherever it
stands: at module level, inside a function (a "lazy" import), under ``try``, and under
``if TYPE_CHECKING:``. An import inside a function still runs (only later), so a cycle hidden
there is still a cycle. ``TYPE_CHECKING`` imports are counted too, though they never run:
they are still a dependency of the module's design (its signatures name the other module,
and ``typing.get_type_hints``, pydantic or a doc build evaluate them at run time), and a pair
of modules that each need the other to be understood is the tangle this test is here to
keep out. The one way around a cycle is a structural fix: move what both sides need to a
module both import, or have one side take plain data or a small protocol.

How a statement becomes an edge:

- ``import a.b.c`` is an edge to the deepest vidshard module it names (``a.b.c``, or
  ``a.b`` when ``c`` is not a module). The packages above it are not counted: every
  module would otherwise depend on ``vidshard/__init__.py``.
- ``from a.b import name`` is an edge to ``a.b.name`` when that is a submodule, else to
  ``a.b``. Relative imports are resolved against the importing module's package.
- ``importlib.import_module("...")`` with a string is not seen (nor is ``__import__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True)
class ImportLine:
    """One import statement that makes an edge ``source -> target``."""

    source: str
    target: str
    file: str  # "vidshard/client.py", relative to the source root
    line: int
    text: str  # the statement as written, on one line

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_files(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Each module of ``package`` under ``src``: its dotted name -> (file, is a package)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def _deepest(name: str, modules: Mapping[str, object]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, object]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (found := _deepest(alias.name, modules)) is not None:
                yield found
        return
    if node.level:  # relative: from the importing module's package, one level up per dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        if submodule in modules:
            yield submodule
        elif (found := _deepest(origin, modules)) is not None:
            yield found


def import_lines(src: Path, package: str) -> list[ImportLine]:
    """Every edge between ``package``'s own modules, each with the statement that makes it."""
    modules = module_files(src, package)
    lines: list[ImportLine] = []
    for module, (path, is_package) in modules.items():
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            text = " ".join((ast.get_source_segment(source, node) or "").split())
            file = path.relative_to(src).as_posix()
            for target in sorted(set(_targets(node, module, is_package, modules))):
                if target != module:
                    lines.append(ImportLine(module, target, file, node.lineno, text))
    return lines


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(edges.get(root, ()))))]
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(edges.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def graph(lines: list[ImportLine]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for line in lines:
        edges.setdefault(line.source, set()).add(line.target)
        edges.setdefault(line.target, set())
    return edges


def describe(components: list[list[str]], lines: list[ImportLine]) -> str:
    """Each cycle, then every import statement between its members (file:line)."""
    parts = []
    for component in components:
        members = set(component)
        inside = [ln for ln in lines if ln.source in members and ln.target in members]
        parts.append(
            f"cycle of {len(component)}: {' <-> '.join(component)}\n"
            + "\n".join(
                f"  {ln.where}: {ln.text}  ({ln.source} -> {ln.target})"
                for ln in sorted(inside, key=lambda ln: (ln.source, ln.line, ln.target))
            )
        )
    return "\n".join(parts)


def test_vidshard_imports_have_no_cycles() -> None:
    lines = import_lines(SRC, "vidshard")
    found = cycles(graph(lines))
    assert not found, (
        f"{len(found)} import cycle(s) among vidshard's modules (every import counts, "
        "also inside functions and under TYPE_CHECKING):\n" + describe(found, lines)
    )


# -- the graph builder sees what it must --------------------------------------------------


def test_the_graph_has_vidshards_real_edges() -> None:
    # Without these the test above could pass by reading nothing.
    lines = import_lines(SRC, "vidshard")
    edges = graph(lines)
    assert len(module_files(SRC, "vidshard")) > 50
    assert "vidshard.media" in edges["vidshard.engine.upscale"]  # from vidshard.media import
    assert "vidshard.media.probe" in edges["vidshard.engine.upscale"]  # ... probe: a module
    assert "vidshard.media.colour" in edges["vidshard.media.reader"]  # from .colour import
    assert "vidshard.errors" in edges["vidshard.client"]


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_cycle_through_a_function_and_type_checking_is_found(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from .sub.b import B\n    return B\n",
            "pkg/sub/__init__.py": "",
            # b -> c under TYPE_CHECKING, c -> a with a package-relative `from .. import a`
            "pkg/sub/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.sub.c\n"
            ),
            "pkg/sub/c.py": "from .. import a\n",
            "pkg/d.py": "from pkg.sub import b\nimport os\n",  # into the cycle, not part of it
        },
    )
    lines = import_lines(tmp_path, "pkg")
    found = cycles(graph(lines))
    assert found == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
    message = describe(found, lines)
    assert "pkg/a.py:2: from .sub.b import B  (pkg.a -> pkg.sub.b)" in message
    assert "pkg/sub/b.py:3: import pkg.sub.c  (pkg.sub.b -> pkg.sub.c)" in message
    assert "pkg/sub/c.py:1: from .. import a  (pkg.sub.c -> pkg.a)" in message
    assert "pkg.d" not in message


def test_a_name_that_is_no_submodule_is_an_edge_to_its_package(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import thing\n",
            "pkg/a.py": "from pkg import thing as again\nthing = 1\n",  # pkg.a -> pkg
        },
    )
    found = cycles(graph(import_lines(tmp_path, "pkg")))
    assert found == [["pkg", "pkg.a"]]
