"""Small template filters of the chat UI."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def compact_number(value: int | float | Decimal | None) -> str:
    """12345 -> "12.3k": token counts at a glance (the exact figure is in a title attribute)."""
    number = float(value or 0)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{number:.0f}"


@register.filter
def money(value: Decimal | float | None) -> str:
    """US dollars with cents, or four decimals below one cent (small models cost fractions)."""
    amount = Decimal(value or 0)
    if amount and abs(amount) < Decimal("0.01"):
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


@register.filter
def percent_left(used: int | None) -> int:
    return 100 - int(used or 0)
