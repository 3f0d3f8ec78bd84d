"""The ``time`` column of the gateway's CSV formats (docs/gateway-csv.md, "Times").

A cell is one of:

* empty: the time the line is read, ``now_ms`` (the caller's clock);
* ISO 8601 date and time with an offset, ``2026-12-06T08:00:00+08:00`` or ``…Z``;
* ISO 8601 date and time without an offset: wall-clock time in the configured zone
  (``Asia/Shanghai`` unless configured otherwise); a wall-clock time that a daylight-saving
  change makes ambiguous or skips is an error, never a guess;
* integer milliseconds since the Unix epoch, exactly 13 digits (2001-09-09 to 2286-11-20): a
  10-digit number is most likely seconds and a 16-digit one microseconds, and refusing them is
  better than recording a date in 1970 or in the year 50000.

The result is integer milliseconds since the Unix epoch (docs/protocol.md §5, ``time``). A
fraction of a second finer than a millisecond is refused rather than rounded. A time more than
5 minutes after ``now_ms`` is refused: ingest would refuse it as ``clock_skew``
(docs/protocol.md §6). Pure: the clock and the zone are arguments.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final
from zoneinfo import ZoneInfo

from tracecore.message import MAX_TIME_MS

__all__ = ["DEFAULT_TIMEZONE", "MAX_AHEAD_MS", "parse_time"]

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"
MAX_AHEAD_MS: Final = 5 * 60 * 1000  # docs/protocol.md §5: more than 5 minutes ahead is refused

# ISO 8601-1:2019 §5.4.2 (extended format) date and time; "T" or, as RFC 3339 §5.6 allows, a
# space between them; seconds optional (reduced precision, §5.3.1.4); a decimal fraction of the
# second with "." or "," (§5.3.1.4); offset "Z", ±hh:mm, ±hhmm or ±hh (§5.3.4).
_ISO: Final = re.compile(
    r"(?P<date>(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2}))"
    r"[T ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>Z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
_DATE_ONLY: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EPOCH_DIGITS: Final = 13
_MAX_LENGTH: Final = 40  # the longest accepted form, with 9 fraction digits, has 35
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_EXAMPLES: Final = (
    "an ISO 8601 time such as 2026-12-06T08:00:00+08:00 or 2026-12-06T08:00:00 (local time), "
    "or milliseconds since 1970 (13 digits)"
)


def parse_time(text: str, *, now_ms: int, tz: ZoneInfo) -> int:
    """Return the milliseconds since the Unix epoch that a ``time`` cell names.

    ``text`` is the cell with surrounding spaces removed; empty means ``now_ms``. ``tz`` is the
    zone of times written without an offset. See the module docstring for the accepted forms.

    Raises :class:`ValueError` with a message saying what was found and what is expected
    (the callers wrap it into an :class:`~tracecore.errors.InputError` naming line and column).
    """
    if text == "":
        return now_ms
    if len(text) > _MAX_LENGTH:  # bounds every message below, which quote the text
        raise ValueError(f"a time of {len(text)} characters is not a time; use {_EXAMPLES}")
    if text.isascii() and text.isdigit():
        millis = _epoch_millis(text)
    else:
        found = _ISO.fullmatch(text)
        if found is None:
            if _DATE_ONLY.fullmatch(text):
                raise ValueError(
                    f"{text!r} is a date without a time of day; write the time too, e.g. "
                    f"{text}T08:00:00"
                )
            raise ValueError(f"{text!r} is not a time; use {_EXAMPLES}")
        millis = _iso_millis(text, found, tz)
    if not 0 <= millis <= MAX_TIME_MS:
        raise ValueError(f"{text!r} is before 1970 or after the year 287396; check the date")
    if millis > now_ms + MAX_AHEAD_MS:
        raise ValueError(
            f"{text!r} is more than 5 minutes in the future (now is "
            f"{_show_utc(now_ms)}); the service refuses such messages (clock_skew)"
        )
    return millis


def _epoch_millis(text: str) -> int:
    if len(text) != _EPOCH_DIGITS:
        guess = {10: "seconds", 16: "microseconds", 19: "nanoseconds"}.get(len(text))
        hint = f" ({len(text)} digits look like {guess})" if guess else ""
        raise ValueError(
            f"{text!r} is not milliseconds since 1970{hint}: write 13 digits, "
            "e.g. 1796601600000, or an ISO 8601 time"
        )
    return int(text)


def _iso_millis(text: str, found: re.Match[str], tz: ZoneInfo) -> int:
    fraction = found["fraction"] or ""
    if fraction.rstrip("0")[3:]:
        raise ValueError(
            f"{text!r} is finer than a millisecond; messages carry whole milliseconds, so write "
            "at most 3 digits after the second (nothing is rounded)"
        )
    try:
        # A wall-clock time first; its zone or offset is attached below.
        wall = datetime(  # noqa: DTZ001
            int(found["year"]),
            int(found["month"]),
            int(found["day"]),
            int(found["hour"]),
            int(found["minute"]),
            int(found["second"] or 0),
            int(fraction[:3].ljust(3, "0")) * 1000,
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from exc
    offset = found["offset"]
    if offset is None:
        aware = _localize(text, wall, tz)
    else:
        aware = wall.replace(tzinfo=_offset(text, offset))
    return (aware - _EPOCH) // _ONE_MS


def _offset(text: str, offset: str) -> timezone:
    if offset == "Z":
        return UTC
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} has an impossible offset {offset}")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if offset[0] == "-" else delta)


def _localize(text: str, wall: datetime, tz: ZoneInfo) -> datetime:
    """Attach ``tz`` to a wall-clock time, refusing times a daylight-saving change makes
    ambiguous (clocks go back: the time happens twice) or skips (clocks go forward)."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    # zoneinfo (PEP 495): in a gap, the wall time does not survive a round trip through UTC.
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        raise ValueError(
            f"{text!r} does not exist in {tz.key} (the clocks skip it); write the time "
            "with its offset"
        )
    raise ValueError(
        f"{text!r} happens twice in {tz.key} (the clocks go back); write it with its offset, "
        f"{_show_offset(first)} or {_show_offset(second)}"
    )


def _show_offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _show_utc(millis: int) -> str:
    return (_EPOCH + millis * _ONE_MS).strftime("%Y-%m-%dT%H:%M:%SZ")
