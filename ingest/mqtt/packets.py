"""A pure codec of the MQTT 3.1.1 and MQTT 5.0 packets ingest's client needs (no I/O).

Encoders return the bytes of one packet; :class:`Decoder` takes the bytes the broker sends, in
pieces of any size, and returns the complete packets in them. Only the packets a client
*receives* are decoded (CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT); any
other packet type from a broker is a protocol error. Sources: MQTT Version 3.1.1 (OASIS
Standard, 29 October 2014) and MQTT Version 5.0 (OASIS Standard, 7 March 2019), cited as
``MQTT 3.1.1 §x`` and ``MQTT 5.0 §x``.

Every malformed input raises :class:`~tracecore.errors.MqttProtocolError` with the rule it breaks,
never another exception. The PUBLISH path is kept short (a tuple per message, no validation
beyond the spec's) because ingest decodes thousands of them per second.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from tracecore.errors import MqttProtocolError

__all__ = [
    "DEFAULT_MAX_PACKET",
    "MAX_REMAINING_LENGTH",
    "PINGREQ",
    "PROTOCOL_V5",
    "PROTOCOL_V311",
    "Connack",
    "Decoder",
    "Disconnect",
    "Packet",
    "PingResp",
    "PubAck",
    "Publish",
    "SubAck",
    "UnsubAck",
    "connack_reason",
    "decode_varint",
    "encode_connect",
    "encode_disconnect",
    "encode_puback",
    "encode_publish",
    "encode_subscribe",
    "encode_unsubscribe",
    "encode_varint",
]

PROTOCOL_V311 = 4  # MQTT 3.1.1 §3.1.2.2: protocol level 4
PROTOCOL_V5 = 5  # MQTT 5.0 §3.1.2.2: protocol version 5

# MQTT 3.1.1 §2.2.3, MQTT 5.0 §1.5.5: four bytes of variable byte integer hold at most this.
MAX_REMAINING_LENGTH = 268_435_455
#: Default limit of a packet's remaining length that :class:`Decoder` accepts (1 MiB).
DEFAULT_MAX_PACKET = 1 << 20

# Control packet types, MQTT 3.1.1 §2.2.1 and MQTT 5.0 §2.1.2 (the high nibble of byte 1).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ_TYPE, PINGRESP, DISCONNECT, AUTH = range(8, 16)
_TYPE_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ_TYPE: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

#: A PINGREQ: type 12, flags 0, remaining length 0 (MQTT 3.1.1 §3.12, MQTT 5.0 §3.12).
PINGREQ = b"\xc0\x00"

# MQTT 5.0 §2.2.2.2: property identifiers and the form of their values.
_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
PROP_SESSION_EXPIRY = 0x11
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_REASON_STRING = 0x1F
PROP_RECEIVE_MAXIMUM = 0x21
PROP_TOPIC_ALIAS_MAXIMUM = 0x22
PROP_TOPIC_ALIAS = 0x23
PROP_MAXIMUM_QOS = 0x24
PROP_USER_PROPERTY = 0x26
PROP_MAXIMUM_PACKET_SIZE = 0x27
_PROPERTY_FORMS = {
    0x01: _BYTE,  # Payload Format Indicator
    0x02: _FOUR,  # Message Expiry Interval
    0x03: _UTF8,  # Content Type
    0x08: _UTF8,  # Response Topic
    0x09: _BINARY,  # Correlation Data
    0x0B: _VARINT,  # Subscription Identifier
    0x11: _FOUR,  # Session Expiry Interval
    0x12: _UTF8,  # Assigned Client Identifier
    0x13: _TWO,  # Server Keep Alive
    0x15: _UTF8,  # Authentication Method
    0x16: _BINARY,  # Authentication Data
    0x17: _BYTE,  # Request Problem Information
    0x18: _FOUR,  # Will Delay Interval
    0x19: _BYTE,  # Request Response Information
    0x1A: _UTF8,  # Response Information
    0x1C: _UTF8,  # Server Reference
    0x1F: _UTF8,  # Reason String
    0x21: _TWO,  # Receive Maximum
    0x22: _TWO,  # Topic Alias Maximum
    0x23: _TWO,  # Topic Alias
    0x24: _BYTE,  # Maximum QoS
    0x25: _BYTE,  # Retain Available
    0x26: _PAIR,  # User Property
    0x27: _FOUR,  # Maximum Packet Size
    0x28: _BYTE,  # Wildcard Subscription Available
    0x29: _BYTE,  # Subscription Identifier Available
    0x2A: _BYTE,  # Shared Subscription Available
}

# MQTT 3.1.1 §3.2.2.3 (Table 3.1): CONNACK return codes.
_V311_CONNACK = {
    0x01: "unacceptable protocol version",
    0x02: "identifier rejected",
    0x03: "server unavailable",
    0x04: "bad user name or password",
    0x05: "not authorized",
}
# MQTT 5.0 §3.2.2.2 (Table 3-1): CONNACK reason codes.
_V5_CONNACK = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x90: "topic name invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}


def connack_reason(protocol: int, code: int) -> str:
    """The spec's name of CONNACK code ``code`` under ``protocol`` (4 or 5)."""
    names = _V5_CONNACK if protocol == PROTOCOL_V5 else _V311_CONNACK
    return names.get(code, "unknown code")


