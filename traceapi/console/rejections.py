"""The console's rejections and gaps (docs/inspection.md, "Rejections and gaps").

``GET /console/rejections`` counts refused device messages per reason over time (day or week
periods in China Standard Time), per party and per device, lists the sequence gaps of devices
and the newest refusals; ``GET /console/rejections/{id}`` explains one refusal (the check of
docs/protocol.md that refused it, the bytes decoded as far as they parse) and
``GET /console/rejections/{id}/raw`` downloads its stored bytes;
``GET /console/rejections/devices/{device}`` shows one device: its party, keys, last message,
refusals and gaps.

Inspectors and the admin see every party's; the queries take the reader's party
(:func:`reader_party`), so a party's own console will see its own devices only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from traceapi.access import note_parties
from traceapi.console.pages import HEADERS, LangQuery, page, page_language
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang
from traceapi.pages import DISPLAY_TZ, format_time
from tracecore.errors import NotFound, RejectReason
from tracecore.rejected import check_path, decode_rejected, refused_by
from tracecore.storage.engine import session_scope
from tracecore.storage.models import DeviceKey, Party, Rejection
from tracecore.storage.queries import device_gaps
from tracecore.storage.registry import device_keys
from tracecore.storage.rejections import (
    NO_PARTY,
    RejectionFilter,
    TallyRow,
    device_activity,
    device_parties,
    find_rejection,
    gap_counts,
    list_parties,
    reason_totals,
    rejection_list,
    tally,
)

__all__ = ["Periods", "periods", "reader_party", "router"]

router = APIRouter(prefix="/console/rejections", include_in_schema=False)

User = Annotated[ConsoleUser, Depends(current_user)]

_DAY: Final = timedelta(days=1)
_FIRST_DAY: Final = date(1970, 1, 1)
_LAST_DAY: Final = date(9000, 12, 31)
_DAY_MS: Final = 86_400_000
#: The default range: the last 30 days of the app clock, today included.
DEFAULT_DAYS: Final = 30
#: The longest range one page counts (a year and a day: 366 day rows, or 53 week rows).
MAX_DAYS: Final = 366
#: Newest refusals listed per page.
LIST_LIMIT: Final = 50
#: Devices with gaps listed on the overview, and ranges shown per device there.
GAP_DEVICES: Final = 100
GAP_RANGES: Final = 5
#: Ranges listed on a device's page.
DEVICE_GAP_RANGES: Final = 500
#: Devices listed in the overview's per-device table.
DEVICE_ROWS: Final = 200

Bucket = Literal["day", "week"]
#: The end of the last day datetime can show, in ms since the epoch.
_LAST_DATE_MS: Final = 253_402_300_799_000 - _DAY_MS


def reader_party(user: ConsoleUser) -> str | None:
    """The one party whose devices ``user`` may see, or None for every party's.

    Inspectors and the admin see all; any other role sees its own party's devices only (and a
    user of no party nothing at all: 403).
    """
    if user.role in ("inspector", "admin"):
        return None
    if user.party_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN)
    return user.party_id


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _today(request: Request) -> date:
    """Today in China Standard Time by the app's clock."""
    now_ms: int = request.app.state.clock()
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(DISPLAY_TZ).date()


def _ms(day: date) -> int:
    """Midnight at the start of ``day`` in China Standard Time, in ms since the epoch."""
    return int(datetime.combine(day, time(), tzinfo=DISPLAY_TZ).timestamp() * 1000)


def _parse_day(value: str | None) -> date | None:
    """A date of the form, or None for no date, a malformed one or one out of range."""
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        return None
    # A year and some weeks of margin either side must stay within what datetime holds.
    return day if day is not None and _FIRST_DAY <= day <= _LAST_DAY else None


