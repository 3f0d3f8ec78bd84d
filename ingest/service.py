"""The ingest service: MQTT in, batches through the processor, receipts out (docs/ingest.md).

:func:`run_ingest` runs one TaskGroup of named tasks:

``ingest-mqtt``
    The broker connection, with ingest's own client (:mod:`ingest.mqtt`): a FIXED client id and
    a persistent session (MQTT 5 ``clean_start=False`` with a session expiry, or MQTT 3.1.1
    ``clean_session=False`` for the embedded amqtt broker), subscribed to
    ``agritrace/v1/devices/+/up`` or, scaled out, the shared subscription
    ``$share/ingest/agritrace/v1/devices/+/up``. It reconnects with jittered exponential
    backoff (capped at 30 s) and moves each message into a BOUNDED queue.
``ingest-preparer``
    Takes up to ``batch_size`` messages, or what arrived within ``linger_ms`` of the first,
    and runs ``Processor.prepare`` on them in a worker thread (the checks that only read; the
    signature checks start in the signature workers), one batch ahead of the commit.
``ingest-batcher``
    Runs ``Processor.commit`` on each prepared batch in a worker thread: one database
    transaction per batch (a batch whose preparation or commit failed is processed afresh,
    with retries). After the commit it acknowledges (PUBACKs) the batch's messages to the
    broker.
``ingest-publisher``
    Publishes each receipt of a committed batch at QoS 1 on
    ``agritrace/v1/devices/{device}/receipt``. It only ever sees batches whose ``process``
    call has returned, i.e. whose transaction has committed: a receipt is never a promise about
    uncommitted data.
``ingest-expire-parked``
    Periodically rejects parked messages whose wait for their product's commissioning expired.
plus any *companion* tasks the caller passes (the log checkpointer goes here).

No-loss argument. A message is acknowledged to the broker only once its batch has committed
(docs/ingest.md, "Guarantees"): until then the broker keeps it in this worker's session, and
if the worker dies it is delivered again when the session resumes (MQTT 5.0 §4.4), to this
worker or, on a shared subscription, to another. The broker holds at most ``receive_maximum``
unacknowledged messages in flight to one worker (MQTT 5.0 §3.3.4), which also bounds what this
process holds. The guarantee does not rest on the broker alone: a device keeps every message in
its persistent outbox and resends the same bytes until it holds a receipt, and a receipt is
published only after the commit (docs/protocol.md §8). A message committed twice is impossible
(same device+seq and bytes is a duplicate, answered with the stored receipt).

Database outages (docs/operations.md, "Outages"). When a batch fails because the database is
unavailable (:class:`~tracecore.errors.DatabaseUnavailable`), the batcher keeps that batch and
retries it with capped, jittered backoff for as long as the outage lasts; the retries are the
probe that notices the recovery. Meanwhile the connection unsubscribes, so the broker stops
handing this worker messages it could only hold in memory (devices keep theirs in their outboxes
and resend), while receipts of batches committed before the outage still go out. When a retry
commits, the connection subscribes again. :class:`IngestStats` says which state the service is
in (``database_up``, ``broker_connected``) for health checks and metrics.

Shutdown (``stop`` set, e.g. by SIGTERM): the connection stops taking new messages, the batcher
commits and acknowledges what is queued, the publisher sends their receipts, and only then is
the connection closed. Messages the client had received but not yet handed over stay
unacknowledged and come again in the next session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from ingest.mqtt import Connection, connect
from ingest.mqtt.packets import PROTOCOL_V5, PROTOCOL_V311
from ingest.processor import BatchResult, Inbound, PreparedBatch
from tracecore.backoff import Backoff
from tracecore.errors import (
    DatabaseUnavailable,
    MqttConnectionLost,
    MqttError,
    MqttRefused,
    RejectReason,
)
from tracecore.mqtt import BrokerAddress
from tracecore.topics import UP_WILDCARD, receipt_topic

__all__ = [
    "SHARED_GROUP",
    "BatchProcessor",
    "Companion",
    "IngestStats",
    "ServiceOptions",
    "run_ingest",
    "settle_garbage_collector",
    "stop_on_signals",
    "subscription_topic",
    "wall_clock_ms",
]

#: The shared-subscription group of all ingest workers (design.md, "Scale-out").
SHARED_GROUP: Final = "ingest"
_log = logging.getLogger(__name__)

#: A task that runs next to ingest until ``stop`` is set, e.g. the log checkpointer.
Companion = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def wall_clock_ms() -> int:
    """Return the wall-clock time in ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


