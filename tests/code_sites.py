"""One AST walk of lmdev's source for the tests that guard its load paths.

``sites()`` lists every call, import and class base in ``src/lmdev``, each with where it is
(``<module>``, ``function`` or ``Class.method``), the innermost function's bare name, and whether
an enclosing function calls ``require_safe`` (the scanner's gate). Two tests filter it:

- tests/unit/train/test_no_unpickle.py: nothing deserialises code-bearing data unless listed
  with its reason and its guard (``weights_only=True``, ``allow_pickle=False``, ...);
- tests/unit/secure/test_load_sites.py: every call that loads a model or array file runs after
  ``require_safe``, or is exempt with a reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmdev"
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Site:
    rel: str          # the file, relative to src/lmdev
    where: str        # "<module>", "function" or "Class.method"
    function: str     # the innermost function's name ("" outside any function)
    name: str         # the dotted call ("torch.load"), "import pickle", "from pickle import", a class base
    node: ast.AST     # the Call, Import/ImportFrom or ClassDef
    scanned: bool     # an enclosing function calls require_safe


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return dotted(node.func)
    return "?"


def _calls_require_safe(func: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and dotted(n.func).rsplit(".", 1)[-1] == "require_safe"
               for n in ast.walk(func))


class Walker(ast.NodeVisitor):
    """Collects the sites of one module; ``stack`` holds (name, is_class, scanned) scopes."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.stack: list[tuple[str, bool, bool]] = []
        self.found: list[Site] = []

    def _where(self) -> str:
        if not self.stack:
            return "<module>"
        if len(self.stack) > 1 and self.stack[-2][1]:
            return f"{self.stack[-2][0]}.{self.stack[-1][0]}"
        return self.stack[-1][0]

    def _add(self, name: str, node: ast.AST) -> None:
        function = next((n for n, is_class, _ in reversed(self.stack) if not is_class), "")
        scanned = any(s for _, _, s in self.stack)
        self.found.append(Site(self.rel, self._where(), function, name, node, scanned))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.stack.append((node.name, True, False))
        for base in node.bases:
            self._add(dotted(base), node)
        self.generic_visit(node)
        self.stack.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append((node.name, False, _calls_require_safe(node)))
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Call(self, node: ast.Call) -> None:
        self._add(dotted(node.func), node)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(f"import {alias.name}", node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._add(f"from {node.module} import", node)


def walk_source(rel: str, code: str) -> list[Site]:
    walker = Walker(rel)
    walker.visit(ast.parse(code))
    return walker.found


@cache
def sites(root: Path = SRC) -> tuple[Site, ...]:
    out: list[Site] = []
    for f in sorted(root.rglob("*.py")):
        out += walk_source(f.relative_to(root).as_posix(), f.read_text(encoding="utf-8"))
    return tuple(out)
