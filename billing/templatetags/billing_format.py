"""Number formatting for the billing pages (without adding django.contrib.humanize to the apps)."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def thousands(value: int | Decimal | None) -> str:
    """1041950 -> 1,041,950."""
    return "" if value is None else f"{int(value):,}"


@register.filter
def usd(value: Decimal | float | None, places: int = 2) -> str:
    """$1,234.56 (or more places for small amounts)."""
    return "" if value is None else f"${Decimal(value):,.{int(places)}f}"
