"""LLM prices: USD per million input and output tokens, per model, and the cost of a call.

The worker prices its own LLM calls with it, and ingest the LLM spans other agents send. The
defaults cover well-known hosted models (list prices; check your provider's) and price
self-hosted open-weights models (``llama-3*``) and the scripted provider at zero.
:func:`prices_from_json` overrides or extends them from a JSON object mapping a model name to
``{"input": usd_per_mtok, "output": usd_per_mtok}`` (or to ``[input, output]``); the services
read it from ``LOOM_LLM_PRICES`` (the JSON, or the path of a file holding it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "prices_from_json"]


class Price(BaseModel):
    """USD per million input (prompt) and output (completion) tokens.

    Attributes:
        input: USD per million input tokens.
        output: USD per million output tokens.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


DEFAULT_PRICES: dict[str, Price] = {
    name: Price(input=i, output=o)
    for name, (i, o) in {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        "o3": (2.00, 8.00),
        "claude-opus-4": (15.00, 75.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-opus": (15.00, 75.00),
        "claude-3-haiku": (0.25, 1.25),
        "llama-3": (0.0, 0.0),
        "llama3": (0.0, 0.0),
        "scripted": (0.0, 0.0),
    }.items()
}


class PriceTable:
    """Prices by model name; :meth:`cost` of a call in USD (None for an unknown model).

    A model is priced by its exact name, else by the longest known name it starts with
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``), after dropping a ``vendor/`` prefix; a model
    the table does not know has an unknown cost (None), not zero.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = {name.lower(): price for name, price in (prices or DEFAULT_PRICES).items()}

    def price(self, model: str) -> Price | None:
        """The price of ``model``: exact name, else the longest known prefix, else None.

        Args:
            model: A model name as a provider reports it.

        Returns:
            Its price, or None.
        """
        name = model.strip().lower()
        for candidate in (name, name.rsplit("/", 1)[-1]):
            if candidate in self._prices:
                return self._prices[candidate]
            prefixes = [key for key in self._prices if candidate.startswith(key)]
            if prefixes:
                return self._prices[max(prefixes, key=len)]
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """The cost in USD of one call of ``model``; None when the model has no price.

        Args:
            model: The model that answered.
            input_tokens: Prompt tokens.
            output_tokens: Completion tokens.

        Returns:
            USD, or None.
        """
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def prices_from_json(text: str, *, setting: str = "LOOM_LLM_PRICES") -> PriceTable:
    """The default table updated from the JSON object ``text`` (empty: the defaults).

    Args:
        text: ``{"model": {"input": usd_per_mtok, "output": usd_per_mtok} | [input, output], ...}``.
        setting: The setting's name, for the error message.

    Returns:
        The table.

    Raises:
        ValueError: With one clear line when ``text`` is not such an object.
    """
    if not text.strip():
        return PriceTable()
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{setting} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{setting} must be a JSON object mapping model names to prices")
    prices = dict(DEFAULT_PRICES)
    for model, value in raw.items():
        try:
            if isinstance(value, list) and len(value) == 2:
                value = {"input": value[0], "output": value[1]}
            prices[str(model)] = Price.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ValueError(
                f"{setting}: bad price for model {model!r}: {error['msg']} at {error['loc']} "
                '(expected {"input": usd_per_mtok, "output": usd_per_mtok})'
            ) from None
    return PriceTable(prices)
