"""What the producer console reads and writes: a party's devices, complaints and answers.

A party's devices with the newest receipt each was sent (:func:`party_devices`,
:func:`last_receipts`); the complaints on a party's products with their answers
(:func:`list_complaints`), and the owning party's answer to one (:func:`answer_complaint`): one
per complaint, never written over (docs/farms.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlmodel import Session, col

from tracecore.errors import Conflict, NotFound, StorageError
from tracecore.storage.engine import storage_errors
from tracecore.storage.models import ComplaintAnswer, Device, Feedback, LogEntry, Product, Receipt

__all__ = [
    "ANSWER_LIMIT",
    "ComplaintView",
    "LastReceipt",
    "answer_complaint",
    "last_receipts",
    "list_complaints",
    "party_devices",
]

#: The longest answer, in characters (as long as a complaint may be).
ANSWER_LIMIT: Final = 2000


def party_devices(session: Session, party: str | None) -> list[Device]:
    """The devices of ``party`` (every party's for None), by party and id."""
    query = select(Device).order_by(col(Device.party_id), col(Device.id))
    if party is not None:
        query = query.where(col(Device.party_id) == party)
    return list(session.scalars(query).all())


@dataclass(frozen=True, slots=True)
class LastReceipt:
    """The receipt of a device's highest acknowledged seq: its log entry and when it came."""

    seq: int
    log_index: int
    received_ms: int


def last_receipts(session: Session, device_ids: Iterable[str]) -> dict[str, LastReceipt]:
    """The receipt of the highest seq of each device among ``device_ids`` that has one.

    Ingest keeps every receipt it sent (table ``receipts``, one per device and seq) so a resend
    gets the same one; the newest is the one of the highest seq, its time the time its message
    was logged.
    """
    ids = sorted(set(device_ids))
    found: dict[str, LastReceipt] = {}
    for start in range(0, len(ids), 500):
        highest = (
            select(col(Receipt.device_id), func.max(col(Receipt.seq)).label("seq"))
            .where(col(Receipt.device_id).in_(ids[start : start + 500]))
            .group_by(col(Receipt.device_id))
            .subquery()
        )
        rows = session.execute(
            select(
                col(Receipt.device_id),
                col(Receipt.seq),
                col(Receipt.log_index),
                col(LogEntry.received_ms),
            )
            .join(
                highest,
                (col(Receipt.device_id) == highest.c.device_id)
                & (col(Receipt.seq) == highest.c.seq),
            )
            .join(LogEntry, col(LogEntry.index) == col(Receipt.log_index))
        )
        for device, seq, index, received in rows:
            found[str(device)] = LastReceipt(int(seq), int(index), int(received))
    return found


@dataclass(frozen=True, slots=True)
class ComplaintView:
    """A buyer's complaint on a product, its owner, and the owner's answer if there is one."""

    id: int
    product_key: str
    owner: str
    rating: int
    complaint: str
    at_ms: int
    answer: ComplaintAnswer | None


def list_complaints(
    session: Session, party: str | None, *, limit: int, before_id: int | None = None
) -> list[ComplaintView]:
    """The complaints on ``party``'s products (every party's for None), newest first.

    At most ``limit``; ``before_id`` pages on (complaints with a smaller id: ids grow with
    time).
    """
    query = (
        select(Feedback, col(Product.owner_party_id), ComplaintAnswer)
        .join(Product, col(Product.key) == col(Feedback.product_key))
        .outerjoin(ComplaintAnswer, col(ComplaintAnswer.feedback_id) == col(Feedback.id))
        .where(col(Feedback.complaint).is_not(None))
    )
    if party is not None:
        query = query.where(col(Product.owner_party_id) == party)
    if before_id is not None:
        query = query.where(col(Feedback.id) < before_id)
    query = query.order_by(col(Feedback.id).desc()).limit(limit)
    return [
        ComplaintView(
            id=int(feedback.id or 0),
            product_key=feedback.product_key,
            owner=str(owner),
            rating=feedback.rating,
            complaint=feedback.complaint or "",
            at_ms=feedback.at_ms,
            answer=answer,
        )
        for feedback, owner, answer in session.execute(query).all()
    ]


def answer_complaint(
    session: Session,
    feedback_id: int,
    party: str,
    text: str,
    now_ms: int,
    *,
    token_id: int | None = None,
) -> ComplaintAnswer:
    """Store ``party``'s answer to the complaint ``feedback_id`` at ``now_ms``; return it.

    Raises NotFound when there is no such complaint or ``party`` does not own its product (a
    party learns nothing of another's complaints), Conflict when it was answered already (the
    first answer stays), StorageError when ``text`` is empty or longer than
    :data:`ANSWER_LIMIT` characters.
    """
    if not 1 <= len(text) <= ANSWER_LIMIT:
        raise StorageError(f"an answer holds 1 to {ANSWER_LIMIT} characters, got {len(text)}")
    row = session.execute(
        select(Feedback, col(Product.owner_party_id))
        .join(Product, col(Product.key) == col(Feedback.product_key))
        .where(col(Feedback.id) == feedback_id, col(Feedback.complaint).is_not(None))
    ).first()
    if row is None or row[1] != party:
        raise NotFound(f"no complaint {feedback_id} on {party}'s products")
    if session.get(ComplaintAnswer, feedback_id) is not None:
        raise Conflict(f"complaint {feedback_id} has an answer already")
    answer = ComplaintAnswer(
        feedback_id=feedback_id, party_id=party, token_id=token_id, text=text, at_ms=now_ms
    )
    session.add(answer)
    with storage_errors():  # a concurrent first answer: the primary key refuses this one
        session.flush()
    return answer