class Publish(NamedTuple):
    """An inbound PUBLISH (MQTT 5.0 §3.3). A tuple: the hot path builds one per message."""

    packet_id: int | None  # None for QoS 0 (MQTT 5.0 §3.3.2.2: no packet identifier)
    topic: str
    payload: bytes
    dup: bool
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connack:
    """A CONNACK (MQTT 3.1.1 §3.2, MQTT 5.0 §3.2); the v5 properties are left at their
    defaults under 3.1.1."""

    session_present: bool
    code: int
    #: MQTT 5.0 §3.2.2.3.3: the broker's Receive Maximum; absent means 65,535.
    receive_maximum: int = 65_535
    #: MQTT 5.0 §3.2.2.3.6: the largest packet the broker accepts; None = no limit.
    maximum_packet_size: int | None = None
    #: MQTT 5.0 §3.2.2.3.14: the keep alive the broker wants instead of ours.
    server_keep_alive: int | None = None
    #: MQTT 5.0 §3.2.2.3.7: the client id the broker chose for an empty one.
    assigned_client_id: str | None = None
    #: MQTT 5.0 §3.2.2.3.9: the broker's words on the outcome.
    reason_string: str | None = None
    #: True when a v5 CONNECT got a CONNACK of the 3.1.1 form (two bytes, no properties).
    short_form: bool = False
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PubAck:
    """A PUBACK (MQTT 5.0 §3.4): ``code`` ≥ 0x80 means the broker refused the message."""

    packet_id: int
    code: int = 0
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubAck:
    """A SUBACK (MQTT 3.1.1 §3.9, MQTT 5.0 §3.9): one code per filter; ≥ 0x80 is refused."""

    packet_id: int
    codes: tuple[int, ...]
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """An UNSUBACK (MQTT 5.0 §3.11); ``codes`` is empty under 3.1.1 (§3.11.3 there: no payload)."""

    packet_id: int
    codes: tuple[int, ...] = ()
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PingResp:
    """A PINGRESP (MQTT 5.0 §3.13)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A DISCONNECT from the broker (MQTT 5.0 §3.14; a 3.1.1 broker never sends one)."""

    code: int = 0
    properties: dict[int, object] = field(default_factory=dict)


_new_tuple = tuple.__new__

Packet = Publish | Connack | PubAck | SubAck | UnsubAck | PingResp | Disconnect


