"""Server-rendered HTML (Jinja2, autoescaped): pages that work without JavaScript on a phone.

Times on pages are China Standard Time (UTC+8, no daylight saving), the time of the first
users; JSON answers carry milliseconds since the Unix epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from jinja2 import Environment, PackageLoader, select_autoescape

from traceapi.i18n import Lang, text
from traceapi.vocabulary import format_number, pick, product_label

__all__ = ["DISPLAY_TZ", "format_time", "iso_time", "render"]

DISPLAY_TZ: Final = timezone(timedelta(hours=8), "UTC+8")


def format_time(ms: int | None) -> str:
    """``2026-11-27 14:05`` in China Standard Time (empty for None)."""
    if ms is None:
        return ""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ).strftime("%Y-%m-%d %H:%M")
    )


def iso_time(ms: int) -> str:
    """``2026-11-27T14:05:00+08:00``: the machine-readable time of a ``<time>`` element."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ)
    return moment.isoformat(timespec="seconds")


def _check_name(name: str, t: Callable[[str], str]) -> str:
    """A check of the verdict by its name in the page's language (its id when unnamed)."""
    try:
        return t("check." + name)
    except KeyError:
        return name


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("traceapi", "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["iso"] = iso_time
    env.filters["num"] = lambda value: format_number(value, "zh")
    env.filters["check_name"] = _check_name
    env.filters["pick"] = lambda value, lang: pick(lang, str(value))
    env.filters["product_label"] = lambda key, lang: product_label(lang, str(key))
    return env


def render(template: str, *, lang: Lang, **context: Any) -> str:
    """Render ``template`` in ``lang``: ``t(key, **values)`` is available."""
    env = _environment()
    return env.get_template(template).render(
        lang=lang,
        t=lambda key, **values: text(lang, key, **values),
        **context,
    )
