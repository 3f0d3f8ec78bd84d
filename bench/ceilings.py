"""Ceilings for the ingest drain: MQTT clients draining the same backlog and doing (almost) nothing.

``python -m bench.ingest`` reads ingest's rate against the client it is bound by
(docs/benchmarks.md, "Ingest: draining a backlog"), so it also drains the same backlog, in the
same run, with

* ``aiomqtt``: the bare aiomqtt subscriber (MQTT 3.1.1, paho underneath, PUBACK on receipt);
* ``paho``: paho-mqtt in a plain thread (its own ``loop_start`` network thread, no asyncio; MQTT
  3.1.1, PUBACK on receipt);
* ``hot``: ingest's own client bare (``ingest.mqtt``, MQTT 5 with a large Receive Maximum,
  ``deliveries()`` and one ``ack()`` per batch): the floor of ingest's receive path;
* ``hot-receipts``: the same, also publishing one receipt-sized QoS 1 message per message with
  one ``publish_many`` per batch, acknowledged by the broker: the floor of receive + receipt.

Each ceiling has its own persistent session, made by :func:`open_sessions` before the backlog is
published. The drains return what they measured and print nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.client import MQTTMessage, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import connect
from tracecore.mqtt import BrokerAddress
from tracecore.topics import RECEIPT_SUFFIX, UP_SUFFIX, UP_WILDCARD

__all__ = [
    "CEILINGS",
    "LABELS",
    "Ceiling",
    "drain",
    "forget_sessions",
    "open_sessions",
    "parse_ceilings",
    "ratios",
    "report",
]

#: Every ceiling, in the order they run and are reported.
CEILINGS = ("aiomqtt", "paho", "hot", "hot-receipts")
#: How the report names each ceiling.
LABELS = {
    "aiomqtt": "bare aiomqtt subscriber",
    "paho": "paho in a thread",
    "hot": "ingest/mqtt, receive only",
    "hot-receipts": "ingest/mqtt, + receipts",
}
_SHORT = {
    "aiomqtt": "aiomqtt",
    "paho": "paho thread",
    "hot": "ingest/mqtt",
    "hot-receipts": "ingest/mqtt+receipts",
}
#: The ceilings whose session is ingest's own client's (MQTT 5); the others are MQTT 3.1.1.
_OURS = frozenset({"hot", "hot-receipts"})
#: About the size of a receipt (a COSE_Sign1 over the entry's hash, docs/protocol.md §8).
_RECEIPT = bytes(200)
#: The Receive Maximum of the ``hot`` sessions: large, so mosquitto never waits for our PUBACKs.
_RECEIVE_MAXIMUM = 65_535


@dataclass(frozen=True, slots=True)
class Ceiling:
    """What one ceiling's drain measured."""

    name: str
    #: From connecting to the last message of the backlog (for ``hot-receipts``: to the last
    #: receipt acknowledged by the broker).
    seconds: float
    #: Messages of the backlog received (others' messages on the same broker are not counted).
    received: int
    #: Receipts published and acknowledged (``hot-receipts`` only).
    published: int = 0
    #: The broker's Receive Maximum, the most receipts unacknowledged at once (MQTT 5.0
    #: §3.3.4; mosquitto's ``max_inflight_messages``, 20 by default): ``hot-receipts`` only.
    window: int = 0

    @property
    def label(self) -> str:
        """The ceiling's name in the report."""
        return LABELS[self.name]

    @property
    def rate(self) -> float:
        """Messages per second (receipts per second for ``hot-receipts``); 0 if none came."""
        done = self.published if self.name == "hot-receipts" else self.received
        return done / self.seconds if self.seconds > 0 else 0.0