@dataclass(frozen=True, slots=True)
class Periods:
    """The periods a page counts: day or week rows from ``first`` to ``last`` (CST dates).

    ``origin`` is the first day of period 0; ``from_ms`` and ``to_ms`` bound every row (a week
    range is widened to whole weeks, Monday to Sunday). ``shortened`` says the range asked for
    was longer than :data:`MAX_DAYS`.
    """

    bucket: Bucket
    first: date
    last: date
    origin: date
    count: int
    shortened: bool

    @property
    def days(self) -> int:
        """The length of one period in days."""
        return 7 if self.bucket == "week" else 1

    @property
    def from_ms(self) -> int:
        """The start of period 0."""
        return _ms(self.origin)

    @property
    def to_ms(self) -> int:
        """The end of the last period (excluded)."""
        return _ms(self.origin + self.count * self.days * _DAY)

    def start(self, index: int) -> date:
        """The first day of period ``index``."""
        return self.origin + index * self.days * _DAY

    def end(self, index: int) -> date:
        """The last day of period ``index``."""
        return self.start(index) + (self.days - 1) * _DAY


def periods(today: date, start: str | None, end: str | None, bucket: str | None) -> Periods:
    """The periods of a page from its ``from``, ``to`` and ``by`` values (invalid ones default).

    The default is the :data:`DEFAULT_DAYS` days up to ``today``; a range longer than
    :data:`MAX_DAYS` keeps its end and is shortened; ``from`` after ``to`` are swapped.
    """
    by: Bucket = "week" if bucket == "week" else "day"
    last = _parse_day(end) or today
    first = _parse_day(start) or last - (DEFAULT_DAYS - 1) * _DAY
    if first > last:
        first, last = last, first
    shortened = (last - first).days + 1 > MAX_DAYS
    if shortened:
        first = last - (MAX_DAYS - 1) * _DAY
    if by == "week":
        origin = first - first.weekday() * _DAY  # ISO weeks start on Monday
        count = ((last - origin).days // 7) + 1
    else:
        origin = first
        count = (last - first).days + 1
    return Periods(by, first, last, origin, count, shortened)


def _reason(value: str | None) -> RejectReason | None:
    try:
        return RejectReason(value) if value else None
    except ValueError:
        return None


def _party_name(party: Party, lang: Lang) -> str:
    return party.name_en if lang == "en" and party.name_en else party.name


@dataclass
class _Group:
    """Refused messages of one party or device in the page's range."""

    key: str | None
    party: str | None = None
    messages: int = 0
    arrivals: int = 0
    last_ms: int = 0
    devices: set[str | None] | None = None

    def __post_init__(self) -> None:
        self.by_reason: dict[RejectReason, int] = {}

    def add(self, row: TallyRow) -> None:
        self.messages += row.messages
        self.arrivals += row.arrivals
        self.last_ms = max(self.last_ms, row.last_ms)
        self.by_reason[row.reason] = self.by_reason.get(row.reason, 0) + row.messages
        if self.devices is not None:
            self.devices.add(row.device_id)

    def reasons(self) -> list[tuple[RejectReason, int]]:
        return [(r, self.by_reason[r]) for r in RejectReason if r in self.by_reason]


def _groups(rows: list[TallyRow], *, by_party: bool) -> list[_Group]:
    groups: dict[str | None, _Group] = {}
    for row in rows:
        key = row.party_id if by_party else row.device_id
        group = groups.get(key)
        if group is None:
            group = _Group(key, row.party_id, devices=set() if by_party else None)
            groups[key] = group
        group.add(row)
    return sorted(groups.values(), key=lambda g: (-g.messages, g.key or ""))


@dataclass(frozen=True, slots=True)
class _PeriodRow:
    """One row of the table over time: the period's days, its count per reason, its total."""

    start: date
    end: date
    counts: list[int]
    total: int


def _table(rows: list[TallyRow], spans: Periods) -> tuple[list[RejectReason], list[_PeriodRow]]:
    """The reasons seen (the columns) and one row per period."""
    seen = {row.reason for row in rows}
    reasons = [reason for reason in RejectReason if reason in seen]
    cells = [dict.fromkeys(reasons, 0) for _ in range(spans.count)]
    for row in rows:
        if 0 <= row.bucket < spans.count:
            cells[row.bucket][row.reason] += row.messages
    return reasons, [
        _PeriodRow(
            spans.start(index),
            spans.end(index),
            [counts[reason] for reason in reasons],
            sum(counts.values()),
        )
        for index, counts in enumerate(cells)
    ]


def _ranges(gaps: list[tuple[int, int]]) -> list[str]:
    return [str(a) if a == b else f"{a}–{b}" for a, b in gaps]  # noqa: RUF001 (a range)


class OverviewQuery(BaseModel):
    """The overview's filter form (invalid values fall back to their defaults)."""

    party: str | None = Field(default=None, max_length=100)
    device: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, max_length=32)
    start: str | None = Field(default=None, alias="from", max_length=10)
    end: str | None = Field(default=None, alias="to", max_length=10)
    by: str | None = Field(default=None, max_length=8)
    before: str | None = Field(default=None, max_length=24)


