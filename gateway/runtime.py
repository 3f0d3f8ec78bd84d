"""The gateway runtime: devices that sign, publish, and resend until receipted.

A :class:`Fleet` is a group of devices that share one MQTT connection and one persistent
:class:`~gateway.outbox.Outbox` (one SQLite file). It does what docs/protocol.md asks of
device firmware:

* each message gets the device's next sequence number, is signed with the device's Ed25519 key
  and stored in the outbox (counter and bytes in one commit) *before* its first publish;
* messages go out at QoS 1 on ``agritrace/v1/devices/{device}/up``;
* the fleet subscribes to ``agritrace/v1/devices/+/receipt`` (QoS 1, persistent session, so
  receipts sent while it was offline are delivered) *before* publishing anything, and dispatches
  each receipt to its device;
* a receipt settles a message only if it verifies under the **pinned** log public key and
  :meth:`~tracecore.receipt.SignedReceipt.matches` the exact stored bytes; anything else is
  counted and ignored;
* unreceipted messages are resent, byte for byte, after a timeout that doubles up to a cap
  (:class:`ResendPolicy`), counted from when each one actually went out and never shorter
  than receipts are seen to take; after a reconnect every one is due, but they go out oldest
  first, a window at a time, once the receipts the broker kept for the fleet have come in
  (:mod:`gateway.pacing`);
* the connection is re-established with jittered exponential backoff.

A farm's gateway (``agritrace gateway``) and the simulator (:mod:`firmware_sim`) both run on
it. This package speaks only MQTT and the documented format: it imports tracecore, never the
services or the simulator (import-linter enforces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiomqtt
import nacl.signing

from gateway.outbox import Outbox, OutboxItem, StoredReceipt
from gateway.pacing import DEFAULT_MAX_IN_FLIGHT, InFlight
from tracecore.backoff import Backoff
from tracecore.cose import parse_message, sign_message
from tracecore.errors import KeyFileError, MessageRejected, OutboxFull, UnknownKey
from tracecore.identifiers import ProductKey, parse_device_id
from tracecore.keys import SignerKey, device_kid, generate_signer, read_key_file, write_key_file
from tracecore.message import AnyMessage, DeviceMessage, Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.receipt import SignedReceipt, parse_receipt
from tracecore.topics import RECEIPT_SUFFIX, TOPIC_PREFIX, up_topic

__all__ = [
    "RECEIPT_WILDCARD",
    "Device",
    "Fleet",
    "FleetStats",
    "ResendPolicy",
    "load_or_create_device_key",
    "wall_clock_ms",
]

RECEIPT_WILDCARD: Final = f"{TOPIC_PREFIX}/+/{RECEIPT_SUFFIX}"
_log = logging.getLogger(__name__)
#: Longest wait for the broker's PUBACK of one message.
PUBLISH_TIMEOUT_S: Final = 10.0
_PUBLISH_CHUNK: Final = 256  # publishes awaited together: enough to fill the pipe on loopback
#: After a (re)connect, resends wait until the broker has delivered the receipts it kept for
#: the fleet's persistent session: no message for this long (or the longest wait below).
_SESSION_QUIET_S: Final = 0.5
_SESSION_WAIT_MAX_S: Final = 10.0


def wall_clock_ms() -> int:
    """Return the wall-clock time in ms since the Unix epoch (the default device clock)."""
    return time.time_ns() // 1_000_000


def load_or_create_device_key(keys_dir: Path, device_id: str) -> SignerKey:
    """Return the device's key from ``keys_dir/{device_id}.key``, creating it on first use.

    An existing but unreadable or unsafe key file is an error (:class:`KeyFileError`), never a
    reason to make a new key: a device with a new key is a different device to the registry.
    """
    parse_device_id(device_id)
    try:
        return read_key_file(keys_dir, device_id)
    except KeyFileError:
        if (keys_dir / f"{device_id}.key").exists():
            raise
    key = generate_signer(device_id)
    write_key_file(keys_dir, key)
    return key


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """When to resend an unreceipted message: exponential backoff with jitter, per message.

    docs/protocol.md §8: after the ``n``-th send of a message the device waits a uniform random
    time in ``[b/2, b]`` with ``b = min(max_s, initial_s * factor**(n-1))`` ("equal jitter"), so
    a fleet that sent many messages together, or that ingest answers slower than it sends,
    spreads its resends instead of repeating every message on one timer. The fleet raises
    ``b`` to twice the receipt round trip it measures (``at_least_ms``, :mod:`gateway.pacing`),
    never above ``max_s``. The lower half is
    kept: with full jitter (``[0, b]``) a resend could follow its send at once, before any
    receipt could have come back. ``n`` is the message's persisted
    ``attempts`` (gateway/outbox.py), so the schedule survives restarts.
    """

    initial_s: float = 30.0
    max_s: float = 3600.0
    factor: float = 2.0

    def nominal_ms(self, attempts: int) -> int:
        """Return the upper bound of the wait after the ``attempts``-th send (1 = the first)."""
        exponent = min(max(attempts - 1, 0), 64)  # clamped: huge counts must not overflow
        return int(min(self.max_s, self.initial_s * self.factor**exponent) * 1000)

    def delay_ms(self, attempts: int, rng: random.Random, *, at_least_ms: int = 0) -> int:
        """Return the wait after the ``attempts``-th send: uniform in ``[b/2, b]``.

        ``b`` is :meth:`nominal_ms`, raised to ``2 * at_least_ms`` (the time receipts are seen
        to take, :class:`gateway.pacing.ReceiptClock`) but never above the cap: a resend never
        comes before a receipt could, yet keeps its jitter.
        """
        bound = max(self.nominal_ms(attempts), min(2 * at_least_ms, int(self.max_s * 1000)))
        return int(bound * (1 + rng.random()) / 2)


@dataclass(slots=True)
class FleetStats:
    """Counters of a fleet since it started (not persisted)."""

    created: int = 0
    #: New messages refused because the outbox was at its bound (:class:`OutboxFull`).
    refused_outbox_full: int = 0
    published: int = 0
    resent: int = 0
    publish_failures: int = 0
    receipted: int = 0
    duplicate_receipts: int = 0
    bad_receipts: int = 0
    foreign_receipts: int = 0
    connects: int = 0


@dataclass(slots=True)
class Device:
    """One device of a :class:`Fleet`: its id, key and clock."""

    id: str
    key: SignerKey
    fleet: Fleet
    clock: Callable[[], int] = wall_clock_ms

    async def send(
        self, build: Callable[[int], DeviceMessage], *, cursor: tuple[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Sign and send the message ``build(seq)``; return its sequence number and bytes.

        The message is in the persistent outbox when this returns; it is published as soon as
        the fleet is connected and resent until receipted. ``cursor`` is committed with it
        (:meth:`gateway.outbox.Outbox.append`).
        """
        return await self.fleet.send(self.id, build, cursor=cursor)

    async def send_reading(
        self,
        products: Sequence[ProductKey],
        sensors: Sequence[Sensor],
        *,
        time_ms: int | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send a reading of ``sensors`` for ``products`` (time: the device clock)."""
        when = self.clock() if time_ms is None else time_ms

        def build(seq: int) -> DeviceMessage:
            return Reading(
                device=self.id,
                seq=seq,
                time=when,
                products=tuple(products),
                sensors=tuple(sensors),
            )

        return await self.send(build, cursor=cursor)

    async def send_event(
        self,
        products: Sequence[ProductKey],
        step: str,
        *,
        parents: Sequence[ProductKey] = (),
        location: str | None = None,
        data: Mapping[str, object] | None = None,
        time_ms: int | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send a business event ``step`` for ``products`` (time: the device clock)."""
        when = self.clock() if time_ms is None else time_ms

        def build(seq: int) -> DeviceMessage:
            return Event(
                device=self.id,
                seq=seq,
                time=when,
                products=tuple(products),
                step=step,
                parents=tuple(parents),
                location=location,
                data=data,
            )

        return await self.send(build, cursor=cursor)


@dataclass(slots=True)
class _Outgoing:
    device_id: str
    seq: int
    raw: bytes
    next_send_ms: int


@dataclass(slots=True)
class _Settle:
    """Receipts verified but not yet written to the outbox (flushed in small batches)."""

    items: list[StoredReceipt] = field(default_factory=list)
    keys: set[tuple[str, int]] = field(default_factory=set)

    def add(self, receipt: StoredReceipt) -> None:
        self.items.append(receipt)
        self.keys.add((receipt.device_id, receipt.seq))

    def clear(self) -> None:
        self.items.clear()
        self.keys.clear()


class Fleet:
    """Devices sharing one MQTT connection and one outbox file; run it with :meth:`run`.

    Typical use::

        fleet = Fleet(broker, Outbox(path), log_public_key, client_id="farm-7-gateways")
        barn = fleet.add_device("farm7-barn1", load_or_create_device_key(keys, "farm7-barn1"))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(stop), name="fleet")
            await barn.send_reading([lot], [Sensor("Temperature", 4.5, "CEL")])
            async with asyncio.timeout(30):
                await fleet.wait_settled()
            stop.set()
    """

    def __init__(
        self,
        broker: BrokerAddress,
        outbox: Outbox,
        log_public_key: bytes,
        *,
        client_id: str,
        resend: ResendPolicy | None = None,
        reconnect: Backoff | None = None,
        scan_interval_s: float = 0.5,
        send_queue_size: int = 10_000,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        rng: random.Random | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """Prepare a fleet; nothing connects until :meth:`run`.

        ``log_public_key`` is the pinned 32-byte log key that every receipt must verify
        under. ``client_id`` must be stable across restarts: the broker keeps the fleet's
        persistent session (its receipt subscription and queued receipts) under it.
        ``max_in_flight`` bounds how many messages wait for their receipt at once
        (:class:`gateway.pacing.InFlight`).
        """
        self.broker = broker
        self.outbox = outbox
        self.log_public_key = bytes(log_public_key)
        self._log_kid = device_kid(self.log_public_key)
        self.client_id = client_id
        self.resend = resend or ResendPolicy()
        self._reconnect = reconnect or Backoff(initial=0.2, cap=30.0)
        self._scan_interval_s = scan_interval_s
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._clock = clock
        self.devices: dict[str, Device] = {}
        self._signing_keys: dict[str, nacl.signing.SigningKey] = {}
        self.stats = FleetStats()
        # Bounded: a producer faster than the broker waits here instead of growing memory.
        # Anything that does not make it through this queue is still in the outbox and goes
        # out with the next resend scan.
        self._send_queue: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=send_queue_size)
        self._client: aiomqtt.Client | None = None
        self._in_flight = InFlight(max_window=max_in_flight)
        self._room = asyncio.Event()  # set when a receipt frees a place in the window
        self._last_message_s = 0.0  # monotonic time of the last message the broker delivered
        self.connected = asyncio.Event()
        self._settled = asyncio.Condition()
        #: Called with each batch of receipts once they are settled in the outbox (status).
        self.settle_listeners: list[Callable[[Sequence[StoredReceipt]], None]] = []
        # Called once a message is settled by its receipt (a key rotation: gateway.rotation).
        self._settle_hooks: dict[tuple[str, int], Callable[[StoredReceipt], None]] = {}

    # -- devices and sending ---------------------------------------------------------------------

    def add_device(
        self, device_id: str, key: SignerKey, *, clock: Callable[[], int] | None = None
    ) -> Device:
        """Add a device with its signing key (and optionally its own clock); return it."""
        parse_device_id(device_id)
        device = Device(id=device_id, key=key, fleet=self, clock=clock or self._clock)
        self.devices[device_id] = device
        self._signing_keys[device_id] = key.signing_key  # expanded once, not per message
        return device

    def replace_key(self, device_id: str, key: SignerKey) -> None:
        """Sign the device's messages from now on with ``key`` (after a receipted rotation).

        Messages already in the outbox keep their bytes (docs/protocol.md §8).
        """
        device = self.devices[device_id]
        device.key = key
        self._signing_keys[device_id] = key.signing_key

    def on_settled(
        self, device_id: str, seq: int, hook: Callable[[StoredReceipt], None] | None
    ) -> None:
        """Call ``hook`` with the receipt once message ``seq`` of the device is settled.

        ``None`` removes the hook. The hook runs in the event loop, right after the receipt is
        committed to the outbox, before the fleet's next message is signed.
        """
        if hook is None:
            self._settle_hooks.pop((device_id, seq), None)
        else:
            self._settle_hooks[(device_id, seq)] = hook

    async def send(
        self,
        device_id: str,
        build: Callable[[int], AnyMessage],
        *,
        cursor: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Sign ``build(seq)`` with the device's key, store it, queue it; return seq and bytes.

        ``cursor`` (name, value) is committed in the same transaction as the message.

        Raises :class:`~tracecore.errors.OutboxFull` (and counts it) when the outbox is at its
        bound: the message is not stored, no sequence number is used, and the caller decides
        whether to wait and try again or to drop the reading and count it.
        """
        signing_key = self._signing_keys[device_id]
        now = self._clock()

        def sign(seq: int) -> bytes:
            message = build(seq)
            if message.device != device_id or message.seq != seq:
                raise ValueError("build(seq) must return a message of this device with this seq")
            return sign_message(message, signing_key)

        next_send_ms = now + self._delay_ms(1)
        try:
            seq, raw = self.outbox.append(
                device_id, sign, now_ms=now, next_send_ms=next_send_ms, cursor=cursor
            )
        except OutboxFull:
            self.stats.refused_outbox_full += 1
            raise
        self.stats.created += 1
        await self._send_queue.put(_Outgoing(device_id, seq, raw, next_send_ms))
        return seq, raw

    async def publish_raw(self, device_id: str, raw: bytes) -> None:
        """Publish ``raw`` on the device's up topic once, outside the outbox (fault injection).

        Raises :class:`aiomqtt.MqttError` when not connected.
        """
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("the fleet is not connected")
        await client.publish(up_topic(device_id), raw, qos=1)

    def pending_count(self, device_id: str | None = None) -> int:
        """Return the number of unreceipted messages (of one device or of the fleet)."""
        return self.outbox.pending_count(device_id)

    async def wait_settled(self) -> None:
        """Wait until the outbox is empty (every message receipted).

        Bound the wait with ``asyncio.timeout`` around the call.
        """
        async with self._settled:
            await self._settled.wait_for(lambda: self.outbox.pending_count() == 0)

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, receive receipts and resend until ``stop`` is set.

        Runs three named tasks in a TaskGroup: the connection (reconnecting with jittered
        backoff and reading receipts), the sender of new messages and the resender of due
        ones. Unreceipted messages stay in the outbox when it returns.
        """
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._connection(stop), name=f"fleet-{self.client_id}-mqtt")
            tasks.create_task(self._sender(stop), name=f"fleet-{self.client_id}-send")
            tasks.create_task(self._resender(stop), name=f"fleet-{self.client_id}-resend")

    async def _connection(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    username=self.broker.username,
                    password=self.broker.password,
                    identifier=self.client_id,
                    # A persistent session: receipts published while we are away wait for us.
                    clean_session=False,
                    # 0 = no client-side cap: paho neither queues publishes behind it nor scans
                    # every outgoing message on each PUBACK (its _update_inflight).
                    max_inflight_messages=0,
                ) as client:
                    # Subscribe before anything is published (docs/protocol.md §1), so that no
                    # receipt can be sent before the broker knows where to deliver it.
                    # Messages are published concurrently; aiomqtt would log a warning for
                    # every call beyond its default threshold of 10 pending ones.
                    client.pending_calls_threshold = 1_000_000
                    await client.subscribe(RECEIPT_WILDCARD, qos=1)
                    self._client = client
                    self.stats.connects += 1
                    self._reconnect.reset()
                    self._in_flight.reset()
                    self._last_message_s = time.monotonic()
                    # Resend everything at once after (re)connecting (docs/protocol.md §8).
                    self.outbox.make_all_due(self._clock())
                    self.connected.set()
                    await _until_stopped(self._receive(client), stop)
            except* aiomqtt.MqttError as group:
                _log.info(
                    "fleet %s: MQTT connection lost or refused: %s",
                    self.client_id,
                    group.exceptions[0],
                )
            finally:
                self._client = None
                self.connected.clear()
            if not stop.is_set():
                await _sleep_unless(stop, self._reconnect.next_delay())

    async def _receive(self, client: aiomqtt.Client) -> None:
        pending = _Settle()
        async for message in client.messages:
            self._last_message_s = time.monotonic()
            if isinstance(message.payload, bytes):
                self._check_receipt(message.topic.value, message.payload, pending)
            # Flush in small batches: one outbox commit per burst of receipts, not per receipt.
            if pending.items and (len(client.messages) == 0 or len(pending.items) >= 256):
                await self._flush(pending)

    def _check_receipt(self, topic: str, raw: bytes, pending: _Settle) -> None:
        device_id = _device_from_receipt_topic(topic)
        if device_id is None or device_id not in self.devices:
            self.stats.foreign_receipts += 1  # another fleet's device: not ours to judge
            return
        try:
            receipt = parse_receipt(raw)
            if receipt.kid != self._log_kid:
                raise UnknownKey("receipt not signed by the pinned log key")
            receipt.verify(self.log_public_key)
        except MessageRejected as exc:
            self.stats.bad_receipts += 1
            _log.warning("fleet %s: ignoring a bad receipt for %s: %s", self.client_id, topic, exc)
            return
        if receipt.receipt.device != device_id:
            self.stats.bad_receipts += 1
            return
        item = self.outbox.get(device_id, receipt.receipt.seq)
        if item is None or (device_id, item.seq) in pending.keys:
            self.stats.duplicate_receipts += 1  # settled already (a resend's second receipt)
            return
        if not _matches(receipt, item):
            self.stats.bad_receipts += 1
            _log.warning(
                "fleet %s: receipt for %s seq %d does not match the stored message",
                self.client_id,
                device_id,
                item.seq,
            )
            return
        pending.add(
            StoredReceipt(
                device_id=device_id,
                seq=item.seq,
                log_index=receipt.receipt.index,
                entry=receipt.receipt.entry,
                msg=receipt.receipt.msg,
                raw=receipt.raw,
                received_ms=self._clock(),
            )
        )

    async def _flush(self, pending: _Settle) -> None:
        settled = self.outbox.settle(pending.items)
        self.stats.receipted += settled
        for receipt in pending.items:
            hook = self._settle_hooks.pop((receipt.device_id, receipt.seq), None)
            if hook is not None:
                hook(receipt)
        for listener in self.settle_listeners:
            listener(pending.items)
        now = self._clock()
        for receipt in pending.items:
            self._in_flight.receipted((receipt.device_id, receipt.seq), now)
        self._room.set()
        pending.clear()
        async with self._settled:
            self._settled.notify_all()

    async def _sender(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            first = await _get_unless(self._send_queue, stop)
            if first is None:
                return
            batch = [first]
            while len(batch) < _PUBLISH_CHUNK and not self._send_queue.empty():
                batch.append(self._send_queue.get_nowait())
            if not self.connected.is_set():
                # Offline: the messages are safe in the outbox; the resend after the reconnect
                # publishes them. Do not hold them here.
                continue
            ok = await self._publish([(o.device_id, o.raw) for o in batch])
            sent_ms = self._clock()
            for outgoing, sent in zip(batch, ok, strict=True):
                if sent:  # waits for its receipt until the resend time set when it was stored
                    key = (outgoing.device_id, outgoing.seq)
                    self._in_flight.sent(key, sent_ms, outgoing.next_send_ms)
            self.stats.published += len(batch)

    async def _resender(self, stop: asyncio.Event) -> None:
        connects = 0
        while not stop.is_set():
            if not await _wait_unless(self.connected, stop):
                return
            if connects != self.stats.connects:
                # Receipts the broker kept while we were away settle their messages first, so
                # that these are not resent for nothing.
                connects = self.stats.connects
                await self._wait_session_delivered(stop)
                continue
            now = self._clock()
            room = self._in_flight.room(now)
            due = self.outbox.due(now, limit=min(room, _PUBLISH_CHUNK * 4)) if room else []
            if due:
                await self._resend(due)
                continue  # there may be more due: go again at once
            # Wake on a receipt (room in the window) or after the scan interval.
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scan_interval_s):
                    await self._room.wait()

    async def _wait_session_delivered(self, stop: asyncio.Event) -> None:
        """Wait until the broker has gone quiet after a connect (its queued receipts are in)."""
        began = time.monotonic()
        while not stop.is_set() and self.connected.is_set():
            now = time.monotonic()
            if now - self._last_message_s >= _SESSION_QUIET_S or now - began >= _SESSION_WAIT_MAX_S:
                return
            await _sleep_unless(stop, 0.05)

    async def _resend(self, due: Sequence[OutboxItem]) -> None:
        for start in range(0, len(due), _PUBLISH_CHUNK):
            chunk = due[start : start + _PUBLISH_CHUNK]
            ok = await self._publish([(item.device_id, item.raw) for item in chunk])
            # The next resend counts from when the message went out (the broker's PUBACK),
            # not from when it was found due: a long burst must not eat the wait.
            sent_ms = self._clock()
            sent = []
            for item, published in zip(chunk, ok, strict=True):
                if published:
                    next_ms = sent_ms + self._delay_ms(item.attempts + 1)
                    self._in_flight.sent((item.device_id, item.seq), sent_ms, next_ms)
                    sent.append((item.device_id, item.seq, next_ms))
            self.outbox.mark_sent(sent)
            self.stats.resent += sum(ok)

    def _delay_ms(self, attempts: int) -> int:
        """The wait after the ``attempts``-th send: the policy's, at least a receipt's time."""
        timeout = self._in_flight.clock.timeout_ms()
        return self.resend.delay_ms(attempts, self._rng, at_least_ms=timeout)

    async def _publish(self, messages: Iterable[tuple[str, bytes]]) -> list[bool]:
        """Publish at QoS 1 concurrently; return which publishes the broker acknowledged."""
        client = self._client
        items = list(messages)
        if client is None:
            return [False] * len(items)
        results = await asyncio.gather(
            *(
                # Bounded: after a disconnect a PUBACK may never come, and an unbounded wait
                # would keep the fleet from stopping. A timed-out message stays in the outbox.
                client.publish(up_topic(device_id), raw, qos=1, timeout=PUBLISH_TIMEOUT_S)
                for device_id, raw in items
            ),
            return_exceptions=True,
        )
        ok = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, aiomqtt.MqttError):
                raise result
            ok.append(not isinstance(result, BaseException))
        self.stats.publish_failures += ok.count(False)
        return ok


