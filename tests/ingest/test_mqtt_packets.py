"""The MQTT codec of ingest/mqtt/packets.py: golden bytes written from the spec, and bad input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.mqtt.packets import (
    Connack,
    Decoder,
    Disconnect,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    UnsubAck,
    decode_varint,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    encode_varint,
)
from tracecore.errors import MqttProtocolError

# MQTT 5.0 §1.5.5 Table 1-1: the edges of 1, 2, 3 and 4 bytes.
VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("value", "hex_bytes"), VARINTS)
def test_varint_edges(value: int, hex_bytes: str) -> None:
    """Variable byte integers at the length edges encode and decode as Table 1-1 shows."""
    assert encode_varint(value).hex() == hex_bytes
    assert decode_varint(bytes.fromhex(hex_bytes), 0) == (value, len(hex_bytes) // 2)
    assert decode_varint(bytes.fromhex(hex_bytes)[:-1], 0) is None


def test_varint_out_of_range() -> None:
    """268,435,456 has no encoding; a fifth length byte is a protocol error."""
    with pytest.raises(ValueError, match="out of range"):
        encode_varint(268_435_456)
    with pytest.raises(MqttProtocolError, match="more than 4 bytes"):
        decode_varint(bytes.fromhex("ffffffff7f"), 0)
    with pytest.raises(MqttProtocolError, match="more than 4 bytes"):
        Decoder(5).feed(bytes.fromhex("30ffffffff7f"))


def test_connect_v5_golden() -> None:
    """CONNECT v5 with Session Expiry Interval and Receive Maximum, byte for byte (§3.1)."""
    expected = bytes.fromhex(
        "10 1d"  # CONNECT, remaining length 29
        "0004 4d515454"  # protocol name "MQTT" (§3.1.2.1)
        "05"  # protocol version 5 (§3.1.2.2)
        "00"  # flags: no user, no password, no will, Clean Start 0 (§3.1.2.3)
        "001e"  # keep alive 30 s (§3.1.2.10)
        "08 11 00093a80 21 0005"  # properties: session expiry 604800 s, receive maximum 5
        "0008" + b"ingest-1".hex()  # client identifier (§3.1.3.1)
    )
    got = encode_connect(
        "ingest-1", protocol=5, keepalive_s=30, session_expiry_s=604_800, receive_maximum=5
    )
    assert got == expected


def test_connect_v311_golden() -> None:
    """CONNECT 3.1.1 with user name, password and Clean Session, byte for byte (§3.1)."""
    expected = bytes.fromhex(
        "10 14 0004 4d515454 04"
        "c2"  # user name, password, Clean Session (MQTT 3.1.1 §3.1.2.3)
        "003c"  # keep alive 60 s
        "0002 6331"  # client id "c1"
        "0001 75"  # user name "u"
        "0001 70"  # password "p"
    )
    got = encode_connect(
        "c1", protocol=4, clean_start=True, keepalive_s=60, username="u", password="p"
    )
    assert got == expected
    # Session properties have no place in 3.1.1: they are not sent.
    assert encode_connect("c1", protocol=4, session_expiry_s=5, receive_maximum=5).find(b"\x11") < 0


def test_publish_golden_and_round_trip() -> None:
    """PUBLISH QoS 1 with DUP under v5 (property length 0) and 3.1.1, then decoded back."""
    v5 = encode_publish("a/b", b"hi", qos=1, packet_id=10, dup=True, protocol=5)
    assert v5 == bytes.fromhex("3a 0a 0003 612f62 000a 00 6869")
    v4 = encode_publish("a/b", b"hi", qos=1, packet_id=10, dup=True, protocol=4)
    assert v4 == bytes.fromhex("3a 09 0003 612f62 000a 6869")
    assert Decoder(5).feed(v5) == [Publish(10, "a/b", b"hi", True, 1, False)]
    assert Decoder(4).feed(v4) == [Publish(10, "a/b", b"hi", True, 1, False)]
    q0 = encode_publish("t", b"", qos=0, retain=True, protocol=5)
    assert q0 == bytes.fromhex("31 04 0001 74 00")
    assert Decoder(5).feed(q0) == [Publish(None, "t", b"", False, 0, True)]


def test_puback_round_trip() -> None:
    """A PUBACK we encode decodes to the same packet id with success, under both versions."""
    for protocol in (4, 5):
        assert Decoder(protocol).feed(encode_puback(0xBEEF)) == [PubAck(0xBEEF)]


def test_control_packets_golden() -> None:
    """SUBSCRIBE, UNSUBSCRIBE, PUBACK, DISCONNECT and PINGREQ bytes as the spec lays them out."""
    assert encode_subscribe(1, [("$share/ingest/t", 1)], protocol=5) == bytes.fromhex(
        "82 15 0001 00 000f" + b"$share/ingest/t".hex() + "01"
    )
    assert encode_subscribe(1, [("t", 1)], protocol=4) == bytes.fromhex("82 06 0001 0001 74 01")
    assert encode_unsubscribe(2, ["t"], protocol=4) == bytes.fromhex("a2 05 0002 0001 74")
    assert encode_unsubscribe(2, ["t"], protocol=5) == bytes.fromhex("a2 06 0002 00 0001 74")
    assert encode_puback(0x1234) == bytes.fromhex("40 02 1234")
    assert encode_disconnect(protocol=5) == bytes.fromhex("e0 00")
    assert encode_disconnect(protocol=5, code=0x04) == bytes.fromhex("e0 01 04")


def test_connack_v5_properties() -> None:
    """A v5 CONNACK's Receive Maximum, Maximum Packet Size, Server Keep Alive, client id."""
    data = bytes.fromhex("20 14 00 00 11 210014 2700100000 13003c 1200036162 63")
    (connack,) = Decoder(5).feed(data)
    assert isinstance(connack, Connack)
    assert (connack.session_present, connack.code) == (False, 0)
    assert connack.receive_maximum == 20
    assert connack.maximum_packet_size == 1 << 20
    assert connack.server_keep_alive == 60
    assert connack.assigned_client_id == "abc"
    (plain,) = Decoder(5).feed(bytes.fromhex("20 03 01 00 00"))
    assert isinstance(plain, Connack)
    assert plain.session_present
    assert plain.receive_maximum == 65_535


