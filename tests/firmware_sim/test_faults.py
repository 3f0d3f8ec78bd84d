"""Faults on demand: each fault applied by a fleet, and the real ingest service's outcome.

Each service test runs ``run_ingest`` (the real service with a real ``Processor``) in-process on
the ``engine`` fixture, and a fleet of one registered device through the shared mosquitto
broker, run by a :class:`FaultInjector` with one fault at rate 1. The device first commissions
its lot (no fault), then sends through the injector; the test waits (bounded) for the outcome
in the database: entries and receipts, or rejections with the exact injected bytes.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from mqtt_kit import lot, make_fleet, now_ms, provision, unique, wait_for, wipe_session
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from firmware_sim.faults import (
    FAULT_NAMES,
    FAULTS,
    Fault,
    FaultInjector,
    FaultSettings,
    FaultyDevice,
    _device_draw,
    _tamper,
    parse_fault,
    parse_faults,
)
from gateway.runtime import Device, Fleet
from ingest import IngestConfig, IngestStats, Processor, ServiceOptions
from ingest.service import run_ingest
from tracecore.cose import parse_message, sign_message
from tracecore.errors import BadSignature, ConfigError
from tracecore.keys import generate_signer
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.storage import revoke_key, session_scope
from tracecore.storage.queries import device_gaps

HOUR = 3_600_000
WAIT_S = 20.0
TEMP = (Sensor("Temperature", 4.5, "CEL"),)
_LOG = SQLModel.metadata.tables["log_entries"]
_REJECTIONS = SQLModel.metadata.tables["rejections"]
_PARKED = SQLModel.metadata.tables["parked_messages"]


# -- parsing and pure helpers ----------------------------------------------------------------------


def test_parse_fault_names_and_rates() -> None:
    """NAME takes the default rate, NAME:rate any rate in [0, 1]; anything else is a ConfigError."""
    assert set(FAULT_NAMES) == {
        "offline",
        "tamper",
        "replay",
        "wrong_key",
        "equivocation",
        "clock_skew",
        "burst",
        "unknown_product",
        "revoked_key",
    }
    assert parse_fault("tamper") == Fault("tamper", FAULTS["tamper"].default_rate)
    assert parse_fault("replay:0.25") == Fault("replay", 0.25)
    assert parse_fault(" Clock-Skew:1 ") == Fault("clock_skew", 1.0)
    assert str(parse_fault("burst:0.5")) == "burst:0.5"
    for bad, match in [
        ("nonsense", "unknown fault 'nonsense'"),
        ("tamper:1.5", "between 0 and 1"),
        ("tamper:-0.1", "between 0 and 1"),
        ("tamper:abc", "must be a number"),
        ("tamper:nan", "must be a number"),
        ("tamper:", "must be a number"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_fault(bad)
    assert parse_faults(["offline", "burst:1"]) == (Fault("offline", 0.01), Fault("burst", 1.0))
    with pytest.raises(ConfigError, match="more than once: tamper"):
        parse_faults(["tamper", "tamper:0.5"])
    with pytest.raises(ConfigError, match="unknown fault"):
        Fault("gremlins", 0.5)


def test_device_faults_choose_a_stable_fraction_of_devices() -> None:
    """A device fault picks devices by seed and id: stable, about ``rate`` of them."""
    devices = [f"dev-{n}" for n in range(2000)]
    chosen = [d for d in devices if _device_draw(7, "revoked_key", d) < 0.1]
    assert chosen == [d for d in devices if _device_draw(7, "revoked_key", d) < 0.1]
    assert 150 < len(chosen) < 250
    assert chosen != [d for d in devices if _device_draw(8, "revoked_key", d) < 0.1]


def test_tampered_bytes_parse_but_do_not_verify() -> None:
    """Both tamper variants keep the device and seq readable and break the signature."""
    key = generate_signer("dev-t")
    raw = sign_message(Reading("dev-t", 5, now_ms(), (lot("T"),), TEMP), key.signing_key)
    rng = random.Random(3)  # noqa: S311 (test data)
    variants = {_tamper(raw, rng) for _ in range(20)}
    assert len(variants) > 2
    for bad in variants:
        signed = parse_message(bad)
        assert (signed.message.device, signed.message.seq) == ("dev-t", 5)
        with pytest.raises(BadSignature):
            signed.verify(key.public_key)


def test_revoked_key_needs_a_revoker(tmp_path: Path) -> None:
    """Asking for revoked_key without a way to revoke keys is a ConfigError."""
    fleet = make_fleet(
        BrokerAddress("127.0.0.1", 1), tmp_path / "o.sqlite3", bytes(32), {}, client_id="x"
    )
    with pytest.raises(ConfigError, match="revoke"):
        FaultInjector(fleet, [Fault("revoked_key", 1.0)])
    fleet.outbox.close()


# -- each fault against the real service -----------------------------------------------------------


class _Clock:
    """The service clock: wall-clock ms plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return now_ms() + self.offset_ms