class BatchProcessor(Protocol):
    """What the service needs of :class:`ingest.processor.Processor` (tests pass stand-ins)."""

    def process(self, batch: Sequence[Inbound], now_ms: int) -> BatchResult:
        """Verify, sequence and commit ``batch``; return after the commit."""
        ...

    def expire_parked(self, now_ms: int) -> BatchResult:
        """Reject parked messages whose wait has expired."""
        ...


@runtime_checkable
class PipelinedProcessor(BatchProcessor, Protocol):
    """A processor that can prepare the next batch while the previous one commits."""

    def prepare(self, batch: Sequence[Inbound], now_ms: int) -> PreparedBatch:
        """Apply the checks that only read; start the signature checks."""
        ...

    def commit(self, prepared: PreparedBatch) -> BatchResult:
        """Finish and commit a prepared batch; return after the commit."""
        ...


#: Longest wait, at shutdown, for the last receipts to go out before the connection closes.
STOP_PUBLISH_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How the service talks to the broker and paces its batches."""

    broker: BrokerAddress
    client_id: str = "agritrace-ingest"
    shared: bool = False
    batch_size: int = 500
    linger_ms: int = 50
    queue_batches: int = 4
    expire_interval_s: float = 60.0
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_initial_s: float = 0.5
    reconnect_cap_s: float = 30.0
    #: Failures of a batch for a reason other than an unavailable database before ingest gives
    #: up (a bug, not an outage: the process exits and its supervisor restarts it).
    process_attempts: int = 5
    #: First and longest wait between retries of a batch while the database is unavailable.
    outage_retry_initial_s: float = 0.5
    outage_retry_cap_s: float = 10.0
    keepalive_s: int = 30
    #: MQTT 5 (5), or MQTT 3.1.1 (4) for a broker that speaks only that, like the embedded
    #: amqtt. With mosquitto use 5: under 3.1.1 mosquitto sends at most its
    #: ``max_inflight_messages`` (20) unacknowledged messages, and ingest acknowledges a message
    #: only after its commit (docs/ingest.md, "The MQTT client").
    protocol: int = PROTOCOL_V5

    @property
    def receive_maximum(self) -> int:
        """The most unacknowledged messages the broker may have in flight to this worker."""
        return min(self.batch_size * self.queue_batches, 65_535)

    def __post_init__(self) -> None:
        """Check the numbers that would otherwise fail obscurely later."""
        if self.batch_size < 1 or self.linger_ms < 0 or self.queue_batches < 1:
            raise ValueError("batch_size >= 1, linger_ms >= 0 and queue_batches >= 1 required")
        if self.protocol not in (PROTOCOL_V5, PROTOCOL_V311):
            raise ValueError("protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        if self.shared and self.protocol != PROTOCOL_V5:
            raise ValueError("a shared subscription needs MQTT 5 (protocol=5)")
        if self.process_attempts < 1 or self.expire_interval_s <= 0:
            raise ValueError("process_attempts >= 1 and expire_interval_s > 0 required")
        if not 0 < self.outage_retry_initial_s <= self.outage_retry_cap_s:
            raise ValueError("0 < outage_retry_initial_s <= outage_retry_cap_s required")


@dataclass(slots=True)
class IngestStats:
    """Counters since the service started; read them while it runs (tests, benchmark, logs)."""

    received: int = 0
    batches: int = 0
    processed: int = 0
    accepted: int = 0
    duplicates: int = 0
    parked: int = 0
    unparked: int = 0
    rejected: collections.Counter[RejectReason] = field(default_factory=collections.Counter)
    alerts: int = 0
    receipts_published: int = 0
    receipts_dropped: int = 0
    connects: int = 0
    last_commit_ms: int = 0
    #: False from the first batch that failed on an unavailable database until one commits.
    database_up: bool = True
    #: When the current database outage began (ms since the epoch); None while it is up.
    database_down_since_ms: int | None = None
    #: Database outages seen, and batch attempts that failed during them.
    database_outages: int = 0
    database_retries: int = 0
    #: True while a broker connection is open and subscribed (or deliberately unsubscribed).
    broker_connected: bool = False
    #: Messages received but dropped uncommitted (shutdown during an outage); devices resend.
    abandoned: int = 0
    #: Messages acknowledged (PUBACK) to the broker, each after its batch committed.
    acknowledged: int = 0

    def add(self, result: BatchResult) -> None:
        """Count the outcome of one committed batch."""
        self.accepted += result.accepted
        self.duplicates += result.duplicates
        self.parked += result.parked
        self.unparked += result.unparked
        self.rejected.update(result.rejected)
        self.alerts += len(result.alerts)


#: Allocations (net of frees) between two young-generation collections, against CPython's 700.
GC_YOUNG_THRESHOLD: Final = 10_000


def settle_garbage_collector() -> None:
    """Call once, after start-up and before the first message: collect less, and less often.

    Measured with ``python -m bench.ingest`` (docs/benchmarks.md), CPython's collector took
    about 130-190 µs of every message, holding the GIL: with the default thresholds it runs a
    young collection every 700 net allocations and keeps scanning the tens of thousands of
    objects that start-up created (modules, SQLAlchemy's metadata, settings) in its full
    collections. ``gc.freeze()`` moves those objects out of every future collection, and a
    young threshold of :data:`GC_YOUNG_THRESHOLD` runs collections about 14 times less often.
    Nothing is left uncollected: cyclic garbage is still found, only later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


def subscription_topic(*, shared: bool) -> str:
    """Return the topic filter ingest subscribes to: plain, or the MQTT 5 shared subscription."""
    return f"$share/{SHARED_GROUP}/{UP_WILDCARD}" if shared else UP_WILDCARD


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM and SIGINT while the block runs (call inside the event loop)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def run_ingest(
    processor: BatchProcessor,
    options: ServiceOptions,
    stop: asyncio.Event,
    *,
    companions: Mapping[str, Companion] | None = None,
    stats: IngestStats | None = None,
    clock: Callable[[], int] = wall_clock_ms,
) -> IngestStats:
    """Run the ingest service until ``stop`` is set; return its counters after a clean stop.

    ``companions`` are extra named tasks run in the same TaskGroup until ``stop`` (the log
    checkpointer belongs here); each gets the ``stop`` event. ``stats`` may be passed to
    observe progress while the service runs. While the database is unavailable the service
    waits and retries for as long as it takes (see the module docstring). If the processor keeps
    failing for another reason (``options.process_attempts`` times in a row) the error
    propagates: the process should exit and be restarted, and the devices resend what was not
    receipted.
    """
    service = _Service(processor, options, stop, stats or IngestStats(), clock)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.connection(), name="ingest-mqtt")
        tasks.create_task(service.preparer(), name="ingest-preparer")
        tasks.create_task(service.batcher(), name="ingest-batcher")
        tasks.create_task(service.publisher(), name="ingest-publisher")
        tasks.create_task(service.expirer(), name="ingest-expire-parked")
        # Companion tasks (the log checkpointer of issue 4) run here, stopped by the same event.
        for name, companion in (companions or {}).items():
            tasks.create_task(companion(stop), name=name)
    _log.info(
        "ingest stopped: %d received, %d accepted, %d duplicates, %d parked, %d rejected, "
        "%d receipts published",
        service.stats.received,
        service.stats.accepted,
        service.stats.duplicates,
        service.stats.parked,
        sum(service.stats.rejected.values()),
        service.stats.receipts_published,
    )
    return service.stats


