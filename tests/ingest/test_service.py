"""The ingest service through real brokers: fleets in, entries committed, receipts out.

Each reason code is covered at the database level by the processor's tests; here one rejected
message goes through the broker to show the path. Device ids and MQTT client ids are unique per
test because the broker (and its topic space) is shared by every test and concurrent run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiomqtt
import httpx
import pytest
from mqtt_kit import (
    IngestProcess,
    count_rows,
    free_port,
    lot,
    make_fleet,
    provision,
    unique,
    wait_for,
    wait_for_log_key,
    wipe_session,
)
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from gateway.runtime import Fleet
from ingest import BatchResult, Inbound, IngestConfig, IngestStats, Processor, ServiceOptions
from ingest.service import run_ingest, subscription_topic
from tracecore.cose import parse_message
from tracecore.keys import SignerKey, generate_signer
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress, embedded_broker
from tracecore.receipt import parse_receipt
from tracecore.storage import make_engine, upgrade
from tracecore.topics import up_topic

TEMP = (Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 71, "P1"))


def _options(broker: BrokerAddress, client_id: str, **overrides: object) -> ServiceOptions:
    values: dict[str, object] = {
        "broker": broker,
        "client_id": client_id,
        "batch_size": 100,
        "linger_ms": 20,
        "reconnect_initial_s": 0.1,
        "reconnect_cap_s": 1.0,
    }
    values.update(overrides)
    return ServiceOptions(**values)  # type: ignore[arg-type]


async def _send_all(
    fleet: Fleet, products: Sequence[str], per_device: int, pace_s: float = 0.0
) -> None:
    """Commission one lot per device, then send readings, some about two lots."""
    devices = list(fleet.devices.values())
    lots = {
        device.id: lot(f"{products[i % len(products)]}-{i}") for i, device in enumerate(devices)
    }
    for device in devices:
        await device.send_event([lots[device.id]], "commissioning", data={"count": 100})
    async with asyncio.timeout(30):
        await fleet.wait_settled()  # commissioned before anything names the lots
    for n in range(per_device):
        for i, device in enumerate(devices):
            other = devices[(i + 1) % len(devices)]
            own = [lots[device.id]]
            # Every fifth reading names two lots of the same party: a multi-product entry.
            products_named = [*own, lots[other.id]] if n % 5 == 0 and other is not device else own
            await device.send_reading(products_named, TEMP)
        if pace_s:
            await asyncio.sleep(pace_s)


def _entries_of(engine: Engine, devices: Sequence[str]) -> list[tuple[str, int, bytes]]:
    log = SQLModel.metadata.tables["log_entries"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(log.c.device_id, log.c.seq, log.c.raw).where(log.c.device_id.in_(devices))
        ).all()
    return [(row.device_id, row.seq, row.raw) for row in rows]


class _Harness:
    """An in-process ingest (Processor + run_ingest) that a test starts and stops."""

    def __init__(self, engine: Engine, log_key: SignerKey, options: ServiceOptions) -> None:
        self.processor = Processor(engine, log_key, IngestConfig(batch_size=options.batch_size))
        self.options = options
        self.stop = asyncio.Event()
        self.stats = IngestStats()

    async def run(self) -> IngestStats:
        try:
            return await run_ingest(self.processor, self.options, self.stop, stats=self.stats)
        finally:
            self.processor.close()


async def _fleet_round_trip(
    broker: BrokerAddress,
    engine: Engine,
    tmp_path: Path,
    *,
    devices: int,
    per_device: int,
    protocol: int = 5,
) -> None:
    log_key = generate_signer("log")
    party = unique("farm")
    keys = provision(engine, party, [unique(f"barn{i}") for i in range(devices)])
    ingest_id, fleet_id = unique("ingest"), unique("fleet")
    harness = _Harness(engine, log_key, _options(broker, ingest_id, protocol=protocol))
    fleet = make_fleet(
        broker, tmp_path / "outbox.sqlite3", log_key.public_key, keys, client_id=fleet_id
    )
    fleet_stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(harness.run(), name="ingest")
            tasks.create_task(fleet.run(fleet_stop), name="fleet")
            await _send_all(fleet, ["L", "M"], per_device)
            async with asyncio.timeout(60):
                await fleet.wait_settled()
            fleet_stop.set()
            harness.stop.set()
    finally:
        await wipe_session(broker, ingest_id)
        await wipe_session(broker, fleet_id)
    total = devices * (per_device + 1)
    entries = _entries_of(engine, list(keys))
    assert len(entries) == total
    assert harness.stats.accepted == total
    # The stored bytes are exactly what the devices sent: every receipt matches its message.
    receipts = fleet.outbox.receipts()
    assert len(receipts) == total
    stored = {(device, seq): raw for device, seq, raw in entries}
    for receipt in receipts:
        signed = parse_receipt(receipt.raw)
        signed.verify(log_key.public_key)
        assert signed.matches(parse_message(stored[receipt.device_id, receipt.seq]))
    assert len({r.log_index for r in receipts}) == total
    assert fleet.stats.bad_receipts == 0
    fleet.outbox.close()


@pytest.mark.mosquitto
def test_fleet_readings_are_committed_and_receipted(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path
) -> None:
    """Devices send through mosquitto; every message is one entry and every receipt verifies."""
    asyncio.run(_fleet_round_trip(mosquitto, engine, tmp_path, devices=6, per_device=25))


def test_embedded_broker_smoke(tmp_path: Path) -> None:
    """The same path through the embedded amqtt broker (MQTT 3.1.1, the zero-setup default)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)

    async def scenario() -> None:
        broker = BrokerAddress("127.0.0.1", free_port())
        async with embedded_broker(broker):
            await _fleet_round_trip(broker, engine, tmp_path, devices=3, per_device=5, protocol=4)

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()


