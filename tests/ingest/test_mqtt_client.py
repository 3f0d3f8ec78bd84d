"""ingest/mqtt's client against real brokers: mosquitto (MQTT 5 and 3.1.1) and embedded amqtt."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_kit import free_port, unique

from ingest.mqtt import Connection, Delivery, connect
from ingest.mqtt.packets import Decoder, Publish
from tracecore.backoff import Backoff
from tracecore.errors import (
    MqttConnectError,
    MqttConnectionLost,
    MqttError,
    MqttRefused,
    MqttUnsupportedProtocol,
)
from tracecore.mqtt import BrokerAddress, embedded_broker

Scenario = Callable[[BrokerAddress, int], Awaitable[None]]
BROKERS = [
    pytest.param("mosquitto-v5", marks=pytest.mark.mosquitto),
    pytest.param("mosquitto-v311", marks=pytest.mark.mosquitto),
    "amqtt-v311",
]
MOSQUITTO_BOTH = [
    pytest.param("mosquitto-v5", marks=pytest.mark.mosquitto),
    pytest.param("mosquitto-v311", marks=pytest.mark.mosquitto),
]


@pytest.fixture
def run(request: pytest.FixtureRequest) -> Callable[[str, Scenario], None]:
    """Run an async scenario on a broker named ``mosquitto-v5``, ``mosquitto-v311`` or
    ``amqtt-v311`` (an embedded amqtt broker on a free port, in the scenario's loop)."""

    def runner(name: str, scenario: Scenario) -> None:
        async def main() -> None:
            if name.startswith("amqtt"):
                address = BrokerAddress("127.0.0.1", free_port())
                async with embedded_broker(address):
                    await scenario(address, 4)
            else:
                mosquitto: BrokerAddress = request.getfixturevalue("mosquitto")
                await scenario(mosquitto, 5 if name.endswith("v5") else 4)

        asyncio.run(main())

    return runner


@contextlib.asynccontextmanager
async def session(
    address: BrokerAddress, protocol: int, client_id: str, **options: Any
) -> AsyncIterator[Connection]:
    """A connection for the block; the broker's session of ``client_id`` is wiped afterwards."""
    conn = await connect(address, client_id=client_id, protocol=protocol, **options)
    try:
        yield conn
    finally:
        await conn.disconnect()
        wipe = await connect(address, client_id=client_id, protocol=protocol, clean_start=True)
        await wipe.disconnect()


async def take(conn: Connection, count: int, within_s: float = 10.0) -> list[Delivery]:
    """Receive exactly ``count`` messages (fail after ``within_s``)."""
    got: list[Delivery] = []
    async with asyncio.timeout(within_s):
        while len(got) < count:
            got += await conn.deliveries(count - len(got))
    return got


async def arriving(conn: Connection, seconds: float, max_count: int = 1000) -> list[Delivery]:
    """The messages that arrive within ``seconds`` (one batch), or [] when none does."""
    try:
        async with asyncio.timeout(seconds):
            return await conn.deliveries(max_count)
    except TimeoutError:
        return []


async def nothing_within(conn: Connection, seconds: float) -> bool:
    """True when no message arrives within ``seconds`` (one that does is consumed)."""
    return not await arriving(conn, seconds)


@pytest.mark.parametrize("broker", BROKERS)
def test_puback_only_after_ack(broker: str, run: Callable[[str, Scenario], None]) -> None:
    """An unacknowledged QoS 1 message comes again (DUP) in the resumed session; acked ones do not.

    Not with amqtt, which forgets unacknowledged messages: that is asserted too.
    """

    async def scenario(address: BrokerAddress, protocol: int) -> None:
        topic, client_id = unique("t/ack"), unique("sub")
        async with session(address, protocol, unique("pub")) as publisher:
            first = await connect(address, client_id=client_id, protocol=protocol)
            assert await first.subscribe(topic, 1) == 1
            await publisher.publish_many([(topic, b"one"), (topic, b"two"), (topic, b"three")])
            got = await take(first, 3)
            assert [(m.payload, m.dup, m.qos) for m in got] == [
                (b"one", False, 1),
                (b"two", False, 1),
                (b"three", False, 1),
            ]
            first.ack([got[0].packet_id or 0])  # as after a commit of "one" only
            await asyncio.sleep(0.2)  # let the broker read the PUBACK before we go
            await first.disconnect()

            async with session(address, protocol, client_id) as second:
                assert second.session_present
                if broker.startswith("amqtt"):
                    # amqtt 0.12 drops a QoS 1 message whose PUBACK has not come when the
                    # client goes (or after 5 s): it is never sent again (docs/ingest.md).
                    assert await nothing_within(second, 1.0)
                    return
                again = await take(second, 2)
                assert [(m.payload, m.dup) for m in again] == [(b"two", True), (b"three", True)]
                second.ack(m.packet_id or 0 for m in again)
                await asyncio.sleep(0.2)
                await second.disconnect()
                third = await connect(address, client_id=client_id, protocol=protocol)
                assert third.session_present
                assert await nothing_within(third, 1.0)
                await third.disconnect()

    run(broker, scenario)


@pytest.mark.mosquitto
def test_receive_maximum_caps_unacknowledged(mosquitto: BrokerAddress) -> None:
    """With Receive Maximum 5, mosquitto sends 5 of 20 queued messages until they are acked;
    after acks all 20 come, in order."""

    async def main() -> None:
        topic = unique("t/rm")
        async with (
            session(mosquitto, 5, unique("pub")) as publisher,
            session(mosquitto, 5, unique("sub"), receive_maximum=5) as subscriber,
        ):
            await subscriber.subscribe(topic)
            await publisher.publish_many([(topic, b"%d" % i) for i in range(20)])
            window = await take(subscriber, 5)
            assert await nothing_within(subscriber, 0.5), "more than 5 unacknowledged"
            assert subscriber.receive_maximum_exceeded == 0
            seen = [m.payload for m in window]
            subscriber.ack(m.packet_id or 0 for m in window)
            # mosquitto 2.0.11 keeps the limit only for this first window: after PUBACKs it
            # sends the rest of the queue at once (counted in receive_maximum_exceeded).
            while len(seen) < 20:
                batch = await take(subscriber, 1)
                seen += [m.payload for m in batch]
                subscriber.ack(m.packet_id or 0 for m in batch)
            assert seen == [b"%d" % i for i in range(20)]

    asyncio.run(main())


@pytest.fixture
def private_mosquitto(
    tmp_path: Path, mosquitto_programs: tuple[str, str]
) -> Iterator[Callable[[str], BrokerAddress]]:
    """Start mosquittos of our own with extra config lines; each on a free loopback port."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> BrokerAddress:
        port = free_port()
        conf = tmp_path / f"mosquitto-{port}.conf"
        # Run as us: mosquitto started by root would switch to a user that cannot read our files.
        conf.write_text(
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\npersistence false\n{config}\n"
        )
        processes.append(
            subprocess.Popen(  # noqa: S603 (mosquitto with our config)
                [mosquitto_programs[0], "-c", str(conf)], stderr=subprocess.DEVNULL
            )
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return BrokerAddress("127.0.0.1", port)
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)

    yield start
    for process in processes:
        process.kill()
        process.wait(10)


@pytest.mark.mosquitto
def test_mosquitto_inflight_limit_v311_vs_v5(
    private_mosquitto: Callable[[str], BrokerAddress],
) -> None:
    """mosquitto caps unacked QoS 1 to a 3.1.1 client at max_inflight_messages (20); to an MQTT 5
    client, the client's Receive Maximum applies (here 100 of 100)."""
    broker = private_mosquitto("allow_anonymous true\nmax_inflight_messages 20")

    async def unacked_delivered(protocol: int) -> int:
        topic = unique("t/inflight")
        async with (
            session(broker, protocol, unique("pub")) as publisher,
            session(broker, protocol, unique("sub"), receive_maximum=1000) as subscriber,
        ):
            await subscriber.subscribe(topic)
            await publisher.publish_many([(topic, b"m")] * 100)
            got: list[Delivery] = []
            while batch := await arriving(subscriber, 0.7):
                got += batch  # never acknowledged
            return len(got)

    async def main() -> tuple[int, int]:
        return await unacked_delivered(4), await unacked_delivered(5)

    assert asyncio.run(main()) == (20, 100)


@pytest.mark.parametrize("broker", MOSQUITTO_BOTH)
def test_shared_subscription_splits_messages(
    broker: str, run: Callable[[str, Scenario], None]
) -> None:
    """Two clients on ``$share/<group>/<topic>`` each get some messages, together all, once."""

    async def scenario(address: BrokerAddress, protocol: int) -> None:
        topic, group = unique("t/shared"), unique("ingest")
        async with (
            session(address, protocol, unique("pub")) as publisher,
            session(address, protocol, unique("a")) as a,
            session(address, protocol, unique("b")) as b,
        ):
            for conn in (a, b):
                await conn.subscribe(f"$share/{group}/{topic}")
            await publisher.publish_many([(topic, b"%d" % i) for i in range(100)])
            got: dict[str, list[bytes]] = {"a": [], "b": []}

            async def drain(name: str, conn: Connection) -> None:
                while batch := await arriving(conn, 1.0):
                    got[name] += [m.payload for m in batch]
                    conn.ack(m.packet_id or 0 for m in batch)

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(drain("a", a), name="drain-a")
                tasks.create_task(drain("b", b), name="drain-b")
            assert got["a"]
            assert got["b"]
            assert sorted(got["a"] + got["b"], key=int) == [b"%d" % i for i in range(100)]

    run(broker, scenario)


@pytest.mark.parametrize("broker", BROKERS)
def test_publish_many_2000_all_acknowledged(
    broker: str, run: Callable[[str, Scenario], None]
) -> None:
    """2000 QoS 1 receipts are all acknowledged, and a subscriber sees every one."""

    async def scenario(address: BrokerAddress, protocol: int) -> None:
        topic = unique("t/many")
        async with (
            session(address, protocol, unique("pub")) as publisher,
            session(address, protocol, unique("sub")) as subscriber,
        ):
            await subscriber.subscribe(topic)
            items = [(topic, b"receipt-%d" % i) for i in range(2000)]
            seen: list[bytes] = []

            async def drain() -> None:
                async with asyncio.timeout(60):
                    while len(seen) < len(items):
                        batch = await subscriber.deliveries(500)
                        seen.extend(m.payload for m in batch)
                        subscriber.ack(m.packet_id for m in batch if m.packet_id is not None)

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(drain(), name="drain")
                await publisher.publish_many(items)
            assert seen == [payload for _, payload in items]

    run(broker, scenario)


@pytest.mark.mosquitto
def test_keepalive_keeps_an_idle_connection(mosquitto: BrokerAddress) -> None:
    """An idle connection with keepalive 1 s lives 4 s (PINGREQ/PINGRESP) and still works."""

    async def main() -> None:
        topic = unique("t/idle")
        async with session(mosquitto, 5, unique("idle"), keepalive_s=1) as conn:
            await conn.subscribe(topic)
            await asyncio.sleep(4)  # mosquitto drops a client silent for 1.5 x keepalive
            assert not conn.is_closed
            await conn.publish(topic, b"still here")
            assert [m.payload for m in await take(conn, 1)] == [b"still here"]

    asyncio.run(main())


async def _silent_broker(
    on_data: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]] | None = None,
) -> tuple[asyncio.Server, BrokerAddress]:
    """A TCP server that answers CONNECT with a v5 CONNACK, then only calls ``on_data``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1000)  # the CONNECT
            writer.write(bytes.fromhex("20 03 00 00 00"))  # CONNACK v5: accepted, no properties
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if on_data is not None:
                        await on_data(data, writer)
        finally:
            writer.close()  # also when the test ends first and the handler is cancelled

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, BrokerAddress("127.0.0.1", port)


def test_dead_peer_is_detected() -> None:
    """A broker that accepts and then never answers is ConnectionLost after ~1.5 x keepalive."""

    async def main() -> None:
        server, address = await _silent_broker()
        async with server:
            conn = await connect(address, client_id="c", keepalive_s=1)
            started = time.monotonic()
            with pytest.raises(MqttConnectionLost, match="nothing from the broker"):
                async with asyncio.timeout(20):
                    await conn.deliveries(10)
            assert time.monotonic() - started >= 1.4
            with pytest.raises(MqttConnectionLost):
                await conn.wait_closed()
            with pytest.raises(MqttConnectionLost):
                conn.ack([1])

    asyncio.run(main())


def test_lost_connection_reports_unacknowledged_items() -> None:
    """When the broker drops the connection, publish_many names every item it did not ack."""

    async def on_data(data: bytes, writer: asyncio.StreamWriter) -> None:
        if data[0] >> 4 == 3:  # PUBLISHes: acknowledge the first (packet id 1), then hang up
            writer.write(bytes.fromhex("40 02 0001"))
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.transport.abort()

    async def main() -> None:
        server, address = await _silent_broker(on_data)
        async with server:
            conn = await connect(address, client_id="c")
            items = [("t", b"%d" % i) for i in range(5)]
            with pytest.raises(MqttConnectionLost) as caught:
                await conn.publish_many(items)
            assert caught.value.unacknowledged == tuple(items[1:])

    asyncio.run(main())


def test_protocol_error_closes_with_a_reason() -> None:
    """A broker that sends QoS 2 breaks our subscription's maximum: the client says so, closes."""

    async def on_data(data: bytes, writer: asyncio.StreamWriter) -> None:
        if data[0] >> 4 == 8:  # SUBSCRIBE: grant QoS 1, then send a QoS 2 PUBLISH anyway
            writer.write(bytes.fromhex("90 04 0001 00 01"))
            await writer.drain()
            await asyncio.sleep(0.2)  # a separate read: the SUBACK is handled first
            writer.write(bytes.fromhex("34 06 0001 74 0001 00"))

    async def main() -> None:
        server, address = await _silent_broker(on_data)
        async with server:
            conn = await connect(address, client_id="c")
            await conn.subscribe("t")
            with pytest.raises(MqttConnectionLost, match="protocol error: PUBLISH with QoS 2"):
                await conn.wait_closed()

    asyncio.run(main())


