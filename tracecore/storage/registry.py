"""Registry repository: parties, tokens, devices and their keys.

Every function takes an open :class:`~sqlmodel.Session` and, where time matters, an explicit
``now_ms`` (milliseconds since the Unix epoch): nothing here reads the clock, and the caller owns
the transaction (:func:`tracecore.storage.engine.session_scope`). Errors are agritrace errors:
:class:`IdentifierError` for a bad id, name or kind, :class:`KeyFileError` for a public key that
is not a usable Ed25519 key, :class:`NotFound`, :class:`Conflict`, and for :func:`key_for` the
ingest reasons :class:`UnknownKey` and :class:`RevokedKey`.

Tokens: a party or inspector token is accepted from its issue until ``expires_ms`` (excluded)
unless it is revoked (docs/registry-api.md, "Token lifetime and revocation"). The lookups read the
database on every call and cache nothing, so a revocation holds from the next request on.

Key windows: a device key may sign a message whose device time ``t`` satisfies
``valid_from_ms - 5 min <= t`` (a device clock behind the server's), ``t < valid_until_ms`` (when
set: the key was rotated out at that time) and ``t < revoked_ms`` (when set: the key is
compromised since then); :func:`tracecore.keys.key_window_refusal` is the rule.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from sqlmodel import Session, col, select

from tracecore.errors import (
    Conflict,
    IdentifierError,
    KeyFileError,
    NotFound,
    RevokedKey,
    UnknownKey,
)
from tracecore.identifiers import parse_device_id, parse_party_id
from tracecore.keys import KID_LENGTH, device_kid, key_window_refusal
from tracecore.storage.engine import storage_errors
from tracecore.storage.models import PARTY_KINDS, Device, DeviceKey, Party, Token

__all__ = [
    "DEFAULT_TOKEN_LIFETIME_MS",
    "MAX_TOKEN_LIFETIME_MS",
    "NAME_MAX_LENGTH",
    "PUBLIC_KEY_LENGTH",
    "TOKEN_PREFIX",
    "IssuedToken",
    "PartyProfile",
    "Place",
    "TokenGrant",
    "TokenInfo",
    "TokenState",
    "create_party",
    "current_key",
    "device_keys",
    "find_token",
    "format_ms",
    "get_device",
    "get_party",
    "get_token",
    "hash_token",
    "issue_token",
    "key_for",
    "list_tokens",
    "lookup_token",
    "register_device",
    "revoke_key",
    "revoke_token",
    "revoke_token_id",
    "rotate_key",
    "update_party",
    "validate_public_key",
]

#: Every token starts with this, so that leaked tokens are easy to recognise (secret scanners).
TOKEN_PREFIX: Final = "at_"  # noqa: S105 (a public prefix, not a secret)
#: Random bytes in a token.
TOKEN_BYTES: Final = 32
#: Length of an Ed25519 public key.
PUBLIC_KEY_LENGTH: Final = 32
#: Longest party name.
NAME_MAX_LENGTH: Final = 200
_DAY_MS: Final = 24 * 3600 * 1000
#: Lifetime of a party or inspector token unless its issuer gives another (90 days).
DEFAULT_TOKEN_LIFETIME_MS: Final = 90 * _DAY_MS
#: Longest lifetime a token may be issued with (one year): every stored token expires.
MAX_TOKEN_LIFETIME_MS: Final = 366 * _DAY_MS


def format_ms(ms: int) -> str:
    """Return a time in ms since the Unix epoch as UTC text, ``2024-02-12T22:13:20Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class IssuedToken(NamedTuple):
    """A freshly issued token: the plaintext exists only here, the database holds its hash.

    ``id`` names the token afterwards (listing, revocation); it is not secret.
    """

    token: str
    party_id: str
    role: str
    id: int
    created_ms: int
    expires_ms: int


class TokenGrant(NamedTuple):
    """What a presented token allows: its role (``party`` or ``inspector``), party and id."""

    role: str
    party_id: str | None
    token_id: int


