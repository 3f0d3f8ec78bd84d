"""Console sessions and sign-in attempts (docs/inspection.md, "The console").

A session is opened with a token that :mod:`tracecore.storage.registry` accepts (or the admin
token, a setting): :func:`open_session` stores the SHA-256 of a fresh random secret and returns
the secret once, for the browser's cookie. :func:`find_session` looks a presented secret up;
whether the session still holds at a given time is :meth:`SessionInfo.ending`, which applies the
idle and absolute lifetimes and the state of the token it stands for (revoked or expired tokens
end their sessions at once, since the token is read with the session on every request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.orm import Session

from tracecore.storage.models import ConsoleSession, SignIn
from tracecore.storage.rawsql import execute, fetch_one

__all__ = [
    "SESSION_ENDINGS",
    "OpenedSession",
    "SessionEnding",
    "SessionInfo",
    "admin_token_hash",
    "end_session",
    "failed_sign_ins_since",
    "find_session",
    "open_session",
    "record_sign_in",
    "touch_session",
]

#: Bytes of randomness of a session secret (256 bits, as the tokens).
_SECRET_BYTES: Final = 32

SessionEnding = Literal[
    "signed_out", "idle", "too_old", "token_revoked", "token_expired", "admin_changed"
]
#: Why a session no longer holds, each a key of the console's messages.
SESSION_ENDINGS: Final[tuple[SessionEnding, ...]] = (
    "signed_out",
    "idle",
    "too_old",
    "token_revoked",
    "token_expired",
    "admin_changed",
)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session: its id, and its secret, which exists only in the browser's cookie."""

    id: int
    secret: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A stored session with what it stands for: the admin, or a token's role and party."""

    id: int
    role: str
    party_id: str | None
    token_id: int | None
    admin_hash: bytes | None
    created_ms: int
    last_seen_ms: int
    ended_ms: int | None
    token_expires_ms: int | None
    token_revoked_ms: int | None

    def ending(  # noqa: PLR0911 (one answer per way a session ends)
        self, now_ms: int, *, idle_ms: int, max_ms: int, admin_hash: bytes | None
    ) -> SessionEnding | None:
        """Why the session no longer holds at ``now_ms``, or None if it does.

        ``admin_hash`` is the SHA-256 of the admin token configured now (None when unset): an
        admin session holds only while it is the one the session was opened with.
        """
        if self.ended_ms is not None:
            return "signed_out"
        if self.admin_hash is not None and (admin_hash is None or admin_hash != self.admin_hash):
            return "admin_changed"
        if self.token_revoked_ms is not None:  # at once, as for the token itself
            return "token_revoked"
        if self.token_expires_ms is not None and now_ms >= self.token_expires_ms:
            return "token_expired"
        if now_ms >= self.created_ms + max_ms:
            return "too_old"
        if now_ms >= self.last_seen_ms + idle_ms:
            return "idle"
        return None

    def expires_ms(self, *, idle_ms: int, max_ms: int) -> int:
        """When the session ends if nothing else ends it first (idle or absolute lifetime)."""
        ends = [self.created_ms + max_ms, self.last_seen_ms + idle_ms]
        if self.token_expires_ms is not None:
            ends.append(self.token_expires_ms)
        return min(ends)


def open_session(
    session: Session, *, token_id: int | None, admin_hash: bytes | None, now_ms: int
) -> OpenedSession:
    """Store a new session for a token (or the admin) and return it with its secret.

    Exactly one of ``token_id`` and ``admin_hash`` is given (the table's check refuses both or
    neither). The secret comes from :func:`secrets.token_urlsafe`; only its hash is stored.
    """
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    row = ConsoleSession(
        secret_hash=_hash(secret),
        token_id=token_id,
        admin_hash=admin_hash,
        created_ms=now_ms,
        last_seen_ms=now_ms,
    )
    session.add(row)
    session.flush()
    assert row.id is not None  # noqa: S101 (flushed: the database gave it an id)
    return OpenedSession(row.id, secret)


_FIND = (
    "SELECT s.id, t.role, t.party_id, s.token_id, s.admin_hash, s.created_ms, s.last_seen_ms, "
    "s.ended_ms, t.expires_ms, t.revoked_ms "
    "FROM console_sessions s LEFT JOIN tokens t ON t.id = s.token_id WHERE s.secret_hash = ?"
)


def find_session(session: Session, secret: str) -> SessionInfo | None:
    """Return the session whose secret is ``secret`` whatever its state; None if unknown."""
    row = fetch_one(session, _FIND, [_hash(secret)])
    if row is None:
        return None
    ident, role, party, token_id, admin_hash, created, seen, ended, expires, revoked = row
    return SessionInfo(
        id=int(ident),
        role="admin" if admin_hash is not None else str(role),
        party_id=party,
        token_id=None if token_id is None else int(token_id),
        admin_hash=None if admin_hash is None else bytes(admin_hash),
        created_ms=int(created),
        last_seen_ms=int(seen),
        ended_ms=None if ended is None else int(ended),
        token_expires_ms=None if expires is None else int(expires),
        token_revoked_ms=None if revoked is None else int(revoked),
    )


def touch_session(session: Session, session_id: int, now_ms: int) -> None:
    """Move the session's last activity to ``now_ms`` (never backwards)."""
    execute(
        session,
        "UPDATE console_sessions SET last_seen_ms = ? WHERE id = ? AND last_seen_ms < ?",
        [now_ms, session_id, now_ms],
    )


def end_session(session: Session, session_id: int, now_ms: int) -> None:
    """Sign the session out at ``now_ms`` (a session already ended keeps its first end)."""
    execute(
        session,
        "UPDATE console_sessions SET ended_ms = ? WHERE id = ? AND ended_ms IS NULL",
        [now_ms, session_id],
    )


def record_sign_in(
    session: Session, client: bytes, now_ms: int, *, ok: bool, token_id: int | None
) -> None:
    """Record one sign-in attempt of ``client`` (a 16-byte keyed hash of its address)."""
    session.add(SignIn(client=client, at_ms=now_ms, ok=ok, token_id=token_id))
    session.flush()


def failed_sign_ins_since(session: Session, client: bytes, since_ms: int) -> tuple[int, int | None]:
    """The failed sign-ins of ``client`` after ``since_ms``: how many, and when the first was."""
    row = fetch_one(
        session,
        "SELECT COUNT(*), MIN(at_ms) FROM sign_ins WHERE client = ? AND at_ms > ? AND ok = ?",
        [client, since_ms, False],
    )
    if row is None:
        return 0, None
    count, first = row
    return int(count), None if first is None else int(first)


def admin_token_hash(token: str) -> bytes:
    """The SHA-256 of the admin token's text: all an admin session keeps of it (never the text)."""
    return _hash(token)
