"""The outbox's bound: a full outbox refuses new messages, burns no number, evicts nothing."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest
from mqtt_kit import lot

from gateway.outbox import Outbox, OutboxBound, StoredReceipt
from gateway.runtime import Fleet
from tracecore.errors import OutboxFull
from tracecore.keys import generate_signer
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress


def _settle(outbox: Outbox, device_id: str, seq: int) -> None:
    item = outbox.get(device_id, seq)
    assert item is not None
    digest = hashlib.sha256(item.raw).digest()
    assert outbox.settle([StoredReceipt(device_id, seq, seq, bytes(32), digest, b"r", 1)]) == 1


def test_a_full_outbox_refuses_the_next_message_without_using_its_number(tmp_path: Path) -> None:
    """At the message bound the next append raises; after a receipt the next number follows."""
    with Outbox(tmp_path / "o.sqlite3", bound=OutboxBound(max_messages=3)) as outbox:
        for n in range(3):
            outbox.append("dev-a", lambda s, n=n: f"m{n}-{s}".encode(), now_ms=0, next_send_ms=1)
        with pytest.raises(OutboxFull) as refused:
            outbox.append("dev-a", lambda s: f"late-{s}".encode(), now_ms=0, next_send_ms=1)
        assert refused.value.limit == "messages"
        assert "3 unreceipted messages" in str(refused.value)
        assert outbox.last_seq("dev-a") == 3  # no number used by the refused message
        assert [i.raw for i in outbox.pending()] == [b"m0-1", b"m1-2", b"m2-3"]  # none evicted
        with pytest.raises(OutboxFull):  # several at once: all or nothing
            outbox.append_many([("dev-b", lambda _s: b"x")], now_ms=0, next_send_ms=1)
        assert outbox.last_seq("dev-b") == 0
        _settle(outbox, "dev-a", 1)
        assert outbox.append("dev-a", lambda s: f"m-{s}".encode(), now_ms=0, next_send_ms=1)[0] == 4
        assert outbox.size() == (3, len(b"m1-2") + len(b"m2-3") + len(b"m-4"))


def test_the_byte_bound_counts_the_stored_bytes(tmp_path: Path) -> None:
    """A message that would take the stored bytes past the bound is refused, smaller ones fit."""
    bound = OutboxBound(max_messages=None, max_bytes=100)
    with Outbox(tmp_path / "o.sqlite3", bound=bound) as outbox:
        outbox.append("dev-a", lambda _s: bytes(60), now_ms=0, next_send_ms=1)
        with pytest.raises(OutboxFull) as refused:
            outbox.append("dev-a", lambda _s: bytes(41), now_ms=0, next_send_ms=1)
        assert refused.value.limit == "bytes"
        assert outbox.last_seq("dev-a") == 1
        assert outbox.append("dev-a", lambda _s: bytes(40), now_ms=0, next_send_ms=1)[0] == 2
        assert outbox.size() == (2, 100)


def test_the_size_survives_a_reopen_and_an_older_file(tmp_path: Path) -> None:
    """The kept size is the true size after a reopen, and for a file made before it was kept."""
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as outbox:
        for _ in range(5):
            outbox.append("dev-a", lambda s: bytes(10 + s), now_ms=0, next_send_ms=1)
        _settle(outbox, "dev-a", 2)
    with Outbox(path) as outbox:
        assert outbox.size() == (4, 11 + 13 + 14 + 15)
    # An outbox written by an older runtime: no size table, no triggers.
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "DROP TRIGGER outbox_size_insert; DROP TRIGGER outbox_size_delete; DROP TABLE outbox_size"
    )
    db.close()
    with Outbox(path, bound=OutboxBound(max_messages=4)) as outbox:
        assert outbox.size() == (4, 53)
        assert outbox.pending_count() == 4
        with pytest.raises(OutboxFull):
            outbox.append("dev-a", lambda _s: b"x", now_ms=0, next_send_ms=1)


def test_a_fleet_refuses_a_reading_when_its_outbox_is_full(tmp_path: Path) -> None:
    """Fleet.send raises OutboxFull and counts it; the stored messages and counter stay."""

    async def scenario() -> Fleet:
        outbox = Outbox(tmp_path / "o.sqlite3", bound=OutboxBound(max_messages=2))
        # Never run: the broker is not needed to store messages, and it is down anyway.
        fleet = Fleet(BrokerAddress("127.0.0.1", 1), outbox, bytes(32), client_id="full")
        device = fleet.add_device("barn-1", generate_signer("barn-1"))
        sensors = (Sensor("Temperature", 4.5, "CEL"),)
        for _ in range(2):
            await device.send_reading([lot("F")], sensors)
        for _ in range(3):
            with pytest.raises(OutboxFull):
                await device.send_reading([lot("F")], sensors)
        return fleet

    fleet = asyncio.run(scenario())
    assert fleet.stats.created == 2
    assert fleet.stats.refused_outbox_full == 3
    assert fleet.outbox.last_seq("barn-1") == 2
    assert [i.seq for i in fleet.outbox.pending()] == [1, 2]
    fleet.outbox.close()


def test_a_bound_must_be_positive() -> None:
    """A bound of zero messages or bytes is an error, not an outbox that refuses everything."""
    with pytest.raises(ValueError, match="at least 1"):
        OutboxBound(max_messages=0)
    with pytest.raises(ValueError, match="at least 1"):
        OutboxBound(max_bytes=0)
