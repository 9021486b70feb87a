"""The /monitor page's failures chart: inbound SIP-auth failures per source IP over time.

Laid out here as plain numbers (bars, legend, axes) that the page's inline SVG only prints; no
Flask and no SVG text here. The five busiest addresses get a colour each, the rest share grey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
OTHER_COLOUR = "#8c8c8c"
OTHER = "other"
PLOT_WIDTH, PLOT_HEIGHT, LEFT, BOTTOM = 720, 180, 40, 20


@dataclass(frozen=True)
class Bar:
    """One address's share of one time slice, in SVG user units."""

    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str


@dataclass(frozen=True)
class LegendItem:
    """An address (or "other"), its colour and its failures in the window."""

    ip: str
    fill: str
    count: int


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart ready to print: bars, legend, and the plot's geometry."""

    bars: list[Bar]
    legend: list[LegendItem]
    peak: int  # failures in the busiest slice; 0 when there are none
    width: int
    height: int
    plot_h: int
    left: int
    plot_w: int


def build(slices: Sequence[Mapping[str, int]], width: timedelta, since: datetime) -> Chart:
    """Lay out failures per IP (one mapping per slice of `width` from `since`) as stacked bars."""
    totals: dict[str, int] = {}
    for bucket in slices:
        for ip, n in bucket.items():
            totals[ip] = totals.get(ip, 0) + n
    top = sorted(totals, key=lambda ip: -totals[ip])[: len(COLOURS)]
    colour = dict(zip(top, COLOURS, strict=False))
    peak = max((sum(b.values()) for b in slices), default=0) or 1
    bar_w = PLOT_WIDTH / len(slices)
    bars = []
    for index, bucket in enumerate(slices):
        y = float(PLOT_HEIGHT)
        start = since + width * index
        for ip in [*top, OTHER]:
            n = (
                bucket.get(ip, 0)
                if ip != OTHER
                else sum(v for k, v in bucket.items() if k not in colour)
            )
            if not n:
                continue
            h = n / peak * PLOT_HEIGHT
            y -= h
            bars.append(
                Bar(
                    x=round(LEFT + index * bar_w, 1),
                    y=round(y, 1),
                    w=round(max(bar_w - 1, 1), 1),
                    h=round(h, 1),
                    fill=colour.get(ip, OTHER_COLOUR),
                    title=f"{start:%H:%M:%S} {ip}: {n}",
                )
            )
    legend = [LegendItem(ip, colour[ip], totals[ip]) for ip in top]
    if len(totals) > len(top):
        others = sum(n for ip, n in totals.items() if ip not in colour)
        legend.append(LegendItem(OTHER, OTHER_COLOUR, others))
    return Chart(
        bars=bars,
        legend=legend,
        peak=peak if totals else 0,
        width=LEFT + PLOT_WIDTH + 10,
        height=PLOT_HEIGHT + BOTTOM,
        plot_h=PLOT_HEIGHT,
        left=LEFT,
        plot_w=PLOT_WIDTH,
    )