# --- encoding -----------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode ``value`` as a variable byte integer (MQTT 3.1.1 §2.2.3, MQTT 5.0 §1.5.5)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    if value < 128:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    """A UTF-8 encoded string with its two-byte length (MQTT 3.1.1 §1.5.3, MQTT 5.0 §1.5.4)."""
    data = text.encode("utf-8")
    if len(data) > 65_535:
        raise ValueError(f"string longer than 65535 bytes: {text[:40]!r}…")
    if "\x00" in text:
        # MQTT 5.0 §1.5.4: a UTF-8 string MUST NOT include U+0000.
        raise ValueError(f"string contains U+0000: {text!r}")
    return struct.pack("!H", len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    """Fixed header (type and flags, remaining length) followed by ``body``."""
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    protocol: int = PROTOCOL_V5,
    clean_start: bool = False,
    keepalive_s: int = 30,
    username: str | None = None,
    password: str | None = None,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
    maximum_packet_size: int | None = None,
) -> bytes:
    """Encode a CONNECT (MQTT 3.1.1 §3.1, MQTT 5.0 §3.1), without a will.

    Under MQTT 5 the properties Session Expiry Interval, Receive Maximum and Maximum Packet Size
    are sent when given; under 3.1.1 they are ignored (the session lasts while ``clean_start``
    is false, and the broker's own limits apply).
    """
    if protocol not in (PROTOCOL_V311, PROTOCOL_V5):
        raise ValueError(f"MQTT protocol must be 4 (3.1.1) or 5, not {protocol}")
    if not 0 <= keepalive_s <= 65_535:
        raise ValueError(f"keepalive must be 0..65535 s, not {keepalive_s}")
    if password is not None and username is None and protocol == PROTOCOL_V311:
        # MQTT 3.1.1 §3.1.2.9: a password flag without the user name flag is not allowed.
        raise ValueError("MQTT 3.1.1 needs a user name with a password")
    # MQTT 5.0 §3.1.2.3: bit 1 Clean Start (3.1.1: Clean Session), bit 6 password, bit 7 user.
    flags = 0x02 if clean_start else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    # MQTT 5.0 §3.1.2.1-§3.1.2.2: protocol name "MQTT" and the level.
    variable = b"\x00\x04MQTT" + bytes((protocol, flags)) + struct.pack("!H", keepalive_s)
    if protocol == PROTOCOL_V5:
        props = bytearray()
        if session_expiry_s is not None:  # MQTT 5.0 §3.1.2.11.2
            props += struct.pack("!BI", PROP_SESSION_EXPIRY, session_expiry_s)
        if receive_maximum is not None:  # MQTT 5.0 §3.1.2.11.3: 0 is a protocol error
            if not 1 <= receive_maximum <= 65_535:
                raise ValueError(f"receive maximum must be 1..65535, not {receive_maximum}")
            props += struct.pack("!BH", PROP_RECEIVE_MAXIMUM, receive_maximum)
        if maximum_packet_size is not None:  # MQTT 5.0 §3.1.2.11.4
            props += struct.pack("!BI", PROP_MAXIMUM_PACKET_SIZE, maximum_packet_size)
        variable += encode_varint(len(props)) + props
    # MQTT 5.0 §3.1.3: payload is client id, [will], [user name], [password].
    payload = _utf8(client_id)
    if username is not None:
        payload += _utf8(username)
    if password is not None:
        data = password.encode("utf-8")  # MQTT 5.0 §3.1.3.6: binary data, length-prefixed
        payload += struct.pack("!H", len(data)) + data
    return _packet(CONNECT << 4, variable + payload)


def encode_publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    packet_id: int | None = None,
    dup: bool = False,
    retain: bool = False,
    protocol: int = PROTOCOL_V5,
) -> bytes:
    """Encode a PUBLISH (MQTT 3.1.1 §3.3, MQTT 5.0 §3.3); QoS 1 needs a packet id."""
    if qos not in (0, 1):
        raise ValueError(f"QoS must be 0 or 1 (QoS 2 is not supported), not {qos}")
    if qos and not (packet_id and 1 <= packet_id <= 65_535):
        raise ValueError(f"a QoS 1 PUBLISH needs a packet id in 1..65535, not {packet_id}")
    if not topic or "+" in topic or "#" in topic:
        # MQTT 5.0 §3.3.2.1: a topic name is not empty (we use no alias) and has no wildcards.
        raise ValueError(f"invalid topic name for PUBLISH: {topic!r}")
    # MQTT 5.0 §3.3.1: bit 3 DUP, bits 2-1 QoS, bit 0 RETAIN.
    first = (PUBLISH << 4) | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    variable = _utf8(topic)
    if qos:
        variable += struct.pack("!H", packet_id)
    if protocol == PROTOCOL_V5:
        variable += b"\x00"  # MQTT 5.0 §3.3.2.3: property length 0
    return _packet(first, variable + payload)