def parse_ceilings(text: str) -> tuple[str, ...]:
    """Parse ``--ceilings``: names from :data:`CEILINGS`, comma-separated; ``none`` for none.

    Returns them in :data:`CEILINGS` order without repeats. Raises
    ``argparse.ArgumentTypeError`` naming an unknown one.
    """
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"none"}:
        return ()
    unknown = sorted(names - set(CEILINGS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown ceiling(s) {', '.join(unknown)}: choose from {','.join(CEILINGS)} or none"
        )
    return tuple(name for name in CEILINGS if name in names)


async def open_sessions(broker: BrokerAddress, sessions: Mapping[str, str]) -> None:
    """Make each ceiling's persistent session (``{ceiling: client id}``), subscribed, offline.

    Call before the backlog is published, so the broker queues all of it for each session.
    Each session speaks the protocol its client speaks in the drain.
    """
    for name, client_id in sessions.items():
        if name in _OURS:
            conn = await connect(broker, client_id=client_id, clean_start=True)
            await conn.subscribe(UP_WILDCARD, qos=1)
            await conn.disconnect()
        else:
            async with _paho_session(broker, client_id, clean=False) as client:
                await client.subscribe(UP_WILDCARD, qos=1)


async def forget_sessions(broker: BrokerAddress, sessions: Mapping[str, str]) -> None:
    """Have the broker drop each session and whatever is still queued for it."""
    for name, client_id in sessions.items():
        if name in _OURS:
            conn = await connect(broker, client_id=client_id, clean_start=True, session_expiry_s=0)
            await conn.disconnect()
        else:
            async with _paho_session(broker, client_id, clean=True):
                pass


async def drain(
    name: str,
    broker: BrokerAddress,
    client_id: str,
    *,
    marker: str,
    expected: int,
    batch_size: int = 500,
    idle_s: float = 30.0,
) -> Ceiling:
    """Drain the backlog waiting in session ``client_id`` with ceiling ``name``; time it.

    Counts the messages whose topic contains ``marker`` (others may share the broker) and
    stops at ``expected`` of them, or after ``idle_s`` without one (a broker whose
    ``max_queued_messages`` is below the backlog dropped the rest: the count shows it).
    ``batch_size`` is the most messages the ``hot`` ceilings take per ``deliveries()``.
    """
    if name == "aiomqtt":
        return await _drain_aiomqtt(broker, client_id, marker, expected, idle_s)
    if name == "paho":
        return await asyncio.to_thread(_drain_paho, broker, client_id, marker, expected, idle_s)
    if name in _OURS:
        return await _drain_ours(
            broker,
            client_id,
            marker,
            expected,
            idle_s=idle_s,
            batch_size=batch_size,
            receipts=name == "hot-receipts",
        )
    raise ValueError(f"unknown ceiling {name!r}: choose from {', '.join(CEILINGS)}")


def ratios(ceilings: Sequence[Ceiling], rate: float) -> str:
    """``rate`` as a fraction of each ceiling's: ``0.25 of aiomqtt, 0.11 of paho thread``."""
    return ", ".join(f"{rate / c.rate:.2f} of {_SHORT[c.name]}" for c in ceilings if c.rate > 0)


def report(ceilings: Sequence[Ceiling]) -> str:
    """The report's block of ceilings, one line each (empty without ceilings)."""
    if not ceilings:
        return ""
    lines = (
        f"    {c.label + ':':<27}{c.rate:10,.0f} msg/s  ({c.seconds:.2f} s"
        f"{f', broker window {c.window}' if c.window else ''})\n"
        for c in ceilings
    )
    return "  ceilings (same backlog, same run):\n" + "".join(lines)


def _paho_session(broker: BrokerAddress, client_id: str, *, clean: bool) -> aiomqtt.Client:
    """An MQTT 3.1.1 client on session ``client_id``, as the aiomqtt and paho drains use."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=client_id,
        clean_session=clean,
    )


async def _drain_aiomqtt(
    broker: BrokerAddress, client_id: str, marker: str, expected: int, idle_s: float
) -> Ceiling:
    """aiomqtt iterating ``client.messages`` (paho underneath PUBACKs each as it reads it)."""
    received = 0
    started = last = time.perf_counter()
    async with _paho_session(broker, client_id, clean=False) as client:
        iterator = aiter(client.messages)
        while received < expected:
            try:
                async with asyncio.timeout(idle_s):
                    message = await anext(iterator)
            except TimeoutError:
                break
            if marker in message.topic.value:
                received += 1
                last = time.perf_counter()
    return Ceiling("aiomqtt", last - started, received)


def _drain_paho(
    broker: BrokerAddress, client_id: str, marker: str, expected: int, idle_s: float
) -> Ceiling:
    """paho with its own network thread (``loop_start``) and an ``on_message`` that counts."""
    done = threading.Event()
    count = [0]
    last = [0.0]

    def on_message(_client: PahoClient, _userdata: object, message: MQTTMessage) -> None:
        if marker in message.topic:
            count[0] += 1
            last[0] = time.perf_counter()
            if count[0] >= expected:
                done.set()

    client = PahoClient(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=MQTTv311
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    client.on_message = on_message
    started = last[0] = time.perf_counter()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        # Poll the count (50 ms) from this thread: paho's thread does all the work.
        seen = 0
        idle_since = started
        while not done.wait(0.05):
            now = time.perf_counter()
            if count[0] != seen:
                seen, idle_since = count[0], now
            elif now - idle_since > idle_s:
                break
    finally:
        client.disconnect()
        client.loop_stop()
    return Ceiling("paho", last[0] - started, count[0])


async def _drain_ours(
    broker: BrokerAddress,
    client_id: str,
    marker: str,
    expected: int,
    *,
    idle_s: float,
    batch_size: int,
    receipts: bool,
) -> Ceiling:
    """ingest/mqtt: batches from ``deliveries()``, one ``ack()`` each; receipts if asked.

    Receipts go out from their own task through an unbounded queue, as ingest publishes them
    (ingest/service.py): a reader that waited for receipts' PUBACKs while its own buffer had
    paused the socket would never see them.
    """
    received = published = 0
    started = last = time.perf_counter()
    conn = await connect(broker, client_id=client_id, receive_maximum=_RECEIVE_MAXIMUM)
    window = conn.connack.receive_maximum if receipts and conn.connack is not None else 0
    outbound: asyncio.Queue[list[tuple[str, bytes]] | None] = asyncio.Queue()
    # "agritrace/v1/devices/<id>/up" -> "agritrace/v1/devices/<id>/receipt": the receipt topic
    # (tracecore.topics.receipt_topic) without parsing the device id again.
    cut = len(UP_SUFFIX)

    async def read() -> None:
        nonlocal received, last
        try:
            while received < expected:
                try:
                    async with asyncio.timeout(idle_s):
                        batch = await conn.deliveries(batch_size)
                except TimeoutError:
                    break
                conn.ack([m.packet_id for m in batch if m.packet_id is not None])
                ours = [m.topic for m in batch if marker in m.topic]
                if ours:
                    received += len(ours)
                    last = time.perf_counter()
                    if receipts:
                        outbound.put_nowait([(t[:-cut] + RECEIPT_SUFFIX, _RECEIPT) for t in ours])
        finally:
            outbound.put_nowait(None)

    async def publish() -> None:
        nonlocal published, last
        while (items := await outbound.get()) is not None:
            await conn.publish_many(items, qos=1)
            published += len(items)
            last = time.perf_counter()

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(read(), name=f"ceiling-{client_id}-read")
            tasks.create_task(publish(), name=f"ceiling-{client_id}-receipts")
    finally:
        await conn.disconnect()
    name = "hot-receipts" if receipts else "hot"
    return Ceiling(name, last - started, received, published, window)
