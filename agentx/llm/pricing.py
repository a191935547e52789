"""Dollars from token usage: a small price table, per million tokens.

The numbers are list prices at the time of writing and go stale; pass your own
`price_table` to `LLMClient` to correct them. A model is looked up by exact name, then by
the longest table key it starts with (so dated snapshots such as `gpt-4o-mini-2024-07-18`
find `gpt-4o-mini`). Models on an OpenAI-compatible server (your own vLLM, Ollama, ...)
cost nothing in dollars unless the table names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Price:
    """US dollars per 1M tokens."""

    input_per_m: float
    output_per_m: float

    def dollars(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6


DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
}


def lookup_price(table: Mapping[str, Price], model: str) -> Price | None:
    """The price of `model`: exact key, else the longest key that prefixes it, else None."""
    if model in table:
        return table[model]
    matches = [key for key in table if model.startswith(key)]
    return table[max(matches, key=len)] if matches else None
