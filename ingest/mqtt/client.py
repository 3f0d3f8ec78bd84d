"""An asyncio MQTT client for ingest's hot path: batches in, batched PUBACKs out (docs/ingest.md).

One :class:`Connection` is one TCP connection to a broker, driven by an :class:`asyncio.Protocol`:
``data_received`` decodes every complete packet of a read in one pass and appends the messages
to a deque; :meth:`Connection.deliveries` hands them out in batches. There is no task, future or
event per message: a future exists only while a caller waits for an empty deque, a window or a
SUBACK, and one timer per connection runs the keepalive.

Acknowledgements are the caller's: a QoS 1 message is PUBACKed only when :meth:`Connection.ack`
is called (after ingest's database commit), so a crash before the commit leaves the message
with the broker, which sends it again in the resumed session (MQTT 5.0 §4.4).

Reconnecting is the caller's job (with :class:`tracecore.backoff.Backoff`): every error here is an
:class:`~tracecore.errors.MqttError`, and a lost connection raises
:class:`~tracecore.errors.MqttConnectionLost` to every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Iterable, Sequence

from ingest.mqtt.packets import (
    DEFAULT_MAX_PACKET,
    PINGREQ,
    PROTOCOL_V5,
    PROTOCOL_V311,
    Connack,
    Decoder,
    Disconnect,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    UnsubAck,
    connack_reason,
    encode_connect,
    encode_disconnect,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
)
from tracecore.errors import (
    MqttConnectError,
    MqttConnectionLost,
    MqttProtocolError,
    MqttRefused,
    MqttUnsupportedProtocol,
)
from tracecore.mqtt import BrokerAddress

__all__ = ["Connection", "Delivery", "connect"]

#: An inbound PUBLISH: ``packet_id`` (None for QoS 0), ``topic``, ``payload``, ``dup``, ``qos``,
#: ``retain``. A named tuple rather than a dataclass: one is built per message on the hot path.
Delivery = Publish

# Packet identifiers 1..65535 (MQTT 5.0 §2.2.1) are shared by PUBLISH, SUBSCRIBE and
# UNSUBSCRIBE; the publish window keeps some free for the control packets.
_MAX_WINDOW = 65_000
# MQTT 5.0 §3.3.4: the codes of a PUBACK from 0x80 up say the broker refused the message.
_REFUSED = 0x80
# MQTT 5.0 §4.13.2: reason codes of a DISCONNECT sent by the client on a protocol violation.
_MALFORMED, _PROTOCOL_ERROR = 0x81, 0x82


class _Batch:
    """One ``publish_many`` call: which items still wait for their PUBACK."""

    __slots__ = ("done", "items", "refused", "sent", "unacked")

    def __init__(self, items: Sequence[tuple[str, bytes]], done: asyncio.Future[None]) -> None:
        self.items = items
        self.done = done
        self.sent = 0
        self.unacked: set[int] = set()
        self.refused: list[tuple[int, int]] = []

    def unacknowledged(self) -> tuple[tuple[str, bytes], ...]:
        """The items without a PUBACK: sent but unacknowledged, then those never sent."""
        items = self.items
        return tuple(items[i] for i in sorted(self.unacked)) + tuple(items[self.sent :])


class Connection(asyncio.Protocol):
    """One MQTT connection; made by :func:`connect`, never directly.

    ``protocol`` is 4 (MQTT 3.1.1) or 5; ``session_present`` says whether the broker resumed a
    stored session (MQTT 5.0 §3.2.2.1.1): when false, subscribe again. The asyncio callbacks
    (``connection_made``, ``data_received``, ``connection_lost``) are the transport's, not API.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        protocol: int,
        receive_maximum: int,
        max_packet: int,
        buffer_limit: int,
        buffer_bytes: int,
    ) -> None:
        """State of a connection before the TCP connection exists (see :func:`connect`)."""
        self.protocol = protocol
        self.session_present = False
        self.connack: Connack | None = None
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._decoder = Decoder(protocol, max_packet)
        self._receive_maximum = receive_maximum
        self._connack_waiter: asyncio.Future[None] | None = loop.create_future()
        # Inbound: buffered messages, and the QoS 1 packet ids not yet acknowledged.
        self._inbox: deque[Publish] = deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._unacked_in: set[int] = set()
        #: How many QoS 1 messages came over our Receive Maximum (a broker bug; see _on_qos1).
        self.receive_maximum_exceeded = 0
        self._buffer_limit = buffer_limit
        self._buffer_bytes = buffer_bytes
        self._paused = False
        # Outbound: packet id -> (batch, item index); the window is the broker's Receive Maximum.
        self._out: dict[int, tuple[_Batch, int]] = {}
        self._window = _MAX_WINDOW
        self._window_waiters: list[asyncio.Future[None]] = []
        self._control: dict[int, asyncio.Future[SubAck | UnsubAck | None]] = {}
        self._next_id = 0
        self._broker_max_packet: int | None = None
        # Keepalive (MQTT 5.0 §3.1.2.10): one timer for the connection.
        self._keepalive = 0.0
        self._last_sent = loop.time()
        self._last_received = loop.time()
        self._ping_outstanding = False
        self._timer: asyncio.TimerHandle | None = None
        self._lost: MqttConnectionLost | None = None
        self._clean_close = False
        self._closed: asyncio.Future[None] = loop.create_future()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TCP connection is up (asyncio callback)."""
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 (create_connection gives one)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """The TCP connection is gone (asyncio callback)."""
        detail = f"connection closed: {exc}" if exc else "connection closed by the broker"
        lost = MqttConnectionLost(detail)
        lost.__cause__ = exc
        self._lose(lost)

    def data_received(self, data: bytes) -> None:
        """Decode every complete packet of ``data`` and act on each (asyncio callback)."""
        if self._lost is not None:
            return
        self._last_received = self._loop.time()
        try:
            packets = self._decoder.feed(data)
        except MqttProtocolError as exc:
            self._violation(exc, _MALFORMED)
            return
        inbox = self._inbox
        freed = False
        try:
            for packet in packets:
                if type(packet) is Publish:
                    packet_id = packet.packet_id
                    if packet_id is not None and not self._on_qos1(packet, packet_id):
                        continue
                    inbox.append(packet)
                    self._inbox_bytes += len(packet.payload)
                elif type(packet) is PubAck:
                    self._on_puback(packet)
                    freed = True
                else:
                    self._on_control(packet)
        except MqttProtocolError as exc:
            self._violation(exc, _PROTOCOL_ERROR)
            return
        if inbox:
            self._wake_reader()
        if freed:
            self._wake_window()

    def _wake_reader(self) -> None:
        """Wake a waiting :meth:`deliveries`; pause reading when the buffer is full."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._paused and (
            len(self._inbox) >= self._buffer_limit or self._inbox_bytes >= self._buffer_bytes
        ):
            # Backpressure: stop reading the socket until the consumer drains the buffer;
            # TCP flow control then holds the broker back (QoS 0 has no other limit).
            self._paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _on_qos1(self, packet: Publish, packet_id: int) -> bool:
        """Track a QoS 1 message's packet id until :meth:`ack`; False for a resent duplicate."""
        unacked = self._unacked_in
        if packet_id in unacked:
            # MQTT 5.0 §2.2.1: an id is in use until our PUBACK; only a resend (DUP) of the
            # same message may carry it, and that one is buffered or delivered already.
            if not packet.dup:
                raise MqttProtocolError(f"PUBLISH reuses packet id {packet_id} before its PUBACK")
            return False
        unacked.add(packet_id)
        if len(unacked) > self._receive_maximum and self.protocol == PROTOCOL_V5:
            # MQTT 5.0 §3.3.4 (MQTT-3.3.4-9): the broker must not send more unacknowledged QoS 1
            # messages than our Receive Maximum; the client may then DISCONNECT with 0x93. We
            # count it instead: mosquitto 2.0.11 honours the limit for the first window of a
            # session's queue but not after the first PUBACKs (docs/ingest.md), and closing
            # would stop ingest on that broker. Memory stays bounded by the buffer limits.
            self.receive_maximum_exceeded += 1
        return True

    def _on_puback(self, packet: PubAck) -> None:
        """A PUBACK settles one item of a ``publish_many`` batch."""
        entry = self._out.pop(packet.packet_id, None)
        if entry is None:
            raise MqttProtocolError(f"PUBACK for packet id {packet.packet_id}, which is not sent")
        batch, index = entry
        batch.unacked.discard(index)
        if packet.code >= _REFUSED:
            batch.refused.append((index, packet.code))
        if not batch.unacked and batch.sent == len(batch.items) and not batch.done.done():
            batch.done.set_result(None)

    def _on_control(self, packet: object) -> None:
        """CONNACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT."""
        if isinstance(packet, SubAck | UnsubAck):
            waiter = self._control.pop(packet.packet_id, None)
            if waiter is None:
                raise MqttProtocolError(
                    f"{type(packet).__name__} for unknown id {packet.packet_id}"
                )
            if not waiter.done():
                waiter.set_result(packet)
        elif isinstance(packet, PingResp):
            self._ping_outstanding = False
        elif isinstance(packet, Connack):
            if self.connack is not None:
                raise MqttProtocolError("a second CONNACK (MQTT 5.0 §3.2)")
            self.connack = packet
            if self._connack_waiter is not None and not self._connack_waiter.done():
                self._connack_waiter.set_result(None)
        elif isinstance(packet, Disconnect):
            reason = packet.properties.get(0x1F)
            words = f": {reason}" if isinstance(reason, str) else ""
            self._lose(MqttConnectionLost(f"broker sent DISCONNECT 0x{packet.code:02x}{words}"))

    def _violation(self, exc: MqttProtocolError, code: int) -> None:
        """The broker broke the protocol: say so (v5 DISCONNECT with a reason) and close."""
        if self.protocol == PROTOCOL_V5 and self._transport is not None and self.connack:
            # MQTT 5.0 §4.13.2: send DISCONNECT with the reason code, then close.
            self._transport.write(encode_disconnect(protocol=PROTOCOL_V5, code=code))
        lost = MqttConnectionLost(f"protocol error: {exc}")
        lost.__cause__ = exc
        self._lose(lost)

    def _lose(self, lost: MqttConnectionLost) -> None:
        """Mark the connection lost, close it, wake every waiter (they raise ``lost``)."""
        if self._lost is not None:
            return
        self._lost = lost
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self._inbox.clear()
        waiters: list[asyncio.Future[None] | asyncio.Future[SubAck | UnsubAck | None]] = [
            *self._window_waiters,
            *self._control.values(),
            *(batch.done for batch, _ in self._out.values()),
        ]
        if self._waiter is not None:
            waiters.append(self._waiter)
        if self._connack_waiter is not None:
            waiters.append(self._connack_waiter)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if not self._closed.done():
            self._closed.set_result(None)

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    # --- keepalive ------------------------------------------------------------------------------

    def _start_keepalive(self, seconds: float) -> None:
        """Run the keepalive timer every quarter of ``seconds`` (0 turns keepalive off)."""
        self._keepalive = seconds
        if seconds > 0:
            self._timer = self._loop.call_later(seconds / 4, self._tick)

    def _tick(self) -> None:
        """Ping when idle; declare the connection lost when the broker went silent.

        MQTT 5.0 §3.1.2.10: the client sends a PINGREQ when it has sent nothing for the keep
        alive. We also ping when nothing came for half of it, so the broker's answer has a whole
        keep alive to arrive before 1.5 x keep alive of silence counts as a dead connection.
        """
        now = self._loop.time()
        keepalive = self._keepalive
        silent = now - self._last_received
        if silent >= 1.5 * keepalive:
            self._lose(
                MqttConnectionLost(
                    f"nothing from the broker for {silent:.1f} s (keepalive {keepalive:g} s)"
                )
            )
            return
        if not self._ping_outstanding and (
            now - self._last_sent >= keepalive or silent >= keepalive / 2
        ):
            self._ping_outstanding = True
            with contextlib.suppress(MqttConnectionLost):  # closing: connection_lost follows
                self._write(PINGREQ)
        self._timer = self._loop.call_later(keepalive / 4, self._tick)

    # --- sending --------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._raise_if_lost()
            raise MqttConnectionLost("the connection is closing")
        transport.write(data)
        self._last_sent = self._loop.time()

    def _new_id(self) -> int:
        """A packet identifier not in use by a PUBLISH, SUBSCRIBE or UNSUBSCRIBE in flight."""
        in_use_out, in_use_control = self._out, self._control
        next_id = self._next_id
        while True:
            next_id = next_id % 65_535 + 1
            if next_id not in in_use_out and next_id not in in_use_control:
                self._next_id = next_id
                return next_id

    def _wake_window(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _request(self, packet_id: int, data: bytes, what: str) -> SubAck | UnsubAck:
        """Send a SUBSCRIBE or UNSUBSCRIBE and wait for its acknowledgement."""
        waiter: asyncio.Future[SubAck | UnsubAck | None] = self._loop.create_future()
        self._control[packet_id] = waiter
        self._write(data)
        try:
            answer = await waiter
        finally:
            self._control.pop(packet_id, None)
        self._raise_if_lost()
        if answer is None:  # pragma: no cover (only _lose sets None, and it sets _lost first)
            raise MqttConnectionLost(f"no answer to {what}")
        return answer

    # --- API ------------------------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe to ``topic_filter`` with maximum QoS ``qos`` (0 or 1); return the granted QoS.

        Raises :class:`MqttRefused` when the broker refuses (a SUBACK code ≥ 0x80, MQTT 5.0
        §3.9.3; 0x80 under 3.1.1), e.g. for a filter its ACL forbids.
        """
        self._raise_if_lost()
        packet_id = self._new_id()
        data = encode_subscribe(packet_id, [(topic_filter, qos)], protocol=self.protocol)
        answer = await self._request(packet_id, data, "SUBSCRIBE")
        if not isinstance(answer, SubAck) or len(answer.codes) != 1:
            raise MqttProtocolError(f"SUBSCRIBE answered by {answer!r}")
        code = answer.codes[0]
        if code >= _REFUSED:
            raise MqttRefused(f"SUBSCRIBE to {topic_filter!r}", answer.codes)
        return code

    async def unsubscribe(self, topic_filter: str) -> None:
        """Remove the subscription ``topic_filter``; raises :class:`MqttRefused` if refused."""
        self._raise_if_lost()
        packet_id = self._new_id()
        data = encode_unsubscribe(packet_id, [topic_filter], protocol=self.protocol)
        answer = await self._request(packet_id, data, "UNSUBSCRIBE")
        if not isinstance(answer, UnsubAck):
            raise MqttProtocolError(f"UNSUBSCRIBE answered by {answer!r}")
        if any(code >= _REFUSED for code in answer.codes):
            raise MqttRefused(f"UNSUBSCRIBE of {topic_filter!r}", answer.codes)

    async def deliveries(self, max_count: int) -> list[Delivery]:
        """Wait for at least one message; return up to ``max_count``, in arrival order.

        QoS 1 messages stay unacknowledged until :meth:`ack`. Raises
        :class:`MqttConnectionLost` once the connection is gone; messages buffered then are
        dropped (QoS 1 ones come again in the resumed session). One caller at a time.
        """
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        inbox = self._inbox
        while not inbox:
            self._raise_if_lost()
            if self._waiter is not None:
                raise RuntimeError("deliveries() is already awaited by another task")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._raise_if_lost()
        if max_count >= len(inbox):
            out = list(inbox)
            inbox.clear()
        else:
            popleft = inbox.popleft
            out = [popleft() for _ in range(max_count)]
        if inbox:
            self._inbox_bytes -= sum(len(message.payload) for message in out)
        else:
            self._inbox_bytes = 0
        if (
            self._paused
            and len(inbox) <= self._buffer_limit // 2
            and self._inbox_bytes <= self._buffer_bytes // 2
        ):
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return out

    def ack(self, packet_ids: Iterable[int]) -> None:
        """PUBACK the delivered QoS 1 messages ``packet_ids``, all in one write.

        Call it after the messages are safely stored: the broker forgets a message at its
        PUBACK. Raises ``ValueError`` for an id that is not an unacknowledged delivery (nothing
        is sent then), :class:`MqttConnectionLost` when the connection is gone.
        """
        self._raise_if_lost()
        ids = list(packet_ids)
        if not ids:
            return
        unacked = self._unacked_in
        if not unacked.issuperset(ids) or len(set(ids)) != len(ids):
            bad = sorted(
                {i for i in ids if i not in unacked} or {i for i in ids if ids.count(i) > 1}
            )
            raise ValueError(f"not unacknowledged deliveries (or repeated): {bad[:10]}")
        unacked.difference_update(ids)
        # A PUBACK with success is 0x40 0x02 and the id (MQTT 5.0 §3.4.2.1): one big-endian
        # 32-bit word per message.
        self._write(struct.pack(f">{len(ids)}I", *[0x4002_0000 | i for i in ids]))

    async def publish_many(self, items: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
        """Publish every ``(topic, payload)``; with QoS 1, return when all are acknowledged.

        Messages go out in windows of at most the broker's Receive Maximum unacknowledged ones
        (MQTT 5.0 §3.3.4), one write per window. Raises :class:`MqttConnectionLost` whose
        ``unacknowledged`` lists the items to publish again if the connection drops, and
        :class:`MqttRefused` (after all are settled) if the broker refused some (PUBACK code
        ≥ 0x80, MQTT 5.0 §3.4.2.1).
        """
        self._raise_if_lost()
        protocol = self.protocol
        if qos == 0:
            self._write(b"".join(self._frame(t, p, 0, None, protocol) for t, p in items))
            return
        if qos != 1:
            raise ValueError(f"QoS must be 0 or 1 (QoS 2 is not supported), not {qos}")
        if not items:
            return
        batch = _Batch(items, self._loop.create_future())
        total = len(items)
        out = self._out
        try:
            while batch.sent < total:
                self._raise_if_lost()
                room = self._window - len(out)
                if room <= 0:
                    waiter = self._loop.create_future()
                    self._window_waiters.append(waiter)
                    await waiter
                    continue
                start = batch.sent
                stop = min(total, start + room)
                frames = []
                unacked = batch.unacked
                for index in range(start, stop):
                    topic, payload = items[index]
                    packet_id = self._new_id()
                    frames.append(self._frame(topic, payload, 1, packet_id, protocol))
                    out[packet_id] = (batch, index)
                    unacked.add(index)
                batch.sent = stop
                self._write(b"".join(frames))
            await batch.done
            self._raise_if_lost()
        except MqttConnectionLost as exc:
            raise MqttConnectionLost(exc.detail, batch.unacknowledged()) from exc
        if batch.refused:
            raise MqttRefused(
                f"{len(batch.refused)} of {total} PUBLISH", tuple(c for _, c in batch.refused)
            )

    def _frame(
        self, topic: str, payload: bytes, qos: int, packet_id: int | None, protocol: int
    ) -> bytes:
        frame = encode_publish(topic, payload, qos=qos, packet_id=packet_id, protocol=protocol)
        limit = self._broker_max_packet
        if limit is not None and len(frame) > limit:
            # MQTT 5.0 §3.1.2.11.4 (the broker's Maximum Packet Size, CONNACK §3.2.2.3.6).
            raise ValueError(f"PUBLISH of {len(frame)} bytes is over the broker's limit {limit}")
        return frame

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish one message (see :meth:`publish_many`)."""
        await self.publish_many([(topic, payload)], qos)

    async def disconnect(self) -> None:
        """Send DISCONNECT (MQTT 5.0 §3.14: normal, the session stays) and close."""
        if self._lost is None:
            self._clean_close = True
            with contextlib.suppress(MqttConnectionLost):
                self._write(encode_disconnect(protocol=self.protocol))
            self._lose(MqttConnectionLost("closed by disconnect()"))
        await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        """Wait until the connection is gone; raise its :class:`MqttConnectionLost` unless it
        was closed by :meth:`disconnect`."""
        await asyncio.shield(self._closed)
        if not self._clean_close and self._lost is not None:
            raise self._lost

    async def _handshake(
        self,
        address: BrokerAddress,
        packet: bytes,
        *,
        timeout_s: float,
        keepalive_s: int,
        publish_window: int,
    ) -> None:
        """Open the TCP connection, send CONNECT ``packet``, check the CONNACK (see connect)."""
        protocol = self.protocol
        try:
            async with asyncio.timeout(timeout_s):
                await self._loop.create_connection(lambda: self, address.host, address.port)
                self._write(packet)
                assert self._connack_waiter is not None  # noqa: S101 (set in __init__)
                await self._connack_waiter
        except TimeoutError as exc:
            self._lose(MqttConnectionLost("timed out"))
            hint = (
                " (a broker that speaks only MQTT 3.1.1, such as the embedded amqtt, does not "
                "answer an MQTT 5 CONNECT: connect with protocol=4)"
                if protocol == PROTOCOL_V5
                else ""
            )
            raise MqttConnectionLost(
                f"no CONNACK from {address} within {timeout_s:g} s{hint}"
            ) from exc
        except OSError as exc:
            raise MqttConnectionLost(f"cannot connect to {address}: {exc}") from exc
        except asyncio.CancelledError:
            self._lose(MqttConnectionLost("connect() was cancelled"))
            raise
        connack = self.connack
        if connack is None:
            lost = self._lost
            detail = lost.detail if lost else "no CONNACK"
            raise MqttConnectionLost(f"{address} closed the connection before CONNACK ({detail})")
        self._connack_waiter = None
        if connack.code:
            self._clean_close = True
            self._lose(MqttConnectionLost("refused"))
            reason = connack.reason_string or connack_reason(protocol, connack.code)
            if connack.short_form and connack.code == 0x01:
                raise MqttUnsupportedProtocol(
                    connack.code,
                    "unacceptable protocol version: the broker answered MQTT 5 in the MQTT 3.1.1 "
                    "form; connect with protocol=4",
                )
            if (protocol == PROTOCOL_V5 and connack.code == 0x84) or (
                protocol == PROTOCOL_V311 and connack.code == 0x01
            ):
                raise MqttUnsupportedProtocol(connack.code, reason)
            raise MqttConnectError(connack.code, reason)
        self.session_present = connack.session_present
        self._window = max(1, min(connack.receive_maximum, publish_window, _MAX_WINDOW))
        self._broker_max_packet = connack.maximum_packet_size
        keepalive = (
            connack.server_keep_alive if connack.server_keep_alive is not None else keepalive_s
        )
        self._start_keepalive(float(keepalive))

    @property
    def is_closed(self) -> bool:
        """True once the connection is lost or disconnected."""
        return self._lost is not None


async def connect(
    address: BrokerAddress,
    *,
    client_id: str,
    protocol: int = PROTOCOL_V5,
    clean_start: bool = False,
    session_expiry_s: int = 7 * 24 * 3600,
    receive_maximum: int = 65_535,
    keepalive_s: int = 30,
    timeout_s: float = 10.0,
    max_packet: int = DEFAULT_MAX_PACKET,
    publish_window: int = _MAX_WINDOW,
    buffer_bytes: int = 16 << 20,
) -> Connection:
    """Connect to the broker at ``address`` and wait for its CONNACK.

    ``protocol`` is 5 (MQTT 5) or 4 (MQTT 3.1.1). With ``clean_start`` false the broker keeps
    the session (subscriptions and unacknowledged QoS 1 messages) for ``session_expiry_s``
    after a disconnect (MQTT 5.0 §3.1.2.11.2; under 3.1.1 until a clean connect). The broker
    sends at most ``receive_maximum`` unacknowledged QoS 1 messages (v5 only, §3.3.4; a 3.1.1
    broker has its own limit, mosquitto's ``max_inflight_messages``). ``max_packet`` bounds an
    incoming packet (sent as Maximum Packet Size under v5, so the broker drops larger
    messages instead of sending them). Buffered messages above 4 x ``receive_maximum`` (at
    least 64, at most 65,536) or ``buffer_bytes`` pause reading from the socket.

    Raises :class:`MqttUnsupportedProtocol` when the broker does not speak ``protocol``
    (connect again with 4), :class:`MqttConnectError` for any other refusal (``.code``,
    ``.reason``), :class:`MqttConnectionLost` when the broker cannot be reached or does not
    answer within ``timeout_s``.
    """
    if protocol not in (PROTOCOL_V311, PROTOCOL_V5):
        raise ValueError(f"MQTT protocol must be 4 (3.1.1) or 5, not {protocol}")
    loop = asyncio.get_running_loop()
    connection = Connection(
        loop,
        protocol=protocol,
        receive_maximum=receive_maximum,
        max_packet=max_packet,
        buffer_limit=min(max(4 * receive_maximum, 64), 65_536),
        buffer_bytes=buffer_bytes,
    )
    packet = encode_connect(
        client_id,
        protocol=protocol,
        clean_start=clean_start,
        keepalive_s=keepalive_s,
        username=address.username,
        password=address.password,
        session_expiry_s=session_expiry_s,
        receive_maximum=receive_maximum,
        maximum_packet_size=max_packet + 5,  # + the largest fixed header (MQTT 5.0 §2.1.4)
    )
    await connection._handshake(  # noqa: SLF001 (connect is the constructor of Connection)
        address, packet, timeout_s=timeout_s, keepalive_s=keepalive_s, publish_window=publish_window
    )
    return connection
