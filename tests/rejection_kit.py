"""Refused messages for the console's tests, made the way devices make them: through ingest.

Importable as ``rejection_kit`` (tests/ is on ``sys.path``). :func:`add_refusals` grows a pages
world (trace_kit) with a device of its own, a gap in that device's sequence numbers, and one
refused message of each kind a device can cause (bad signature sent three times, unknown key,
malformed bytes, a message too large to read, a revoked key, an unregistered device, a topic
with markup, one refusal from before the default 30 days), all through the real
:class:`ingest.Processor`. One row no ingest can write (a device id with markup) is stored as a
hand-edited database would hold it. :class:`Refusals` says what was sent, so tests compare the
pages with it. :func:`table_rows` reads a table of a page.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Final

from sqlalchemy import func, select
from sqlmodel import col
from trace_kit import CLIMATE, COLLECT, FARM, LOG, LOT, T0, World, signer

from ingest import Inbound, Processor
from tracecore.cose import sign_message
from tracecore.errors import RejectReason
from tracecore.message import DeviceMessage, Reading, Sensor
from tracecore.storage import Rejection, session_scope
from tracecore.topics import up_topic

__all__ = [
    "GHOST",
    "MARKUP",
    "ROGUE",
    "Refusals",
    "add_refusals",
    "cst_day",
    "table_rows",
]

DAY_MS: Final = 86_400_000
#: A device of the farm registered by :func:`add_refusals`: seqs 1 and 5 logged (2-4 missing),
#: then its key revoked and a message signed with it refused.
ROGUE: Final = signer("hens01-rogue")
#: A device nobody registered.
GHOST: Final = signer("ghost-gateway-9")
#: Markup in a topic, a device id and a revocation reason: the pages must show it as text.
MARKUP: Final = "<b>x</b><script>alert(1)</script>"
_CST: Final = timezone(timedelta(hours=8))
#: The device time of the refused messages: within the world's keys' validity. They arrive up
#: to 40 days before the world's last moment (ingest decides their reasons before the clock's).
SIGNED_AT: Final = T0 + 60_000


def cst_day(ms: int) -> date:
    """The China Standard Time date of ``ms``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(_CST).date()


@dataclass
class Refusals:
    """What :func:`add_refusals` stored: rejection ids and bytes by name, counts per reason.

    ``messages`` and ``arrivals`` count the refusals within the default range (the 30 days up
    to ``now``); ``days`` the messages per CST day and reason; ``old`` is the one refusal from
    before that range.
    """

    now: int
    ids: dict[str, int] = field(default_factory=dict)
    raws: dict[str, bytes] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)
    arrivals: Counter[str] = field(default_factory=Counter)
    days: Counter[tuple[date, str]] = field(default_factory=Counter)
    old: str = "old"


def _reading(device: str, seq: int, time: int) -> DeviceMessage:
    return Reading(device, seq, time, (LOT,), (Sensor("Temperature", 4.5, "CEL"),))


def _ingest(world: World, topic: str, raw: bytes, received_ms: int) -> RejectReason:
    """Ingest one message received at ``received_ms``; return why it was refused."""
    processor = Processor(world.engine, LOG)
    try:
        result = processor.process([Inbound(topic, raw, received_ms)], received_ms)
    finally:
        processor.close()
    assert result.accepted == 0, result
    (reason,) = result.rejected
    return reason


def _last_id(world: World) -> int:
    with session_scope(world.engine) as session:
        return int(session.scalar(select(func.max(col(Rejection.id)))) or 0)


