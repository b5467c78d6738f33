"""Which library files a pipeline script runs: its transitive ``lenslab`` imports, read from the
source (no import, no torch), so that editing a module reruns exactly the jobs that use it.

Every import statement counts, also those inside functions (lazy imports still run when the job
runs). A package's lazy-name map (:mod:`lenslab.lazy`: ``{"Name": "lenslab.pkg.module"}``) counts
only for the names a file imports from that package (``from lenslab.pkg import Name``), as at run
time. Importing ``lenslab.a.b`` runs ``lenslab/__init__.py`` and ``lenslab/a/__init__.py`` first,
so those are inputs too.

Pipeline layer: used by ``workflow/rules/common.smk`` when the DAG is built.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

PACKAGE = "lenslab"
_MODULE_STRING = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)+$")


def module_file(src: Path, module: str) -> Path | None:
    """The file of ``module`` (dotted, ``lenslab.x.y``) under ``src``, or None if there is none
    (an attribute imported from a package, not a module)."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_of(src: Path, path: Path) -> str:
    """Dotted package a file belongs to (the package itself for an ``__init__.py``)."""
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1])


@cache
def lazy_names(path: Path) -> dict[str, str]:
    """The lazy-name map of a package ``__init__`` (name -> module), empty if it has none."""
    names: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and _MODULE_STRING.match(value.value)
                ):
                    names[str(key.value)] = value.value
    return names


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def imported_modules(src: Path, path: Path) -> set[str]:
    """Every ``lenslab`` module ``path`` imports, at any depth of its syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    in_src = path.is_relative_to(src)
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and in_src:
                pkg = _package_of(src, path).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            found.add(base)
            init = module_file(src, base) if base.startswith(PACKAGE) else None
            lazy = lazy_names(init) if init is not None and init.name == "__init__.py" else {}
            for alias in node.names:
                # `from lenslab.a import b`: b is a module of its own, or a lazy name, or neither.
                found.add(f"{base}.{alias.name}")
                if alias.name in lazy:
                    found.add(lazy[alias.name])
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _closure(src: Path, path: Path) -> frozenset[Path]:
    todo, seen = [path], set()
    while todo:
        current = todo.pop()
        for module in imported_modules(src, current):
            for name in _with_parents(module):
                dep = module_file(src, name)
                if dep is not None and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
    return frozenset(seen)


def library_inputs(script: str | Path, src: str | Path) -> list[str]:
    """Sorted library files (under ``src``, the directory holding ``lenslab/``) that ``script``
    runs, directly or through other library modules."""
    src = Path(src)
    return sorted(str(p) for p in _closure(src, Path(script)))
