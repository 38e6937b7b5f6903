"""A stacked bar chart of daily cost as server-rendered SVG: no JavaScript, no inline styles
(the CSP forbids both), readable at a glance, with a native tooltip (<title>) on every bar."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

from django.utils.html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999"]
WIDTH, HEIGHT = 820, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at or above `value`: round axis labels."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


def stacked_daily_chart(days: list[date], series: dict[str, dict[date, Decimal]], title: str) -> str:
    """`series` maps a name (a tenant) to its value per day; drawn bottom-up in the order given."""
    names = list(series)
    totals = [float(sum(series[n].get(d, Decimal(0)) for n in names)) for d in days]
    top = _nice_ceiling(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(1.0, slot * 0.75)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT - 12 + 24 * math.ceil(len(names) / 4)}" '
        f'role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # horizontal grid lines and y labels
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd" />')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#444">{_money(value)}</text>'
        )
    label_every = max(1, math.ceil(len(days) / 12))
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar_w) / 2
        base = float(TOP + plot_h)
        for colour_index, name in enumerate(names):
            value = float(series[name].get(day, Decimal(0)))
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            colour = PALETTE[min(colour_index, len(PALETTE) - 1)]
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(name)}, {day.isoformat()}: {_money(value)}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="11" '
                f'fill="#444">{day:%d %b}</text>'
            )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#888" />'
    )
    for index, name in enumerate(names):  # legend, four to a row
        x = LEFT + (index % 4) * 190
        y = HEIGHT - 18 + 24 * (index // 4)
        colour = PALETTE[min(index, len(PALETTE) - 1)]
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}" />')
        parts.append(f'<text x="{x + 18}" y="{y}" font-size="12" fill="#222">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
