from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from loom_agent_worker.runtime import CalculatorError, safe_eval


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(2+3)*4", 20),
        ("2+3*4", 14),
        ("2**3**2", 512),
        ("-2**2", -4),
        ("(-2)**2", 4),
        ("7//2", 3),
        ("-7//2", -4),
        ("-7 % 3", 2),
        ("7/2", 3.5),
        ("10 - 4 - 3", 3),
        ("2 * (3 + 4) - -1", 15),
        ("+5", 5),
        ("1.5 * 4", 6.0),
        ("2 ** -1", 0.5),
        ("  42 ", 42),
    ],
)
def test_evaluates_with_python_precedence(expression: str, expected: float) -> None:
    result = safe_eval(expression)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "function calls are not allowed"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("x + 1", "names are not allowed: 'x'"),
        ("(1).real", "attribute access is not allowed: .real"),
        ("().__class__", "attribute access is not allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("True + 1", "only numbers are allowed"),
        ("1j * 2", "only numbers are allowed"),
        ("[1, 2][0]", "subscripts are not allowed"),
        ("1 < 2", "comparisons are not allowed"),
        ("1 and 2", "boolean operators are not allowed"),
        ("1 if 1 else 2", "IfExp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 << 2", "operator << is not allowed"),
        ("1 & 3", "operator & is not allowed"),
        ("~1", "operator ~ is not allowed"),
        ("9**9**9", "exponent 387420489 too large"),
        ("2**5000", "exponent 5000 too large"),
        ("(10**900)**4", "result too large"),
        ("(2**1000) ** 4 * 2**100", "result too large"),
        ("(8**1000) * (8**1000) * (8**1000)", "result too large"),
        ("10.0**400", "result too large"),
        ("1e308 * 10", "not a finite number"),
        ("(-8) ** 0.5", "not a real number"),
        ("1/0", "division by zero"),
        ("5 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "zero cannot be raised to a negative power"),
        ("2 +", "invalid expression"),
        ("", "empty expression"),
        ("1+" * 150 + "1", "expression too long"),
    ],
)
def test_rejects_with_a_clear_reason(expression: str, reason: str) -> None:
    with pytest.raises(CalculatorError) as caught:
        safe_eval(expression)
    assert reason in str(caught.value)


def test_limits_are_configurable() -> None:
    assert safe_eval("2**10", max_exponent=10) == 1024
    with pytest.raises(CalculatorError, match="exponent 11 too large"):
        safe_eval("2**11", max_exponent=10)
    with pytest.raises(CalculatorError, match="expression too long"):
        safe_eval("1+1", max_length=2)


# Integer expressions with Python's own precedence: operands are small ints or int powers,
# combined by + - * // % with and without parentheses and with unary minus.
_atoms = st.one_of(
    st.integers(min_value=0, max_value=1000).map(str),
    st.tuples(st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=3)).map(
        lambda t: f"{t[0]}**{t[1]}"
    ),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "//", "%"]), children, st.booleans()).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})" if t[3] else f"{t[0]} {t[1]} {t[2]}"
    )
    return st.one_of(binary, children.map(lambda c: f"-{c}"))


@settings(max_examples=300, deadline=None)
@given(st.recursive(_atoms, _combine, max_leaves=8))
def test_agrees_with_python_on_integer_expressions(expression: str) -> None:
    assume(len(expression) <= 200)
    try:
        expected = eval(expression, {"__builtins__": {}})  # noqa: S307 - the oracle; inputs are generated here
    except ZeroDivisionError:
        with pytest.raises(CalculatorError, match="division by zero"):
            safe_eval(expression)
        return
    assert safe_eval(expression) == expected