#: Whether a stored token is accepted now: ``active``, or refused as ``expired`` or ``revoked``.
TokenState = Literal["active", "expired", "revoked"]


class TokenInfo(NamedTuple):
    """A stored token as it may be shown: never its text nor its hash."""

    id: int
    party_id: str | None
    role: str
    created_ms: int
    expires_ms: int
    revoked_ms: int | None

    @classmethod
    def of(cls, row: Token) -> TokenInfo:
        """Build the view of a stored row."""
        assert row.id is not None  # noqa: S101 (a stored row has its id)
        return cls(
            id=row.id,
            party_id=row.party_id,
            role=row.role,
            created_ms=row.created_ms,
            expires_ms=row.expires_ms,
            revoked_ms=row.revoked_ms,
        )

    def state(self, now_ms: int) -> TokenState:
        """Return the token's state at ``now_ms``: a revocation holds at once, whatever its time."""
        if self.revoked_ms is not None:
            return "revoked"
        if now_ms >= self.expires_ms:
            return "expired"
        return "active"

    def refusal(self, now_ms: int) -> str | None:
        """Why the token is refused at ``now_ms`` ("token expired on …"), or None if accepted."""
        state = self.state(now_ms)
        if state == "revoked" and self.revoked_ms is not None:
            return f"token revoked on {format_ms(self.revoked_ms)}"
        if state == "expired":
            return f"token expired on {format_ms(self.expires_ms)}"
        return None

    def grant(self) -> TokenGrant:
        """Return what the token allows (whether it is still accepted is :meth:`refusal`)."""
        return TokenGrant(role=self.role, party_id=self.party_id, token_id=self.id)


def hash_token(token: str) -> bytes:
    """Return the stored form of a token: the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def validate_public_key(public_key: bytes) -> bytes:
    """Return ``public_key`` if it is a usable Ed25519 public key, else raise KeyFileError.

    It must be exactly 32 bytes and decode to a point of the prime-order subgroup (libsodium's
    check in ``crypto_sign_ed25519_pk_to_curve25519``): this refuses the all-zero key, the other
    small-order points and encodings that are not on the curve.
    """
    if len(public_key) != PUBLIC_KEY_LENGTH:
        raise KeyFileError(
            f"an Ed25519 public key is {PUBLIC_KEY_LENGTH} bytes, got {len(public_key)}"
        )
    try:
        crypto_sign_ed25519_pk_to_curve25519(public_key)
    except CryptoError as exc:
        raise KeyFileError(
            "not a valid Ed25519 public key (not a curve point of the prime-order subgroup)"
        ) from exc
    return public_key


def _check_name(name: str) -> str:
    """Return the stripped party name, refusing empty or over-long names."""
    stripped = name.strip()
    if not stripped or len(stripped) > NAME_MAX_LENGTH:
        raise IdentifierError(f"party name must be 1-{NAME_MAX_LENGTH} characters")
    return stripped


class Place(NamedTuple):
    """Where a device is, as its party names it, in Chinese and English (either may be None)."""

    zh: str | None = None
    en: str | None = None


class PartyProfile(NamedTuple):
    """The public profile of a party, shown on product and stall pages (all optional).

    ``name_en`` is the English name (``Party.name`` is the Chinese or only one), ``place`` the
    county and province in Chinese and English, ``licence`` the registration or licence
    (营业执照, 动物防疫条件合格证 or 食品经营许可证 number) that a buyer can look up.
    """

    name_en: str | None = None
    place: Place = Place()
    licence: str | None = None


def _check_text(what: str, value: str | None) -> str | None:
    """Return the stripped text (None for None or blank), refusing long or control text."""
    if value is None or not value.strip():
        return None
    stripped = value.strip()
    if len(stripped) > NAME_MAX_LENGTH:
        raise IdentifierError(f"{what} must be at most {NAME_MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise IdentifierError(f"{what} must not hold control characters")
    return stripped


def _apply_profile(party: Party, profile: PartyProfile) -> None:
    party.name_en = _check_text("name_en", profile.name_en)
    party.place = _check_text("place", profile.place.zh)
    party.place_en = _check_text("place_en", profile.place.en)
    party.licence = _check_text("licence", profile.licence)


def _check_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`PARTY_KINDS`."""
    if kind not in PARTY_KINDS:
        raise IdentifierError(f"party kind must be one of {', '.join(PARTY_KINDS)}, got {kind!r}")
    return kind


