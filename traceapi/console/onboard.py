"""A farm's own devices in the console: add a gateway, download its file once, revoke a lost one.

* ``GET /console/devices/new``: the form (device id, place zh/en, the gateway's public key, which
  ``agritrace gateway-key`` printed on the gateway). A party registers for itself; the admin
  picks the party; an inspector may not register devices (403).
* ``POST /console/devices/new``: registers exactly as ``POST /v1/devices`` does
  (:func:`traceapi.routes.registry.record_registration`), then shows the fingerprint the server
  computed, the provisioning file as a QR code, and a button to download it, once.
* ``POST /console/devices/provisioning``: the download (a POST: it uses the one-time token up,
  and carries the CSRF token). The first by whoever registered the device answers the JSON
  file; later ones 410 Gone; anyone else 403, leaving it unused.
* ``GET /console/devices/{device}/revoke``: the device's keys and the revocation form, with a
  preview of the logged messages the revocation would make untrusted (``?since=`` in China
  Standard Time, default now) and the products they touch.
* ``POST /console/devices/{device}/revoke``: revokes the current key exactly as
  ``POST /v1/devices/{device}/revoke`` does (:func:`traceapi.routes.registry.record_revocation`).

Only the owning party or the admin may revoke. docs/gateway.md is the farm's walk through it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final
from urllib.parse import urlencode

import pyqrcode
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from traceapi.access import note_parties
from traceapi.console.history import dossier_href
from traceapi.console.pages import HEADERS, LangQuery, csrf_matches, page, page_language, read_form
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang, text
from traceapi.pages import DISPLAY_TZ
from traceapi.routes.registry import record_registration, record_revocation
from traceapi.schemas import DeviceCreated, decode_public_key
from traceapi.state import log_vkey
from tracecore.errors import Conflict, IdentifierError, KeyFileError, NotFound
from tracecore.identifiers import parse_device_id
from tracecore.keys import KEY_START_TOLERANCE_MS, device_fingerprint, kid_fingerprint
from tracecore.provisioning import Provisioning
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Device, DeviceKey, Party
from tracecore.storage.onboarding import (
    Impact,
    claim_provisioning,
    issue_provisioning,
    revocation_impact,
)
from tracecore.storage.registry import Place, device_keys, get_device, validate_public_key

__all__ = ["ADMIN", "REASON_MAX", "router"]

router = APIRouter(prefix="/console/devices", include_in_schema=False)

#: Who the admin is in ``issued_to``: never a party id, which has no ``*`` (identifiers.md).
ADMIN: Final = "*admin"
#: Longest revocation reason (the API's own limit is the body size; a form keeps it short).
REASON_MAX: Final = 500
_TEXT_MAX: Final = 200
_PRODUCTS_LISTED: Final = 50
_SINCE_FORMAT: Final = "%Y-%m-%dT%H:%M"


def _who(user: ConsoleUser) -> str:
    """Who a provisioning token is issued to, and the only one who may claim it."""
    if user.role == "party" and user.party_id:
        return user.party_id
    return ADMIN if user.role == "admin" else f"*{user.role}:{user.party_id}"


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _now(request: Request) -> int:
    now: int = request.app.state.clock()
    return now


def _message(
    request: Request, user: ConsoleUser, lang: Lang, status_code: int, what: str, **values: object
) -> HTMLResponse:
    """A page that only says why (``what``: ``refused``, ``not_found``, ``gone``, ...)."""
    return page(
        "console/onboard_message.html",
        lang,
        status_code,
        path=request.url.path,
        user=user,
        section="devices",
        title=text(lang, f"console.onboard.{what}"),
        detail=text(lang, f"console.onboard.{what}.detail", **values),
    )


def _forbidden(lang: Lang, user: ConsoleUser) -> HTMLResponse:
    return page("console/forbidden.html", lang, 403, path="/console/", user=user)


# -- adding a device ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Typed:
    """What the add-device form holds (as typed, to show again after an error)."""

    device: str = ""
    place: str = ""
    place_en: str = ""
    public_key: str = ""
    party: str = ""


def _parties(request: Request, user: ConsoleUser) -> list[Party]:
    """The parties the admin may register for (every party that is not an inspection agency)."""
    if user.role != "admin":
        return []
    with session_scope(_engine(request)) as session:
        rows = session.exec(
            select(Party).where(col(Party.kind) != "inspector").order_by(col(Party.id))
        ).all()
        return list(rows)


def _form(
    request: Request,
    user: ConsoleUser,
    lang: Lang,
    typed: _Typed,
    *,
    status_code: int = 200,
    error: str | None = None,
    field: str | None = None,
) -> HTMLResponse:
    return page(
        "console/device_new.html",
        lang,
        status_code,
        path="/console/devices/new",
        user=user,
        section="devices",
        typed=typed,
        parties=_parties(request, user),
        error=error,
        field=field,
        text_max=_TEXT_MAX,
    )


@router.get("/new", response_class=HTMLResponse)
def new_device(
    request: Request, user: Annotated[ConsoleUser, Depends(current_user)], lang: LangQuery = None
) -> Response:
    """The add-device form: a party for itself, the admin for any party; not inspectors."""
    language = page_language(request, lang)
    if user.role not in ("party", "admin"):
        return _message(request, user, language, 403, "refused")
    if user.party_id:
        note_parties(request, user.party_id)
    return _form(request, user, language, _Typed())


def _qr(content: str) -> Markup:
    """The QR code of ``content`` as inline SVG (pyqrcode, as traceapi/routes/qr.py)."""
    buffer = io.BytesIO()
    pyqrcode.create(content, error="L", mode="binary").svg(
        buffer, scale=3, quiet_zone=4, xmldecl=False, svgns=True, title="provisioning.json"
    )
    svg = buffer.getvalue().decode("utf-8")
    # A viewBox, so that the code scales down to a phone's width instead of being cut.
    svg = re.sub(r'height="(\d+)" width="(\d+)"', r'viewBox="0 0 \2 \1" width="\2"', svg, count=1)
    # pyqrcode's output: rectangles and the escaped title only.
    return Markup(svg)  # noqa: S704


def provisioning_file(request: Request, device: str, kid: bytes) -> Provisioning:
    """The provisioning document of ``device`` whose registered key has ``kid``."""
    settings: Settings = request.app.state.settings
    return Provisioning.make(
        device,
        settings.gateway_broker,
        str(log_vkey(request)),
        settings.public_url,
        kid_fingerprint(kid),
    )


@router.post("/new", response_class=HTMLResponse)
async def add_device(  # noqa: PLR0911 (one answer per way the form can be refused)
    request: Request, user: Annotated[ConsoleUser, Depends(current_user)]
) -> Response:
    """Register a device for the signed-in party (the admin: the chosen one); show its file."""
    form = await read_form(request)
    lang = page_language(request, form.get("lang"))
    if not csrf_matches(user, form):
        return _forbidden(lang, user)
    if user.role not in ("party", "admin"):
        return _message(request, user, lang, 403, "refused")
    typed = _Typed(
        device=form.get("device", "").strip(),
        place=form.get("place", "").strip(),
        place_en=form.get("place_en", "").strip(),
        public_key=form.get("public_key", "").strip(),
        party=form.get("party", "").strip(),
    )
    party = user.party_id if user.role == "party" else typed.party
    if not party:
        return _form(
            request,
            user,
            lang,
            typed,
            status_code=422,
            error=text(lang, "console.onboard.error.party"),
            field="party",
        )
    note_parties(request, party)

    def refuse(status_code: int, key: str, field: str, **values: object) -> HTMLResponse:
        message = text(lang, f"console.onboard.error.{key}", **values)
        return _form(
            request, user, lang, typed, status_code=status_code, error=message, field=field
        )

    try:
        device = parse_device_id(typed.device)
    except IdentifierError:
        return refuse(422, "device", "device")
    if not typed.place or len(typed.place) > _TEXT_MAX or len(typed.place_en) > _TEXT_MAX:
        return refuse(422, "place", "place", max=_TEXT_MAX)
    try:
        public_key = validate_public_key(decode_public_key(typed.public_key))
    except KeyFileError:
        return refuse(422, "key", "public_key")
    now = _now(request)
    engine = _engine(request)
    tokens: list[str] = []

    def issue(session: Session, created: DeviceCreated) -> None:
        kid = bytes.fromhex(created.kid)
        tokens.append(issue_provisioning(session, created.id, kid, _who(user), now))

    try:
        created = record_registration(
            engine,
            device,
            party,
            public_key,
            place=Place(typed.place, typed.place_en or None),
            now_ms=now,
            then=issue,
        )
    except NotFound:
        return refuse(422, "party", "party")
    except Conflict:
        with session_scope(engine) as session:
            taken = session.get(Device, device) is not None
        if taken:
            return refuse(409, "device_taken", "device")
        return refuse(409, "key_taken", "public_key")
    except (IdentifierError, KeyFileError):
        return refuse(422, "place", "place", max=_TEXT_MAX)
    kid = bytes.fromhex(created.kid)
    token = tokens[0]
    document = provisioning_file(request, created.id, kid)
    return page(
        "console/device_added.html",
        lang,
        201,
        path="/console/devices/new",
        user=user,
        section="devices",
        device=created,
        place=typed.place,
        place_en=typed.place_en,
        fingerprint=device_fingerprint(public_key),
        document=document.to_json(),
        qr=_qr(document.to_json()),
        token=token,
        revoke_href=f"/console/devices/{created.id}/revoke?lang={lang}",
    )


@router.post("/provisioning", response_class=HTMLResponse)
async def download_provisioning(
    request: Request, user: Annotated[ConsoleUser, Depends(current_user)]
) -> Response:
    """The provisioning file, once, for whoever registered the device (410 Gone afterwards)."""
    form = await read_form(request)
    lang = page_language(request, form.get("lang"))
    if not csrf_matches(user, form):
        return _forbidden(lang, user)
    engine = _engine(request)
    now = _now(request)
    try:
        with session_scope(engine) as session:
            claim = claim_provisioning(session, form.get("token", ""), _who(user), now)
            party = get_device(session, claim.device_id).party_id
    except NotFound:
        return _message(request, user, lang, 404, "no_file")
    note_parties(request, party)
    if claim.outcome == "refused":
        return _message(request, user, lang, 403, "not_yours")
    if claim.outcome == "used":
        return _message(
            request, user, lang, 410, "gone", device=claim.device_id, when=_cst(claim.used_ms)
        )
    document = provisioning_file(request, claim.device_id, claim.kid)
    headers = {
        **HEADERS,
        "Content-Disposition": f'attachment; filename="provisioning-{claim.device_id}.json"',
    }
    return Response(document.to_json(), media_type="application/json", headers=headers)


# -- revoking a lost or stolen device --------------------------------------------------------------


def _cst(ms: int | None) -> str:
    """A time as the form shows it: ``2026-11-27T14:05`` in China Standard Time."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ).strftime(_SINCE_FORMAT)


