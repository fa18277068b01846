"""The worker's price table: ``LOOM_LLM_PRICES`` (JSON, or the path of a JSON file) over the
defaults of :mod:`loom_protocol.pricing`, which has the table and the rules."""

from __future__ import annotations

from pathlib import Path

from loom_protocol.pricing import DEFAULT_PRICES, Price, PriceTable, prices_from_json

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable", "load_prices"]


def load_prices(setting: str) -> PriceTable:
    """The default table updated from ``setting`` (JSON text or a JSON file path; empty: none).

    Raises ValueError with one clear line when the setting cannot be read or is malformed.
    """
    text = setting.strip()
    if text and not text.startswith(("{", "[")):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"LOOM_LLM_PRICES: cannot read price file {setting!r}: {exc.strerror}") from None
    return prices_from_json(text)
