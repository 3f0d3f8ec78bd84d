"""Read-only queries shared by the services: rejections, sequence gaps, counts for /metrics.

Every function takes an open :class:`sqlmodel.Session`; none writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from tracecore.errors import RejectReason
from tracecore.storage.models import (
    Checkpoint,
    Device,
    LogEntry,
    ParkedMessage,
    Product,
    Rejection,
)

__all__ = ["LogStats", "device_gaps", "list_rejections", "log_stats", "rejection_counts"]

MAX_LIST = 1000


def list_rejections(
    session: Session,
    *,
    reason: RejectReason | None = None,
    device_id: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> Sequence[Rejection]:
    """Return rejections, newest first, optionally filtered by reason and device.

    ``before_id`` pages backwards: pass the smallest id of the previous page.
    """
    query = select(Rejection).order_by(col(Rejection.id).desc())
    if reason is not None:
        query = query.where(col(Rejection.reason) == reason.value)
    if device_id is not None:
        query = query.where(col(Rejection.device_id) == device_id)
    if before_id is not None:
        query = query.where(col(Rejection.id) < before_id)
    return session.scalars(query.limit(max(1, min(limit, MAX_LIST)))).all()


def device_gaps(session: Session, device_id: str) -> list[tuple[int, int]]:
    """Return the missing sequence numbers of a device as inclusive ``(first, last)`` ranges.

    The ranges cover 1 up to the highest seq in the log for that device; a store-and-forward
    device that is still flushing shows gaps that close as its messages arrive.
    """
    # LAG over the device's seqs finds each hole in one pass (SQLite >= 3.25, PostgreSQL).
    seq = col(LogEntry.seq)
    previous = func.lag(seq).over(order_by=seq).label("previous")
    inner = (
        select(seq.label("seq"), previous).where(col(LogEntry.device_id) == device_id).subquery()
    )
    rows = session.execute(
        select(inner.c.seq, inner.c.previous).where(
            func.coalesce(inner.c.previous, 0) < inner.c.seq - 1
        )
    ).all()
    return [(int(prev or 0) + 1, int(seq) - 1) for seq, prev in sorted(rows)]


def rejection_counts(session: Session) -> dict[RejectReason, int]:
    """Return the number of refused messages per reason (0 for reasons never seen).

    Every refusal counts, repeats included: a row stands for ``received_count`` arrivals of the
    same bytes (docs/storage.md, "rejections"), so the count is a true counter for /metrics.
    """
    counts = dict.fromkeys(RejectReason, 0)
    rows = session.execute(
        select(col(Rejection.reason), func.sum(col(Rejection.received_count))).group_by(
            col(Rejection.reason)
        )
    ).all()
    for reason, count in rows:
        counts[RejectReason(reason)] = int(count)
    return counts


@dataclass(frozen=True, slots=True)
class LogStats:
    """Sizes of the log and the registry, for /metrics and health pages."""

    log_size: int
    checkpoint_size: int
    checkpoint_ms: int | None
    parked: int
    devices: int
    products: int


def log_stats(session: Session) -> LogStats:
    """Return the current :class:`LogStats`."""
    last_index = session.scalar(select(func.max(col(LogEntry.index))))
    checkpoint = session.execute(
        select(col(Checkpoint.size), col(Checkpoint.created_ms))
        .order_by(col(Checkpoint.size).desc())
        .limit(1)
    ).first()
    return LogStats(
        log_size=0 if last_index is None else int(last_index) + 1,
        checkpoint_size=int(checkpoint[0]) if checkpoint else 0,
        checkpoint_ms=int(checkpoint[1]) if checkpoint else None,
        parked=int(session.scalar(select(func.count()).select_from(ParkedMessage)) or 0),
        devices=int(session.scalar(select(func.count()).select_from(Device)) or 0),
        products=int(session.scalar(select(func.count()).select_from(Product)) or 0),
    )