def _flush(session: Session) -> None:
    """Flush pending changes, translating constraint violations into Conflict."""
    with storage_errors():
        session.flush()


def get_party(session: Session, party_id: str) -> Party:
    """Return the party ``party_id``; raise NotFound if there is none."""
    party = session.get(Party, parse_party_id(party_id))
    if party is None:
        raise NotFound(f"no party {party_id!r}")
    return party


def create_party(
    session: Session,
    party_id: str,
    name: str,
    kind: str,
    now_ms: int,
    *,
    profile: PartyProfile = PartyProfile(),  # noqa: B008 (an immutable tuple)
) -> Party:
    """Create the party ``party_id`` of ``kind`` named ``name``; raise Conflict if it exists."""
    party = Party(
        id=parse_party_id(party_id),
        name=_check_name(name),
        kind=_check_kind(kind),
        created_ms=now_ms,
    )
    _apply_profile(party, profile)
    if session.get(Party, party.id) is not None:
        raise Conflict(f"party {party.id!r} exists already")
    session.add(party)
    _flush(session)
    return party


def update_party(session: Session, party_id: str, name: str | None, profile: PartyProfile) -> Party:
    """Replace the public profile of ``party_id`` (and its name, unless None); return the party.

    Raises NotFound for an unknown party, IdentifierError for a bad value.
    """
    party = get_party(session, party_id)
    if name is not None:
        party.name = _check_name(name)
    _apply_profile(party, profile)
    session.add(party)
    _flush(session)
    return party


def issue_token(
    session: Session, party_id: str, now_ms: int, *, lifetime_ms: int | None = None
) -> IssuedToken:
    """Issue a new bearer token for the party; the plaintext is returned once, only its hash kept.

    The role is ``inspector`` for a party of kind ``inspector``, else ``party``. A token is
    ``at_`` followed by 32 random bytes in unpadded URL-safe base64. It expires ``lifetime_ms``
    after ``now_ms`` (default :data:`DEFAULT_TOKEN_LIFETIME_MS`, at most
    :data:`MAX_TOKEN_LIFETIME_MS`; anything else is an IdentifierError). Raises NotFound for an
    unknown party.
    """
    lifetime = DEFAULT_TOKEN_LIFETIME_MS if lifetime_ms is None else lifetime_ms
    if not 0 < lifetime <= MAX_TOKEN_LIFETIME_MS:
        raise IdentifierError(
            f"a token lifetime must be more than 0 and at most {MAX_TOKEN_LIFETIME_MS // _DAY_MS} "
            f"days, got {lifetime} ms"
        )
    party = get_party(session, party_id)
    role = "inspector" if party.kind == "inspector" else "party"
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode(
        "ascii"
    ).rstrip("=")
    row = Token(
        party_id=party.id,
        role=role,
        token_hash=hash_token(token),
        created_ms=now_ms,
        expires_ms=now_ms + lifetime,
    )
    session.add(row)
    _flush(session)
    assert row.id is not None  # noqa: S101 (assigned by the flush)
    return IssuedToken(
        token=token,
        party_id=party.id,
        role=role,
        id=row.id,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
    )