def encode_puback(packet_id: int) -> bytes:
    """Encode a PUBACK with success (MQTT 3.1.1 §3.4; MQTT 5.0 §3.4.2.1: the reason code 0x00
    and the property length may be left out when there are no properties)."""
    return b"\x40\x02" + struct.pack("!H", packet_id)


def encode_subscribe(
    packet_id: int, filters: Iterable[tuple[str, int]], *, protocol: int = PROTOCOL_V5
) -> bytes:
    """Encode a SUBSCRIBE of ``(topic filter, maximum QoS)`` pairs (MQTT 5.0 §3.8).

    Under MQTT 5 the subscription options byte (§3.8.3.1) holds only the QoS: No Local 0,
    Retain As Published 0, Retain Handling 0 (send retained messages on subscribe).
    """
    body = bytearray(struct.pack("!H", packet_id))
    if protocol == PROTOCOL_V5:
        body += b"\x00"  # MQTT 5.0 §3.8.2.1: property length 0
    count = 0
    for topic_filter, qos in filters:
        if qos not in (0, 1):
            raise ValueError(f"subscribe QoS must be 0 or 1, not {qos}")
        if not topic_filter:
            raise ValueError("a topic filter is at least one character long")  # §4.7.3
        body += _utf8(topic_filter) + bytes((qos,))
        count += 1
    if not count:
        raise ValueError("a SUBSCRIBE needs at least one topic filter")  # MQTT 5.0 §3.8.3
    # MQTT 5.0 §3.8.1: fixed header flags are 0b0010.
    return _packet((SUBSCRIBE << 4) | 0x02, bytes(body))


def encode_unsubscribe(
    packet_id: int, filters: Iterable[str], *, protocol: int = PROTOCOL_V5
) -> bytes:
    """Encode an UNSUBSCRIBE (MQTT 3.1.1 §3.10, MQTT 5.0 §3.10); flags are 0b0010."""
    body = bytearray(struct.pack("!H", packet_id))
    if protocol == PROTOCOL_V5:
        body += b"\x00"  # MQTT 5.0 §3.10.2.1: property length 0
    count = 0
    for topic_filter in filters:
        body += _utf8(topic_filter)
        count += 1
    if not count:
        raise ValueError("an UNSUBSCRIBE needs at least one topic filter")
    return _packet((UNSUBSCRIBE << 4) | 0x02, bytes(body))


def encode_disconnect(*, protocol: int = PROTOCOL_V5, code: int = 0) -> bytes:
    """Encode a DISCONNECT (MQTT 3.1.1 §3.14; MQTT 5.0 §3.14.2.1: code 0x00 may be left out)."""
    if protocol == PROTOCOL_V5 and code:
        return bytes((DISCONNECT << 4, 1, code))
    return bytes((DISCONNECT << 4, 0))


# --- decoding -----------------------------------------------------------------------------------


