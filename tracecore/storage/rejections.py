"""The console's reads of refused messages and sequence gaps (docs/inspection.md, "Rejections
and gaps").

Refused messages are counted by the time of their first refusal: a rejection row stands for the
same bytes refused ``received_count`` times, and only its first and last arrival are stored
(docs/storage.md, "rejections"). Every function takes a :class:`RejectionFilter` whose
``reader_party`` limits it to the devices of one party (a party's own console); None reads
every party's. Read-only; every function takes an open :class:`sqlmodel.Session`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import BigInteger, Select, func, literal, select
from sqlmodel import Session, col

from tracecore.errors import NotFound, RejectReason
from tracecore.storage.models import Device, LogEntry, Party, Rejection

__all__ = [
    "MAX_ID",
    "NO_PARTY",
    "DeviceActivity",
    "GapCount",
    "RejectionFilter",
    "RejectionSummary",
    "TallyRow",
    "device_activity",
    "device_parties",
    "find_rejection",
    "gap_counts",
    "list_parties",
    "reason_totals",
    "rejection_list",
    "tally",
]

#: The largest rejection id: the column is a database INTEGER (32 bits on PostgreSQL).
MAX_ID: Final = 2**31 - 1
#: The ``party`` of a filter that asks for messages of no registered device (not a party id:
#: ids are 3 to 64 characters).
NO_PARTY: Final = "-"

_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True, slots=True)
class RejectionFilter:
    """Which refused messages to read.

    ``reader_party`` is who may see them: None for every party's (inspectors, the admin), a
    party id for that party's devices only (a message of no registered device belongs to no
    party, so such a reader never sees it). The rest are a page's filters: ``party`` (a party
    id, or :data:`NO_PARTY`), ``device``, ``reason``, and the half-open range
    ``[from_ms, to_ms)`` of the first refusal.
    """

    reader_party: str | None = None
    party: str | None = None
    device: str | None = None
    reason: RejectReason | None = None
    from_ms: int | None = None
    to_ms: int | None = None


def _where(query: _Query, wanted: RejectionFilter) -> _Query:
    """``query`` over rejections (outer-joined to their device) narrowed to ``wanted``."""
    party = col(Device.party_id)
    if wanted.reader_party is not None:
        query = query.where(party == wanted.reader_party)
    if wanted.party == NO_PARTY:
        query = query.where(col(Device.id).is_(None))
    elif wanted.party is not None:
        query = query.where(party == wanted.party)
    if wanted.device is not None:
        query = query.where(col(Rejection.device_id) == wanted.device)
    if wanted.reason is not None:
        query = query.where(col(Rejection.reason) == wanted.reason.value)
    if wanted.from_ms is not None:
        query = query.where(col(Rejection.received_ms) >= wanted.from_ms)
    if wanted.to_ms is not None:
        query = query.where(col(Rejection.received_ms) < wanted.to_ms)
    return query


def _joined(query: _Query) -> _Query:
    return query.select_from(Rejection).outerjoin(
        Device, col(Device.id) == col(Rejection.device_id)
    )


@dataclass(frozen=True, slots=True)
class TallyRow:
    """Refused messages of one period, reason and device (``party_id`` None: no registered
    device); ``messages`` rows, ``arrivals`` with every repeat of their bytes."""

    bucket: int
    reason: RejectReason
    device_id: str | None
    party_id: str | None
    messages: int
    arrivals: int
    last_ms: int


def tally(
    session: Session, wanted: RejectionFilter, *, origin_ms: int, bucket_ms: int
) -> list[TallyRow]:
    """Count refused messages per period, reason and device.

    Args:
        session: an open session.
        wanted: which messages; its ``from_ms`` must be set and at least ``origin_ms``.
        origin_ms: the start of period 0.
        bucket_ms: the length of a period (a day or a week in ms).

    Returns:
        One row per (period, reason, device) with any message, the period being
        ``(first refusal - origin_ms) // bucket_ms``; ordered by period, reason and device.
    """
    if wanted.from_ms is None or wanted.from_ms < origin_ms or bucket_ms <= 0:
        raise ValueError("tally needs from_ms at or after origin_ms and a positive bucket")
    received = col(Rejection.received_ms)
    # Integer division in both databases: the difference is never negative (from_ms >= origin).
    bucket = ((received - literal(origin_ms, BigInteger)) / literal(bucket_ms, BigInteger)).label(
        "bucket"
    )
    query = _where(
        _joined(
            select(
                bucket,
                col(Rejection.reason),
                col(Rejection.device_id),
                col(Device.party_id),
                func.count(),
                func.sum(col(Rejection.received_count)),
                func.max(col(Rejection.last_received_ms)),
            )
        ),
        wanted,
    ).group_by(bucket, col(Rejection.reason), col(Rejection.device_id), col(Device.party_id))
    rows = [
        TallyRow(
            bucket=int(period),
            reason=RejectReason(reason),
            device_id=device,
            party_id=party,
            messages=int(messages),
            arrivals=int(arrivals),
            last_ms=int(last),
        )
        for period, reason, device, party, messages, arrivals, last in session.execute(query)
    ]
    order = {reason: n for n, reason in enumerate(RejectReason)}
    rows.sort(key=lambda row: (row.bucket, order[row.reason], row.device_id or ""))
    return rows


def reason_totals(session: Session, wanted: RejectionFilter) -> dict[RejectReason, tuple[int, int]]:
    """Refused messages and arrivals per reason (only reasons with any), in reason order."""
    query = _where(
        _joined(
            select(col(Rejection.reason), func.count(), func.sum(col(Rejection.received_count)))
        ),
        wanted,
    ).group_by(col(Rejection.reason))
    found = {RejectReason(r): (int(n), int(a)) for r, n, a in session.execute(query)}
    return {reason: found[reason] for reason in RejectReason if reason in found}


@dataclass(frozen=True, slots=True)
class RejectionSummary:
    """A refused message without its bytes, for lists."""

    id: int
    reason: RejectReason
    detail: str
    topic: str
    device_id: str | None
    party_id: str | None
    seq: int | None
    received_ms: int
    last_received_ms: int
    received_count: int
    raw_length: int


def rejection_list(
    session: Session, wanted: RejectionFilter, *, limit: int, before_id: int | None = None
) -> list[RejectionSummary]:
    """The newest refused messages of ``wanted`` (by id, newest first), ``limit`` at most.

    ``before_id`` pages backwards: pass the smallest id of the previous page.
    """
    query = _where(
        _joined(
            select(
                col(Rejection.id),
                col(Rejection.reason),
                col(Rejection.detail),
                col(Rejection.topic),
                col(Rejection.device_id),
                col(Device.party_id),
                col(Rejection.seq),
                col(Rejection.received_ms),
                col(Rejection.last_received_ms),
                col(Rejection.received_count),
                col(Rejection.raw_length),
            )
        ),
        wanted,
    )
    if before_id is not None and before_id <= MAX_ID:  # every id is below a larger one
        query = query.where(col(Rejection.id) < before_id)
    query = query.order_by(col(Rejection.id).desc()).limit(max(1, limit))
    return [
        RejectionSummary(
            id=int(row[0]),
            reason=RejectReason(row[1]),
            detail=row[2],
            topic=row[3],
            device_id=row[4],
            party_id=row[5],
            seq=row[6],
            received_ms=int(row[7]),
            last_received_ms=int(row[8]),
            received_count=int(row[9]),
            raw_length=int(row[10]),
        )
        for row in session.execute(query)
    ]


def find_rejection(
    session: Session, rejection_id: int, reader_party: str | None = None
) -> tuple[Rejection, str | None]:
    """The refused message ``rejection_id`` and its device's party (None: no registered device).

    Raises :class:`~tracecore.errors.NotFound` if there is none, or if ``reader_party`` is set
    and the message is not of one of its devices (a reader learns nothing of others').
    """
    if not 1 <= rejection_id <= MAX_ID:
        raise NotFound(f"no rejection {rejection_id}")
    found = session.execute(
        select(Rejection, col(Device.party_id))
        .outerjoin(Device, col(Device.id) == col(Rejection.device_id))
        .where(col(Rejection.id) == rejection_id)
    ).first()
    if found is None or (reader_party is not None and found[1] != reader_party):
        raise NotFound(f"no rejection {rejection_id}")
    rejection: Rejection = found[0]
    return rejection, found[1]


@dataclass(frozen=True, slots=True)
class GapCount:
    """A registered device with sequence numbers missing from the log."""

    device_id: str
    party_id: str
    missing: int
    highest_seq: int


def gap_counts(
    session: Session,
    *,
    reader_party: str | None = None,
    party: str | None = None,
    device: str | None = None,
) -> list[GapCount]:
    """Every registered device (of ``party``, or ``device`` alone) that has gaps, most first.

    A device's messages in the log hold distinct seqs (a unique index), so the missing count
    from 1 to the highest seq is the highest seq less the number of messages: one indexed
    grouping over the log instead of a gap search per device
    (:func:`tracecore.storage.queries.device_gaps` finds the ranges of one device).
    """
    seq = col(LogEntry.seq)
    query = (
        select(col(LogEntry.device_id), col(Device.party_id), func.count(seq), func.max(seq))
        .join(Device, col(Device.id) == col(LogEntry.device_id))
        .where(seq.is_not(None))
        .group_by(col(LogEntry.device_id), col(Device.party_id))
        .having(func.max(seq) > func.count(seq))
    )
    for wanted in (reader_party, party):
        if wanted is not None:
            query = query.where(col(Device.party_id) == wanted)
    if device is not None:
        query = query.where(col(LogEntry.device_id) == device)
    counts = [
        GapCount(str(device_id), str(owner), int(highest) - int(count), int(highest))
        for device_id, owner, count, highest in session.execute(query)
    ]
    counts.sort(key=lambda gap: (-gap.missing, gap.device_id))
    return counts


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """What a device's logged messages show: how many, the highest seq, the newest arrival."""

    messages: int
    highest_seq: int | None
    last_received_ms: int | None


def device_activity(session: Session, device_id: str) -> DeviceActivity:
    """The logged messages of ``device_id`` in brief."""
    seq = col(LogEntry.seq)
    count, highest, last = session.execute(
        select(func.count(seq), func.max(seq), func.max(col(LogEntry.received_ms))).where(
            col(LogEntry.device_id) == device_id, seq.is_not(None)
        )
    ).one()
    return DeviceActivity(
        int(count or 0),
        None if highest is None else int(highest),
        None if last is None else int(last),
    )


def device_parties(session: Session, device_ids: Iterable[str]) -> dict[str, str]:
    """The owning party of each registered device among ``device_ids``."""
    ids = sorted(set(device_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(col(Device.id), col(Device.party_id)).where(
                col(Device.id).in_(ids[start : start + 500])
            )
        )
        found.update({str(device): str(party) for device, party in rows})
    return found


def list_parties(session: Session, reader_party: str | None = None) -> list[Party]:
    """The parties that have devices (only ``reader_party`` if set), by id."""
    query = select(Party).where(col(Party.id).in_(select(col(Device.party_id)).distinct()))
    if reader_party is not None:
        query = query.where(col(Party.id) == reader_party)
    return list(session.scalars(query.order_by(col(Party.id))).all())