def test_resent_duplicate_is_dropped_and_refusals_are_errors() -> None:
    """A DUP resend of a buffered id is delivered once; ack() refuses unknown ids; a refused
    SUBSCRIBE raises MqttRefused; reusing an unacked id without DUP is a protocol error."""

    async def on_data(data: bytes, writer: asyncio.StreamWriter) -> None:
        if data[0] >> 4 != 8:  # only SUBSCRIBE is answered
            return
        packet_id, topic_filter = data[2:4], data[7:8]  # v5: id, property length, filter
        if topic_filter == b"t":
            writer.write(bytes.fromhex("90 04") + packet_id + bytes.fromhex("00 01"))
            writer.write(bytes.fromhex("32 07 0001 74 0009 00 61"))  # id 9, "a"
            writer.write(bytes.fromhex("3a 07 0001 74 0009 00 61"))  # id 9 again, DUP
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(bytes.fromhex("32 07 0001 74 0009 00 62"))  # id 9, no DUP, "b"
        else:
            writer.write(bytes.fromhex("90 04") + packet_id + bytes.fromhex("00 87"))  # refused

    async def main() -> None:
        server, address = await _silent_broker(on_data)
        async with server:
            conn = await connect(address, client_id="c")
            with pytest.raises(MqttRefused, match="0x87"):
                await conn.subscribe("x")
            await conn.subscribe("t")
            assert [(m.packet_id, m.payload) for m in await take(conn, 1)] == [(9, b"a")]
            with pytest.raises(ValueError, match="not unacknowledged"):
                conn.ack([10])
            with pytest.raises(MqttConnectionLost, match="reuses packet id 9"):
                await conn.wait_closed()

    asyncio.run(main())