def decode_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Decode a variable byte integer at ``data[pos:]``: ``(value, next position)``.

    Returns None when ``data`` ends before the integer does; raises
    :class:`MqttProtocolError` for a fifth byte (MQTT 5.0 §1.5.5: at most four bytes).
    """
    value = 0
    shift = 0
    end = len(data)
    for count in range(4):
        if pos + count >= end:
            return None
        byte = data[pos + count]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + count + 1
        shift += 7
    raise MqttProtocolError("malformed variable byte integer: more than 4 bytes (MQTT 5.0 §1.5.5)")


def _string(body: bytes | bytearray, pos: int, end: int, what: str) -> tuple[str, int]:
    """Decode a length-prefixed UTF-8 string (MQTT 5.0 §1.5.4) ending at or before ``end``."""
    if pos + 2 > end:
        raise MqttProtocolError(f"{what}: string length runs past the packet")
    size = (body[pos] << 8) | body[pos + 1]
    pos += 2
    if pos + size > end:
        raise MqttProtocolError(f"{what}: string of {size} bytes runs past the packet")
    try:
        text = body[pos : pos + size].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MqttProtocolError(f"{what}: not valid UTF-8 (MQTT 5.0 §1.5.4)") from exc
    if "\x00" in text:
        raise MqttProtocolError(f"{what}: contains U+0000 (MQTT 5.0 §1.5.4)")
    return text, pos + size


def _property_value(
    body: bytes | bytearray, pos: int, stop: int, form: int, what: str
) -> tuple[object, int]:
    """One property value of ``form`` at ``pos`` (MQTT 5.0 §2.2.2.2, §1.5 data types)."""
    width = {_BYTE: 1, _TWO: 2, _FOUR: 4}.get(form)
    if width is not None:
        if pos + width > stop:
            raise MqttProtocolError(f"{what} is cut short")
        return int.from_bytes(body[pos : pos + width], "big"), pos + width
    if form == _VARINT:
        got = decode_varint(body[:stop], pos)
        if got is None:
            raise MqttProtocolError(f"{what} is cut short")
        return got
    if form == _BINARY:
        if pos + 2 > stop:
            raise MqttProtocolError(f"{what} is cut short")
        size = (body[pos] << 8) | body[pos + 1]
        if pos + 2 + size > stop:
            raise MqttProtocolError(f"{what} is cut short")
        return bytes(body[pos + 2 : pos + 2 + size]), pos + 2 + size
    return _string(body, pos, stop, what)


def _properties(
    body: bytes | bytearray, pos: int, end: int, what: str
) -> tuple[dict[int, object], int]:
    """Decode a property block (MQTT 5.0 §2.2.2): ``(properties, position after it)``.

    User properties (§3.1.2.11.8, may repeat) are collected in a list; any other property
    appearing twice is a protocol error (§2.2.2.2).
    """
    decoded = decode_varint(body, pos)
    if decoded is None:
        raise MqttProtocolError(f"{what}: property length runs past the packet")
    length, pos = decoded
    stop = pos + length
    if stop > end:
        raise MqttProtocolError(f"{what}: properties of {length} bytes run past the packet")
    props: dict[int, object] = {}
    while pos < stop:
        ident = body[pos]
        form = _PROPERTY_FORMS.get(ident)
        if form is None:
            raise MqttProtocolError(f"{what}: unknown property 0x{ident:02x} (MQTT 5.0 §2.2.2.2)")
        if form == _PAIR:
            key, pos = _string(body, pos + 1, stop, f"{what} user property")
            val, pos = _string(body, pos, stop, f"{what} user property")
            pairs = cast("list[tuple[str, str]]", props.setdefault(ident, []))
            pairs.append((key, val))
            continue
        if ident in props:
            raise MqttProtocolError(
                f"{what}: property 0x{ident:02x} appears twice (MQTT 5.0 §2.2.2.2)"
            )
        props[ident], pos = _property_value(
            body, pos + 1, stop, form, f"{what} property 0x{ident:02x}"
        )
    return props, stop


class Decoder:
    """Incremental decoder of the packets a broker sends to a client.

    :meth:`feed` takes any piece of the byte stream and returns the complete packets in it,
    in order; a partial packet waits in the buffer for the next call. ``protocol`` (4 or 5)
    decides the packet layout; ``max_packet`` bounds the remaining length (MQTT 5.0 §2.1.4)
    so a broker cannot make the client buffer without limit.
    """

    __slots__ = ("_buf", "max_packet", "protocol")

    def __init__(self, protocol: int = PROTOCOL_V5, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        """A decoder for ``protocol`` (4 = 3.1.1, 5 = MQTT 5) with a remaining-length limit."""
        if protocol not in (PROTOCOL_V311, PROTOCOL_V5):
            raise ValueError(f"MQTT protocol must be 4 (3.1.1) or 5, not {protocol}")
        self.protocol = protocol
        self.max_packet = min(max_packet, MAX_REMAINING_LENGTH)
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return every packet now complete. Raises :class:`MqttProtocolError`.

        After an error the stream cannot be resynchronised: the connection must be closed.
        """
        buf = self._buf
        buf += data
        out: list[Packet] = []
        append = out.append
        end = len(buf)
        pos = 0
        v5 = self.protocol == PROTOCOL_V5
        limit = self.max_packet
        try:
            while pos + 2 <= end:
                first = buf[pos]
                # Fixed header: remaining length, MQTT 3.1.1 §2.2.3 / MQTT 5.0 §2.1.4.
                second = buf[pos + 1]
                if second < 0x80:
                    length = second
                    start = pos + 2
                else:
                    got = decode_varint(buf, pos + 1)
                    if got is None:
                        break
                    length, start = got
                if length > limit:
                    raise MqttProtocolError(
                        f"packet of {length} bytes is over the limit of {limit} bytes"
                    )
                stop = start + length
                if stop > end:
                    break
                if first >> 4 == PUBLISH:
                    append(self._publish(buf, first, start, stop, v5=v5))
                else:
                    append(self._other(bytes(buf[start:stop]), first))
                pos = stop
        finally:
            # Keep only the unread tail, also after an error (the caller closes anyway).
            del buf[:pos]
        return out

    @staticmethod
    def _publish(  # noqa: PLR0912 (the hot path stays in one function: no call per field)
        buf: bytearray, first: int, pos: int, stop: int, *, v5: bool
    ) -> Publish:
        """Decode the PUBLISH in ``buf[pos:stop]`` (MQTT 3.1.1 §3.3, MQTT 5.0 §3.3)."""
        qos = (first >> 1) & 0x03
        if qos > 1:
            if qos == 3:  # MQTT 5.0 §3.3.1.2: QoS 3 is malformed
                raise MqttProtocolError("PUBLISH with QoS 3 (MQTT 5.0 §3.3.1.2)")
            raise MqttProtocolError(
                "PUBLISH with QoS 2: this client subscribes with maximum QoS 1, so a broker "
                "must not send QoS 2 (MQTT 5.0 §3.8.3.1); QoS 2 is not supported"
            )
        if pos + 2 > stop:
            raise MqttProtocolError("PUBLISH: topic length runs past the packet")
        size = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if pos + size > stop:
            raise MqttProtocolError(f"PUBLISH: topic of {size} bytes runs past the packet")
        try:
            topic = buf[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MqttProtocolError("PUBLISH: topic is not valid UTF-8 (MQTT 5.0 §1.5.4)") from exc
        pos += size
        if not topic or "\x00" in topic or "+" in topic or "#" in topic:
            # MQTT 5.0 §3.3.2.1: no wildcards in a topic name; §1.5.4: no U+0000; empty is
            # allowed only with a Topic Alias, which we never allow (Topic Alias Maximum 0).
            raise MqttProtocolError(f"PUBLISH: invalid topic name {topic!r} (MQTT 5.0 §3.3.2.1)")
        packet_id: int | None = None
        if qos:
            if pos + 2 > stop:
                raise MqttProtocolError("PUBLISH: packet identifier runs past the packet")
            packet_id = (buf[pos] << 8) | buf[pos + 1]
            if not packet_id:
                raise MqttProtocolError("PUBLISH: packet identifier 0 (MQTT 5.0 §2.2.1)")
            pos += 2
        if v5:
            # MQTT 5.0 §3.3.2.3: properties; the common case is none (one zero byte).
            if pos >= stop:
                raise MqttProtocolError("PUBLISH: property length runs past the packet")
            if buf[pos] == 0:
                pos += 1
            else:
                props, pos = _properties(buf, pos, stop, "PUBLISH")
                if PROP_TOPIC_ALIAS in props:
                    # MQTT 5.0 §3.3.2.3.4: a Topic Alias above the client's Topic Alias Maximum
                    # (we send none, so 0) is a protocol error.
                    raise MqttProtocolError(
                        "PUBLISH with a Topic Alias, but this client allows none "
                        "(Topic Alias Maximum 0, MQTT 5.0 §3.3.2.3.4)"
                    )
        # tuple.__new__ skips the named tuple's Python-level __new__: half the cost per message.
        fields = (packet_id, topic, bytes(buf[pos:stop]), bool(first & 0x08), qos, bool(first & 1))
        return _new_tuple(Publish, fields)

    def _other(self, body: bytes, first: int) -> Packet:
        """Decode a packet other than PUBLISH from its body (the bytes after the fixed header)."""
        kind = first >> 4
        flags = first & 0x0F
        name = _TYPE_NAMES.get(kind, f"type {kind}")
        if kind not in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT):
            if kind in (PUBREC, PUBREL, PUBCOMP):
                raise MqttProtocolError(
                    f"{name} from the broker: QoS 2 flows are not supported (this client "
                    "publishes and subscribes with QoS 0 and 1 only)"
                )
            raise MqttProtocolError(f"a broker must not send {name} to a client")
        if flags:
            # MQTT 5.0 §2.1.3: these packet types have reserved flags 0000.
            raise MqttProtocolError(f"{name} with reserved flags 0x{flags:x} (MQTT 5.0 §2.1.3)")
        v5 = self.protocol == PROTOCOL_V5
        size = len(body)
        if kind == PUBACK:
            return _puback(body, v5=v5)
        if kind == PINGRESP:
            if size:
                raise MqttProtocolError("PINGRESP with a body (MQTT 5.0 §3.13)")
            return PingResp()
        if kind == CONNACK:
            return _connack(body, v5=v5)
        if kind == SUBACK:
            return _suback(body, v5=v5)
        if kind == UNSUBACK:
            return _unsuback(body, v5=v5)
        return _disconnect(body, v5=v5)


