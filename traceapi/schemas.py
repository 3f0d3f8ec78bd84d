"""Request and response bodies of the registry API (pydantic)."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tracecore.errors import KeyFileError
from tracecore.storage.models import DeviceKey, Party
from tracecore.storage.registry import (
    DEFAULT_TOKEN_LIFETIME_MS,
    MAX_TOKEN_LIFETIME_MS,
    NAME_MAX_LENGTH,
    PUBLIC_KEY_LENGTH,
    IssuedToken,
    PartyProfile,
    Place,
    TokenInfo,
    TokenState,
)

__all__ = [
    "MAX_INT64",
    "DeviceCreate",
    "DeviceCreated",
    "DeviceOut",
    "KeyOut",
    "KeyRevoke",
    "KeyRotate",
    "PartyCreate",
    "PartyKind",
    "PartyOut",
    "PartyUpdate",
    "StatusOut",
    "TokenCreate",
    "TokenOut",
    "TokenRecord",
    "decode_public_key",
    "encode_bytes",
]

#: The largest integer a query parameter may carry: a database BIGINT (SQLite and PostgreSQL).
MAX_INT64 = 2**63 - 1

PartyKind = Literal["farm", "packer", "processor", "carrier", "retailer", "lab", "inspector"]


def encode_bytes(data: bytes) -> str:
    """Return ``data`` in standard (padded) base64, the form keys take in this API."""
    return base64.b64encode(data).decode("ascii")


def decode_public_key(text: str) -> bytes:
    """Decode a raw 32-byte Ed25519 public key from standard base64; raise KeyFileError."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFileError("public_key must be standard base64 of the raw 32-byte key") from exc
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise KeyFileError(
            f"public_key must decode to {PUBLIC_KEY_LENGTH} bytes, got {len(raw)} bytes"
        )
    return raw


class _Body(BaseModel):
    """A request body: unknown fields are refused, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class _Profile(_Body):
    """The optional public profile of a party (shown on product and stall pages)."""

    name_en: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="English name"
    )
    place: str | None = Field(
        default=None,
        max_length=NAME_MAX_LENGTH,
        description="county and province, e.g. 甘肃省临夏县",
    )
    place_en: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="the place in English"
    )
    licence: str | None = Field(
        default=None,
        max_length=NAME_MAX_LENGTH,
        description="business registration or licence number a buyer can look up",
    )

    def profile(self) -> PartyProfile:
        """The profile as the registry takes it."""
        return PartyProfile(self.name_en, Place(self.place, self.place_en), self.licence)


class PartyCreate(_Profile):
    """Body of ``POST /v1/parties``."""

    id: str = Field(description="party id, [a-z0-9-]{3,64}")
    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, description="name (Chinese)")
    kind: PartyKind


class PartyUpdate(_Profile):
    """Body of ``PATCH /v1/parties/{id}``: the profile replaces the stored one."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX_LENGTH)


class PartyOut(BaseModel):
    """A party as the API shows it."""

    id: str
    name: str
    kind: str
    created_ms: int
    name_en: str | None = None
    place: str | None = None
    place_en: str | None = None
    licence: str | None = None

    @classmethod
    def of(cls, party: Party) -> PartyOut:
        """Build the response from the stored row."""
        return cls(
            id=party.id,
            name=party.name,
            kind=party.kind,
            created_ms=party.created_ms,
            name_en=party.name_en,
            place=party.place,
            place_en=party.place_en,
            licence=party.licence,
        )


_DAY_MS = 24 * 3600 * 1000


class TokenCreate(_Body):
    """Optional body of ``POST /v1/parties/{id}/tokens``."""

    lifetime_days: int = Field(
        default=DEFAULT_TOKEN_LIFETIME_MS // _DAY_MS,
        ge=1,
        le=MAX_TOKEN_LIFETIME_MS // _DAY_MS,
        description="days until the token expires",
    )


class TokenOut(BaseModel):
    """A freshly issued token: shown once, stored hashed; ``id`` names it afterwards."""

    id: int
    token: str
    party: str
    role: str
    created_ms: int
    expires_ms: int

    @classmethod
    def of(cls, issued: IssuedToken) -> TokenOut:
        """Build the response from the issued token."""
        return cls(
            id=issued.id,
            token=issued.token,
            party=issued.party_id,
            role=issued.role,
            created_ms=issued.created_ms,
            expires_ms=issued.expires_ms,
        )


class TokenRecord(BaseModel):
    """A stored token as listings and revocations show it: never its text nor its hash."""

    id: int
    party: str | None
    role: str
    created_ms: int
    expires_ms: int
    revoked_ms: int | None
    state: TokenState
    current: bool = Field(description="true for the token that made this request")

    @classmethod
    def of(cls, info: TokenInfo, now_ms: int, current_id: int | None) -> TokenRecord:
        """Build the record of a stored token as seen at ``now_ms`` by token ``current_id``."""
        return cls(
            id=info.id,
            party=info.party_id,
            role=info.role,
            created_ms=info.created_ms,
            expires_ms=info.expires_ms,
            revoked_ms=info.revoked_ms,
            state=info.state(now_ms),
            current=info.id == current_id,
        )


class DeviceCreate(_Body):
    """Body of ``POST /v1/devices``."""

    id: str = Field(description="device id, [a-z0-9-]{3,64}")
    party: str = Field(description="id of the owning party")
    public_key: str = Field(description="raw 32-byte Ed25519 public key, standard base64")
    place: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="where it is, e.g. 冷库"
    )
    place_en: str | None = Field(
        default=None, max_length=NAME_MAX_LENGTH, description="the place in English"
    )


class DeviceCreated(BaseModel):
    """Response of ``POST /v1/devices``: the device and its first key."""

    id: str
    party: str
    kid: str = Field(description="hex of the 8-byte COSE kid")
    public_key: str
    valid_from_ms: int


class KeyRotate(_Body):
    """Body of ``POST /v1/devices/{id}/keys``."""

    public_key: str = Field(description="raw 32-byte Ed25519 public key, standard base64")


class KeyRevoke(_Body):
    """Body of ``POST /v1/devices/{id}/revoke``."""

    kid: str | None = Field(
        default=None, pattern="^[0-9a-f]{16}$", description="hex kid; default the current key"
    )
    since_ms: int | None = Field(default=None, ge=0, description="default: now")
    reason: str = Field(min_length=1, max_length=1000)


class KeyOut(BaseModel):
    """One key of a device and its validity window."""

    device: str
    kid: str
    public_key: str
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None
    revoke_reason: str | None

    @classmethod
    def of(cls, key: DeviceKey) -> KeyOut:
        """Build the response from the stored row."""
        return cls(
            device=key.device_id,
            kid=key.kid.hex(),
            public_key=encode_bytes(key.public_key),
            valid_from_ms=key.valid_from_ms,
            valid_until_ms=key.valid_until_ms,
            revoked_ms=key.revoked_ms,
            revoke_reason=key.revoke_reason,
        )


class DeviceOut(BaseModel):
    """A device and its key history, oldest key first."""

    id: str
    party: str
    created_ms: int
    keys: list[KeyOut]


class StatusOut(BaseModel):
    """Body of ``GET /healthz``."""

    status: str = Field(description="ok, or unavailable (with status 503)")
    problems: list[str] = Field(default_factory=list, description="what is wrong, in words")