def test_refused_publish_raises_after_all_are_settled() -> None:
    """PUBACK reason codes >= 0x80 make publish_many raise MqttRefused with those codes."""

    async def on_data(data: bytes, writer: asyncio.StreamWriter) -> None:
        for packet in Decoder(5).feed(data):  # a client's PUBLISH has the broker's layout
            assert isinstance(packet, Publish)
            assert packet.packet_id is not None
            code = b"\x87" if packet.payload == b"bad" else b"\x10"  # 0x10: no subscribers
            writer.write(b"\x40\x03" + packet.packet_id.to_bytes(2, "big") + code)

    async def main() -> None:
        server, address = await _silent_broker(on_data)
        async with server:
            conn = await connect(address, client_id="c")
            await conn.publish_many([("t", b"ok"), ("t", b"ok")])
            with pytest.raises(MqttRefused, match=r"1 of 3 PUBLISH.*0x87"):
                await conn.publish_many([("t", b"ok"), ("t", b"bad"), ("t", b"ok")])
            await conn.disconnect()

    asyncio.run(main())


@pytest.mark.mosquitto
def test_backpressure_pauses_reading(mosquitto: BrokerAddress) -> None:
    """QoS 0 messages beyond the byte budget pause the socket; draining resumes; none is lost."""

    async def main() -> None:
        topic = unique("t/flood")
        async with (
            session(mosquitto, 5, unique("pub")) as publisher,
            session(mosquitto, 5, unique("sub"), buffer_bytes=20_000) as subscriber,
        ):
            await subscriber.subscribe(topic, qos=0)
            await publisher.publish_many([(topic, b"x" * 1000)] * 300, qos=0)
            await asyncio.sleep(1.0)
            assert subscriber._paused
            # Buffered: the budget plus at most one read (asyncio reads 256 KiB at a time).
            assert subscriber._inbox_bytes < 20_000 + 300_000
            got = await take(subscriber, 300)
            assert len(got) == 300
            assert not subscriber._paused

    asyncio.run(main())