@router.get("", response_class=HTMLResponse)
def overview(
    request: Request,
    user: User,
    form: Annotated[OverviewQuery, Query()],
    lang: LangQuery = None,
) -> Response:
    """Refused messages per reason over time, per party and per device; gaps; the newest."""
    language = page_language(request, lang)
    reader = reader_party(user)
    spans = periods(_today(request), form.start, form.end, form.by)
    party = (form.party or "").strip() or None
    device = (form.device or "").strip() or None
    before = _rejection_id(form.before or "")
    if reader is not None and party not in (None, reader):
        party = reader
    wanted = RejectionFilter(
        reader_party=reader,
        party=party,
        device=device,
        reason=_reason(form.reason),
        from_ms=spans.from_ms,
        to_ms=spans.to_ms,
    )
    with session_scope(_engine(request)) as session:
        rows = tally(session, wanted, origin_ms=spans.from_ms, bucket_ms=spans.days * _DAY_MS)
        listed = rejection_list(session, wanted, limit=LIST_LIMIT, before_id=before)
        gap_party = None if party == NO_PARTY else party
        gapped = (
            []
            if party == NO_PARTY
            else gap_counts(session, reader_party=reader, party=gap_party, device=device)
        )
        gap_ranges = {
            gap.device_id: _ranges(device_gaps(session, gap.device_id)[:GAP_RANGES])
            for gap in gapped[:GAP_DEVICES]
        }
        parties = list_parties(session, reader)
    names = {p.id: _party_name(p, language) for p in parties}
    note_parties(
        request,
        *{row.party_id for row in rows},
        *{row.party_id for row in listed},
        *{gap.party_id for gap in gapped[:GAP_DEVICES]},
    )
    reasons, table = _table(rows, spans)
    totals = _Group(None)
    for row in rows:
        totals.add(row)
    filters = {
        "party": party or "",
        "device": device or "",
        "reason": wanted.reason.value if wanted.reason else "",
        "from": spans.first.isoformat(),
        "to": spans.last.isoformat(),
        "by": spans.bucket,
    }
    query = {k: v for k, v in filters.items() if v}
    path = "/console/rejections?" + urlencode({**query, **({"before": before} if before else {})})
    older = None
    if len(listed) == LIST_LIMIT:
        older = "/console/rejections?" + urlencode(
            {**query, "before": listed[-1].id, "lang": language}
        )
    return page(
        "console/rejections.html",
        language,
        path=path,
        user=user,
        section="rejections",
        filters=filters,
        query=query,
        spans=spans,
        reasons=reasons,
        table=table,
        peak=max((row.total for row in table), default=0),
        totals=totals,
        by_party=_groups(rows, by_party=True),
        by_device=_groups(rows, by_party=False)[:DEVICE_ROWS],
        gapped=gapped[:GAP_DEVICES],
        gap_more=max(0, len(gapped) - GAP_DEVICES),
        gap_ranges=gap_ranges,
        gap_ranges_max=GAP_RANGES,
        listed=listed,
        older=older,
        paged=before is not None,
        parties=parties,
        names=names,
        all_reasons=list(RejectReason),
        reader=reader,
        no_party=NO_PARTY,
        max_days=MAX_DAYS,
    )


def _not_found(lang: Lang, user: ConsoleUser, path: str) -> Response:
    return page(
        "console/rejection_missing.html",
        lang,
        status.HTTP_404_NOT_FOUND,
        path=path,
        user=user,
        section="rejections",
    )


def _rejection_id(value: str) -> int | None:
    """A rejection id from a path: a positive database integer, else None."""
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    number = int(value)
    return number if number >= 1 else None


def _find(request: Request, user: ConsoleUser, value: str) -> tuple[Rejection, str | None] | None:
    number = _rejection_id(value)
    if number is None:
        return None
    with session_scope(_engine(request)) as session:
        try:
            found = find_rejection(session, number, reader_party(user))
        except NotFound:
            return None
    return found


