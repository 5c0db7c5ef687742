"""What calls cost: the providers' published prices per token, and the Batch API's discount."""

from __future__ import annotations

# USD per million tokens (input, output), as the providers published them in 2025. Pass
# --price-in/--price-out for anything else, or when these have changed.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
}
# The Batch API bills this share of the live price (OpenAI, and the servers that copy its API).
BATCH_RATE = 0.5


def unit_prices(
    model: str | None, price_in: float | None, price_out: float | None
) -> tuple[float, float] | None:
    """USD per million (prompt, completion) tokens: the given prices, else the table's, else None."""
    known = PRICES.get(model or "")
    unit_in = price_in if price_in is not None else known[0] if known else None
    unit_out = price_out if price_out is not None else known[1] if known else None
    return None if unit_in is None or unit_out is None else (unit_in, unit_out)


def cost_usd(
    prices: tuple[float, float] | None,
    prompt_tokens: int,
    completion_tokens: int,
    rate: float = 1.0,
) -> float | None:
    """USD for these tokens at `prices` per million; `rate` scales them (BATCH_RATE)."""
    if prices is None:
        return None
    paid = (prompt_tokens * prices[0] + completion_tokens * prices[1]) * rate
    return round(paid / 1_000_000, 6)