def _row_of_text(session: Session, token: str) -> Token | None:
    """Return the stored row of a presented token text, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return session.exec(select(Token).where(col(Token.token_hash) == hash_token(token))).first()


def lookup_token(session: Session, token: str) -> TokenInfo | None:
    """Return the stored record of a presented token whatever its state, or None if unknown.

    For callers that tell apart why a token is refused (:meth:`TokenInfo.refusal`).
    """
    row = _row_of_text(session, token)
    return None if row is None else TokenInfo.of(row)


def find_token(session: Session, token: str, now_ms: int) -> TokenGrant | None:
    """Return what a presented token allows at ``now_ms``; None if unknown, revoked or expired."""
    info = lookup_token(session, token)
    if info is None or info.refusal(now_ms) is not None:
        return None
    return info.grant()


def get_token(session: Session, token_id: int) -> TokenInfo:
    """Return the token with id ``token_id``; raise NotFound if there is none."""
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    return TokenInfo.of(row)


def list_tokens(session: Session, party_id: str | None = None) -> list[TokenInfo]:
    """Return the tokens of ``party_id`` (every token for None), oldest first.

    Expired and revoked tokens are listed too. Raises NotFound for an unknown party.
    """
    statement = select(Token).order_by(col(Token.id))
    if party_id is not None:
        statement = statement.where(col(Token.party_id) == get_party(session, party_id).id)
    return [TokenInfo.of(row) for row in session.exec(statement).all()]


def _revoke(session: Session, row: Token, now_ms: int) -> TokenInfo:
    """Revoke a stored token from ``now_ms`` on; revoking again keeps the first time."""
    if row.revoked_ms is None:
        row.revoked_ms = now_ms
        session.add(row)
        _flush(session)
    return TokenInfo.of(row)


def revoke_token(session: Session, token: str, now_ms: int) -> TokenInfo:
    """Revoke a token, named by its text, from ``now_ms`` on; raise NotFound if never issued."""
    row = _row_of_text(session, token)
    if row is None:
        raise NotFound("no such token")
    return _revoke(session, row, now_ms)


def revoke_token_id(session: Session, token_id: int, now_ms: int) -> TokenInfo:
    """Revoke the token with id ``token_id`` from ``now_ms`` on; return its record.

    Revoking a revoked token keeps its first revocation time. Raises NotFound for an unknown id.
    """
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    return _revoke(session, row, now_ms)


def get_device(session: Session, device_id: str) -> Device:
    """Return the device ``device_id``; raise NotFound if there is none."""
    device = session.get(Device, parse_device_id(device_id))
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    return device


def device_keys(session: Session, device_id: str) -> list[DeviceKey]:
    """Return the key history of a device, oldest first; raise NotFound for an unknown device."""
    device = get_device(session, device_id)
    statement = (
        select(DeviceKey)
        .where(col(DeviceKey.device_id) == device.id)
        .order_by(col(DeviceKey.valid_from_ms), col(DeviceKey.id))
    )
    return list(session.exec(statement).all())


def current_key(session: Session, device_id: str) -> DeviceKey:
    """Return the device's current key: the one not rotated out (it may be revoked)."""
    device = get_device(session, device_id)
    statement = (
        select(DeviceKey)
        .where(col(DeviceKey.device_id) == device.id, col(DeviceKey.valid_until_ms).is_(None))
        .order_by(col(DeviceKey.id).desc())
    )
    key = session.exec(statement).first()
    if key is None:  # every registered device has one; only a hand-edited database lacks it
        raise NotFound(f"device {device.id!r} has no current key")
    return key


def _new_key(session: Session, device_id: str, public_key: bytes, now_ms: int) -> DeviceKey:
    """Validate ``public_key``, refuse one already registered anywhere, and stage the record."""
    validate_public_key(public_key)
    existing = session.exec(
        select(DeviceKey).where(col(DeviceKey.public_key) == public_key)
    ).first()
    if existing is not None:
        raise Conflict(f"this public key is registered already (device {existing.device_id!r})")
    key = DeviceKey(
        device_id=device_id,
        kid=device_kid(public_key),
        public_key=public_key,
        valid_from_ms=now_ms,
    )
    session.add(key)
    return key