@pytest.mark.mosquitto
@pytest.mark.parametrize("shared", [False, True], ids=["mqtt5", "mqtt5-shared"])
def test_persistent_session_delivers_what_was_published_while_down(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path, shared: bool
) -> None:
    """Messages published while ingest is stopped are delivered when it restarts.

    The devices never resend here (an hour's timeout): only the broker's persistent session of
    the ingest client id can have delivered them.
    """
    log_key = generate_signer("log")
    keys = provision(engine, unique("farm"), [unique("barn")])
    device_id = next(iter(keys))
    ingest_id, fleet_id = unique("ingest"), unique("fleet")
    options = _options(mosquitto, ingest_id, shared=shared)

    async def scenario() -> None:
        fleet = make_fleet(
            mosquitto, tmp_path / "outbox.sqlite3", log_key.public_key, keys,
            client_id=fleet_id, resend_s=3600, resend_max_s=3600,
        )  # fmt: skip
        device = fleet.devices[device_id]
        fleet_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(fleet_stop), name="fleet")
            # First run: subscribes (creating the session), takes the commissioning.
            first = _Harness(engine, log_key, options)
            run = tasks.create_task(first.run(), name="ingest-1")
            await wait_for(lambda: first.stats.connects == 1, 10, "ingest to connect")
            await device.send_event([lot(device_id)], "commissioning")
            async with asyncio.timeout(20):
                await fleet.wait_settled()
            first.stop.set()
            await run
            # Ingest is down: these wait in its session at the broker.
            for _ in range(30):
                await device.send_reading([lot(device_id)], TEMP)
            await asyncio.sleep(0.5)
            assert count_rows(engine, "log_entries", device_id=device_id) == 1
            second = _Harness(engine, log_key, options)
            tasks.create_task(second.run(), name="ingest-2")
            async with asyncio.timeout(30):
                await fleet.wait_settled()
            assert second.stats.received >= 30
            assert fleet.stats.resent == 0
            second.stop.set()
            fleet_stop.set()
        fleet.outbox.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(wipe_session(mosquitto, ingest_id))
        asyncio.run(wipe_session(mosquitto, fleet_id))
    assert count_rows(engine, "log_entries", device_id=device_id) == 31


class _DiesBeforeCommit(Processor):
    """A processor whose every transaction fails just before its commit (a crash, in effect)."""

    def _before_commit(self, conn: object) -> None:
        del conn
        raise RuntimeError("the process dies before this commit")