def test_connack_refusals() -> None:
    """A refusal's code and reason string; a 3.1.1-form answer to v5 is marked short_form."""
    (refused,) = Decoder(5).feed(bytes.fromhex("20 0a 00 87 07 1f0004 6e6f7065"))
    assert isinstance(refused, Connack)
    assert (refused.code, refused.reason_string) == (0x87, "nope")
    (short,) = Decoder(5).feed(bytes.fromhex("20 02 00 01"))
    assert isinstance(short, Connack)
    assert (short.code, short.short_form) == (1, True)
    (v4,) = Decoder(4).feed(bytes.fromhex("20 02 00 04"))
    assert v4 == Connack(False, 4)


def test_acks_and_disconnect() -> None:
    """PUBACK with reason and properties, SUBACK, UNSUBACK, PINGRESP, DISCONNECT decode."""
    data = bytes.fromhex(
        "40 02 0005"  # PUBACK success, short form (§3.4.2.1)
        "40 03 0006 10"  # 0x10 no matching subscribers (still a success)
        "40 0a 0007 87 06 1f0003 626164"  # 0x87 not authorized, reason string "bad"
        "90 05 0001 00 01 80"  # SUBACK: granted QoS 1, refused 0x80
        "b0 04 0002 00 00"  # UNSUBACK v5: success
        "d0 00"  # PINGRESP
        "e0 02 8e 00"  # DISCONNECT 0x8e session taken over
    )
    assert Decoder(5).feed(data) == [
        PubAck(5),
        PubAck(6, 0x10),
        PubAck(7, 0x87, {0x1F: "bad"}),
        SubAck(1, (1, 0x80)),
        UnsubAck(2, (0,)),
        PingResp(),
        Disconnect(0x8E),
    ]
    assert Decoder(4).feed(bytes.fromhex("90 03 0001 01 b0 02 0002")) == [
        SubAck(1, (1,)),
        UnsubAck(2),
    ]


def _stream() -> bytes:
    return b"".join(
        [
            bytes.fromhex("20 03 00 00 00"),
            *(
                encode_publish(f"up/dev-{i}", bytes(range(i * 7 % 256)) * 3, packet_id=i + 1)
                for i in range(6)
            ),
            encode_publish("q0", b"zero", qos=0),
            bytes.fromhex("40 02 0005 d0 00 90 04 0001 00 01"),
            encode_publish("big", b"x" * 300, packet_id=99),  # two-byte remaining length
        ]
    )