def register_device(
    session: Session,
    device_id: str,
    party_id: str,
    public_key: bytes,
    now_ms: int,
    *,
    place: Place = Place(),  # noqa: B008 (an immutable tuple)
) -> DeviceKey:
    """Register a device of a party with its first key, valid from ``now_ms``; return the key.

    ``place`` is where the device is, as the party names it (shown on charts).

    Raises NotFound for an unknown party, Conflict for an existing device or a public key that
    is registered already (to any device), KeyFileError for an unusable key.
    """
    device_id = parse_device_id(device_id)
    party = get_party(session, party_id)
    validate_public_key(public_key)
    if session.get(Device, device_id) is not None:
        raise Conflict(f"device {device_id!r} exists already")
    session.add(
        Device(
            id=device_id,
            party_id=party.id,
            created_ms=now_ms,
            place=_check_text("place", place.zh),
            place_en=_check_text("place_en", place.en),
        )
    )
    _flush(session)  # the device row first: the key's foreign key points at it
    key = _new_key(session, device_id, public_key, now_ms)
    _flush(session)
    return key


def rotate_key(session: Session, device_id: str, new_public_key: bytes, now_ms: int) -> DeviceKey:
    """Replace the device's current key: it stays valid until ``now_ms``, the new one from then.

    Returns the new key. Raises NotFound for an unknown device, Conflict for a key registered
    already or a rotation time before the current key's start, KeyFileError for a bad key.
    """
    validate_public_key(new_public_key)
    old = current_key(session, device_id)
    if now_ms < old.valid_from_ms:
        raise Conflict(
            f"rotation time {now_ms} is before the current key's valid_from_ms {old.valid_from_ms}"
        )
    old.valid_until_ms = now_ms
    session.add(old)
    key = _new_key(session, old.device_id, new_public_key, now_ms)
    _flush(session)
    return key


def revoke_key(
    session: Session,
    device_id: str,
    kid: bytes | None = None,
    *,
    revoked_since_ms: int,
    reason: str,
) -> DeviceKey:
    """Mark a device key compromised since ``revoked_since_ms``; ``kid`` None means the current key.

    Messages whose device time is at or after ``revoked_since_ms`` then fail with revoked_key.
    Revoking again can only move the time earlier (a revocation never shrinks); the reason is
    replaced. Raises NotFound for an unknown device or kid. Returns the key record.
    """
    if kid is None:
        key = current_key(session, device_id)
    else:
        device = get_device(session, device_id)
        found = session.exec(
            select(DeviceKey).where(
                col(DeviceKey.device_id) == device.id, col(DeviceKey.kid) == kid
            )
        ).first()
        if found is None:
            raise NotFound(f"device {device.id!r} has no key with kid {kid.hex()}")
        key = found
    if key.revoked_ms is None or revoked_since_ms < key.revoked_ms:
        key.revoked_ms = revoked_since_ms
    key.revoke_reason = reason
    session.add(key)
    _flush(session)
    return key


def key_for(session: Session, device_id: str, kid: bytes, at_ms: int) -> DeviceKey:
    """Return the device key with ``kid`` if it may sign a message of device time ``at_ms``.

    Raises :class:`UnknownKey` when the device has no key with this kid, :class:`RevokedKey`
    when it has one that was not valid at ``at_ms`` (before its start, rotated out, or revoked).
    This is the lookup ingest performs for every message.
    """
    if len(kid) != KID_LENGTH:
        raise UnknownKey(f"kid must be {KID_LENGTH} bytes, got {len(kid)}")
    key = session.exec(
        select(DeviceKey).where(col(DeviceKey.device_id) == device_id, col(DeviceKey.kid) == kid)
    ).first()
    if key is None:
        raise UnknownKey(f"device {device_id!r} has no key with kid {kid.hex()}")
    refusal = key_window_refusal(key.valid_from_ms, key.valid_until_ms, key.revoked_ms, at_ms)
    if refusal is not None:
        raise RevokedKey(f"key {kid.hex()} of {device_id!r} {refusal}")
    return key
