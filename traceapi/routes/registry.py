"""Registry routes: parties, their tokens, devices and device keys (docs/registry-api.md).

Every handler runs its work in one transaction (:func:`session_scope`) that commits before the
response is sent. Errors of the core (NotFound, Conflict, IdentifierError, KeyFileError) become
HTTP answers in :mod:`traceapi.app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from sqlalchemy import Engine
from sqlmodel import Session

from traceapi.access import note_parties
from traceapi.auth import (
    Principal,
    authenticate,
    forbidden,
    require_admin,
    require_admin_or_party,
)
from traceapi.openapi import errors
from traceapi.schemas import (
    DeviceCreate,
    DeviceCreated,
    DeviceOut,
    KeyOut,
    KeyRevoke,
    KeyRotate,
    PartyCreate,
    PartyOut,
    PartyUpdate,
    TokenCreate,
    TokenOut,
    TokenRecord,
    decode_public_key,
    encode_bytes,
)
from tracecore.identifiers import parse_device_id
from tracecore.logentry import DeviceRegistered, KeyRevoked, KeyRotated
from tracecore.storage.engine import session_scope
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.storage.registry import (
    Place,
    create_party,
    device_keys,
    get_device,
    get_token,
    issue_token,
    list_tokens,
    register_device,
    revoke_key,
    revoke_token_id,
    rotate_key,
    update_party,
)

__all__ = ["record_registration", "record_revocation", "router"]

router = APIRouter(prefix="/v1", tags=["registry"])

Admin = Annotated[Principal, Depends(require_admin)]
AdminOrParty = Annotated[Principal, Depends(require_admin_or_party)]
Caller = Annotated[Principal, Depends(authenticate)]
#: A token id in a path: a positive database INTEGER.
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the token's id")]
_DAY_MS = 24 * 3600 * 1000


def _engine(request: Request) -> Engine:
    """Return the application's engine."""
    engine: Engine = request.app.state.engine
    return engine


def _now_ms(request: Request) -> int:
    """Return the application's clock reading, in ms since the Unix epoch."""
    clock: Callable[[], int] = request.app.state.clock
    return clock()


def _check_owner(request: Request, principal: Principal, device_id: str) -> None:
    """Raise NotFound for an unknown device, 403 unless the caller may act for its party."""
    with session_scope(_engine(request)) as session:
        device = get_device(session, device_id)
    if not principal.may_act_for(device.party_id):
        raise forbidden("this device belongs to another party")
    note_parties(request, device.party_id)


@router.post(
    "/parties",
    status_code=status.HTTP_201_CREATED,
    responses=errors({409: "a party with this id exists already"}),
)
def post_party(body: PartyCreate, request: Request, _admin: Admin) -> PartyOut:
    """Create a party (admin only)."""
    with session_scope(_engine(request)) as session:
        party = create_party(
            session, body.id, body.name, body.kind, _now_ms(request), profile=body.profile()
        )
        return PartyOut.of(party)


@router.patch("/parties/{party_id}", responses=errors({404: "no such party"}))
def patch_party(
    party_id: str, body: PartyUpdate, request: Request, principal: AdminOrParty
) -> PartyOut:
    """Replace a party's public profile (admin or the party itself)."""
    if not principal.may_act_for(party_id):
        raise forbidden("a party token may change its own party's profile only")
    note_parties(request, party_id)
    with session_scope(_engine(request)) as session:
        return PartyOut.of(update_party(session, party_id, body.name, body.profile()))


@router.post(
    "/parties/{party_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    responses=errors({404: "no such party"}),
)
def post_token(
    party_id: str, request: Request, _admin: Admin, body: TokenCreate | None = None
) -> TokenOut:
    """Issue a bearer token for a party, shown once and stored hashed (admin only).

    It expires after ``lifetime_days`` (default 90); the answer names it by ``id``.
    """
    lifetime_ms = (body or TokenCreate()).lifetime_days * _DAY_MS
    note_parties(request, party_id)
    with session_scope(_engine(request)) as session:
        issued = issue_token(session, party_id, _now_ms(request), lifetime_ms=lifetime_ms)
    return TokenOut.of(issued)


@router.get("/tokens", responses=errors({404: "no such party"}))
def get_tokens(
    request: Request,
    principal: Caller,
    party: Annotated[str | None, Query(description="only this party's tokens")] = None,
) -> list[TokenRecord]:
    """List tokens without their text: admin all (or ``party``'s), a party its own party's.

    An inspector token sees itself only.
    """
    now = _now_ms(request)
    if principal.role == "inspector":
        if party not in (None, principal.party_id) or principal.token_id is None:
            raise forbidden("an inspector token may see itself only")
        with session_scope(_engine(request)) as session:
            return [TokenRecord.of(get_token(session, principal.token_id), now, principal.token_id)]
    if principal.role == "party" and party is None:
        party = principal.party_id
    if party is not None and not principal.may_act_for(party):
        raise forbidden("a party token may list its own party's tokens only")
    with session_scope(_engine(request)) as session:
        infos = list_tokens(session, party)
    note_parties(request, *(info.party_id for info in infos))
    return [TokenRecord.of(info, now, principal.token_id) for info in infos]