_Receipts = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class _Received:
    """A message taken from the broker, with what is needed to acknowledge it after the commit."""

    inbound: Inbound
    packet_id: int | None  # None for QoS 0: nothing to acknowledge
    connection: Connection  # packet ids mean something only on the connection that gave them


class _Service:
    """The state the tasks of :func:`run_ingest` share."""

    def __init__(
        self,
        processor: BatchProcessor,
        options: ServiceOptions,
        stop: asyncio.Event,
        stats: IngestStats,
        clock: Callable[[], int],
    ) -> None:
        self.processor = processor
        self.pipelined = processor if isinstance(processor, PipelinedProcessor) else None
        self.options = options
        self.stop = stop
        self.stats = stats
        self.clock = clock
        # Bounded: when processing falls behind, the reader waits here (and the client stops
        # reading the socket once its own buffer is full; the broker holds the rest).
        self.inbound: asyncio.Queue[_Received] = asyncio.Queue(
            maxsize=options.batch_size * options.queue_batches
        )
        # Batches prepared one ahead of the commit (None: not prepared); None ends the stream.
        self.prepared: asyncio.Queue[tuple[list[_Received], PreparedBatch | None] | None] = (
            asyncio.Queue(maxsize=1)
        )
        # Committed batches waiting for their receipts to go out; None ends the stream.
        # Unbounded on purpose: the PUBACKs of receipts arrive on the same socket as messages,
        # and the client stops reading that socket while its buffer of messages is full. A
        # batcher waiting here for the publisher would stop draining that buffer, and the
        # publisher would wait for PUBACKs the client no longer reads: a deadlock (seen with
        # mosquitto 2.0, which sends a resumed session's queue past the Receive Maximum). What
        # waits here is committed and stored, about 200 bytes a receipt.
        self.outbound: asyncio.Queue[_Receipts | None] = asyncio.Queue()
        self.client: Connection | None = None
        self.connected = asyncio.Event()
        self.reading_done = asyncio.Event()  # no more messages will enter ``inbound``
        self.expirer_done = asyncio.Event()
        self.published_all = asyncio.Event()
        # One processor call at a time: the batcher and the expirer share one writer.
        self.processor_lock = asyncio.Lock()
        # Complementary: exactly one is set. The connection waits on either to (un)subscribe.
        self.database_up = asyncio.Event()
        self.database_up.set()
        self.database_down = asyncio.Event()

    # -- the broker connection -------------------------------------------------------------------

    async def _connect(self) -> Connection:
        options = self.options
        return await connect(
            options.broker,
            client_id=options.client_id,
            protocol=options.protocol,
            clean_start=False,
            session_expiry_s=options.session_expiry_s,
            receive_maximum=options.receive_maximum,
            keepalive_s=options.keepalive_s,
        )

    async def connection(self) -> None:
        """Keep a broker connection, read messages, reconnect with backoff, close last."""
        backoff = Backoff(
            initial=self.options.reconnect_initial_s, cap=self.options.reconnect_cap_s
        )
        topic = subscription_topic(shared=self.options.shared)
        try:
            while not self.stop.is_set():
                client: Connection | None = None
                try:
                    client = await self._connect()
                    # Subscribing again on every connect is harmless with a persistent
                    # session and repairs a session the broker has forgotten.
                    # While the database is down the subscription waits for it (see
                    # _follow_database); receipts can go out meanwhile.
                    if self.database_up.is_set():
                        await client.subscribe(topic, qos=1)
                    self.client = client
                    self.stats.connects += 1
                    self.stats.broker_connected = True
                    self.connected.set()
                    backoff.reset()
                    _log.info(
                        "ingest connected to %s (MQTT %s), subscribed to %s",
                        self.options.broker,
                        "5" if client.protocol == PROTOCOL_V5 else "3.1.1",
                        topic,
                    )
                    await self._read_until_stop(client, topic)
                    # Stopping: what was received is queued; wait until it is committed and
                    # acknowledged and its receipts are out before closing the connection.
                    self.reading_done.set()
                    try:
                        async with asyncio.timeout(STOP_PUBLISH_S):
                            await self.published_all.wait()
                    except TimeoutError:
                        _log.warning(
                            "ingest: receipts still unpublished after %.0f s at shutdown; "
                            "devices will resend and get their stored receipts",
                            STOP_PUBLISH_S,
                        )
                    await client.disconnect()
                except* MqttError as group:
                    _log.warning(
                        "ingest: MQTT connection to %s lost or refused: %s",
                        self.options.broker,
                        group.exceptions[0],
                    )
                else:
                    return
                finally:
                    self.client = None
                    self.stats.broker_connected = False
                    self.connected.clear()
                    if client is not None and not client.is_closed:
                        # Cancelled or failed with the connection still open: close it without
                        # the acknowledgements (the broker sends those messages again).
                        with contextlib.suppress(MqttError):
                            await client.disconnect()
                if not self.stop.is_set():
                    delay = backoff.next_delay()
                    _log.info("ingest: reconnecting in %.1f s", delay)
                    await _sleep_unless(self.stop, delay)
        finally:
            self.reading_done.set()

    async def _read_until_stop(self, client: Connection, topic: str) -> None:
        """Move messages into ``inbound`` until ``stop`` (or until the connection is lost)."""
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(self._read(client), name="ingest-read")
            follower = tasks.create_task(
                self._follow_database(client, topic), name="ingest-follow-database"
            )
            tasks.create_task(_cancel_on(self.stop, reader, follower), name="ingest-read-stop")
        # Messages the client still buffers are not acknowledged: they come again with the
        # next session (MQTT 5.0 §4.4), to this worker or another.

    async def _follow_database(self, client: Connection, topic: str) -> None:
        """Unsubscribe while the database is unavailable; subscribe again once it is back.

        Subscribed, the broker would push messages that can only wait in this process (up to
        the receive maximum) while the batch ahead of them cannot commit. Unsubscribed, a
        publish finds no ingest subscriber and the device keeps it in its outbox and resends it
        later.
        """
        subscribed = self.database_up.is_set()
        while True:
            if subscribed:
                await self.database_down.wait()
                await client.unsubscribe(topic)
                _log.warning("ingest: database unavailable; unsubscribed from %s", topic)
            else:
                await self.database_up.wait()
                await client.subscribe(topic, qos=1)
                _log.info("ingest: database back; subscribed to %s again", topic)
            subscribed = not subscribed

    async def _read(self, client: Connection) -> None:
        size = self.options.batch_size
        put = self.inbound.put
        while True:
            deliveries = await client.deliveries(size)
            received_ms = self.clock()
            for message in deliveries:
                await put(
                    _Received(
                        Inbound(message.topic, message.payload, received_ms),
                        message.packet_id,
                        client,
                    )
                )
            self.stats.received += len(deliveries)

    # -- batching and processing -----------------------------------------------------------------

    async def preparer(self) -> None:
        """Form batches and prepare each (the checks that only read) one batch ahead.

        While the batcher commits batch N, batch N+1 is parsed here and its signatures are
        checked in the signature workers: the two cores work side by side instead of in turn.
        A processor without :meth:`~ingest.processor.Processor.prepare` (tests' stand-ins) is
        handed plain batches.
        """
        pipelined = self.pipelined
        try:
            while (received := await self._next_batch()) is not None:
                prepared: PreparedBatch | None = None
                if pipelined is not None:
                    batch = [item.inbound for item in received]
                    try:
                        prepared = await asyncio.to_thread(pipelined.prepare, batch, self.clock())
                    except Exception:  # noqa: BLE001  (the batcher processes it afresh, with retries)
                        prepared = None
                await self.prepared.put((received, prepared))
        finally:
            await self.prepared.put(None)

    async def batcher(self) -> None:
        """Commit each batch (in a worker thread), acknowledge it, hand its receipts on."""
        try:
            while (item := await self.prepared.get()) is not None:
                received, prepared = item
                batch = [each.inbound for each in received]
                result = await self._commit(batch, prepared)
                if result is None:
                    # Stopped during a database outage: this batch and what is queued behind it
                    # never committed and have no receipts; their devices resend them.
                    await self._abandon(len(batch))
                    break
                self._acknowledge(received)
                if result.receipts:
                    await self.outbound.put(result.receipts)
            await self.expirer_done.wait()  # its receipts (if any) go before the end marker
        finally:
            # The publisher must learn that nothing more comes, also when we fail.
            await self.outbound.put(None)

    async def _commit(
        self, batch: list[Inbound], prepared: PreparedBatch | None
    ) -> BatchResult | None:
        """Commit a prepared batch; on any failure process it afresh with retries."""
        if prepared is not None and self.pipelined is not None:
            try:
                async with self.processor_lock:
                    result = await asyncio.to_thread(self.pipelined.commit, prepared)
            except Exception:  # noqa: BLE001  (nothing was stored: the retries below decide)
                return await self._process(batch)
            self._database_back()
            self._account(batch, result)
            return result
        return await self._process(batch)

    async def _abandon(self, first: int) -> None:
        """Count what is left uncommitted when stopping during an outage, until the end."""
        abandoned = first + self.inbound.qsize()
        while (item := await self.prepared.get()) is not None:
            abandoned += len(item[0])
        self.stats.abandoned += abandoned
        _log.warning(
            "ingest: stopping during a database outage; %d messages not committed "
            "(their devices will resend them)",
            abandoned,
        )

    def _acknowledge(self, received: list[_Received]) -> None:
        """PUBACK a committed batch's messages, on the connection each came from, if still open.

        A message whose connection has gone is not acknowledged: the broker sends it again in
        the resumed session, and it is then a duplicate, answered with its stored receipt.
        """
        by_connection: dict[Connection, list[int]] = {}
        for item in received:
            if item.packet_id is not None and not item.connection.is_closed:
                by_connection.setdefault(item.connection, []).append(item.packet_id)
        for client, packet_ids in by_connection.items():
            try:
                client.ack(dict.fromkeys(packet_ids))
            except MqttConnectionLost:
                continue  # sent again by the broker; see above
            except ValueError:
                # Not an open delivery of this connection: a broker bug or ours. Never fatal:
                # leaving a message unacknowledged only makes the broker send it again.
                _log.exception("ingest: could not acknowledge %d messages", len(packet_ids))
                continue
            self.stats.acknowledged += len(packet_ids)

    async def _next_batch(self) -> list[_Received] | None:
        """Return the next batch, or None when reading is done and everything is processed."""
        inbound = self.inbound
        first = await _get_or_none(inbound, self.reading_done)
        if first is None:
            return None
        batch = [first]
        size = self.options.batch_size
        deadline = asyncio.get_running_loop().time() + self.options.linger_ms / 1000
        while len(batch) < size:
            while len(batch) < size and not inbound.empty():
                batch.append(inbound.get_nowait())
            if len(batch) >= size or self.reading_done.is_set():
                break
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await inbound.get())
            except TimeoutError:
                break
        return batch

    async def _process(self, batch: list[Inbound]) -> BatchResult | None:
        """Commit ``batch``; return its result, or None when stopped during a database outage."""
        backoff = Backoff(initial=0.5, cap=self.options.reconnect_cap_s)
        outage = Backoff(
            initial=self.options.outage_retry_initial_s, cap=self.options.outage_retry_cap_s
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.processor_lock:
                    result = await asyncio.to_thread(self.processor.process, batch, self.clock())
            except DatabaseUnavailable as exc:
                # Not the batch's fault: keep it and wait out the outage, however long.
                attempt = 0
                self._database_failed(exc)
                await _sleep_unless(self.stop, outage.next_delay())
                if self.stop.is_set():
                    return None
                continue
            except Exception:
                if attempt >= self.options.process_attempts:
                    raise
                delay = backoff.next_delay()
                _log.exception(
                    "ingest: processing a batch of %d failed (attempt %d); retrying in %.1f s",
                    len(batch),
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._database_back()
            self._account(batch, result)
            return result

    def _database_failed(self, exc: DatabaseUnavailable) -> None:
        stats = self.stats
        stats.database_retries += 1
        if stats.database_up:
            stats.database_up = False
            stats.database_down_since_ms = self.clock()
            stats.database_outages += 1
            self.database_up.clear()
            self.database_down.set()
            _log.error("ingest: database unavailable, holding the batch and retrying: %s", exc)
        elif stats.database_retries % 30 == 0:
            _log.warning("ingest: database still unavailable: %s", exc)

    def _database_back(self) -> None:
        stats = self.stats
        if not stats.database_up:
            down_s = (self.clock() - (stats.database_down_since_ms or self.clock())) / 1000
            _log.warning("ingest: database back after %.1f s; committing again", down_s)
            stats.database_up = True
            stats.database_down_since_ms = None
            self.database_down.clear()
            self.database_up.set()

    def _account(self, batch: list[Inbound], result: BatchResult) -> None:
        self.stats.batches += 1
        self.stats.processed += len(batch)
        self.stats.add(result)
        self.stats.last_commit_ms = self.clock()
        for alert in result.alerts:
            _log.warning("ingest alert: %s", alert)

    async def expirer(self) -> None:
        """Every ``expire_interval_s``, reject parked messages that waited too long."""
        try:
            while not self.stop.is_set():
                await _sleep_unless(self.stop, self.options.expire_interval_s)
                if self.stop.is_set():
                    return
                try:
                    async with self.processor_lock:
                        result = await asyncio.to_thread(self.processor.expire_parked, self.clock())
                except DatabaseUnavailable as exc:
                    # The batcher's retries notice outages and recoveries; expiry just waits
                    # for its next round.
                    _log.warning("ingest: expiring parked messages failed: %s", exc)
                    continue
                self.stats.add(result)
                if result.rejected:
                    _log.info("ingest: expired parked messages: %s", dict(result.rejected))
                if result.receipts:
                    await self.outbound.put(result.receipts)
        finally:
            self.expirer_done.set()

    # -- receipts --------------------------------------------------------------------------------

    async def publisher(self) -> None:
        """Publish the receipts of committed batches, in commit order, at QoS 1."""
        try:
            while (receipts := await self.outbound.get()) is not None:
                await self._publish(receipts)
        finally:
            self.published_all.set()

    async def _publish(self, receipts: _Receipts) -> None:
        pending = [(receipt_topic(device), raw) for device, raw in receipts]
        while pending:
            client = self.client
            if client is None or client.is_closed or not self.connected.is_set():
                if self.stop.is_set() or self.reading_done.is_set():
                    # Stopping without a broker: the entries are committed and their receipts
                    # stored; each device's resend is answered with the stored receipt.
                    self._drop(pending)
                    return
                await self._next_connection(client)
                continue
            try:
                # Bounded: a PUBACK that never comes (broker hung) must not hold shutdown; the
                # client's keepalive declares such a connection lost.
                await client.publish_many(pending, qos=1)
            except MqttConnectionLost as exc:
                failed = list(exc.unacknowledged)
            except MqttRefused as exc:
                # The broker refused some receipts (its ACL, say). They are stored; the device's
                # resend is answered with them. Retrying would be refused again.
                _log.error("ingest: the broker refused receipts: %s", exc)
                self.stats.receipts_dropped += len(pending)
                return
            else:
                failed = []
            self.stats.receipts_published += len(pending) - len(failed)
            pending = failed
            if failed and self.stop.is_set():
                # Stopping with the broker gone mid-batch: no reconnect is coming. The receipts
                # are stored; each device's resend is answered with its stored receipt.
                self._drop(failed)
                return
            if failed:
                # Lost the broker mid-batch: wait for the reconnect, then send the rest.
                await self._next_connection(client)

    async def _next_connection(self, lost: Connection | None) -> None:
        """Wait until a connection other than ``lost`` is up, or ``stop``."""
        while not self.stop.is_set():
            current = self.client
            if current is not None and current is not lost and self.connected.is_set():
                return
            if current is lost and lost is not None:
                # The connection task has not yet seen the loss: let it run.
                await _sleep_unless(self.stop, 0.01)
                continue
            await _wait_or(self.connected, self.stop)

    def _drop(self, receipts: _Receipts) -> None:
        self.stats.receipts_dropped += len(receipts)
        _log.warning(
            "ingest: %d receipts not published (no broker at shutdown); devices will resend "
            "and get the stored receipts",
            len(receipts),
        )


async def _cancel_on(
    event: asyncio.Event, task: asyncio.Task[None], *more: asyncio.Task[None]
) -> None:
    """Cancel ``task`` (and ``more``) once ``event`` is set, or return when ``task`` ends first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if event.is_set() or task.done():
        for each in (task, *more):
            each.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, waking early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _wait_or(event: asyncio.Event, stop: asyncio.Event) -> None:
    """Wait until ``event`` or ``stop`` is set."""
    waiters = {
        asyncio.ensure_future(event.wait()),
        asyncio.ensure_future(stop.wait()),
    }
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _get_or_none(queue: asyncio.Queue[_Received], done: asyncio.Event) -> _Received | None:
    """Take the next item; return None once ``done`` is set and the queue is empty."""
    while True:
        if not queue.empty():
            return queue.get_nowait()
        if done.is_set():
            return None
        getter = asyncio.ensure_future(queue.get())
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