@pytest.mark.mosquitto
def test_a_message_received_but_not_committed_comes_again_from_the_broker(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path
) -> None:
    """Ingest dies before committing a batch: the broker, not the device, delivers it again.

    Ingest acknowledges a message to the broker only after its commit, so the uncommitted
    readings stay in its session; the device never resends (an hour's timeout).
    """
    log_key = generate_signer("log")
    keys = provision(engine, unique("farm"), [unique("barn")])
    device_id = next(iter(keys))
    ingest_id, fleet_id = unique("ingest"), unique("fleet")
    options = _options(mosquitto, ingest_id, process_attempts=1)

    async def scenario() -> None:
        fleet = make_fleet(
            mosquitto, tmp_path / "outbox.sqlite3", log_key.public_key, keys,
            client_id=fleet_id, resend_s=3600, resend_max_s=3600,
        )  # fmt: skip
        device = fleet.devices[device_id]
        fleet_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(fleet_stop), name="fleet")
            first = _Harness(engine, log_key, options)
            run = tasks.create_task(first.run(), name="ingest-1")
            await wait_for(lambda: first.stats.connects == 1, 10, "ingest to connect")
            await device.send_event([lot(device_id)], "commissioning")
            async with asyncio.timeout(20):
                await fleet.wait_settled()
            first.stop.set()
            await run
            dying = _Harness(engine, log_key, options)
            dying.processor.close()
            dying.processor = _DiesBeforeCommit(engine, log_key, IngestConfig(batch_size=100))
            dies = asyncio.create_task(dying.run(), name="ingest-dies")
            for _ in range(10):
                await device.send_reading([lot(device_id)], TEMP)
            with pytest.raises(ExceptionGroup) as died:
                async with asyncio.timeout(30):
                    await dies
            assert died.group_contains(RuntimeError, match="dies before this commit")
            assert dying.stats.received >= 10
            assert dying.stats.acknowledged == 0
            assert count_rows(engine, "log_entries", device_id=device_id) == 1
            second = _Harness(engine, log_key, options)
            tasks.create_task(second.run(), name="ingest-2")
            async with asyncio.timeout(30):
                await fleet.wait_settled()
            assert fleet.stats.resent == 0
            assert second.stats.acknowledged >= 10
            second.stop.set()
            fleet_stop.set()
        fleet.outbox.close()

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(wipe_session(mosquitto, ingest_id))
        asyncio.run(wipe_session(mosquitto, fleet_id))
    assert count_rows(engine, "log_entries", device_id=device_id) == 11


@pytest.mark.mosquitto
def test_rejected_message_goes_to_the_rejections_table(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path
) -> None:
    """A message with a broken signature goes through the broker into ``rejections``."""
    log_key = generate_signer("log")
    keys = provision(engine, unique("farm"), [unique("barn")])
    device_id = next(iter(keys))
    ingest_id, fleet_id = unique("ingest"), unique("fleet")

    async def scenario() -> bytes:
        fleet = make_fleet(
            mosquitto, tmp_path / "outbox.sqlite3", log_key.public_key, keys, client_id=fleet_id
        )
        harness = _Harness(engine, log_key, _options(mosquitto, ingest_id))
        fleet_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(harness.run(), name="ingest")
            tasks.create_task(fleet.run(fleet_stop), name="fleet")
            await wait_for(lambda: harness.stats.connects == 1, 10, "ingest to connect")
            await wait_for(fleet.connected.is_set, 10, "the fleet to connect")
            # A correctly signed message, then a copy with one bit of the signature flipped.
            _, raw = await fleet.devices[device_id].send_event([lot(device_id)], "commissioning")
            async with asyncio.timeout(20):
                await fleet.wait_settled()
            tampered = bytearray(raw)
            tampered[-1] ^= 0x01
            await fleet.publish_raw(device_id, bytes(tampered))
            await wait_for(
                lambda: count_rows(engine, "rejections", device_id=device_id) == 1,
                20,
                "the rejection to be stored",
            )
            harness.stop.set()
            fleet_stop.set()
        fleet.outbox.close()
        return bytes(tampered)

    try:
        tampered = asyncio.run(scenario())
    finally:
        asyncio.run(wipe_session(mosquitto, ingest_id))
        asyncio.run(wipe_session(mosquitto, fleet_id))
    rejections = SQLModel.metadata.tables["rejections"]
    with engine.connect() as conn:
        row = conn.execute(select(rejections).where(rejections.c.device_id == device_id)).one()
    assert row.reason == "bad_signature"
    assert row.raw == tampered
    assert row.topic == up_topic(device_id)


