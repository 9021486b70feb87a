"""The /monitor failures chart, laid out without Flask: stacking, colours, legend, geometry."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sipguard.monitoring import chart

SINCE = datetime(2024, 6, 11, 12, 0, 0)
MINUTE = timedelta(minutes=1)


def test_no_failures_draw_no_bars_and_peak_zero() -> None:
    drawn = chart.build([{} for _ in range(60)], MINUTE, SINCE)
    assert drawn.bars == [] and drawn.legend == [] and drawn.peak == 0
    assert (drawn.width, drawn.height) == (chart.LEFT + chart.PLOT_WIDTH + 10, 200)


def test_bars_stack_upwards_scaled_to_the_busiest_slice() -> None:
    slices = [{"10.0.0.1": 2, "10.0.0.2": 2}, {}, {"10.0.0.1": 1}]
    drawn = chart.build(slices, MINUTE, SINCE)
    assert drawn.peak == 4
    first, second, third = drawn.bars
    # The busier address goes first, at the bottom; each bar's height is its share of the peak.
    assert (first.y, first.h, second.y, second.h) == (90.0, 90.0, 0.0, 90.0)
    assert first.x == second.x == chart.LEFT
    assert third.x == round(chart.LEFT + 2 * chart.PLOT_WIDTH / 3, 1)
    assert (third.y, third.h) == (135.0, 45.0)
    assert first.fill == third.fill == chart.COLOURS[0] and second.fill == chart.COLOURS[1]
    assert first.title == "12:00:00 10.0.0.1: 2" and third.title == "12:02:00 10.0.0.1: 1"


def test_five_busiest_addresses_get_colours_and_the_rest_share_other() -> None:
    counts = {f"192.0.2.{i}": 10 - i for i in range(8)}  # .0 busiest ... .7 quietest
    drawn = chart.build([counts], MINUTE, SINCE)
    assert [(item.ip, item.fill, item.count) for item in drawn.legend] == [
        *((f"192.0.2.{i}", chart.COLOURS[i], 10 - i) for i in range(5)),
        ("other", chart.OTHER_COLOUR, 5 + 4 + 3),
    ]
    assert [bar.fill for bar in drawn.bars] == [*chart.COLOURS, chart.OTHER_COLOUR]
    assert drawn.bars[-1].title == "12:00:00 other: 12"
    assert sum(bar.h for bar in drawn.bars) == pytest.approx(chart.PLOT_HEIGHT, abs=0.5)


def test_narrow_slices_keep_a_visible_width() -> None:
    drawn = chart.build([{"a": 1}] * 1000, MINUTE, SINCE)
    assert {bar.w for bar in drawn.bars} == {1}
