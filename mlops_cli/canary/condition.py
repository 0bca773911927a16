"""A canary analysis' `success_condition`: a small, safe expression over `result` and `stable`.

Parsed once with :mod:`ast` and checked against a whitelist, then evaluated by walking the tree
(never ``eval``): numbers, the names ``result`` (the canary's figure) and ``stable`` (the stable
revision's), ``+ - * / %`` and unary minus, comparisons (chains too), ``and``/``or``/``not``, and
calls of ``min``, ``max`` and ``abs``. Anything else (attributes, subscripts, strings, lambdas,
other names or calls, ``**`` which can be made arbitrarily expensive) is refused at parse time
with a one-line reason, so a bad condition is a config error at load, not a surprise mid-canary.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

NAMES = ("result", "stable")
FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
MAX_LENGTH = 500
MAX_NODES = 200

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class ConditionError(ValueError):
    """The condition is not an expression this evaluator accepts; the message is one line."""


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Expression):
        return _check(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ConditionError(f"only numbers are allowed as constants, not {node.value!r}")
        return None
    if isinstance(node, ast.Name):
        if node.id not in NAMES:
            raise ConditionError(f"unknown name {node.id!r} (known: result, stable)")
        return None
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ConditionError(f"operator {type(node.op).__name__} is not allowed (allowed: + - * / %)")
        _check(node.left)
        return _check(node.right)
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            raise ConditionError(f"operator {type(node.op).__name__} is not allowed")
        return _check(node.operand)
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value)
        return None
    if isinstance(node, ast.Compare):
        if any(type(op) not in _COMPARE for op in node.ops):
            raise ConditionError("only < <= > >= == != comparisons are allowed")
        for value in (node.left, *node.comparators):
            _check(value)
        return None
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ConditionError("only min(), max() and abs() can be called")
        if node.keywords or not node.args or any(isinstance(a, ast.Starred) for a in node.args):
            raise ConditionError(f"{node.func.id}() takes plain arguments only")
        if node.func.id == "abs" and len(node.args) != 1:
            raise ConditionError("abs() takes one argument")
        if node.func.id in ("min", "max") and len(node.args) < 2:
            raise ConditionError(f"{node.func.id}() takes two or more arguments")
        for arg in node.args:
            _check(arg)
        return None
    raise ConditionError(f"{type(node).__name__} is not allowed in a condition")


def parse(text: str) -> ast.Expression:
    """The checked tree of a condition; ConditionError (one line) when it is not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("the condition is empty")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"the condition is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"not a valid expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ConditionError("not a valid expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ConditionError(f"the condition has more than {MAX_NODES} parts")
    _check(tree)
    return tree


def names(text: str) -> set[str]:
    """The variables a (valid) condition uses."""
    return {n.id for n in ast.walk(parse(text)) if isinstance(n, ast.Name) and n.id in NAMES}


def _eval(node: ast.AST, env: dict[str, float]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        return (not value) if isinstance(node.op, ast.Not) else (-value if isinstance(node.op, ast.USub) else +value)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, env) for v in node.values)
        return any(_eval(v, env) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return FUNCTIONS[node.func.id](*(_eval(a, env) for a in node.args))
    raise ConditionError(f"{type(node).__name__} is not allowed in a condition")  # parse() refused it already


def evaluate(text: str, result: float, stable: float | None) -> tuple[bool | None, str]:
    """(True/False, "") when the condition holds or not; (None, why) when it cannot be decided
    (a figure it needs is missing or NaN, a division by zero)."""
    tree = parse(text)
    env = {"result": result, "stable": stable}
    for name in sorted(names(text)):
        value = env[name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, f"{name} has no value"
    try:
        value = _eval(tree, env)  # type: ignore[arg-type]
    except ZeroDivisionError:
        return None, "division by zero"
    except (OverflowError, TypeError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if isinstance(value, float) and math.isnan(value):
        return None, "the condition evaluates to NaN"
    return bool(value), ""