def _since_ms(value: str | None, now_ms: int) -> int | None:
    """``?since=`` (a ``datetime-local`` value read in China Standard Time); None if malformed."""
    value = (value or "").strip()
    if not value:
        return now_ms
    for pattern in (_SINCE_FORMAT, _SINCE_FORMAT + ":%S"):
        try:
            moment = datetime.strptime(value, pattern).replace(tzinfo=DISPLAY_TZ)
        except ValueError:
            continue
        return int(moment.timestamp() * 1000)
    return None


@dataclass(frozen=True, slots=True)
class _Owned:
    """A device the user may revoke, with its keys (oldest first) and current key."""

    device: Device
    keys: list[DeviceKey]
    current: DeviceKey


def _owned(request: Request, user: ConsoleUser, device_id: str) -> _Owned | str:
    """The device if the user may act for its party, else ``not_found`` or ``refused``."""
    try:
        device_id = parse_device_id(device_id)
    except IdentifierError:
        return "not_found"
    with session_scope(_engine(request)) as session:
        try:
            device = get_device(session, device_id)
        except NotFound:
            return "not_found"
        if not (
            user.role == "admin" or (user.role == "party" and user.party_id == device.party_id)
        ):
            return "refused"
        keys = device_keys(session, device_id)
    note_parties(request, device.party_id)
    current = next(k for k in reversed(keys) if k.valid_until_ms is None)
    return _Owned(device, keys, current)


