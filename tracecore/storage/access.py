"""The access trail in the database: ``access`` log entries and the index that finds them.

An access (:class:`tracecore.logentry.Access`) is appended to the log like a recall, under the
log's single-writer lock, together with its index rows (``access_records``, ``access_parties``)
in one transaction. :func:`append_accesses` takes a batch, so that many reads cost the log one
lock acquisition (docs/inspection.md, "The access trail").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from tracecore.logentry import Access
from tracecore.storage.logwriter import append_registry_entry
from tracecore.storage.models import AccessParty, AccessRecord, Device, Product

__all__ = [
    "AccessRow",
    "append_accesses",
    "device_parties",
    "list_accesses",
    "product_owners",
]


@dataclass(frozen=True, slots=True)
class AccessRow:
    """An access as the trail shows it: the entry's log index and fields."""

    index: int
    time_ms: int
    who: str
    role: str
    action: str
    target: str
    parties: tuple[str, ...]


def append_accesses(session: Session, accesses: Sequence[Access], received_ms: int) -> list[int]:
    """Append ``accesses`` to the log in order, with their index rows; return their indexes.

    Call inside :func:`tracecore.storage.logwriter.log_session`: the entries and the index
    commit together or not at all.
    """
    indexes = []
    for access in accesses:
        index = append_registry_entry(session, access, received_ms)
        session.add(
            AccessRecord(
                log_index=index,
                time_ms=access.time,
                who=access.who,
                role=access.role,
                action=access.action,
                target=access.target,
            )
        )
        session.flush()
        session.add_all(AccessParty(log_index=index, party_id=p) for p in access.parties)
        indexes.append(index)
    session.flush()
    return indexes


def list_accesses(
    session: Session,
    *,
    party: str | None = None,
    who: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AccessRow]:
    """The newest accesses first: of ``party``'s data and/or by ``who``, below log index
    ``before`` (for paging), at most ``limit``."""
    query = select(AccessRecord)
    if party is not None:
        shown = select(col(AccessParty.log_index)).where(col(AccessParty.party_id) == party)
        query = query.where(col(AccessRecord.log_index).in_(shown))
    if who is not None:
        query = query.where(col(AccessRecord.who) == who)
    if before is not None:
        query = query.where(col(AccessRecord.log_index) < before)
    query = query.order_by(col(AccessRecord.log_index).desc()).limit(limit)
    records = list(session.scalars(query))
    parties: dict[int, list[str]] = {r.log_index: [] for r in records}
    if records:
        rows = session.execute(
            select(col(AccessParty.log_index), col(AccessParty.party_id))
            .where(col(AccessParty.log_index).in_(list(parties)))
            .order_by(col(AccessParty.log_index), col(AccessParty.party_id))
        )
        for index, party_id in rows:
            parties[index].append(party_id)
    return [
        AccessRow(
            r.log_index, r.time_ms, r.who, r.role, r.action, r.target, tuple(parties[r.log_index])
        )
        for r in records
    ]


def product_owners(session: Session, keys: Collection[str]) -> set[str]:
    """The owning parties of the stored products among ``keys`` (for an access's parties)."""
    found: set[str] = set()
    ordered = sorted(set(keys))
    for i in range(0, len(ordered), 500):  # bounded IN lists, for either database
        chunk = ordered[i : i + 500]
        found.update(
            session.scalars(
                select(col(Product.owner_party_id)).where(col(Product.key).in_(chunk)).distinct()
            )
        )
    return found


def device_parties(session: Session, devices: Collection[str]) -> set[str]:
    """The parties of the registered devices among ``devices`` (for an access's parties)."""
    found: set[str] = set()
    ordered = sorted(set(devices))
    for i in range(0, len(ordered), 500):
        chunk = ordered[i : i + 500]
        found.update(
            session.scalars(
                select(col(Device.party_id)).where(col(Device.id).in_(chunk)).distinct()
            )
        )
    return found
