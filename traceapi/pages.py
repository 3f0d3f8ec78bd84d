"""Server-rendered HTML (Jinja2, autoescaped): pages that work without JavaScript on a phone.

Times on pages are China Standard Time (UTC+8, no daylight saving), the time of the first
users; JSON answers carry milliseconds since the Unix epoch.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape

from traceapi.i18n import Lang, step_label, text

__all__ = ["DISPLAY_TZ", "format_time", "render"]

DISPLAY_TZ: Final = timezone(timedelta(hours=8), "UTC+8")


def format_time(ms: int | None) -> str:
    """``2026-11-27 14:05`` in China Standard Time (empty for None)."""
    if ms is None:
        return ""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ).strftime("%Y-%m-%d %H:%M")
    )


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("traceapi", "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    return env


def render(template: str, *, lang: Lang, **context: Any) -> str:
    """Render ``template`` in ``lang``: ``t(key, **values)`` and ``step(name)`` are available."""
    env = _environment()
    return env.get_template(template).render(
        lang=lang,
        t=lambda key, **values: text(lang, key, **values),
        step=lambda name: step_label(lang, name),
        **context,
    )
