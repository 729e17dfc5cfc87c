"""The function-length budget: no function of uav/, plugins/ or integrations/ is longer
than BUDGET lines.

What is counted: the lines from a function's first statement after its docstring to
the end of its last statement, blank lines and comments between them included. The
signature, the decorators and the docstring are not counted; a nested function counts
towards its parent's lines and is measured on its own as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 60
#: over the budget while another engineer owns the file (uav/models: the U-Net's
#: published constructor); the test fails once one of these fits, so the list only shrinks
PENDING: set[str] = set()


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((prefix + node.name, node))
            found += functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            found += functions(node, f"{prefix}{node.name}.")
        else:
            found += functions(node, prefix)
    return found


def over_budget() -> dict[str, int]:
    over = {}
    for folder in ("uav", "plugins", "integrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, fn in functions(ast.parse(path.read_text(encoding="utf-8"))):
                if (n := body_lines(fn)) > BUDGET:
                    over[f"{rel}::{name}"] = n
    return over


def test_no_function_is_over_the_budget() -> None:
    over = {name: n for name, n in over_budget().items() if name not in PENDING}
    assert over == {}, f"functions over {BUDGET} lines (split them): {over}"


def test_pending_functions_are_still_over_the_budget() -> None:
    assert set(over_budget()) >= PENDING, "a pending function fits now: remove it from PENDING"


def test_the_count_excludes_the_docstring_and_signature() -> None:
    src = 'def f(\n    a,\n):\n    """doc\n\n    more"""\n    x = 1\n\n    # why\n    return (\n        x)\n'
    (_, fn), = functions(ast.parse(src))
    assert body_lines(fn) == 5
