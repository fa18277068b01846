"""A safe arithmetic evaluator over Python's ``ast``.

Only numeric literals, the binary operators ``+ - * / // % **``, unary ``+``/``-`` and
parentheses are accepted. Names, calls, attribute access, subscripts, comparisons,
strings and everything else are rejected before anything is evaluated. Exponents and the
size of every intermediate integer are bounded so that an expression such as
``9**9**9`` is refused instead of exhausting the CPU or memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_EXPRESSION_LENGTH = 200
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_SYMBOL: dict[type[ast.AST], str] = {
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.Not: "not",
}


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def safe_eval(
    expression: str,
    *,
    max_length: int = MAX_EXPRESSION_LENGTH,
    max_exponent: int = MAX_EXPONENT,
    max_int_bits: int = MAX_INT_BITS,
) -> Number:
    """Evaluate an arithmetic expression with Python's semantics, or raise CalculatorError."""
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > max_length:
        raise CalculatorError(f"expression too long ({len(text)} > {max_length} characters)")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"invalid expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"invalid expression: {exc}") from None
    evaluator = _Evaluator(max_exponent=max_exponent, max_int_bits=max_int_bits)
    return evaluator.eval(tree.body)


def format_number(value: Number) -> str:
    """Render a result as Python prints it (``20``, ``2.5``)."""
    return repr(value)


class _Evaluator:
    def __init__(self, *, max_exponent: int, max_int_bits: int) -> None:
        self._max_exponent = max_exponent
        self._max_int_bits = max_int_bits

    def eval(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Constant):
            value = node.value
            # bool is an int subclass; complex literals (1j) are not plain arithmetic.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CalculatorError(f"only numbers are allowed, not {value!r}")
            return self._checked(value)
        if isinstance(node, ast.UnaryOp):
            unary = _UNARY.get(type(node.op))
            if unary is None:
                raise CalculatorError(f"operator {_symbol(node.op)} is not allowed")
            return self._checked(unary(self.eval(node.operand)))
        if isinstance(node, ast.BinOp):
            left = self.eval(node.left)
            right = self.eval(node.right)
            if isinstance(node.op, ast.Pow):
                return self._checked(self._power(left, right))
            binary = _BINARY.get(type(node.op))
            if binary is None:
                raise CalculatorError(f"operator {_symbol(node.op)} is not allowed")
            try:
                return self._checked(binary(left, right))
            except ZeroDivisionError:
                raise CalculatorError("division by zero") from None
            except OverflowError:
                raise CalculatorError("result too large") from None
        raise CalculatorError(_describe_rejected(node))

    def _power(self, base: Number, exponent: Number) -> Number:
        if abs(exponent) > self._max_exponent:
            raise CalculatorError(f"exponent {exponent!r} too large (limit {self._max_exponent})")
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
            estimated_bits = max(abs(base).bit_length() - 1, 0) * exponent
            if estimated_bits > self._max_int_bits:
                raise CalculatorError(f"result too large (more than {self._max_int_bits} bits)")
        try:
            result = base**exponent
        except ZeroDivisionError:
            raise CalculatorError("zero cannot be raised to a negative power") from None
        except OverflowError:
            raise CalculatorError("result too large") from None
        if isinstance(result, complex):
            raise CalculatorError("result is not a real number")
        return result

    def _checked(self, value: Number) -> Number:
        if isinstance(value, int):
            if value.bit_length() > self._max_int_bits:
                raise CalculatorError(f"result too large (more than {self._max_int_bits} bits)")
        elif not math.isfinite(value):
            raise CalculatorError("result is not a finite number")
        return value


def _symbol(op: ast.AST) -> str:
    return _SYMBOL.get(type(op), type(op).__name__)


def _describe_rejected(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"names are not allowed: {node.id!r}"
    if isinstance(node, ast.Call):
        return "function calls are not allowed"
    if isinstance(node, ast.Attribute):
        return f"attribute access is not allowed: .{node.attr}"
    if isinstance(node, ast.Subscript):
        return "subscripts are not allowed"
    if isinstance(node, ast.Compare):
        return "comparisons are not allowed"
    if isinstance(node, ast.BoolOp):
        return "boolean operators are not allowed"
    return f"{type(node).__name__} is not allowed in an arithmetic expression"
