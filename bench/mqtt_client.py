"""CPU cost per message of ingest's MQTT client (ingest/mqtt) against aiomqtt, in one run.

Run by hand, not a test::

    .venv/bin/python -m bench.mqtt_client                      # starts its own mosquitto
    .venv/bin/python -m bench.mqtt_client --messages 50000 --payload 300
    .venv/bin/python -m bench.mqtt_client --broker mqtt://127.0.0.1:1884

Three measurements, each as CPU µs of this process per message (``time.process_time``: the
broker is another process and is not counted), for both clients on the same broker:

* **drain**: ``--messages`` QoS 1 messages wait in a persistent session; the client connects
  and takes them all. Ours takes batches from ``deliveries()`` and PUBACKs each batch with one
  ``ack()``; aiomqtt iterates ``client.messages`` (paho PUBACKs each message as it reads it).
* **publish**: ``--messages`` QoS 1 messages in batches of 500, each returning when all are
  acknowledged. Ours: ``publish_many`` per batch; aiomqtt: ``asyncio.gather`` of
  ``client.publish`` per batch (one call per message, as ingest/service.py does).
* **decode** (ours only): the codec alone, µs per PUBLISH over a buffer of many.

Both clients speak MQTT 5 with the same topic and payloads. Without ``--broker`` a mosquitto
with ``max_queued_messages 0`` (no limit on a session's queue) is started on a free port, so the
whole backlog waits for the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiomqtt

from ingest.mqtt import connect
from ingest.mqtt.packets import Decoder, encode_publish
from tracecore.mqtt import BrokerAddress

__all__ = ["Result", "main"]

#: Receipts per publish call, as ingest publishes a batch's receipts together.
_BATCH = 500
#: aiomqtt warns for every publish waiting behind paho's in-flight window: not news here.
_QUIET = logging.getLogger("bench.mqtt_client.aiomqtt")
_QUIET.setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class Result:
    """CPU µs per message of each client and phase."""

    messages: int
    ours_drain_us: float
    aiomqtt_drain_us: float
    ours_publish_us: float
    aiomqtt_publish_us: float
    decode_us: float


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> Result:
    """Run the benchmark; print a Markdown table to ``out`` and return the numbers."""
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_client", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--payload", type=int, default=300, help="bytes per message")
    parser.add_argument("--broker", default=None, help="mqtt://host:port (default: start one)")
    args = parser.parse_args(argv)
    with _broker(args.broker) as broker:
        result = asyncio.run(_run(broker, args.messages, args.payload))
    ratio = _ratio
    print(f"{result.messages} QoS 1 messages of {args.payload} bytes, MQTT 5", file=out)
    print("| CPU µs per message | ingest/mqtt | aiomqtt | aiomqtt / ours |", file=out)
    print("|---|---:|---:|---:|", file=out)
    print(
        f"| drain (receive + PUBACK) | {result.ours_drain_us:.1f} | "
        f"{result.aiomqtt_drain_us:.1f} | {ratio(result.aiomqtt_drain_us, result.ours_drain_us)} |",
        file=out,
    )
    print(
        f"| publish (until PUBACK) | {result.ours_publish_us:.1f} | "
        f"{result.aiomqtt_publish_us:.1f} | "
        f"{ratio(result.aiomqtt_publish_us, result.ours_publish_us)} |",
        file=out,
    )
    print(f"| decode one PUBLISH (codec only) | {result.decode_us:.2f} | | |", file=out)
    return result


def _ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.1f}x" if ours > 0 else "-"


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[BrokerAddress]:
    """The broker at ``url``, or a mosquitto of our own for the duration."""
    if url is not None:
        yield BrokerAddress.parse(url)
        return
    program = shutil.which("mosquitto")
    if program is None:
        raise SystemExit("mosquitto is not installed: pass --broker mqtt://host:port")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 0\n"
        )
        process = subprocess.Popen(  # noqa: S603 (mosquitto with our own config)
            [program, "-c", str(conf)], stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start")
                time.sleep(0.05)
            yield BrokerAddress("127.0.0.1", port)
        finally:
            process.kill()
            process.wait(10)


async def _run(broker: BrokerAddress, count: int, size: int) -> Result:
    run_id = secrets.token_hex(4)
    topic = f"bench/{run_id}/up"
    items = [(topic, i.to_bytes(4, "big") + bytes(size - 4)) for i in range(count)]
    ours_drain = await _drain_ours(broker, f"bench-ours-{run_id}", topic, items)
    theirs_drain = await _drain_aiomqtt(broker, f"bench-aio-{run_id}", topic, items)
    ours_publish = await _publish_ours(broker, f"bench-pub-ours-{run_id}", items)
    theirs_publish = await _publish_aiomqtt(broker, f"bench-pub-aio-{run_id}", items)
    return Result(
        count,
        ours_drain * 1e6 / count,
        theirs_drain * 1e6 / count,
        ours_publish * 1e6 / count,
        theirs_publish * 1e6 / count,
        _decode_cost(items) * 1e6,
    )


async def _fill(
    broker: BrokerAddress, client_id: str, topic: str, items: list[tuple[str, bytes]]
) -> None:
    """Subscribe ``client_id`` persistently, leave, and queue ``items`` for it (not timed)."""
    subscriber = await connect(broker, client_id=client_id, clean_start=True)
    await subscriber.subscribe(topic)
    await subscriber.disconnect()
    publisher = await connect(broker, client_id=client_id + "-fill", clean_start=True)
    for start in range(0, len(items), 5_000):
        await publisher.publish_many(items[start : start + 5_000])
    await publisher.disconnect()


async def _wipe(broker: BrokerAddress, client_id: str) -> None:
    conn = await connect(broker, client_id=client_id, clean_start=True, session_expiry_s=0)
    await conn.disconnect()


async def _drain_ours(
    broker: BrokerAddress, client_id: str, topic: str, items: list[tuple[str, bytes]]
) -> float:
    """CPU seconds for ingest/mqtt to take and acknowledge the queued ``items``."""
    await _fill(broker, client_id, topic, items)
    started = time.process_time()
    conn = await connect(broker, client_id=client_id)
    received = 0
    while received < len(items):
        batch = await conn.deliveries(1_000)
        received += len(batch)
        conn.ack([m.packet_id for m in batch if m.packet_id is not None])
    cpu = time.process_time() - started
    await conn.disconnect()
    await _wipe(broker, client_id)
    return cpu


async def _drain_aiomqtt(
    broker: BrokerAddress, client_id: str, topic: str, items: list[tuple[str, bytes]]
) -> float:
    """CPU seconds for aiomqtt to take the queued ``items`` (paho PUBACKs each on reading)."""
    await _fill(broker, client_id, topic, items)
    started = time.process_time()
    received = 0
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        logger=_QUIET,
    ) as client:
        async for _message in client.messages:
            received += 1
            if received == len(items):
                break
        cpu = time.process_time() - started
    await _wipe(broker, client_id)
    return cpu


async def _publish_ours(
    broker: BrokerAddress, client_id: str, items: list[tuple[str, bytes]]
) -> float:
    conn = await connect(broker, client_id=client_id, clean_start=True)
    started = time.process_time()
    for start in range(0, len(items), _BATCH):
        await conn.publish_many(items[start : start + _BATCH])
    cpu = time.process_time() - started
    await conn.disconnect()
    return cpu


async def _publish_aiomqtt(
    broker: BrokerAddress, client_id: str, items: list[tuple[str, bytes]]
) -> float:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        logger=_QUIET,
    ) as client:
        started = time.process_time()
        # As ingest/service.py does: one publish per receipt, gathered per batch.
        for start in range(0, len(items), _BATCH):
            await asyncio.gather(
                *(
                    client.publish(topic, payload, qos=1, timeout=60)
                    for topic, payload in items[start : start + _BATCH]
                )
            )
        return time.process_time() - started


def _decode_cost(items: list[tuple[str, bytes]]) -> float:
    """CPU seconds per PUBLISH to decode a buffer of all ``items`` (best of 3)."""
    buffer = b"".join(
        encode_publish(topic, payload, packet_id=i % 65_535 + 1)
        for i, (topic, payload) in enumerate(items)
    )
    best = float("inf")
    for _ in range(3):
        decoder = Decoder(5, max_packet=1 << 20)
        started = time.process_time()
        for start in range(0, len(buffer), 65_536):  # as asyncio hands reads over
            decoder.feed(buffer[start : start + 65_536])
        best = min(best, time.process_time() - started)
    return best / len(items)


if __name__ == "__main__":
    main()