class _Run:
    """One registered device, its fleet under a FaultInjector, and the in-process service."""

    def __init__(
        self,
        broker: BrokerAddress,
        engine: Engine,
        tmp_path: Path,
        fault: str,
        settings: FaultSettings | None = None,
    ) -> None:
        self.broker, self.engine = broker, engine
        self.log_key = generate_signer("log")
        self.device_id = unique("dev")
        keys = provision(engine, unique("farm"), [self.device_id])
        self.lot = lot(unique("L"))
        self.fleet: Fleet = make_fleet(
            broker,
            tmp_path / "outbox.sqlite3",
            self.log_key.public_key,
            keys,
            client_id=unique("fleet"),
            resend_s=30.0,  # no resends during a test: every publish is one we made
            resend_max_s=60.0,
        )
        self.injector = FaultInjector(
            self.fleet,
            [Fault(fault, 1.0)],
            seed=11,
            settings=settings or FaultSettings(replay_delay_s=0.2),
            revoke=self._revoke,
        )
        self.faulty: FaultyDevice = self.injector.device(self.device_id)
        self.plain: Device = self.fleet.devices[self.device_id]
        self.clock = _Clock()
        self.stats = IngestStats()
        self.ingest_id = unique("ingest")

    async def _revoke(self, device_id: str) -> None:
        with session_scope(self.engine) as session:
            revoke_key(session, device_id, revoked_since_ms=now_ms(), reason="test")

    def run(self, body: Callable[[_Run], Awaitable[None]]) -> None:
        """Run the service and the fleet, commission the lot, then ``body``."""
        try:
            asyncio.run(self._run(body))
        finally:
            self.fleet.outbox.close()
            asyncio.run(wipe_session(self.broker, self.ingest_id))
            asyncio.run(wipe_session(self.broker, self.fleet.client_id))

    async def _run(self, body: Callable[[_Run], Awaitable[None]]) -> None:
        processor = Processor(self.engine, self.log_key, IngestConfig(batch_size=100))
        options = ServiceOptions(
            self.broker,
            client_id=self.ingest_id,
            batch_size=100,
            linger_ms=20,
            expire_interval_s=0.2,
            reconnect_initial_s=0.1,
            reconnect_cap_s=1.0,
        )
        stop, fleet_stop = asyncio.Event(), asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                service = tasks.create_task(
                    run_ingest(processor, options, stop, stats=self.stats, clock=self.clock),
                    name="ingest",
                )
                await wait_for(lambda: self.stats.connects == 1, 10, "ingest to connect")
                fleet = tasks.create_task(self.injector.run(fleet_stop), name="fleet")
                await wait_for(self.fleet.connected.is_set, 10, "the fleet to connect")
                await self.plain.send_event([self.lot], "commissioning")
                await self.settled()
                await body(self)
                fleet_stop.set()
                await fleet
                stop.set()
                async with asyncio.timeout(WAIT_S):
                    await service
        finally:
            processor.close()

    async def settled(self) -> None:
        """Wait until every message in the outbox is receipted."""
        async with asyncio.timeout(WAIT_S):
            await self.fleet.wait_settled()

    def entries(self) -> list[tuple[int, int, bytes]]:
        """``(seq, log index, raw)`` of the device's log entries, by log index."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_LOG.c.seq, _LOG.c.index.label("log_index"), _LOG.c.raw)
                .where(_LOG.c.device_id == self.device_id)
                .order_by(_LOG.c.index)
            ).all()
        return [(int(r.seq), int(r.log_index), bytes(r.raw)) for r in rows]

    def rejections(self) -> list[tuple[str, bytes]]:
        """``(reason, raw)`` of the rejections on the device's up topic."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_REJECTIONS.c.reason, _REJECTIONS.c.raw).where(
                    _REJECTIONS.c.device_id == self.device_id
                )
            ).all()
        return [(r.reason, bytes(r.raw)) for r in rows]

    def parked(self) -> int:
        """How many of the device's messages wait in ``parked_messages``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_PARKED.c.seq).where(_PARKED.c.device_id == self.device_id)
            ).all()
        return len(rows)

    def gaps(self) -> list[tuple[int, int]]:
        """The device's sequence gaps as the service sees them."""
        with session_scope(self.engine) as session:
            return device_gaps(session, self.device_id)

    def injected(self, fault: str) -> list[bytes]:
        """The bytes the injector published for ``fault``."""
        return [i.raw for i in self.injector.injections if i.fault == fault]

    async def wait_rejected(self, reason: str, count: int) -> None:
        """Wait for ``count`` rejections; check each has ``reason`` and injected bytes."""
        await wait_for(lambda: len(self.rejections()) >= count, WAIT_S, f"{count} x {reason}")
        await asyncio.sleep(0.3)  # nothing more should come
        got = self.rejections()
        assert collections.Counter(r for r, _ in got) == {reason: count}
        assert sorted(raw for _, raw in got) == sorted(self.injected(self.fault_name))

    @property
    def fault_name(self) -> str:
        """The one fault of this run."""
        return self.injector.faults[0].name


