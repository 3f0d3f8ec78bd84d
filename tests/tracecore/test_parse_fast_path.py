"""parse_message's fast path gives exactly the strict parser's outcome, for every input.

``tracecore.cose.parse_message`` first tries ``_parse_message_fast`` (the envelope by its exact
byte layout, the payload by ``tracecore.cbor.decode_fast``, the field rules checked once by
``tracecore.message.try_from_cbor_map``) and falls
back to ``_parse_message_strict`` (``parse_cose`` + ``decode_payload``, the reference) whenever
the fast path is not sure. These tests check, over mutated real messages and over loose
re-encodings of them (wider heads, indefinite lengths, shuffled or repeated map keys, tags,
other float widths, floats for integers, NaN payloads) with field-level mutations (missing,
extra and retyped fields), that ``parse_message`` and the strict parser agree: the same
SignedMessage down to the type of every value, or the same error type with the same detail.
decode_fast and try_from_cbor_map are also compared directly with decode_strict and
from_cbor_map. And the fast path is really taken for ordinary messages and really falls back for
non-deterministic ones and for every refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracecore import cose
from tracecore.cbor import UNDECIDED, decode_fast, decode_strict, encode_deterministic
from tracecore.cose import (
    MAX_MESSAGE_BYTES,
    SignedMessage,
    _parse_message_fast,
    _parse_message_strict,
    parse_message,
    sign_cose,
    sign_message,
)
from tracecore.errors import MalformedMessage, MessageRejected
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import (
    Event,
    KeyRotation,
    Reading,
    Sensor,
    from_cbor_map,
    sign_rotation_pop,
    try_from_cbor_map,
)

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "protocol"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
KEY = nacl.signing.SigningKey(hashlib.sha256(b"test_parse_fast_path").digest())
NEW_KEY = nacl.signing.SigningKey(hashlib.sha256(b"test_parse_fast_path new").digest())
T0 = 1_795_000_000_000
LOT = ProductKey.parse_canonical("01/09506000134352/10/LOT-1")
CARTONS = tuple(ProductKey.parse_canonical(f"01/09506000134352/21/C{i}") for i in range(3))

TYPICAL: dict[str, bytes] = {
    "reading": sign_message(
        Reading(
            "barn-7-sensor",
            42,
            T0,
            (LOT,),
            (Sensor("Temperature", 21.5, "CEL"), Sensor("RelativeHumidity", 63, "P1")),
        ),
        KEY,
    ),
    "event": sign_message(
        Event(
            "pack-line-2",
            43,
            T0,
            CARTONS,
            "packing",
            parents=(LOT,),
            location="414/9506000134352",
            data={"weight_g": 630, "grade": "A", "checks": [True, 1.5, None], "op": {"id": "x"}},
        ),
        KEY,
    ),
    "rotation": sign_message(
        KeyRotation(
            "pack-line-2",
            44,
            T0,
            bytes(NEW_KEY.verify_key),
            sign_rotation_pop(NEW_KEY, "pack-line-2", 44, T0, device_kid(bytes(KEY.verify_key))),
        ),
        KEY,
    ),
}
VALID_VECTORS = {
    e["file"]: (VECTORS / e["file"]).read_bytes()
    for e in MANIFEST
    if e["kind"] == "message" and e["expect"] == "valid"
}
ALL_VECTORS = [
    raw
    for raw in ((VECTORS / e["file"]).read_bytes() for e in MANIFEST)
    if 0 < len(raw) <= MAX_MESSAGE_BYTES
]
SEEDS = [*TYPICAL.values(), *ALL_VECTORS]
VALID = [*TYPICAL.values(), *VALID_VECTORS.values()]

SETTINGS = settings(
    deadline=None,  # wall-clock deadlines flake on a busy machine
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def typed(value: object) -> object:
    """``value`` as nested tuples that carry every type: True != 1 and -0.0 != 0.0 here."""
    result: object
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        result = tuple((f.name, typed(getattr(value, f.name))) for f in dataclasses.fields(value))
    elif isinstance(value, Mapping):
        result = tuple((typed(k), typed(v)) for k, v in value.items())
    elif isinstance(value, list | tuple):
        result = tuple(typed(item) for item in value)
    elif isinstance(value, float):
        result = struct.pack(">d", value)
    else:
        result = value
    return (type(value).__name__, result)


def outcome(parse: Callable[[bytes], SignedMessage], raw: bytes) -> tuple[object, ...]:
    """What ``parse`` makes of ``raw``: the typed message, or the error's type and detail."""
    try:
        return ("accepted", typed(parse(raw)))
    except MessageRejected as exc:
        return ("refused", type(exc).__name__, exc.detail)