@pytest.mark.mosquitto
def test_wrong_password_is_refused_with_the_reason(
    private_mosquitto: Callable[[str], BrokerAddress],
    tmp_path: Path,
    mosquitto_programs: tuple[str, str],
) -> None:
    """A bad password gives MqttConnectError with the broker's code, under v5 and 3.1.1."""
    passwd = tmp_path / "passwd"
    subprocess.run(  # noqa: S603 (mosquitto_passwd with fixed arguments)
        [mosquitto_programs[1], "-c", "-b", str(passwd), "ingest", "right"], check=True
    )
    passwd.chmod(0o600)
    broker = private_mosquitto(f"allow_anonymous false\npassword_file {passwd}")
    wrong = BrokerAddress(broker.host, broker.port, "ingest", "wrong")
    good = BrokerAddress(broker.host, broker.port, "ingest", "right")

    async def main() -> None:
        with pytest.raises(
            MqttConnectError, match=r"bad user name or password|not authorized"
        ) as v5:
            await connect(wrong, client_id=unique("c"), protocol=5)
        # MQTT 5.0 §3.2.2.2: 0x86 bad user name or password; mosquitto 2.0.11 answers 0x87
        # not authorized (and return code 5, not 4, under 3.1.1).
        assert v5.value.code in (0x86, 0x87)
        with pytest.raises(MqttConnectError) as v311:
            await connect(wrong, client_id=unique("c"), protocol=4)
        assert v311.value.code in (0x04, 0x05)  # MQTT 3.1.1 §3.2.2.3
        conn = await connect(good, client_id=unique("c"), protocol=5)
        await conn.disconnect()

    asyncio.run(main())