@pytest.fixture
def run(mosquitto: BrokerAddress, engine: Engine, tmp_path: Path) -> Callable[..., _Run]:
    """Make a :class:`_Run` of one fault on the test's broker and engine."""

    def make(fault: str, settings: FaultSettings | None = None) -> _Run:
        return _Run(mosquitto, engine, tmp_path, fault, settings)

    return make


@pytest.mark.mosquitto
def test_offline_buffers_then_flushes_in_order(run: Callable[..., _Run]) -> None:
    """Offline: the gateway disconnects, keeps 5 readings in its outbox, then flushes them."""
    r = run("offline", FaultSettings(offline_s=1.5))

    async def body(r: _Run) -> None:
        for n in range(5):
            await r.faulty.send_reading([r.lot], (Sensor("Temperature", 4.0 + n, "CEL"),))
        assert r.injector.offline
        assert r.fleet.pending_count() == 5
        await asyncio.sleep(0.5)
        assert [seq for seq, _, _ in r.entries()] == [1]  # nothing published while offline
        await r.settled()
        assert r.fleet.outbox.receipt_count() == 6

    r.run(body)
    entries = r.entries()
    assert [seq for seq, _, _ in entries] == [1, 2, 3, 4, 5, 6]  # by log index: in order
    assert r.gaps() == []
    assert r.rejections() == []
    assert r.injector.outages == 1
    assert r.fleet.stats.connects == 2


@pytest.mark.mosquitto
def test_tamper_is_rejected_as_bad_signature(run: Callable[..., _Run]) -> None:
    """Tamper: each tampered copy is refused; the device's genuine message is accepted."""
    r = run("tamper")

    async def body(r: _Run) -> None:
        for _ in range(4):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.settled()
        await r.wait_rejected("bad_signature", 4)

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1, 2, 3, 4, 5]
    assert r.injector.counts == {"tamper": 4}


