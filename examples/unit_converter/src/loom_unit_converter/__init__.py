"""A unit converter agent for Loom: a ReAct agent with two tools.

``convert`` handles lengths, masses and volumes by factor tables; ``convert_temperature``
handles Celsius, Fahrenheit and Kelvin (an offset, not a factor). The agent uses the LLM
provider its worker is configured with (``react_agent`` without ``provider=``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from loom_agent_worker import react_agent, tool
from pydantic import Field

# How many of the base unit (metre, kilogram, litre) one unit is.
FACTORS: dict[str, dict[str, float]] = {
    "length": {
        "mm": 0.001,
        "cm": 0.01,
        "m": 1.0,
        "km": 1000.0,
        "in": 0.0254,
        "ft": 0.3048,
        "yd": 0.9144,
        "mi": 1609.344,
    },
    "mass": {"mg": 1e-6, "g": 0.001, "kg": 1.0, "t": 1000.0, "oz": 0.028349523125, "lb": 0.45359237},
    "volume": {
        "ml": 0.001,
        "l": 1.0,
        "m3": 1000.0,
        "tsp": 0.00492892159375,
        "cup": 0.2365882365,
        "gal": 3.785411784,
    },
}
UNITS = {unit: dimension for dimension, table in FACTORS.items() for unit in table}


class ConversionError(ValueError):
    """The units are unknown or measure different things."""


def _round(value: float) -> float:
    return float(f"{value:.10g}")


@tool(timeout_s=2.0)
def convert(
    value: float,
    from_unit: Annotated[str, Field(description="e.g. km, mi, kg, lb, l, gal")],
    to_unit: Annotated[str, Field(description="a unit of the same kind as from_unit")],
) -> dict[str, object]:
    """Convert a length, mass or volume from one unit to another."""
    source, target = from_unit.strip().lower(), to_unit.strip().lower()
    for unit in (source, target):
        if unit not in UNITS:
            raise ConversionError(f"unknown unit {unit!r}; known: {', '.join(sorted(UNITS))}")
    if UNITS[source] != UNITS[target]:
        raise ConversionError(f"cannot convert {UNITS[source]} ({source}) to {UNITS[target]} ({target})")
    table = FACTORS[UNITS[source]]
    return {"value": _round(value * table[source] / table[target]), "unit": target}


Scale = Literal["C", "F", "K"]


@tool(timeout_s=2.0)
def convert_temperature(value: float, from_scale: Scale, to_scale: Scale) -> dict[str, object]:
    """Convert a temperature between Celsius (C), Fahrenheit (F) and Kelvin (K)."""
    celsius = {"C": value, "F": (value - 32.0) * 5.0 / 9.0, "K": value - 273.15}[from_scale]
    if celsius < -273.15 - 1e-9:
        raise ConversionError(f"{value} {from_scale} is below absolute zero")
    result = {"C": celsius, "F": celsius * 9.0 / 5.0 + 32.0, "K": celsius + 273.15}[to_scale]
    return {"value": _round(result), "unit": to_scale}


SYSTEM_PROMPT = (
    "You convert units. Call `convert` for lengths, masses and volumes and `convert_temperature` for "
    "temperatures; never convert in your head. Answer with the number and the unit."
)

agent = react_agent(
    "units",
    name="Unit converter",
    description="Converts lengths, masses, volumes and temperatures with two tools.",
    system_prompt=SYSTEM_PROMPT,
    tools=[convert, convert_temperature],
)

__all__ = ["FACTORS", "SYSTEM_PROMPT", "ConversionError", "agent", "convert", "convert_temperature"]