#: A rejection id in a path: checked by :func:`_rejection_id`, anything else is a 404 page.
RejectionPath = Annotated[str, Path()]


@router.get("/{rejection_id}", response_class=HTMLResponse)
def detail(
    request: Request, user: User, rejection_id: RejectionPath, lang: LangQuery = None
) -> Response:
    """One refused message: what was wrong, which check refused it, its bytes decoded."""
    language = page_language(request, lang)
    path = f"/console/rejections/{rejection_id}"
    found = _find(request, user, rejection_id)
    if found is None:
        return _not_found(language, user, path)
    rejection, party_id = found
    note_parties(request, party_id)
    reason = RejectReason(rejection.reason)
    prefix_only = len(rejection.raw) < rejection.raw_length
    refused = refused_by(reason, rejection.raw, rejection.topic)
    decoded = decode_rejected(rejection.raw, prefix_only=prefix_only)
    with session_scope(_engine(request)) as session:
        party = session.get(Party, party_id) if party_id else None
        party_name = _party_name(party, language) if party else None
    return page(
        "console/rejection.html",
        language,
        path=path,
        user=user,
        section="rejections",
        rejection=rejection,
        reason=reason,
        party_id=party_id,
        party_name=party_name,
        refused=refused,
        steps=check_path(refused) if refused is not None else (),
        decoded=decoded,
        device_time=_device_time(decoded.message.time) if decoded.message else None,
        prefix_only=prefix_only,
    )


@router.get("/{rejection_id}/raw")
def raw(
    request: Request, user: User, rejection_id: RejectionPath, lang: LangQuery = None
) -> Response:
    """The stored bytes of one refused message, as a download."""
    found = _find(request, user, rejection_id)
    if found is None:
        return _not_found(page_language(request, lang), user, f"/console/rejections/{rejection_id}")
    rejection, party_id = found
    note_parties(request, party_id)
    # A too_large message keeps only its first bytes: the name says so.
    prefix = "-prefix" if len(rejection.raw) < rejection.raw_length else ""
    name = f"rejection-{rejection.id}{prefix}.cbor"
    return Response(
        rejection.raw,
        media_type="application/octet-stream",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _device_time(ms: int) -> str | None:
    """A device's time in China Standard Time, or None when no calendar holds it (the
    protocol allows up to 2**53 ms, some 285,000 years)."""
    if not 0 <= ms < _LAST_DATE_MS:
        return None
    return format_time(ms)


def _key_state(key: DeviceKey) -> str:
    if key.revoked_ms is not None:
        return "revoked"
    if key.valid_until_ms is not None:
        return "rotated"
    return "valid"


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(
    request: Request,
    user: User,
    device_id: str,
    lang: LangQuery = None,
) -> Response:
    """One device: its party, keys, last message, refusals by reason and sequence gaps."""
    language = page_language(request, lang)
    reader = reader_party(user)
    path = f"/console/rejections/devices/{device_id}"
    wanted = RejectionFilter(reader_party=reader, device=device_id)
    with session_scope(_engine(request)) as session:
        owner = device_parties(session, [device_id]).get(device_id)
        totals = reason_totals(session, wanted)
        if (owner is None and (reader is not None or not totals)) or (
            reader is not None and owner != reader
        ):
            return _not_found(language, user, path)
        party = session.get(Party, owner) if owner else None
        keys = device_keys(session, device_id) if owner else []
        activity = device_activity(session, device_id) if owner else None
        gaps = device_gaps(session, device_id) if owner else []
        listed = rejection_list(session, wanted, limit=LIST_LIMIT)
        party_name = _party_name(party, language) if party else None
    note_parties(request, owner)
    return page(
        "console/rejection_device.html",
        language,
        path=path,
        user=user,
        section="rejections",
        device_id=device_id,
        owner=owner,
        party_name=party_name,
        keys=[(key, _key_state(key)) for key in keys],
        activity=activity,
        totals=totals,
        gaps=_ranges(gaps[:DEVICE_GAP_RANGES]),
        gap_more=max(0, len(gaps) - DEVICE_GAP_RANGES),
        missing=sum(b - a + 1 for a, b in gaps),
        listed=listed,
        more=len(listed) == LIST_LIMIT,
    )