@router.post("/tokens/{token_id}/revoke", responses=errors({404: "no such token"}))
def post_token_revoke(token_id: TokenId, request: Request, principal: Caller) -> TokenRecord:
    """Revoke a token from now on: admin any, a party its own party's, any token itself.

    Revoking a revoked token keeps its first revocation time.
    """
    now = _now_ms(request)
    with session_scope(_engine(request)) as session:
        info = get_token(session, token_id)
        own_party = info.party_id is not None and principal.may_act_for(info.party_id)
        if not (principal.is_admin or own_party or principal.token_id == token_id):
            raise forbidden("this token belongs to another party")
        revoked = revoke_token_id(session, token_id, now)
    note_parties(request, info.party_id)
    return TokenRecord.of(revoked, now, principal.token_id)


@router.post(
    "/devices",
    status_code=status.HTTP_201_CREATED,
    responses=errors(
        {404: "no such party", 409: "the device id or its public key is registered already"}
    ),
)
def post_device(body: DeviceCreate, request: Request, principal: AdminOrParty) -> DeviceCreated:
    """Register a device with its first key (admin or the owning party)."""
    if not principal.may_act_for(body.party):
        raise forbidden("a party token may register devices of its own party only")
    note_parties(request, body.party)
    public_key = decode_public_key(body.public_key)
    place = Place(body.place, body.place_en)
    return record_registration(
        _engine(request), body.id, body.party, public_key, place=place, now_ms=_now_ms(request)
    )


def record_registration(
    engine: Engine,
    device_id: str,
    party: str,
    public_key: bytes,
    *,
    place: Place,
    now_ms: int,
    then: Callable[[Session, DeviceCreated], None] | None = None,
) -> DeviceCreated:
    """Register a device with its first key and log the registration, in one transaction.

    What ``POST /v1/devices`` and the console's ``/console/devices/new`` do once the caller may
    act for ``party``; ``then`` runs in the same transaction afterwards (the console issues the
    provisioning download there, so a device is never registered without it). Raises NotFound
    (party), Conflict (device or key registered already), IdentifierError (device id, place)
    and KeyFileError (not a usable key) unchanged.
    """
    with log_session(engine) as session:
        key = register_device(session, device_id, party, public_key, now_ms, place=place)
        # design.md: registrations are log entries, so the key history is provable.
        entry = DeviceRegistered(key.device_id, party, key.public_key, key.valid_from_ms, now_ms)
        append_registry_entry(session, entry, now_ms)
        created = DeviceCreated(
            id=key.device_id,
            party=party,
            kid=key.kid.hex(),
            public_key=encode_bytes(key.public_key),
            valid_from_ms=key.valid_from_ms,
        )
        if then is not None:
            then(session, created)
        return created


@router.post(
    "/devices/{device_id}/keys",
    status_code=status.HTTP_201_CREATED,
    responses=errors({404: "no such device", 409: "this public key is registered already"}),
)
def post_key(device_id: str, body: KeyRotate, request: Request, principal: AdminOrParty) -> KeyOut:
    """Rotate a device's key: the current one ends now, the new one starts (admin or owner)."""
    engine = _engine(request)
    _check_owner(request, principal, device_id)
    public_key = decode_public_key(body.public_key)
    now = _now_ms(request)
    with log_session(engine) as session:
        key = rotate_key(session, device_id, public_key, now)
        entry = KeyRotated(key.device_id, key.public_key, key.valid_from_ms, now)
        append_registry_entry(session, entry, now)
        return KeyOut.of(key)


@router.post(
    "/devices/{device_id}/revoke", responses=errors({404: "no such device, or no such key of it"})
)
def post_revoke(
    device_id: str, body: KeyRevoke, request: Request, principal: AdminOrParty
) -> KeyOut:
    """Revoke a device key (default the current one) since a time (default now)."""
    engine = _engine(request)
    _check_owner(request, principal, device_id)
    kid = bytes.fromhex(body.kid) if body.kid is not None else None
    now = _now_ms(request)
    since_ms = body.since_ms if body.since_ms is not None else now
    reason = body.reason.strip()
    return record_revocation(engine, device_id, kid, since_ms=since_ms, reason=reason, now_ms=now)


def record_revocation(
    engine: Engine, device_id: str, kid: bytes | None, *, since_ms: int, reason: str, now_ms: int
) -> KeyOut:
    """Revoke a device key (``kid`` None: the current one) since ``since_ms`` and log it.

    What ``POST /v1/devices/{id}/revoke`` and the console's revoke form do once the caller may
    act for the device's party, in one transaction. Raises NotFound for an unknown device or kid.
    """
    with log_session(engine) as session:
        key = revoke_key(session, device_id, kid, revoked_since_ms=since_ms, reason=reason)
        revoked_ms = key.revoked_ms if key.revoked_ms is not None else since_ms
        entry = KeyRevoked(key.device_id, key.kid, revoked_ms, reason, now_ms)
        append_registry_entry(session, entry, now_ms)
        return KeyOut.of(key)


@router.get("/devices/{device_id}", responses=errors({404: "no such device"}))
def get_device_route(device_id: str, request: Request, principal: AdminOrParty) -> DeviceOut:
    """Show a device and its key history (admin or the owning party)."""
    engine = _engine(request)
    _check_owner(request, principal, device_id)
    with session_scope(engine) as session:
        device = get_device(session, parse_device_id(device_id))
        keys = device_keys(session, device.id)
        return DeviceOut(
            id=device.id,
            party=device.party_id,
            created_ms=device.created_ms,
            keys=[KeyOut.of(key) for key in keys],
        )