def _impact(request: Request, owned: _Owned, since_ms: int) -> Impact:
    """What revoking the current key since ``since_ms`` would untrust: the device's messages
    in the key's window from then on."""
    key = owned.current
    start = max(since_ms, key.valid_from_ms - KEY_START_TOLERANCE_MS)
    with session_scope(_engine(request)) as session:
        return revocation_impact(
            session, owned.device.id, start, key.valid_until_ms, limit=_PRODUCTS_LISTED
        )


def _revoke_page(
    request: Request,
    user: ConsoleUser,
    lang: Lang,
    owned: _Owned,
    since: str,
    *,
    since_ms: int | None,
    status_code: int = 200,
    error: str | None = None,
    reason: str = "",
    done: bool = False,
) -> HTMLResponse:
    impact = None if since_ms is None else _impact(request, owned, since_ms)
    query = urlencode({"since": since}) if since else ""
    return page(
        "console/device_revoke.html",
        lang,
        status_code,
        path=f"/console/devices/{owned.device.id}/revoke" + (f"?{query}" if query else ""),
        user=user,
        section="devices",
        owned=owned,
        since=since,
        bad_since=since_ms is None,
        impact=impact,
        error=error,
        reason=reason,
        reason_max=REASON_MAX,
        done=done,
        dossier_href=dossier_href,
        fingerprint_of=kid_fingerprint,
    )


