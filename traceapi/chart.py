"""Server-made SVG charts of sensor series: no JavaScript, readable on a phone, printable.

:func:`temperature_svg` draws one line per device over time, the limit as a dashed line and every
point above it as a red dot; the series are downsampled with min/max buckets
(:func:`tracecore.verdict.downsample`) so a short excursion is never smoothed away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from traceapi.pages import DISPLAY_TZ
from tracecore.verdict import SensorPoint, downsample

__all__ = ["temperature_svg"]

_WIDTH: Final = 640
_HEIGHT: Final = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 12, 28
_COLOURS: Final = ("#1f6feb", "#8250df", "#1a7f37", "#bf8700", "#0a3069", "#6e7781")


def _fmt_time(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ)
    return moment.strftime("%m-%d %H:%M")


def temperature_svg(
    series: Mapping[str, Sequence[SensorPoint]],
    *,
    limit: float | None,
    labels: Mapping[str, str],
) -> str:
    """Return an SVG chart of ``series`` (name -> points in time order, in °C).

    ``limit`` draws a dashed line and marks every shown point above it; ``labels`` holds the
    words ``limit`` and ``excursion`` in the page's language. Times are China Standard Time
    (UTC+8), as on the rest of the page.
    """
    shown = {name: downsample(points) for name, points in series.items() if points}
    values = [p.value for points in shown.values() for p in points]
    times = [p.time for points in shown.values() for p in points]
    if not values:
        return ""
    low, high = min(values), max(values)
    if limit is not None:
        low, high = min(low, limit), max(high, limit)
    pad = max(0.5, (high - low) * 0.1)
    low, high = low - pad, high + pad
    start, end = min(times), max(times)
    span = max(1, end - start)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(ms: int) -> float:
        return _LEFT + (ms - start) / span * plot_w

    def y(value: float) -> float:
        return _TOP + (high - value) / (high - low) * plot_h

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
            'role="img" class="chart" preserveAspectRatio="xMidYMid meet">'
        ),
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa"/>',
    ]
    for step in range(5):
        value = low + (high - low) * step / 4
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y(value) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{value:.1f}</text>'
        )
    parts.append(
        f'<text x="{_LEFT}" y="{_HEIGHT - 8}" font-size="11">{_fmt_time(start)}</text>'
        f'<text x="{_WIDTH - _RIGHT}" y="{_HEIGHT - 8}" font-size="11" '
        f'text-anchor="end">{_fmt_time(end)} UTC+8</text>'
    )
    if limit is not None:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="#cf222e" stroke-dasharray="6 4"/>'
            f'<text x="{_WIDTH - _RIGHT - 2}" y="{y(limit) - 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#cf222e">{escape(labels["limit"])} {limit:g} °C</text>'
        )
    for n, (name, points) in enumerate(sorted(shown.items())):
        colour = _COLOURS[n % len(_COLOURS)]
        path = " ".join(f"{x(p.time):.1f},{y(p.value):.1f}" for p in points)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if limit is not None:
            parts.extend(
                f'<circle cx="{x(p.time):.1f}" cy="{y(p.value):.1f}" r="3" fill="#cf222e">'
                f"<title>{escape(labels['excursion'])} {p.value:g} °C {_fmt_time(p.time)}"
                f"</title></circle>"
                for p in points
                if p.value > limit
            )
    parts.append("</svg>")
    return "".join(parts)