def _reason_and_properties(
    body: bytes, pos: int, what: str, *, v5: bool
) -> tuple[int, dict[int, object]]:
    """The optional reason code and properties after ``pos`` (MQTT 5.0 §3.4.2.1, §3.14.2.1).

    A packet that ends before them has reason code 0x00 and no properties.
    """
    size = len(body)
    if not v5 or pos == size:
        if pos != size:
            raise MqttProtocolError(f"{what}: {size - pos} unexpected bytes (MQTT 3.1.1)")
        return 0, {}
    code = body[pos]
    if pos + 1 == size:
        return code, {}
    props, end = _properties(body, pos + 1, size, what)
    if end != size:
        raise MqttProtocolError(f"{what}: {size - end} bytes after the properties")
    return code, props


def _packet_id(body: bytes, what: str) -> int:
    """The packet identifier at the start of ``body`` (MQTT 5.0 §2.2.1): never 0."""
    if len(body) < 2:
        raise MqttProtocolError(f"{what}: shorter than its packet identifier")
    packet_id = (body[0] << 8) | body[1]
    if not packet_id:
        raise MqttProtocolError(f"{what}: packet identifier 0 (MQTT 5.0 §2.2.1)")
    return packet_id


def _puback(body: bytes, *, v5: bool) -> PubAck:
    """MQTT 3.1.1 §3.4 (exactly 2 bytes), MQTT 5.0 §3.4.2 (reason code, properties optional)."""
    packet_id = _packet_id(body, "PUBACK")
    if len(body) == 2:  # the common case, also under MQTT 5
        return PubAck(packet_id)
    code, props = _reason_and_properties(body, 2, "PUBACK", v5=v5)
    return PubAck(packet_id, code, props)