def _matches(receipt: SignedReceipt, item: OutboxItem) -> bool:
    try:
        return receipt.matches(parse_message(item.raw))
    except MessageRejected:  # our own stored bytes do not parse: never settle on them
        return False


def _device_from_receipt_topic(topic: str) -> str | None:
    head, _, suffix = topic.rpartition("/")
    prefix, _, device_id = head.rpartition("/")
    if prefix != TOPIC_PREFIX or suffix != RECEIPT_SUFFIX:
        return None
    try:
        return parse_device_id(device_id)
    except ValueError:
        return None


async def _until_stopped(work: Coroutine[object, object, None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends (or raises) or ``stop`` is set, whichever comes first."""
    async with asyncio.TaskGroup() as tasks:
        worker = tasks.create_task(work, name="fleet-receive")
        watcher = tasks.create_task(stop.wait(), name="fleet-stop-watch")
        done, _ = await asyncio.wait({worker, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in (worker, watcher):
            if task not in done:
                task.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, waking early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _wait_unless(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``event``; return False if ``stop`` is set first."""
    while not event.is_set():
        if stop.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                await event.wait()
    return not stop.is_set()


async def _get_unless(queue: asyncio.Queue[_Outgoing], stop: asyncio.Event) -> _Outgoing | None:
    """Take the next item of ``queue``; return None once ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                return await queue.get()
    return None