def add_refusals(world: World) -> Refusals:
    """Grow ``world`` (whose server clock is ``world.now[0]`` now) with the refusals above."""
    now = world.now[0]
    refusals = Refusals(now)

    def refuse(
        name: str, topic: str, raw: bytes, at: int, expected: RejectReason, *, counted: bool = True
    ) -> None:
        assert _ingest(world, topic, raw, at) is expected, name
        if name not in refusals.ids:
            refusals.ids[name] = _last_id(world)
            refusals.raws[name] = raw
            refusals.received[name] = at
            if counted:
                refusals.messages[expected.value] += 1
                refusals.days[(cst_day(at), expected.value)] += 1
        if counted:
            refusals.arrivals[expected.value] += 1

    # The rogue device: registered through the API, seq 1 and 5 logged (a gap of 2-4).
    created = world.client.post(
        "/v1/devices",
        json={
            "id": ROGUE.name,
            "party": FARM,
            "public_key": base64.b64encode(ROGUE.public_key).decode(),
        },
        headers=world.auth("admin"),
    )
    assert created.status_code == 201, created.text
    world.send(ROGUE, lambda seq, time: _reading(ROGUE.name, seq, time))
    world.seqs[ROGUE.name] = 4
    world.send(ROGUE, lambda seq, time: _reading(ROGUE.name, seq, time))

    climate = up_topic(CLIMATE.name)
    # A signature with its last byte changed, sent three times on three days: one row.
    good = sign_message(_reading(CLIMATE.name, 900, SIGNED_AT), CLIMATE.signing_key)
    flipped = good[:-1] + bytes([good[-1] ^ 0x01])
    for days in (3, 2, 1):
        refuse("bad_signature", climate, flipped, now - days * DAY_MS, RejectReason.BAD_SIGNATURE)
    stranger = signer("not-the-climate-key")
    refuse(
        "unknown_key",
        climate,
        sign_message(_reading(CLIMATE.name, 901, SIGNED_AT), stranger.signing_key),
        now - 2 * DAY_MS,
        RejectReason.UNKNOWN_KEY,
    )
    refuse(
        "malformed",
        climate,
        b"\xd2\x84this is not CBOR <i>at all</i>",
        now - 2 * DAY_MS,
        RejectReason.MALFORMED,
    )
    # Over the 64 KiB ingest reads at all: refused unread, its first 1024 bytes kept.
    big = bytes(range(256)) * 280
    refuse("too_large", up_topic(COLLECT.name), big, now - DAY_MS, RejectReason.TOO_LARGE)
    refuse(
        "unknown_device",
        up_topic(GHOST.name),
        sign_message(_reading(GHOST.name, 1, SIGNED_AT), GHOST.signing_key),
        now - DAY_MS,
        RejectReason.UNKNOWN_DEVICE,
    )
    refuse(
        "markup_topic",
        f"agritrace/v1/devices/{MARKUP}/up",
        b"\xa1\x61\x76\x01",
        now - DAY_MS,
        RejectReason.MALFORMED,
    )
    refuse(
        "old",
        climate,
        b"\xff\xff old garbage",
        now - 40 * DAY_MS,
        RejectReason.MALFORMED,
        counted=False,
    )
    # No ingest stores a device id like this (ids are checked); a hand-edited row might.
    raw = b"\xa0"
    with session_scope(world.engine) as session:
        row = Rejection(
            raw=raw,
            topic=f"agritrace/v1/devices/{MARKUP}/up",
            reason=RejectReason.UNKNOWN_DEVICE.value,
            detail=f"device {MARKUP!r} is not registered",
            device_id=MARKUP,
            seq=None,
            received_ms=now - 2 * DAY_MS,
            raw_length=1,
            raw_sha256=hashlib.sha256(raw).digest(),
            received_count=1,
            last_received_ms=now - 2 * DAY_MS,
        )
        session.add(row)
        session.flush()
        refusals.ids["markup_device"] = int(row.id or 0)
    refusals.raws["markup_device"] = raw
    refusals.received["markup_device"] = now - 2 * DAY_MS
    refusals.messages["unknown_device"] += 1
    refusals.arrivals["unknown_device"] += 1
    refusals.days[(cst_day(now - 2 * DAY_MS), "unknown_device")] += 1
    # The rogue's key revoked since it was issued: it signs nothing any more. The newest row.
    revoked = world.client.post(
        f"/v1/devices/{ROGUE.name}/revoke",
        json={"since_ms": 0, "reason": f"stolen {MARKUP}"},
        headers=world.auth("admin"),
    )
    assert revoked.status_code == 200, revoked.text
    refuse(
        "revoked_key",
        up_topic(ROGUE.name),
        sign_message(_reading(ROGUE.name, 6, now), ROGUE.signing_key),
        now - 3_600_000,
        RejectReason.REVOKED_KEY,
    )
    return refusals


class _Tables(HTMLParser):
    """Collect the rows of one table (by id) as lists of cell texts."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # > 0 inside the wanted table
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """The rows of the table ``table_id`` of ``html``, each a list of its cells' texts."""
    parser = _Tables(table_id)
    parser.feed(html)
    return parser.rows