def _connack(body: bytes, *, v5: bool) -> Connack:
    """MQTT 3.1.1 §3.2.2 (2 bytes), MQTT 5.0 §3.2.2 (flags, reason code, properties)."""
    if len(body) < 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes: at least 2 (MQTT 5.0 §3.2.2)")
    flags, code = body[0], body[1]
    if flags & 0xFE:
        # MQTT 5.0 §3.2.2.1: bits 7-1 of the acknowledge flags are reserved, 0.
        raise MqttProtocolError(
            f"CONNACK with reserved flag bits 0x{flags:02x} (MQTT 5.0 §3.2.2.1)"
        )
    session_present = bool(flags & 0x01)
    if not v5:
        if len(body) != 2:
            raise MqttProtocolError(f"CONNACK of {len(body)} bytes: 2 under MQTT 3.1.1 (§3.2)")
        return Connack(session_present, code)
    if len(body) == 2:
        # A broker that speaks only 3.1.1 answers a v5 CONNECT in the 3.1.1 form, with return
        # code 0x01 "unacceptable protocol version" (MQTT 3.1.1 §3.1.2.2).
        return Connack(session_present, code, short_form=True)
    props, end = _properties(body, 2, len(body), "CONNACK")
    if end != len(body):
        raise MqttProtocolError(f"CONNACK: {len(body) - end} bytes after the properties")
    receive_maximum = _int_property(props, PROP_RECEIVE_MAXIMUM, 65_535)
    if receive_maximum == 0:
        raise MqttProtocolError("CONNACK with Receive Maximum 0 (MQTT 5.0 §3.2.2.3.3)")
    if props.get(PROP_MAXIMUM_QOS) not in (None, 1):
        # MQTT 5.0 §3.2.2.3.4: Maximum QoS 0 means our QoS 1 publishes would be refused.
        raise MqttProtocolError(
            f"broker allows only QoS {props[PROP_MAXIMUM_QOS]}: this client needs QoS 1"
        )
    return Connack(
        session_present,
        code,
        receive_maximum=receive_maximum,
        maximum_packet_size=_optional_int(props, PROP_MAXIMUM_PACKET_SIZE),
        server_keep_alive=_optional_int(props, PROP_SERVER_KEEP_ALIVE),
        assigned_client_id=_optional_str(props, PROP_ASSIGNED_CLIENT_ID),
        reason_string=_optional_str(props, PROP_REASON_STRING),
        properties=props,
    )