@router.get("/{device_id}/revoke", response_class=HTMLResponse)
def revoke_form(
    request: Request,
    device_id: str,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
    since: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The revocation form of a lost or stolen device, with what it would make untrusted."""
    language = page_language(request, lang)
    owned = _owned(request, user, device_id)
    if isinstance(owned, str):
        return _message(request, user, language, 404 if owned == "not_found" else 403, owned)
    now = _now(request)
    since_ms = _since_ms(since, now)
    shown = since if since and since_ms is None else _cst(since_ms if since_ms is not None else now)
    status_code = 422 if since_ms is None else 200
    return _revoke_page(
        request, user, language, owned, shown, since_ms=since_ms, status_code=status_code
    )


@router.post("/{device_id}/revoke", response_class=HTMLResponse)
async def revoke(
    request: Request, device_id: str, user: Annotated[ConsoleUser, Depends(current_user)]
) -> Response:
    """Revoke the device's current key since the given time (CSRF token and confirmation)."""
    form = await read_form(request)
    lang = page_language(request, form.get("lang"))
    if not csrf_matches(user, form):
        return _forbidden(lang, user)
    owned = _owned(request, user, device_id)
    if isinstance(owned, str):
        return _message(request, user, lang, 404 if owned == "not_found" else 403, owned)
    now = _now(request)
    since = form.get("since", "")
    since_ms = _since_ms(since, now)
    reason = form.get("reason", "").strip()
    problem = None
    if since_ms is None:
        problem = "since"
    elif not reason or len(reason) > REASON_MAX:
        problem = "reason"
    elif form.get("confirm") != "yes":
        problem = "confirm"
    if problem is not None or since_ms is None:
        error = text(lang, f"console.onboard.revoke.error.{problem}", max=REASON_MAX)
        return _revoke_page(
            request,
            user,
            lang,
            owned,
            since,
            since_ms=since_ms,
            status_code=422,
            error=error,
            reason=reason,
        )
    record_revocation(
        _engine(request),
        owned.device.id,
        owned.current.kid,
        since_ms=since_ms,
        reason=reason,
        now_ms=now,
    )
    again = _owned(request, user, owned.device.id)
    if isinstance(again, str):  # it was ours a moment ago, and devices are never deleted
        return _message(request, user, lang, 404, "not_found")
    return _revoke_page(request, user, lang, again, _cst(since_ms), since_ms=since_ms, done=True)
