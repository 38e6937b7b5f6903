"""The one place that turns token usage into money."""

from __future__ import annotations

from decimal import Decimal

from routing.types import ModelTarget, Usage

_MILLION = Decimal(1_000_000)
# Costs are kept to a millionth of a dollar; rounding happens once, here.
_QUANTUM = Decimal("0.000001")


def compute_cost(target: ModelTarget, usage: Usage) -> Decimal:
    """USD for `usage` at `target`'s prices. Cached prompt tokens are billed at the cached price."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    fresh = usage.prompt_tokens - cached
    cost = (
        fresh * target.input_price_per_mtok
        + cached * target.cached_input_price_per_mtok
        + usage.completion_tokens * target.output_price_per_mtok
    ) / _MILLION
    return cost.quantize(_QUANTUM)