@pytest.mark.mosquitto
def test_replay_is_accepted_once_and_receipted_again(run: Callable[..., _Run]) -> None:
    """Replay: the same bytes again are a duplicate: one entry, the same receipt again."""
    r = run("replay")

    async def body(r: _Run) -> None:
        for _ in range(3):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.settled()
        await wait_for(lambda: r.injector.pending_publishes() == 0, WAIT_S, "the replays")
        await wait_for(lambda: r.fleet.stats.duplicate_receipts == 3, WAIT_S, "3 receipts again")

    r.run(body)
    entries = r.entries()
    assert [seq for seq, _, _ in entries] == [1, 2, 3, 4]
    assert sorted(raw for _, _, raw in entries[1:]) == sorted(r.injected("replay"))
    assert r.stats.duplicates == 3
    assert r.rejections() == []
    assert r.fleet.stats.bad_receipts == 0


@pytest.mark.mosquitto
def test_burst_is_all_accepted(run: Callable[..., _Run]) -> None:
    """Burst: one reading becomes 40 sent at once; all are accepted, no gaps."""
    r = run("burst", FaultSettings(burst_size=40))

    async def body(r: _Run) -> None:
        await r.faulty.send_reading([r.lot], TEMP)
        await r.settled()

    r.run(body)
    assert sorted(seq for seq, _, _ in r.entries()) == list(range(1, 42))
    assert r.gaps() == []
    assert r.rejections() == []
    assert r.injector.counts == {"burst": 39}


@pytest.mark.mosquitto
def test_wrong_key_is_rejected_as_unknown_key(run: Callable[..., _Run]) -> None:
    """Wrong key: messages signed with an unregistered key are refused as unknown_key."""
    r = run("wrong_key")

    async def body(r: _Run) -> None:
        for _ in range(2):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.wait_rejected("unknown_key", 2)
        assert r.fleet.pending_count() == 0  # one-shot: nothing left to resend
        assert r.fleet.outbox.last_seq(r.device_id) == 3  # their seqs are used up

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1]


@pytest.mark.mosquitto
def test_equivocation_is_rejected_and_alerts(run: Callable[..., _Run]) -> None:
    """Equivocation: other bytes with a receipted seq are refused and raise an alert."""
    r = run("equivocation")

    async def body(r: _Run) -> None:
        for _ in range(2):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.settled()
        await r.wait_rejected("equivocation", 2)

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1, 2, 3]
    assert r.stats.alerts == 2
    equivocated = {parse_message(raw).message.seq for raw in r.injected("equivocation")}
    assert equivocated == {2, 3}


@pytest.mark.mosquitto
def test_clock_skew_is_rejected(run: Callable[..., _Run]) -> None:
    """Clock skew: a device time 10 minutes ahead is refused as clock_skew."""
    r = run("clock_skew")

    async def body(r: _Run) -> None:
        for _ in range(2):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.wait_rejected("clock_skew", 2)

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1]
    for raw in r.injected("clock_skew"):
        assert parse_message(raw).message.time > now_ms() + 5 * 60_000


@pytest.mark.mosquitto
def test_unknown_product_is_parked_then_rejected(run: Callable[..., _Run]) -> None:
    """Unknown product: parked; 25 h later (service clock) refused as unknown_product."""
    r = run("unknown_product")

    async def body(r: _Run) -> None:
        await r.faulty.send_reading([r.lot], TEMP)
        await wait_for(lambda: r.parked() == 1, WAIT_S, "the message to be parked")
        assert r.rejections() == []
        r.clock.offset_ms = 25 * HOUR
        await r.wait_rejected("unknown_product", 1)
        assert r.parked() == 0

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1]
    assert r.gaps() == []  # seq 2 was refused, not lost: the device reserved it


@pytest.mark.mosquitto
def test_revoked_key_is_rejected(run: Callable[..., _Run]) -> None:
    """Revoked key: the key is revoked in the registry; what the device sends is refused."""
    r = run("revoked_key")

    async def body(r: _Run) -> None:
        for _ in range(2):
            await r.faulty.send_reading([r.lot], TEMP)
        await r.wait_rejected("revoked_key", 2)

    r.run(body)
    assert [seq for seq, _, _ in r.entries()] == [1]
    assert r.injector.counts == {"revoked_key": 2}
