"""The cost page's chart, drawn on the server: one bar per day, as SVG
geometry the template writes out (no script, no chart library, nothing
for the Content-Security-Policy to allow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

WIDTH = 720
HEIGHT = 200
BOTTOM = 24  # room for the day labels
LEFT = 56  # room for the scale


@dataclass(frozen=True)
class Bar:
    day: date
    eur: float
    x: float
    y: float
    width: float
    height: float
    label: bool  # whether its day is written under it


@dataclass(frozen=True)
class DayChart:
    bars: list[Bar]
    top_eur: float  # what the top of the scale stands for
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM


def day_chart(spend: dict[date, float], last_day: date, days: int) -> DayChart:
    """Bars for the `days` days up to `last_day`, a missing day at zero."""
    span = [last_day - timedelta(days=n) for n in reversed(range(days))]
    top = max([spend.get(d, 0.0) for d in span] + [0.0])
    top_eur = _round_scale(top)
    slot = (WIDTH - LEFT) / days
    plot = HEIGHT - BOTTOM
    bars = []
    for n, day in enumerate(span):
        eur = spend.get(day, 0.0)
        height = plot * eur / top_eur if top_eur else 0.0
        bars.append(
            Bar(
                day=day,
                eur=eur,
                x=round(LEFT + n * slot + slot * 0.15, 1),
                y=round(plot - height, 1),
                width=round(slot * 0.7, 1),
                height=round(height, 1),
                label=n % max(1, days // 6) == 0 or n == days - 1,
            )
        )
    return DayChart(bars=bars, top_eur=top_eur)


def _round_scale(top: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `top` (0 stays 0)."""
    if top <= 0:
        return 0.0
    scale = 10.0**-6
    while True:
        for step in (1, 2, 5):
            if step * scale >= top:
                return step * scale
        scale *= 10
