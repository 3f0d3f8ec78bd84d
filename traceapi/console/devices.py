"""The producer console's devices (docs/farms.md, "Devices").

``GET /console/devices``: per device of the reader's party its place, when its last message was
logged, the last receipt it was sent, its sequence gaps, its refused messages by reason (linked
to the rejections section's pages) and the state of its key. Inspectors and the admin see every
party's devices, with a party filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine
from sqlmodel import col, select

from traceapi.access import note_parties
from traceapi.console.pages import LangQuery, page, page_language
from traceapi.console.rejections import reader_party
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang
from tracecore.errors import RejectReason
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Device, DeviceKey, Party
from tracecore.storage.producer import LastReceipt, last_receipts, party_devices
from tracecore.storage.queries import device_gaps
from tracecore.storage.registry import device_keys
from tracecore.storage.rejections import (
    DeviceActivity,
    RejectionFilter,
    device_activity,
    reason_totals,
)

__all__ = ["DeviceCard", "router"]

router = APIRouter(prefix="/console/devices", include_in_schema=False)

User = Annotated[ConsoleUser, Depends(current_user)]

#: Devices shown on one page (a farm has a handful; an inspector filters by party).
DEVICE_LIMIT: Final = 200
#: Gap ranges shown per device (the device's page in the rejections section lists them all).
GAP_RANGES: Final = 5


@dataclass(frozen=True, slots=True)
class DeviceCard:
    """What the page shows of one device."""

    device: Device
    party_name: str
    activity: DeviceActivity
    receipt: LastReceipt | None
    missing: int
    gap_ranges: list[str]
    gap_more: bool
    reasons: list[tuple[RejectReason, int]]
    key_state: str
    key_since_ms: int | None


def _key_state(keys: list[DeviceKey]) -> tuple[str, int | None]:
    """The state of the device's current key (``valid`` or ``revoked``) and since when."""
    current = [key for key in keys if key.valid_until_ms is None] or keys[-1:]
    if not current:
        return "none", None
    key = current[-1]
    if key.revoked_ms is not None:
        return "revoked", key.revoked_ms
    return "valid", key.valid_from_ms


def _name(party: Party | None, lang: Lang, fallback: str) -> str:
    if party is None:
        return fallback
    return party.name_en if lang == "en" and party.name_en else party.name


@router.get("", response_class=HTMLResponse)
def devices(
    request: Request,
    user: User,
    party: Annotated[str | None, Query(max_length=100)] = None,
    lang: LangQuery = None,
) -> Response:
    """The reader's devices: place, last message and receipt, gaps, refusals, key state."""
    language = page_language(request, lang)
    reader = reader_party(user)
    wanted = reader if reader is not None else ((party or "").strip() or None)
    engine: Engine = request.app.state.engine
    cards: list[DeviceCard] = []
    with session_scope(engine) as session:
        found = party_devices(session, wanted)
        shown = found[:DEVICE_LIMIT]
        receipts = last_receipts(session, [device.id for device in shown])
        parties = {
            p.id: p
            for p in session.exec(
                select(Party) if reader is None else select(Party).where(col(Party.id) == reader)
            ).all()
        }
        for device in shown:
            gaps = device_gaps(session, device.id)
            totals = reason_totals(session, RejectionFilter(reader_party=reader, device=device.id))
            state, since = _key_state(device_keys(session, device.id))
            cards.append(
                DeviceCard(
                    device=device,
                    party_name=_name(parties.get(device.party_id), language, device.party_id),
                    activity=device_activity(session, device.id),
                    receipt=receipts.get(device.id),
                    missing=sum(b - a + 1 for a, b in gaps),
                    gap_ranges=[
                        str(a) if a == b else f"{a}–{b}"  # noqa: RUF001 (a range)
                        for a, b in gaps[:GAP_RANGES]
                    ],
                    gap_more=len(gaps) > GAP_RANGES,
                    reasons=[(r, totals[r][0]) for r in RejectReason if r in totals],
                    key_state=state,
                    key_since_ms=since,
                )
            )
        choices = (
            []
            if reader is not None
            else sorted((p for p in parties.values() if p.kind != "inspector"), key=lambda p: p.id)
        )
    note_parties(request, *{card.device.party_id for card in cards})
    path = "/console/devices" + (
        f"?{urlencode({'party': wanted})}" if reader is None and wanted else ""
    )
    return page(
        "console/devices.html",
        language,
        path=path,
        user=user,
        section="devices",
        cards=cards,
        more=max(0, len(found) - DEVICE_LIMIT),
        reader=reader,
        party=wanted or "",
        choices=[(p.id, _name(p, language, p.id)) for p in choices],
    )
