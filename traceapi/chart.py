"""Server-made SVG charts of sensor series: no JavaScript, legible on a phone, printable.

:func:`temperature_svg` draws one line per device over time (named after the device's place),
the limit as a dashed line, every excursion above it as a shaded band labelled with its length,
and a time axis in China Standard Time (UTC+8) with dates and hours. The series are downsampled
with min/max buckets (:func:`tracecore.verdict.downsample`) so a short excursion is never
smoothed away. The chart has an accessible name and description; :func:`hourly_table` gives
the same data as rows for the table under it, for readers who cannot see the chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Final

from traceapi.pages import DISPLAY_TZ
from tracecore.verdict import SensorPoint, downsample

__all__ = ["COLOURS", "ChartText", "HourRow", "hourly_table", "temperature_svg"]

# A viewBox about as wide as a phone's screen in CSS pixels, so that 12-unit text is about
# 12 px on a phone; on a desktop the page caps the chart's width (see base.html).
_WIDTH: Final = 400
_HEIGHT: Final = 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 10, 16, 44
_FONT: Final = 12
#: Series colours: each has at least 4.5:1 contrast on the plot's light background.
COLOURS: Final = ("#0550ae", "#8250df", "#116329", "#953800", "#1b1f24", "#bf3989")
_HOUR_MS: Final = 3_600_000
#: Tick spacings for the time axis, the smallest that gives at most five ticks wins.
_STEPS_H: Final = (1, 2, 3, 6, 12, 24, 48, 96, 168)


@dataclass(frozen=True, slots=True)
class ChartText:
    """The words of a chart in the page's language."""

    title: str
    description: str
    limit: str  # "limit" / "上限"


@dataclass(frozen=True, slots=True)
class HourRow:
    """One hour of one device's readings: the lowest and highest value and how many."""

    name: str
    hour_ms: int
    low: float
    high: float
    count: int


def _local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ)


def _nice_step(rough: float) -> float:
    """The smallest of 1, 2, 5 x 10^n (°C) at least ``rough``: axis labels people read easily."""
    rough = max(rough, 0.1)
    power = 10.0 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def _ticks(start: int, end: int) -> list[int]:
    """Tick times on whole local hours (or days), at most five."""
    span_h = max(1.0, (end - start) / _HOUR_MS)
    step_h = next((s for s in _STEPS_H if span_h / s <= 4), _STEPS_H[-1])
    step = step_h * _HOUR_MS
    offset = int(DISPLAY_TZ.utcoffset(None).total_seconds() * 1000)
    first = ((start + offset) // step + 1) * step - offset
    return list(range(first, end + 1, step))


def temperature_svg(
    series: Mapping[str, Sequence[SensorPoint]],
    *,
    limit: float | None,
    names: Mapping[str, str],
    excursions: Sequence[tuple[int, int, str]],
    text: ChartText,
) -> str:
    """Return an SVG chart of ``series`` (device -> points in time order, in °C).

    ``names`` gives each device's legend name (its place), ``limit`` draws a dashed line,
    ``excursions`` are ``(start_ms, end_ms, label)`` bands to shade, labelled with their
    length. Colours follow the sorted device ids, as :data:`COLOURS` in the legend under it.
    """
    shown = {name: downsample(points) for name, points in series.items() if points}
    values = [p.value for points in shown.values() for p in points]
    times = [p.time for points in shown.values() for p in points]
    if not values:
        return ""
    low, high = min(values), max(values)
    if limit is not None:
        low, high = min(low, limit), max(high, limit)
    step_c = _nice_step((high - low) / 4)
    low = math.floor((low - step_c * 0.2) / step_c) * step_c
    high = math.ceil((high + step_c * 0.2) / step_c) * step_c
    start, end = min(times), max(times)
    span = max(1, end - start)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(ms: int) -> float:
        return _LEFT + (min(max(ms, start), end) - start) / span * plot_w

    def y(value: float) -> float:
        return _TOP + (high - value) / (high - low) * plot_h

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
            'role="img" class="chart" aria-labelledby="chart-title chart-desc" '
            f'font-size="{_FONT}" font-family="system-ui, sans-serif">'
        ),
        f'<title id="chart-title">{escape(text.title)}</title>',
        f'<desc id="chart-desc">{escape(text.description)}</desc>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa"/>',
    ]
    for begin, finish, label in excursions:
        left, right = x(begin), max(x(finish), x(begin) + 2)
        parts.append(
            f'<rect x="{left:.1f}" y="{_TOP}" width="{right - left:.1f}" height="{plot_h}" '
            f'fill="#ffcecb"/>'
        )
        if len(excursions) <= 6:
            parts.append(
                f'<text x="{(left + right) / 2:.1f}" y="{_TOP - 3}" text-anchor="middle" '
                f'fill="#a40e26">{escape(label)}</text>'
            )
    for n in range(round((high - low) / step_c) + 1):
        value = low + n * step_c
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end" fill="#1f2328">'
            f"{value:g}</text>"
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'stroke="#d0d7de" stroke-width="0.5"/>'
        )
    parts.append(f'<text x="4" y="{_TOP - 3}" fill="#1f2328">°C</text>')
    previous_day = None
    for tick in _ticks(start, end):
        moment = _local(tick)
        day = moment.strftime("%m-%d")
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" '
            'stroke="#d0d7de" stroke-width="0.5"/>'
            f'<text x="{x(tick):.1f}" y="{_TOP + plot_h + 15}" text-anchor="middle" '
            f'fill="#1f2328">{moment:%H:%M}</text>'
        )
        if day != previous_day:
            parts.append(
                f'<text x="{x(tick):.1f}" y="{_TOP + plot_h + 30}" text-anchor="middle" '
                f'fill="#1f2328">{day}</text>'
            )
            previous_day = day
    if limit is not None:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="#a40e26" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{_WIDTH - _RIGHT - 2}" y="{y(limit) - 4:.1f}" '
            f'text-anchor="end" fill="#a40e26">{escape(text.limit)} {limit:g} °C</text>'
        )
    for n, (device, points) in enumerate(sorted(shown.items())):
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{x(p.time):.1f},{y(p.value):.1f}" for p in points)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}">'
            f"<title>{escape(names.get(device, device))}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def hourly_table(
    series: Mapping[str, Sequence[SensorPoint]], names: Mapping[str, str]
) -> list[HourRow]:
    """The readings of each device by local hour: lowest, highest, count (the chart's table)."""
    rows: list[HourRow] = []
    for device, points in sorted(series.items()):
        hours: dict[int, list[float]] = {}
        for point in points:
            hours.setdefault(point.time - point.time % _HOUR_MS, []).append(point.value)
        rows.extend(
            HourRow(names.get(device, device), hour, min(v), max(v), len(v))
            for hour, v in sorted(hours.items())
        )
    return rows