def test_v5_connect_against_amqtt() -> None:
    """amqtt speaks 3.1.1 only: an MQTT 5 CONNECT gets no CONNACK (amqtt reads the v5
    properties as the 3.1.1 payload and waits); connect() says so, and protocol=4 works."""

    async def main() -> None:
        address = BrokerAddress("127.0.0.1", free_port())
        async with embedded_broker(address):
            with pytest.raises(MqttConnectionLost, match="no CONNACK") as caught:
                await connect(address, client_id="v5", protocol=5, timeout_s=2)
            assert "protocol=4" in str(caught.value)
            conn = await connect(address, client_id="v311", protocol=4)
            await conn.disconnect()

    asyncio.run(main())


def test_unsupported_protocol_answer() -> None:
    """A 3.1.1 broker that answers a v5 CONNECT with return code 1 gives MqttUnsupportedProtocol."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1000)
            writer.write(bytes.fromhex("20 02 00 01"))  # MQTT 3.1.1 §3.2.2.3: unacceptable version
            await writer.drain()
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(MqttUnsupportedProtocol, match="protocol=4"):
                await connect(BrokerAddress("127.0.0.1", port), client_id="c", protocol=5)

    asyncio.run(main())


@pytest.mark.mosquitto
def test_example_reconnect_loop_resumes_the_session(mosquitto: BrokerAddress) -> None:
    """The ingest loop: connect, subscribe, take, store, ack; a dropped connection resumes the
    session after a jittered backoff, and every message is stored (a redelivered one twice at
    most, never lost)."""
    topic, client_id = unique("t/loop"), unique("ingest")
    stored: list[bytes] = []

    async def ingest_loop(stop: asyncio.Event, drop_once: asyncio.Event) -> None:
        backoff = Backoff(initial=0.05, cap=0.5)
        while not stop.is_set():
            try:
                conn = await connect(mosquitto, client_id=client_id, keepalive_s=5)
                backoff.reset()
                await conn.subscribe(topic)  # again after every connect: idempotent
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(0.2):
                            batch = await conn.deliveries(100)
                    except TimeoutError:
                        continue
                    stored.extend(m.payload for m in batch)  # "commit"
                    if drop_once.is_set():  # the connection breaks before the ack
                        drop_once.clear()
                        assert conn._transport is not None
                        conn._transport.abort()
                        continue
                    conn.ack(m.packet_id for m in batch if m.packet_id is not None)
                await conn.disconnect()
            except MqttError:
                await asyncio.sleep(backoff.next_delay())

    async def main() -> None:
        stop, drop_once = asyncio.Event(), asyncio.Event()
        async with session(mosquitto, 5, unique("pub")) as publisher, asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest_loop(stop, drop_once), name="ingest-loop")
            await asyncio.sleep(0.5)  # subscribed
            await publisher.publish_many([(topic, b"a%d" % i) for i in range(10)])
            await asyncio.sleep(0.5)
            drop_once.set()
            await publisher.publish_many([(topic, b"b%d" % i) for i in range(10)])
            deadline = time.monotonic() + 20
            expected = {b"a%d" % i for i in range(10)} | {b"b%d" % i for i in range(10)}
            # Every message stored, and the batch left unacknowledged stored again after the
            # reconnect (the first copy alone completes the set, so wait for both).
            while not (expected <= set(stored) and len(stored) > len(expected)):
                assert time.monotonic() < deadline, (
                    f"missing {expected - set(stored)}, {len(stored)} stored"
                )
                await asyncio.sleep(0.1)
            stop.set()
        wipe = await connect(mosquitto, client_id=client_id, clean_start=True)
        await wipe.disconnect()
        assert set(stored) == expected
        assert len(stored) > len(expected)  # the unacked batch came again

    asyncio.run(main())