def assert_same(raw: bytes) -> tuple[object, ...]:
    """parse_message and the strict parser agree on ``raw``; return the outcome."""
    expected = outcome(_parse_message_strict, raw)
    assert outcome(parse_message, raw) == expected
    fast = _parse_message_fast(raw)
    if fast is not None:  # whenever the fast path decides, it decides like the strict one
        assert ("accepted", typed(fast)) == expected
    return expected


# --- a loose CBOR encoder: every encoding choice RFC 8949 allows, and a few it does not ------

TAGS = [0, 1, 2, 3, 4, 18, 24, 25, 28, 29, 256, 258, 55799, 1000]
_WIDTHS = {0: None, 1: 24, 2: 25, 4: 26, 8: 27}


class Loose:
    """Encodes a value with random choices drawn from hypothesis: mostly deterministic."""

    def __init__(self, data: st.DataObject, deviation: int) -> None:
        self.data = data
        self.deviation = deviation  # 1 in `deviation` items is encoded non-deterministically

    def _pick(self) -> int:
        """0 for "deterministic", else which deviation to try (1-6)."""
        if self.data.draw(st.integers(0, self.deviation - 1)):
            return 0
        return self.data.draw(st.integers(1, 6))

    def head(self, major: int, argument: int, *, wide: bool = False) -> bytes:
        widths = [w for w in _WIDTHS if (argument < 24 if w == 0 else argument < 256**w)]
        width = self.data.draw(st.sampled_from(widths)) if wide else widths[0]
        info = _WIDTHS[width]
        if info is None:
            return bytes((major << 5 | argument,))
        return bytes((major << 5 | info,)) + argument.to_bytes(width, "big")

    def encode(self, obj: object, *, tagged: bool = False) -> bytes:  # noqa: PLR0911 (by kind)
        pick = self._pick()
        if pick == 1 and not tagged:  # wrap in a tag (one per item)
            tag = self.data.draw(st.sampled_from(TAGS))
            return self.head(6, tag) + self.encode(obj, tagged=True)
        wide = pick == 2
        if obj is None or obj is True or obj is False:
            return {None: b"\xf6", True: b"\xf5", False: b"\xf4"}[obj]
        if isinstance(obj, int):
            if pick == 3 and abs(obj) < 2**53:  # a float where an integer is expected
                return self.encode_float(float(obj), wide=False)
            if obj >= 0:
                return self.head(0, obj, wide=wide)
            return self.head(1, -1 - obj, wide=wide)
        if isinstance(obj, float):
            return self.encode_float(obj, wide=wide or pick == 3)
        if isinstance(obj, str | bytes):
            raw = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else obj
            major = 3 if isinstance(obj, str) else 2
            if pick == 4:  # indefinite length, in chunks
                cut = self.data.draw(st.integers(0, len(raw)))
                chunks = [raw[:cut], raw[cut:]]
                return (
                    bytes((major << 5 | 31,))
                    + b"".join(self.head(major, len(c)) + c for c in chunks)
                    + b"\xff"
                )
            return self.head(major, len(raw), wide=wide) + raw
        if isinstance(obj, list | tuple):
            items = b"".join(self.encode(item) for item in obj)
            if pick == 4:
                return b"\x9f" + items + b"\xff"
            return self.head(4, len(obj), wide=wide) + items
        if isinstance(obj, dict):
            return self.encode_map(obj, pick, wide=wide)
        if isinstance(obj, cbor2.CBORTag):
            return self.head(6, obj.tag, wide=wide) + self.encode(obj.value)
        raise TypeError(type(obj))

    def encode_float(self, value: float, *, wide: bool) -> bytes:
        if math.isnan(value) and self.data.draw(st.booleans()):
            return b"\xf9\x7e\x01"  # a NaN, but not the deterministic one (RFC 8949 §4.2.2)
        forms = []
        for initial, fmt in ((0xF9, ">e"), (0xFA, ">f"), (0xFB, ">d")):
            try:
                packed = struct.pack(fmt, value)
            except OverflowError:
                continue
            again = struct.unpack(fmt, packed)[0]
            if again == value or (math.isnan(again) and math.isnan(value)):
                forms.append(bytes((initial,)) + packed)
        return self.data.draw(st.sampled_from(forms)) if wide else forms[0]

    def encode_map(self, obj: dict[Any, Any], pick: int, *, wide: bool) -> bytes:
        pairs = sorted(
            ((encode_deterministic(k), k, v) for k, v in obj.items()), key=lambda p: p[0]
        )
        if pick == 5 and len(pairs) > 1:  # not sorted
            pairs = self.data.draw(st.permutations(pairs))
        if pick == 6 and pairs:  # a key twice
            pairs.insert(self.data.draw(st.integers(0, len(pairs))), pairs[0])
        body = b"".join(self.encode(k) + self.encode(v) for _, k, v in pairs)
        if pick == 4:
            return b"\xbf" + body + b"\xff"
        return self.head(5, len(pairs), wide=wide) + body


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(-30, 30), children, max_size=4)
    ),
    max_leaves=8,
)
# Items decode_fast measures (text keys only), heavy on floats and NaNs.
plain_values = st.recursive(
    st.floats()
    | st.sampled_from([math.nan, -0.0, math.inf])
    | st.integers(-(2**64), 2**64 - 1)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
PAYLOAD_FIELDS = ["v", "device", "seq", "time", "products", "type", "sensors", "step",
                  "parents", "location", "data", "new_key", "pop", "extra"]  # fmt: skip


def _first(values: object) -> list[Any]:
    return list(values[:1]) if isinstance(values, list) else []


# Values at and just past each field rule's edge, and values borrowed from other fields.
TARGETED: list[Callable[[dict[str, Any]], dict[str, Any]]] = [
    lambda p: {**p, "parents": _first(p.get("products"))},  # a parent that is also a product
    lambda p: {**p, "parents": _first(p.get("parents")) * 2},  # a parent twice
    lambda p: {**p, "products": _first(p.get("products")) * 2},  # a product twice
    lambda p: {**p, "products": []},
    lambda p: {**p, "parents": []},  # allowed: no parents
    lambda p: {**p, "products": [f"01/09506000134352/21/S{i}" for i in range(65)]},
    lambda p: {**p, "products": [f"01/09506000134352/21/S{i}" for i in range(64)]},
    lambda p: {**p, "products": ["01/9506000134352/21/S1"]},  # not canonical: a GTIN-13
    lambda p: {**p, "sensors": _first(p.get("sensors")) * 65},
    lambda p: {**p, "sensors": _first(p.get("sensors")) * 64},
    lambda p: {**p, "location": "x" * 200},
    lambda p: {**p, "location": "x" * 201},
    lambda p: {**p, "location": ""},
    lambda p: {**p, "location": "barn\x85"},  # a C1 control character
    lambda p: {**p, "location": "barn\xa0"},  # not a control character
    lambda p: {**p, "location": None},
    lambda p: {**p, "data": {"a": {"b": {"c": {"d": 1}}}}},  # 4 levels: allowed
    lambda p: {**p, "data": {"a": {"b": {"c": {"d": {}}}}}},  # 5 levels
    lambda p: {**p, "data": {"a": [[[1]]]}},
    lambda p: {**p, "data": {"a": [[[[1]]]]}},
    lambda p: {**p, "data": {"n": 2**63}},
    lambda p: {**p, "data": {"n": -(2**63)}},
    lambda p: {**p, "data": {"n": math.inf}},
    lambda p: {**p, "data": None},
    lambda p: {**p, "seq": 0},
    lambda p: {**p, "seq": 2**63 - 1},
    lambda p: {**p, "seq": 2**63},
    lambda p: {**p, "seq": True},
    lambda p: {**p, "time": 2**53},
    lambda p: {**p, "time": 2**53 + 1},
    lambda p: {**p, "time": -1},
    lambda p: {**p, "time": 1.0},
    lambda p: {**p, "v": 2},
    lambda p: {**p, "v": True},
    lambda p: {**p, "device": "Barn-1"},
    lambda p: {**p, "device": "ab"},
    lambda p: {**p, "device": "a" * 64},
    lambda p: {**p, "device": "a" * 65},
    lambda p: {**p, "step": "Packing"},
    lambda p: {**p, "type": "key_rotation"},
    lambda p: {**p, "type": "event", "step": "packing"},
    lambda p: {**p, "type": "reading", "sensors": [{"type": "Mass", "value": 1, "uom": "KGM"}]},
    lambda p: {**p, "new_key": bytes(31)},
    lambda p: {**p, "pop": bytes(65)},
]
SENSOR_EDGES: list[tuple[str, object]] = [
    ("value", 2**63 - 1), ("value", 2**63), ("value", -(2**63) - 1), ("value", True),
    ("value", math.nan), ("value", -0.0), ("uom", "C"), ("uom", "CELS"), ("uom", "cel"),
    ("uom", "P1"), ("uom", "C\n"), ("type", "temperature"), ("type", "Mass"),
]  # fmt: skip


def mutate_fields(payload: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Delete, add or replace a few fields of a payload map (and of its first sensor)."""
    result = dict(payload)
    if data.draw(st.booleans()):
        result = data.draw(st.sampled_from(TARGETED))(result)
    for _ in range(data.draw(st.integers(0, 2))):
        name = data.draw(st.sampled_from(PAYLOAD_FIELDS))
        if data.draw(st.booleans()):
            result.pop(name, None)
        else:
            result[name] = data.draw(cbor_values)
    sensors = result.get("sensors")
    first = sensors[0] if isinstance(sensors, list) and sensors else None
    if isinstance(first, dict) and data.draw(st.integers(0, 3)) == 0:
        sensor = dict(first)
        if data.draw(st.booleans()):
            name, edge = data.draw(st.sampled_from(SENSOR_EDGES))
            sensor[name] = edge
        else:
            sensor[data.draw(st.sampled_from(["type", "value", "uom", "x"]))] = data.draw(
                cbor_values
            )
        result["sensors"] = [sensor, *sensors[1:]]
    return result


def envelope(loose: Loose, protected: bytes, payload: bytes, signature: bytes) -> bytes:
    return loose.encode(cbor2.CBORTag(18, [protected, {}, payload, signature]))


# --- the properties -------------------------------------------------------------------------


@settings(SETTINGS, max_examples=1000)
@given(st.sampled_from(SEEDS), st.lists(st.integers(0, 8 * 16384), min_size=1, max_size=6))
def test_bit_flips(seed: bytes, bits: list[int]) -> None:
    """Valid messages with a few bits flipped: same outcome."""
    data = bytearray(seed)
    for bit in bits:
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    assert_same(bytes(data))


@settings(SETTINGS, max_examples=1000)
@given(st.sampled_from(SEEDS), st.integers(0, 16384), st.binary(max_size=12), st.integers(0, 40))
def test_cut_and_insert(seed: bytes, at: int, inserted: bytes, removed: int) -> None:
    """Valid messages truncated, extended, with bytes inserted or removed: same outcome."""
    position = at % (len(seed) + 1)
    assert_same(seed[:position])
    assert_same(seed + inserted)
    assert_same(seed[:position] + inserted + seed[position + removed :])


@settings(SETTINGS, max_examples=1500)
@given(st.sampled_from(SEEDS), st.data())
def test_loose_reencodings(seed: bytes, data: st.DataObject) -> None:
    """Payloads and envelopes re-encoded with random (non-)deterministic choices and field
    mutations: same outcome; the deterministic ones are accepted by the fast path itself.
    """
    try:
        signed = _parse_message_strict(seed)
    except MessageRejected:
        return
    payload_map = cbor2.loads(signed.payload)
    if data.draw(st.booleans()):
        payload_map = mutate_fields(payload_map, data)
    loose = Loose(data, deviation=data.draw(st.sampled_from([8, 40, 10**6])))
    payload = loose.encode(payload_map)
    protected = loose.encode({1: -8, 4: signed.kid}) if loose._pick() else signed.protected
    raw = envelope(loose, protected, payload, signed.signature)
    result = assert_same(raw)
    canonical = sign_cose(encode_deterministic(payload_map), KEY)
    if assert_same(canonical)[0] == "accepted":
        assert _parse_message_fast(canonical) is not None
    if result[0] == "accepted":
        assert raw == encode_deterministic(cbor2.loads(raw))  # only deterministic bytes pass


@settings(SETTINGS, max_examples=1500)
@given(cbor_values | plain_values, st.data())
def test_decode_fast_agrees_with_decode_strict(value: object, data: st.DataObject) -> None:
    """Whenever decode_fast decides, decode_strict returns an equal item with the same types."""
    raw = Loose(data, deviation=data.draw(st.sampled_from([4, 20, 10**6]))).encode(value)
    fast = decode_fast(raw)
    if fast is UNDECIDED:
        return
    assert typed(decode_strict(raw)) == typed(fast)


@settings(SETTINGS, max_examples=1500)
@given(st.sampled_from(VALID), st.data())
def test_try_from_cbor_map_agrees_with_from_cbor_map(seed: bytes, data: st.DataObject) -> None:
    """Payload maps with fields deleted, added or retyped (data and sensors too): whenever the
    one-pass field rules accept, from_cbor_map returns an equal message with the same types.
    """
    payload_map = mutate_fields(cbor2.loads(_parse_message_strict(seed).payload), data)
    if data.draw(st.booleans()) and isinstance(payload_map.get("data"), dict):
        payload_map["data"] = {
            **payload_map["data"],
            data.draw(st.text(max_size=3)): data.draw(cbor_values),
        }
    fast = try_from_cbor_map(payload_map)
    if fast is not None:
        assert typed(fast) == typed(from_cbor_map(payload_map))
    else:
        with pytest.raises(MalformedMessage):
            from_cbor_map(payload_map)


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "bb": [1.5, -0.0, math.inf]}, {}, [], "é", {"a": "é", "z": b"\x00"}, 2**64 - 1],
)
def test_decode_fast_decides_deterministic_items(value: object) -> None:
    """Deterministic bytes of plain items (ASCII text keys, no NaN) are decided by the fast path."""
    raw = encode_deterministic(value)
    assert typed(decode_fast(raw)) == typed(decode_strict(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x18\x01",  # 1 with a 1-byte argument
        b"\xa2\x61\x62\x01\x61\x61\x02",  # keys "b", "a": unsorted
        b"\xa2\x62\x61\x61\x01\x61\x62\x02",  # "aa" before "b": longer key first
        b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00",  # 1.5 as a double
        b"\xf9\x7e\x01",  # a NaN that is not f97e00
        b"\xf9\x7e\x00",  # the deterministic NaN: left to decode_strict all the same
        b"\x9f\x01\xff",  # indefinite array
        b"\xc1\x01",  # tag 1
        b"\xd9\x01\x00\x80",  # tag 256 (string references)
        b"\x01\x00",  # trailing byte
        b"\xa1\x01\x02",  # integer key
        b"\xa1\x62\xc3\xa9\xf6",  # {"é": null}: deterministic, but a non-ASCII key
        b"\xf7",  # undefined
        b"",
    ],
)
def test_decode_fast_leaves_the_rest_to_decode_strict(raw: bytes) -> None:
    """Non-deterministic, tagged, non-ASCII-keyed or NaN items: UNDECIDED, never an error."""
    assert decode_fast(raw) is UNDECIDED


@pytest.mark.parametrize("raw", VALID, ids=[*TYPICAL, *VALID_VECTORS])
def test_fast_path_is_taken_for_ordinary_messages(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typical messages and the valid golden vectors never reach the strict parser."""
    expected = outcome(_parse_message_strict, raw)

    def refuse(raw: bytes) -> SignedMessage:
        raise AssertionError("the strict parser was called")

    monkeypatch.setattr(cose, "_parse_message_strict", refuse)
    assert outcome(parse_message, raw) == expected
    assert expected[0] == "accepted"


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []

    def strict(raw: bytes) -> SignedMessage:
        calls.append(raw)
        return _parse_message_strict(raw)

    monkeypatch.setattr(cose, "_parse_message_strict", strict)
    return calls


def test_non_deterministic_payload_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """seq with a 9-byte head: the strict parser refuses it, with its detail."""
    signed = parse_message(TYPICAL["reading"])
    payload_map = cbor2.loads(signed.payload)
    seq = encode_deterministic(payload_map["seq"])
    good = encode_deterministic(payload_map)
    assert good.count(b"\x63seq" + seq) == 1
    payload = good.replace(b"\x63seq" + seq, b"\x63seq\x1b" + payload_map["seq"].to_bytes(8, "big"))
    raw = sign_cose(payload, KEY)
    calls = _spy(monkeypatch)
    with pytest.raises(MalformedMessage, match="payload: not in deterministic encoding"):
        parse_message(raw)
    assert calls == [raw]


def test_non_deterministic_envelope_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An envelope whose payload length has a 2-byte head: refused by the strict parser."""
    raw = TYPICAL["rotation"]
    payload = parse_message(raw).payload
    assert 24 <= len(payload) < 256
    wide = raw.replace(
        b"\x58" + bytes([len(payload)]) + payload, b"\x59\x00" + bytes([len(payload)]) + payload
    )
    calls = _spy(monkeypatch)
    with pytest.raises(MalformedMessage, match="COSE message: not in deterministic encoding"):
        parse_message(wide)
    assert calls == [wide]


def test_field_rule_refusals_come_from_the_strict_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic message that breaks a field rule: the strict parser gives the detail."""
    payload_map = cbor2.loads(parse_message(TYPICAL["event"]).payload)
    payload_map["step"] = "dancing"
    raw = sign_cose(encode_deterministic(payload_map), KEY)
    calls = _spy(monkeypatch)
    with pytest.raises(MalformedMessage, match=r"step must be a CBV 2\.0 business step") as info:
        parse_message(raw)
    assert calls == [raw]
    assert info.value.detail == outcome(_parse_message_strict, raw)[2]


@pytest.mark.parametrize("extra", [0, 1])
def test_size_limit_is_the_strict_one(extra: int) -> None:
    """A message of exactly 16 KiB is accepted by the fast path; one byte more is refused."""
    base = Event("pack-line-2", 9, T0, (LOT,), "packing").to_cbor_map()

    def message(note_length: int) -> bytes:
        return sign_cose(encode_deterministic({**base, "data": {"note": "n" * note_length}}), KEY)

    near = MAX_MESSAGE_BYTES - 400  # heads of the note and the payload have their final sizes
    raw = message(near + MAX_MESSAGE_BYTES - len(message(near)) + extra)
    assert len(raw) == MAX_MESSAGE_BYTES + extra
    result = assert_same(raw)
    assert (result[0] == "accepted") == (not extra)
    assert (_parse_message_fast(raw) is not None) == (not extra)