class _SlowProcessor:
    """A stand-in processor: takes ``delay`` per batch and answers one receipt per message."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.in_batch = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def process(self, batch: Sequence[Inbound], now_ms: int) -> BatchResult:
        del now_ms
        self._loop.call_soon_threadsafe(self.in_batch.set)
        time.sleep(self.delay)
        self.batches.append(len(batch))
        return BatchResult(
            receipts=[(m.topic.split("/")[3], b"receipt:" + m.payload) for m in batch],
            accepted=len(batch),
        )

    def expire_parked(self, now_ms: int) -> BatchResult:
        del now_ms
        return BatchResult()


def test_stop_finishes_the_batch_in_hand_and_sends_its_receipts() -> None:
    """Stopping mid-batch: the batch (and what was received) is processed and receipted."""

    async def scenario() -> None:
        broker = BrokerAddress("127.0.0.1", free_port())
        async with embedded_broker(broker):
            processor = _SlowProcessor(delay=0.5)
            stop = asyncio.Event()
            stats = IngestStats()
            device = "probe-stop"
            got: list[bytes] = []
            async with aiomqtt.Client(broker.host, broker.port, identifier="probe-rx") as rx:
                await rx.subscribe(f"agritrace/v1/devices/{device}/receipt", qos=1)
                async with asyncio.TaskGroup() as tasks:
                    run = tasks.create_task(
                        run_ingest(
                            processor,
                            _options(broker, "ingest-stop", batch_size=10, protocol=4),
                            stop,
                            stats=stats,
                        ),
                        name="ingest",
                    )
                    await wait_for(lambda: stats.connects == 1, 10, "ingest to connect")
                    async with aiomqtt.Client(broker.host, broker.port) as tx:
                        for n in range(25):
                            await tx.publish(up_topic(device), f"m{n}".encode(), qos=1)
                    await processor.in_batch.wait()
                    stop.set()  # while the first batch is in the processor
                    await run
                    async with asyncio.timeout(10):
                        async for message in rx.messages:
                            assert isinstance(message.payload, bytes)
                            got.append(message.payload)
                            if len(got) == stats.processed:
                                break
            assert stats.received == stats.processed == sum(processor.batches) > 0
            assert stats.receipts_published == stats.processed
            assert sorted(got) == sorted(f"receipt:m{n}".encode() for n in range(stats.processed))

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def _private_mosquitto(port: int, conf: Path) -> AsyncIterator[None]:
    """Run a mosquitto of our own on ``port``; leaving the block kills it (a broker crash)."""
    process = _start_mosquitto(port, conf)
    try:
        await wait_for(lambda: _listening(port), 10, "mosquitto to listen")
        yield
    finally:
        process.kill()
        process.wait(10)


def _start_mosquitto(port: int, conf: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)  # noqa: S603


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.mosquitto
def test_ingest_reconnects_when_the_broker_comes_back(
    tmp_path: Path, mosquitto: BrokerAddress
) -> None:
    """The broker is killed and started again on the same port: ingest and fleet reconnect."""
    del mosquitto  # only required so that CI runs this where the mosquitto binary exists
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    log_key = generate_signer("log")
    keys = provision(engine, unique("farm"), [unique("barn")])
    device_id = next(iter(keys))

    async def scenario() -> None:
        broker = BrokerAddress("127.0.0.1", free_port())
        conf = tmp_path / "mosquitto.conf"
        harness = _Harness(engine, log_key, _options(broker, "ingest-reconnect"))
        fleet = make_fleet(
            broker, tmp_path / "outbox.sqlite3", log_key.public_key, keys,
            client_id="fleet-reconnect", resend_s=1.0, resend_max_s=2.0,
        )  # fmt: skip
        fleet_stop = asyncio.Event()
        device = fleet.devices[device_id]
        async with asyncio.timeout(120), asyncio.TaskGroup() as tasks:
            async with _private_mosquitto(broker.port, conf):
                tasks.create_task(harness.run(), name="ingest")
                tasks.create_task(fleet.run(fleet_stop), name="fleet")
                await device.send_event([lot(device_id)], "commissioning")
                async with asyncio.timeout(20):
                    await fleet.wait_settled()
            # The broker is gone: the devices keep producing into their outbox.
            for _ in range(10):
                await device.send_reading([lot(device_id)], TEMP)
            await asyncio.sleep(1.0)
            async with _private_mosquitto(broker.port, conf):
                async with asyncio.timeout(40):
                    await fleet.wait_settled()
                harness.stop.set()
                fleet_stop.set()
        assert harness.stats.connects >= 2
        assert fleet.stats.connects >= 2
        fleet.outbox.close()

    try:
        asyncio.run(scenario())
        assert count_rows(engine, "log_entries", device_id=device_id) == 11
    finally:
        engine.dispose()


@pytest.mark.mosquitto
def test_sigterm_mid_stream_exits_zero_and_loses_nothing(
    mosquitto: BrokerAddress, db_url: str, tmp_path: Path
) -> None:
    """SIGTERM to ``agritrace ingest`` mid-stream: exit 0; after a restart nothing is missing."""
    engine = make_engine(db_url)
    upgrade(engine)
    data_dir = tmp_path / "data"
    ingest_id, fleet_id = unique("ingest"), unique("fleet")
    process = IngestProcess(data_dir, db_url, mosquitto, ingest_id)
    keys = provision(engine, unique("farm"), [unique(f"barn{i}") for i in range(5)])

    async def scenario() -> Fleet:
        process.start()
        log_key = await wait_for_log_key(data_dir)
        fleet = make_fleet(
            mosquitto, tmp_path / "outbox.sqlite3", log_key, keys, client_id=fleet_id
        )
        fleet_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(fleet_stop), name="fleet")
            sender = tasks.create_task(_send_all(fleet, ["S"], 60, pace_s=0.02), name="send")
            await wait_for(lambda: fleet.stats.receipted >= 60, 30, "the first receipts")
            process.signal(signal.SIGTERM)
            status = await asyncio.to_thread(process.wait, 30)
            assert status == 0, process.log_text()
            await sender
            process.start()
            async with asyncio.timeout(60):
                await fleet.wait_settled()
                await process.wait_connected()  # a clean stop needs the process started
            process.signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0, process.log_text()
            fleet_stop.set()
        return fleet

    try:
        fleet = asyncio.run(scenario())
        total = 5 * 61
        assert fleet.outbox.pending_count() == 0
        assert fleet.outbox.receipt_count() == total
        entries = _entries_of(engine, list(keys))
        assert len(entries) == total
        per_device = collections.Counter(device for device, _, _ in entries)
        assert set(per_device.values()) == {61}
        fleet.outbox.close()
    finally:
        process.kill()
        engine.dispose()
        asyncio.run(wipe_session(mosquitto, ingest_id))
        asyncio.run(wipe_session(mosquitto, fleet_id))


def test_subscription_topics() -> None:
    """Plain wildcard by default; the shared subscription of the ingest group for scale-out."""
    assert subscription_topic(shared=False) == "agritrace/v1/devices/+/up"
    assert subscription_topic(shared=True) == "$share/ingest/agritrace/v1/devices/+/up"


@pytest.mark.mosquitto
def test_serve_runs_api_and_ingest_and_exits_zero_on_sigterm(
    mosquitto: BrokerAddress, tmp_path: Path
) -> None:
    """``agritrace serve``: the API answers, ingest is subscribed; SIGTERM ends both with 0."""
    port = free_port()
    client_id = unique("serve")
    env = IngestProcess(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", mosquitto, client_id)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
        [str(Path(sys.executable).with_name("agritrace")), "serve", "--port", str(port)],
        env=env.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                if reply.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert reply.json() == {"status": "ok", "problems": []}
        output = ""
        while "subscribed to" not in output:
            assert time.monotonic() < deadline, output
            time.sleep(0.1)
            output = (tmp_path / "serve.log").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "serve.log").read_text()
        assert "ingest stopped" in (tmp_path / "serve.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        asyncio.run(wipe_session(mosquitto, client_id))