def _int_property(props: dict[int, object], ident: int, default: int) -> int:
    """Property ``ident`` (an integer form, checked by :func:`_properties`) or ``default``."""
    value = props.get(ident, default)
    return value if isinstance(value, int) else default


def _optional_int(props: dict[int, object], ident: int) -> int | None:
    """Property ``ident`` of an integer form, or None when absent."""
    value = props.get(ident)
    return value if isinstance(value, int) else None


def _optional_str(props: dict[int, object], ident: int) -> str | None:
    """Property ``ident`` of the UTF-8 string form, or None when absent."""
    value = props.get(ident)
    return value if isinstance(value, str) else None


def _suback(body: bytes, *, v5: bool) -> SubAck:
    """MQTT 3.1.1 §3.9 (codes 0, 1, 2, 0x80), MQTT 5.0 §3.9 (properties, then codes)."""
    packet_id = _packet_id(body, "SUBACK")
    pos = 2
    props: dict[int, object] = {}
    if v5:
        props, pos = _properties(body, pos, len(body), "SUBACK")
    codes = tuple(body[pos:])
    if not codes:
        raise MqttProtocolError("SUBACK without a reason code (MQTT 5.0 §3.9.3)")
    return SubAck(packet_id, codes, props)


def _unsuback(body: bytes, *, v5: bool) -> UnsubAck:
    """MQTT 3.1.1 §3.11 (just the packet id), MQTT 5.0 §3.11 (properties, then codes)."""
    packet_id = _packet_id(body, "UNSUBACK")
    if not v5:
        if len(body) != 2:
            raise MqttProtocolError(f"UNSUBACK of {len(body)} bytes: 2 under MQTT 3.1.1 (§3.11)")
        return UnsubAck(packet_id)
    props, pos = _properties(body, 2, len(body), "UNSUBACK")
    return UnsubAck(packet_id, tuple(body[pos:]), props)


def _disconnect(body: bytes, *, v5: bool) -> Disconnect:
    """MQTT 5.0 §3.14: a broker may send DISCONNECT with a reason code (never under 3.1.1)."""
    if not v5:
        raise MqttProtocolError("a MQTT 3.1.1 broker must not send DISCONNECT (§3.14)")
    code, props = _reason_and_properties(body, 0, "DISCONNECT", v5=v5)
    return Disconnect(code, props)
