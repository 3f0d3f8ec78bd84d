"""A farm's own devices: one-time provisioning downloads and what a revocation would untrust.

* :func:`issue_provisioning` and :func:`claim_provisioning`: registering a device in the console
  issues a random download token; only its SHA-256 is stored. The first download by the one
  who registered the device marks it used, atomically (a conditional UPDATE), so two racing
  downloads cannot both succeed; every later one is refused (docs/gateway.md).
* :func:`revocation_impact`: the device's logged messages whose device time lies in a window
  (from the "since" of a revocation on): how many, the first and last time, and the products
  they touch. Plain SQL of SQLite and PostgreSQL alike (aggregates, a join, DISTINCT).

Functions take an open session and explicit times, as the rest of the storage package.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import distinct, func, update
from sqlmodel import Session, col, select

from tracecore.errors import NotFound
from tracecore.storage.models import ChainLink, LogEntry, ProvisioningFile

__all__ = [
    "PROVISIONING_TOKEN_PREFIX",
    "Claim",
    "Impact",
    "claim_provisioning",
    "issue_provisioning",
    "revocation_impact",
]

#: Every download token starts with this (easy to recognise, never confused with ``at_``).
PROVISIONING_TOKEN_PREFIX: Final = "pv_"  # noqa: S105 (a public prefix, not a secret)
_TOKEN_BYTES: Final = 32


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def issue_provisioning(
    session: Session, device_id: str, kid: bytes, issued_to: str, now_ms: int
) -> str:
    """Issue the one-time download token of a device's provisioning file; return its text.

    Args:
        session: the open transaction (the device row must exist).
        device_id: the device the file is for.
        kid: the 8-byte kid of the key registered with it (the file's fingerprint).
        issued_to: who may download it: the registering party's id, or ``admin``.
        now_ms: the time of issue.

    Returns:
        ``pv_`` and 32 random bytes in unpadded URL-safe base64; only its SHA-256 is stored.
    """
    raw = secrets.token_bytes(_TOKEN_BYTES)
    token = PROVISIONING_TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    session.add(
        ProvisioningFile(
            token_hash=_hash(token),
            device_id=device_id,
            kid=kid,
            issued_to=issued_to,
            created_ms=now_ms,
        )
    )
    session.flush()
    return token


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a download: ``ok`` (this one), ``used`` (before, at ``used_ms``) or
    ``refused`` (the token is someone else's)."""

    outcome: Literal["ok", "used", "refused"]
    device_id: str
    kid: bytes
    used_ms: int | None


def claim_provisioning(session: Session, token: str, who: str, now_ms: int) -> Claim:
    """Claim the download of the provisioning file that ``token`` names, for ``who``.

    Only the one it was issued to (a party id or ``admin``) may claim it, once: the first claim
    sets ``used_ms`` to ``now_ms`` in a conditional UPDATE, so of two concurrent claims one
    wins. A refused claim (``who`` is someone else) leaves the token unused.

    Raises:
        NotFound: no token with this text was ever issued.
    """
    row = session.exec(
        select(ProvisioningFile).where(col(ProvisioningFile.token_hash) == _hash(token))
    ).first()
    if row is None or row.id is None:
        raise NotFound("no such provisioning file")
    if row.issued_to != who:
        return Claim("refused", row.device_id, row.kid, row.used_ms)
    claimed = session.execute(
        update(ProvisioningFile)
        .where(col(ProvisioningFile.id) == row.id, col(ProvisioningFile.used_ms).is_(None))
        .values(used_ms=now_ms)
    )
    if claimed.rowcount == 1:  # type: ignore[attr-defined]
        return Claim("ok", row.device_id, row.kid, now_ms)
    session.refresh(row)
    return Claim("used", row.device_id, row.kid, row.used_ms)


@dataclass(frozen=True, slots=True)
class Impact:
    """The logged messages of a device in a window of device time, and what they touch."""

    messages: int
    first_ms: int | None
    last_ms: int | None
    #: The products the messages are in the chains of, in key order, at most ``limit``.
    products: list[str]
    #: How many distinct products in all (may exceed ``len(products)``).
    product_count: int


def revocation_impact(
    session: Session,
    device_id: str,
    since_ms: int,
    until_ms: int | None = None,
    *,
    limit: int = 100,
) -> Impact:
    """Count the device's logged messages with device time in ``[since_ms, until_ms)``.

    These are the messages a revocation since ``since_ms`` of the key that signs in that
    window makes untrusted (docs/gateway.md, "A lost or stolen gateway"). ``until_ms`` None
    means no end (the current key). The time is the message's own ``time`` field, as the key
    window rule reads it (:func:`tracecore.keys.key_window_refusal`).
    """
    where = [
        col(LogEntry.kind) == "device_message",
        col(LogEntry.device_id) == device_id,
        col(LogEntry.time_ms) >= since_ms,
    ]
    if until_ms is not None:
        where.append(col(LogEntry.time_ms) < until_ms)
    count, first, last = session.execute(
        select(func.count(), func.min(LogEntry.time_ms), func.max(LogEntry.time_ms)).where(*where)
    ).one()
    linked = (
        select(col(ChainLink.product_key))
        .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
        .where(*where)
    )
    product_count = session.execute(
        select(func.count(distinct(col(ChainLink.product_key))))
        .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
        .where(*where)
    ).scalar_one()
    products = session.execute(
        linked.distinct().order_by(col(ChainLink.product_key)).limit(limit)
    ).scalars()
    return Impact(int(count), first, last, list(products), int(product_count))