def test_every_split_point_gives_the_same_packets() -> None:
    """Feeding a stream in two pieces, at any byte, or byte by byte, gives the same packets."""
    stream = _stream()
    whole = Decoder(5).feed(stream)
    assert len(whole) == 12
    for cut in range(len(stream) + 1):
        decoder = Decoder(5)
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole, cut
        assert decoder.buffered == 0
    decoder = Decoder(5)
    one_by_one = [packet for i in range(len(stream)) for packet in decoder.feed(stream[i : i + 1])]
    assert one_by_one == whole


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("34 06 0001 74 0001 00", "QoS 2"),
        ("36 06 0001 74 0001 00", "QoS 3"),
        ("30 03 0001 2b", "invalid topic name"),  # "+" is a wildcard
        ("30 03 0001 00", "invalid topic name"),  # U+0000 in the topic
        ("30 03 0001 ff", "not valid UTF-8"),
        ("30 03 0005 61", "runs past the packet"),
        ("32 06 0001 74 0000 00", "packet identifier 0"),
        ("30 07 0001 74 03 230001", "Topic Alias"),  # v5 Topic Alias 0x23
        ("30 06 0001 74 02 ff00", "unknown property"),
        ("30 06 0001 74 02 0200", "cut short"),
        ("30 08 0001 74 04 0101 0102", "appears twice"),
        ("22 03 00 00 00", "reserved flags"),  # CONNACK with flags 0010
        ("20 03 02 00 00", "reserved flag bits"),
        ("20 01 00", "at least 2"),
        ("20 04 00 00 05 21", "run past the packet"),
        ("20 06 00 00 03 210000", "Receive Maximum 0"),
        ("40 00", "shorter than its packet identifier"),
        ("40 02 0000", "packet identifier 0"),
        ("50 02 0001", "QoS 2 flows are not supported"),  # PUBREC
        ("10 00", "must not send CONNECT"),
        ("f0 00", "must not send AUTH"),
        ("d0 01 00", "PINGRESP with a body"),
        ("90 03 0001 00", "without a reason code"),
    ],
)
def test_malformed_packets_are_protocol_errors(data: str, message: str) -> None:
    """Each broken rule raises MqttProtocolError that names it."""
    with pytest.raises(MqttProtocolError, match=message):
        Decoder(5).feed(bytes.fromhex(data))


def test_v311_rules() -> None:
    """Under 3.1.1 a DISCONNECT from the broker and extra PUBACK bytes are errors."""
    with pytest.raises(MqttProtocolError, match="must not send DISCONNECT"):
        Decoder(4).feed(bytes.fromhex("e0 00"))
    with pytest.raises(MqttProtocolError, match="unexpected bytes"):
        Decoder(4).feed(bytes.fromhex("40 03 0001 00"))
    with pytest.raises(MqttProtocolError, match=r"2 under MQTT 3\.1\.1"):
        Decoder(4).feed(bytes.fromhex("20 03 00 00 00"))


def test_packet_over_the_limit_is_refused_before_it_is_buffered() -> None:
    """A remaining length over max_packet fails at the header, not after buffering it."""
    decoder = Decoder(5, max_packet=1000)
    header = b"\x30" + encode_varint(1001)
    with pytest.raises(MqttProtocolError, match="1001 bytes is over the limit of 1000"):
        decoder.feed(header)
    assert len(Decoder(5, max_packet=1000).feed(encode_publish("t", b"x" * 990, qos=0))) == 1


def test_encoders_refuse_what_the_spec_forbids() -> None:
    """QoS 2, wildcard topics, a QoS 1 PUBLISH without id, Receive Maximum 0 are refused."""
    with pytest.raises(ValueError, match="QoS 2 is not supported"):
        encode_publish("t", b"", qos=2, packet_id=1)
    with pytest.raises(ValueError, match="invalid topic"):
        encode_publish("a/#", b"", qos=0)
    with pytest.raises(ValueError, match="needs a packet id"):
        encode_publish("t", b"", qos=1)
    with pytest.raises(ValueError, match="receive maximum"):
        encode_connect("c", receive_maximum=0)
    with pytest.raises(ValueError, match="U\\+0000"):
        encode_subscribe(1, [("a\x00", 1)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([4, 5]))
def test_fuzz_random_bytes_give_packets_or_protocol_error(data: bytes, protocol: int) -> None:
    """Random bytes never raise anything but MqttProtocolError."""
    with contextlib.suppress(MqttProtocolError):
        Decoder(protocol, max_packet=150).feed(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_fuzz_mutated_stream(position: int, value: int) -> None:
    """A valid stream with one byte changed decodes or raises MqttProtocolError, nothing else."""
    stream = bytearray(_stream())
    stream[position % len(stream)] = value
    with contextlib.suppress(MqttProtocolError):
        Decoder(5).feed(bytes(stream))
