"""Deterministic CBOR (tracecore.cbor) and the payload field rules (tracecore.message)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from tracecore.cbor import MAX_DEPTH, decode_strict, encode_deterministic, kind_name
from tracecore.errors import MalformedMessage, RejectReason
from tracecore.identifiers import ProductKey
from tracecore.message import (
    BUSINESS_STEPS,
    SENSOR_TYPES,
    Event,
    Reading,
    Sensor,
    decode_payload,
    encode_payload,
    from_cbor_map,
)

# ---------------------------------------------------------------------------------------------
# Deterministic CBOR: RFC 8949 Appendix A examples (those in preferred serialization)
# ---------------------------------------------------------------------------------------------

APPENDIX_A: list[tuple[object, str]] = [
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.0e300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"),
    (0.00006103515625, "f90400"),
    (-4.0, "f9c400"),
    (-4.1, "fbc010666666666666"),
    (math.inf, "f97c00"),
    (-math.inf, "f9fc00"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (cbor2.CBORTag(1, 1363896240), "c11a514b67b0"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
]


@pytest.mark.parametrize(("value", "expected"), APPENDIX_A, ids=[h for _, h in APPENDIX_A])
def test_encode_matches_rfc8949_appendix_a(value: object, expected: str) -> None:
    assert encode_deterministic(value).hex() == expected


@pytest.mark.parametrize(("value", "expected"), APPENDIX_A, ids=[h for _, h in APPENDIX_A])
def test_decode_strict_accepts_appendix_a(value: object, expected: str) -> None:
    decoded = decode_strict(bytes.fromhex(expected), allowed_tags={1})
    assert encode_deterministic(decoded).hex() == expected


def test_nan_is_canonical_half() -> None:
    assert encode_deterministic(math.nan).hex() == "f97e00"  # RFC 8949 §4.2.2


def test_map_key_order_is_bytewise_rfc8949_4_2_1_example() -> None:
    """RFC 8949 §4.2.1 lists this order: 10, 100, -1, "z", "aa", [100], [-1], false."""
    value = {False: 8, (-1,): 7, (100,): 6, "aa": 5, "z": 4, -1: 3, 100: 2, 10: 1}
    encoded = encode_deterministic(value)
    assert decode_strict(encoded) == value
    assert encoded.hex() == (
        "a80a011864022003617a046261610581186406812007f408"
    )  # fmt: skip


def test_cbor2_canonical_is_length_first_which_is_why_we_encode_ourselves() -> None:
    """cbor2's canonical=True sorts keys length-first (RFC 8949 §4.2.3), not bytewise (§4.2.1).

    If this starts failing, cbor2 changed its canonical order; our encoder stays right either way.
    """
    value = {100: 1, -1: 2}
    assert encode_deterministic(value).hex() == "a21864012002"  # 0x18 < 0x20
    assert cbor2.dumps(value, canonical=True).hex() == "a22002186401"


def test_encode_refuses_what_has_no_deterministic_form() -> None:
    with pytest.raises(ValueError, match="64 bits"):
        encode_deterministic(2**64)
    with pytest.raises(ValueError, match="64 bits"):
        encode_deterministic(-(2**64) - 1)
    with pytest.raises(TypeError):
        encode_deterministic({1, 2})
    with pytest.raises(TypeError):
        encode_deterministic(object())
    with pytest.raises(ValueError):  # noqa: PT011 (UnicodeEncodeError; the text varies)
        encode_deterministic("\ud800")


REJECTED_CBOR: list[tuple[str, str]] = [
    ("", "empty input"),
    ("1817", "deterministic"),  # 23 in two bytes
    ("190017", "deterministic"),
    ("1a00000017", "deterministic"),
    ("3800", "deterministic"),  # -1 in two bytes
    ("fa3f800000", "deterministic"),  # 1.0 as single
    ("fb3ff0000000000000", "deterministic"),  # 1.0 as double
    ("fb7ff8000000000000", "deterministic"),  # NaN as double
    ("f97e01", "deterministic"),  # NaN with payload
    ("a2616201616101", "deterministic"),  # {"b": 1, "a": 1}
    ("a220011864 02".replace(" ", ""), "deterministic"),  # {-1: 1, 100: 2}: length-first
    ("5801 00".replace(" ", ""), "deterministic"),  # 1-byte bstr with 1-byte length
    ("7801 61".replace(" ", ""), "deterministic"),
    ("9801 00".replace(" ", ""), "deterministic"),
    ("b801 0000".replace(" ", ""), "deterministic"),
    ("d81201", "deterministic"),  # tag 18 in two bytes
    ("5f42010243030405ff", "not valid CBOR"),  # indefinite byte string
    ("7f657374726561646d696e67ff", "not valid CBOR"),
    ("9fff", "not valid CBOR"),
    ("bf61610161629f0203ffff", "not valid CBOR"),
    ("a201000100", "not valid CBOR"),  # duplicate key 1
    ("0000", "trailing bytes"),
    ("83010203ff", "trailing bytes"),
    ("18", "not valid CBOR"),  # truncated
    ("62c328", "not valid CBOR"),  # invalid UTF-8
    ("ff", "not valid CBOR"),
    ("1c", "not valid CBOR"),  # reserved additional information
    ("f7", "data model"),  # undefined
    ("f0", "data model"),  # simple(16)
    ("f820", "data model"),  # simple(32)
    ("c11a514b67b0", "tag 1 is not allowed"),
    ("c249010000000000000000", "tag 2 is not allowed"),  # bignum
    ("d9d9f701", "tag 55799 is not allowed"),  # self-describe, cbor2 drops it silently
    ("d9010280", "tag 258 is not allowed"),
    ("5bffffffffffffffff", "not valid CBOR"),  # huge declared length
    ("9bffffffffffffffff", "not valid CBOR"),
    ("bb00000000ffffffff", "not valid CBOR"),
    ("7a7fffffff", "not valid CBOR"),
]


@pytest.mark.parametrize(("hex_data", "detail"), REJECTED_CBOR, ids=[h for h, _ in REJECTED_CBOR])
def test_decode_strict_rejects(hex_data: str, detail: str) -> None:
    with pytest.raises(MalformedMessage, match=detail) as info:
        decode_strict(bytes.fromhex(hex_data), allowed_tags={18})
    assert info.value.reason is RejectReason.MALFORMED


def test_decode_strict_depth_limit() -> None:
    ok = bytes([0x81] * MAX_DEPTH) + b"\x00"
    assert decode_strict(ok) is not None
    with pytest.raises(MalformedMessage, match="depth"):
        decode_strict(bytes([0x81] * (MAX_DEPTH + 1)) + b"\x00")
    with pytest.raises(MalformedMessage):
        decode_strict(bytes([0xA1, 0x00] * 9000)[:16384])


def test_decode_strict_size_limit_is_checked_first() -> None:
    with pytest.raises(MalformedMessage, match="limit"):
        decode_strict(b"\x00" * 16385)
    with pytest.raises(MalformedMessage, match="limit"):
        decode_strict(b"\x41\x00", max_bytes=1)


def test_decode_strict_refuses_non_bytes() -> None:
    with pytest.raises(MalformedMessage, match="expected bytes"):
        decode_strict("a2")  # type: ignore[arg-type]


TAG_NUMBERS = [*range(300), 1000, 55799, 2**16, 2**32, 2**64 - 1]


@pytest.mark.parametrize("tag", TAG_NUMBERS)
def test_every_tag_is_refused_unless_allowed(tag: int) -> None:
    data = encode_deterministic(cbor2.CBORTag(tag, 0))
    with pytest.raises(MalformedMessage, match=f"tag {tag} is not allowed"):
        decode_strict(data)
    if tag != 25:  # 25 is a stringref: cbor2 checks its own rules first
        decoded = decode_strict(data, allowed_tags={tag})
        assert isinstance(decoded, cbor2.CBORTag)
        assert decoded.tag == tag


def test_kind_name() -> None:
    values: tuple[object, ...] = (None, True, 1, 1.0, "", b"", [], (), {})
    assert [kind_name(v) for v in values] == [
        "null",
        "bool",
        "integer",
        "float",
        "text string",
        "byte string",
        "array",
        "array",
        "map",
    ]


# ---------------------------------------------------------------------------------------------
# Payload field rules
# ---------------------------------------------------------------------------------------------

LOT = "01/09506000134352/10/EGG-2026-001"
LOT2 = "01/09506000134352/10/EGG-2026-002"
CARTON = "01/09506000134369/21/C00001"


def reading_map() -> dict[str, Any]:
    return {
        "v": 1,
        "device": "farm-linden-barn-2",
        "seq": 1,
        "time": 1_767_258_000_000,
        "products": [LOT],
        "type": "reading",
        "sensors": [{"type": "Temperature", "value": 4.5, "uom": "CEL"}],
    }


def event_map() -> dict[str, Any]:
    return {
        "v": 1,
        "device": "packer-nord-line-1",
        "seq": 7,
        "time": 1_767_258_000_000,
        "products": [CARTON],
        "type": "event",
        "step": "packing",
        "parents": [LOT],
        "location": "414/9506000999999",
        "data": {"eggs_per_carton": 10, "grade": "A"},
    }


Mutation = Callable[[dict[str, Any]], object]


def _set(name: str, value: object) -> Mutation:
    def apply(m: dict[str, Any]) -> None:
        m[name] = value

    return apply


def _delete(name: str) -> Mutation:
    def apply(m: dict[str, Any]) -> None:
        del m[name]

    return apply


def _sensor(name: str, value: object) -> Mutation:
    def apply(m: dict[str, Any]) -> None:
        m["sensors"][0][name] = value

    return apply


def _nest(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value  # type: ignore[no-any-return]


READING_RULES: list[tuple[str, Mutation, str]] = [
    ("unknown field", _set("battery", 87), "unknown field 'battery'"),
    ("int key", _set(1, 2), "keys must be text"),  # type: ignore[arg-type]
    ("missing v", _delete("v"), "lacks required field 'v'"),
    ("missing device", _delete("device"), "lacks required field 'device'"),
    ("missing time", _delete("time"), "lacks required field 'time'"),
    ("missing products", _delete("products"), "lacks required field 'products'"),
    ("missing type", _delete("type"), "lacks required field 'type'"),
    ("v=2", _set("v", 2), "v must be 1, got 2"),
    ("v=1.0", _set("v", 1.0), "v must be 1, got 1.0"),
    ("v=true", _set("v", True), "v must be 1, got True"),
    ("type unknown", _set("type", "alarm"), "type must be 'reading' or 'event'"),
    ("device bad", _set("device", "Barn_2"), "device: device id must match"),
    ("device short", _set("device", "ab"), "device id must match"),
    ("device long", _set("device", "a" * 65), "device id must match"),
    ("device not text", _set("device", b"barn"), "device must be text"),
    ("seq 0", _set("seq", 0), "seq must be an integer >= 1, got 0"),
    ("seq negative", _set("seq", -5), "seq must be an integer >= 1, got -5"),
    ("seq 2**63", _set("seq", 2**63), "seq must be an integer >= 1"),
    ("seq float", _set("seq", 1.0), "seq must be an integer >= 1, got 1.0"),
    ("seq bool", _set("seq", True), "seq must be an integer >= 1, got True"),
    ("seq text", _set("seq", "1"), "seq must be an integer"),
    ("time negative", _set("time", -1), "time must be an integer in 0..9007199254740992"),
    ("time 2**53+1", _set("time", 2**53 + 1), "milliseconds since the Unix epoch"),
    ("time float", _set("time", 1.5), "time must be an integer"),
    ("products not array", _set("products", LOT), "products must be an array"),
    ("products empty", _set("products", []), "products must hold 1 to 64 product keys, got 0"),
    ("products 65", _set("products", [f"01/09506000134352/10/L{i}" for i in range(65)]),
     "at most 64 product keys, got 65"),
    ("products duplicate", _set("products", [LOT, LOT]), "products[1]: duplicate product key"),
    ("product not text", _set("products", [1]), "products[0] must be text"),
    ("product GTIN-13", _set("products", ["01/9506000134352/10/L1"]), "not in canonical form"),
    ("product leading slash", _set("products", ["/" + LOT]), "not in canonical form"),
    ("product lower pct", _set("products", ["01/09506000134352/10/A%2fB"]),
     "not in canonical form"),
    ("product check digit", _set("products", ["01/09506000134353/10/L1"]), "check digit"),
    ("product no lot or serial", _set("products", ["01/09506000134352"]), "products[0]"),
    ("reading with step", _set("step", "shipping"), "a reading must not have 'step'"),
    ("reading with parents", _set("parents", [LOT2]), "a reading must not have 'parents'"),
    ("reading with data", _set("data", {}), "a reading must not have 'data'"),
    ("reading with location", _set("location", "x"), "a reading must not have 'location'"),
    ("no sensors", _delete("sensors"), "a reading must have 'sensors'"),
    ("sensors empty", _set("sensors", []), "sensors must hold 1 to 64 entries, got 0"),
    ("sensors 65", _set("sensors", [{"type": "Count", "value": 1, "uom": "C62"}] * 65),
     "sensors must hold 1 to 64 entries, got 65"),
    ("sensors not array", _set("sensors", {}), "sensors must be an array"),
    ("sensor not map", _set("sensors", [1]), "sensors[0] must be a map"),
    ("sensor unknown key", _sensor("min", 1), "sensors[0] has unknown field 'min'"),
    ("sensor type unknown", _sensor("type", "Temp"), "EPCIS 2.0 measurement type"),
    ("sensor type lower", _sensor("type", "temperature"), "EPCIS 2.0 measurement type"),
    ("sensor type pH", _sensor("type", "pH"), "EPCIS 2.0 measurement type"),
    ("sensor type gs1 prefix", _sensor("type", "gs1:Temperature"), "EPCIS 2.0 measurement type"),
    ("sensor type not text", _sensor("type", 1), "EPCIS 2.0 measurement type"),
    ("sensor NaN", _sensor("value", math.nan), "sensors[0]: sensor value must be a finite number"),
    ("sensor inf", _sensor("value", math.inf), "finite number"),
    ("sensor -inf", _sensor("value", -math.inf), "finite number"),
    ("sensor bool", _sensor("value", True), "sensor value must be an integer or a float"),
    ("sensor text", _sensor("value", "4.5"), "sensor value must be an integer or a float"),
    ("sensor null", _sensor("value", None), "sensor value must be an integer or a float, got null"),
    ("sensor int 2**63", _sensor("value", 2**63), "sensor value must be an integer"),
    ("uom lower", _sensor("uom", "cel"), "UN/CEFACT Rec 20 code"),
    ("uom long", _sensor("uom", "CELS"), "UN/CEFACT Rec 20 code"),
    ("uom short", _sensor("uom", "C"), "UN/CEFACT Rec 20 code"),
    ("uom symbol", _sensor("uom", "°C"), "UN/CEFACT Rec 20 code"),
    ("uom missing", lambda m: m["sensors"][0].pop("uom"), "sensors[0] lacks required field 'uom'"),
]  # fmt: skip

EVENT_RULES: list[tuple[str, Mutation, str]] = [
    ("event with sensors", _set("sensors", []), "an event must not have 'sensors'"),
    ("no step", _delete("step"), "an event must have 'step'"),
    ("step unknown", _set("step", "laying"), "CBV 2.0 business step"),
    ("step urn", _set("step", "urn:epcglobal:cbv:bizstep:packing"), "CBV 2.0 business step"),
    ("step upper", _set("step", "Packing"), "CBV 2.0 business step"),
    ("step not text", _set("step", 1), "CBV 2.0 business step"),
    ("parents not array", _set("parents", LOT), "parents must be an array"),
    ("parents 65", _set("parents", [f"01/09506000134352/10/L{i}" for i in range(65)]),
     "parents must hold at most 64"),
    ("parents duplicate", _set("parents", [LOT, LOT]), "parents[1]: duplicate product key"),
    ("parent is product", _set("parents", [LOT, CARTON]),
     "parents[1] '01/09506000134369/21/C00001' is also one of the products"),
    ("parent not canonical", _set("parents", ["01/9506000134352/10/L1"]),
     "parents[0]: product key is not in canonical form"),
    ("location not text", _set("location", 414), "location must be text"),
    ("location null", _set("location", None), "location must be text, got null"),
    ("location empty", _set("location", ""), "location must be 1 to 200 characters, got 0"),
    ("location 201", _set("location", "x" * 201), "location must be 1 to 200 characters, got 201"),
    ("location control", _set("location", "barn\n2"), "control characters"),
    ("data not map", _set("data", [1]), "data must be a map, got array"),
    ("data null", _set("data", None), "data must be a map, got null"),
    ("data int key", _set("data", {1: 2}), "data keys must be text"),
    ("data bytes", _set("data", {"raw": b"x"}), "data.raw must be an integer, float, text"),
    ("data nan", _set("data", {"dose": math.nan}), "data.dose must be a finite number"),
    ("data inf in array", _set("data", {"d": [1, math.inf]}), "data.d[1] must be a finite"),
    ("data too deep", _set("data", _nest(5)), "deeper than 4 levels"),
    ("data array too deep", _set("data", {"a": [[[[1]]]]}), "deeper than 4 levels"),
    ("data int too big", _set("data", {"n": 2**63}), "data.n must be an integer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "detail"), [r[1:] for r in READING_RULES], ids=[r[0] for r in READING_RULES]
)
def test_reading_field_rules(mutate: Mutation, detail: str) -> None:
    payload = reading_map()
    mutate(payload)
    with pytest.raises(MalformedMessage, match=re.escape(detail)) as info:
        from_cbor_map(payload)
    assert info.value.reason is RejectReason.MALFORMED


@pytest.mark.parametrize(
    ("mutate", "detail"), [r[1:] for r in EVENT_RULES], ids=[r[0] for r in EVENT_RULES]
)
def test_event_field_rules(mutate: Mutation, detail: str) -> None:
    payload = event_map()
    mutate(payload)
    with pytest.raises(MalformedMessage, match=re.escape(detail)):
        from_cbor_map(payload)


@pytest.mark.parametrize("value", [[], 1, "x", b"x", None])
def test_payload_must_be_a_map(value: object) -> None:
    with pytest.raises(MalformedMessage, match="payload must be a map"):
        from_cbor_map(value)


ACCEPTED: list[tuple[str, Mutation]] = [
    ("seq max", _set("seq", 2**63 - 1)),
    ("time 0", _set("time", 0)),
    ("time 2**53", _set("time", 2**53)),
    ("64 products", _set("products", [f"01/09506000134352/10/L{i}" for i in range(64)])),
    ("int value", _sensor("value", -40)),
    ("int64 min", _sensor("value", -(2**63))),
    ("-0.0", _sensor("value", -0.0)),
    ("uom P1", _sensor("uom", "P1")),
    ("uom C62", _sensor("uom", "C62")),
    ("64 sensors", _set("sensors", [{"type": "Count", "value": 1, "uom": "C62"}] * 64)),
    ("device 64", _set("device", "a" * 64)),
    ("serial key", _set("products", ["01/09506000134369/10/EGG-1/21/P%2F01"])),
]


@pytest.mark.parametrize("mutate", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_reading_boundaries_accepted(mutate: Mutation) -> None:
    payload = reading_map()
    mutate(payload)
    message = from_cbor_map(payload)
    assert isinstance(message, Reading)
    assert message.to_cbor_map() == payload
    assert decode_payload(encode_payload(message)) == message


EVENT_ACCEPTED: list[tuple[str, Mutation]] = [
    ("no optional fields", lambda m: [m.pop(k) for k in ("parents", "location", "data")]),
    ("64 parents", _set("parents", [f"01/09506000134352/10/L{i}" for i in range(64)])),
    ("location 200", _set("location", "x" * 200)),
    ("location unicode", _set("location", "Stall Süd")),
    ("empty data", _set("data", {})),
    ("data depth 4", _set("data", _nest(4))),
    ("data array depth 4", _set("data", {"a": [[[1]]]})),
    ("data all kinds", _set("data", {"a": [1, 2.5, "t", True, None, {"b": []}], "c": -1})),
    ("treatment", _set("data", {"drug": "oxytetracycline", "dose": 2.5, "withdrawal_days": 14})),
    ("test", _set("data", {"disease": "avian influenza", "result": "negative", "lab": "lab-1"})),
    ("shipping", lambda m: m.update(step="shipping", data={"destination": "retailer-x"})),
]


@pytest.mark.parametrize(
    "mutate", [a[1] for a in EVENT_ACCEPTED], ids=[a[0] for a in EVENT_ACCEPTED]
)
def test_event_boundaries_accepted(mutate: Mutation) -> None:
    payload = event_map()
    mutate(payload)
    message = from_cbor_map(payload)
    assert isinstance(message, Event)
    assert message.to_cbor_map() == payload
    assert decode_payload(encode_payload(message)) == message


def test_empty_parents_array_is_accepted_and_means_no_parents() -> None:
    payload = event_map()
    payload["parents"] = []
    message = from_cbor_map(payload)
    assert isinstance(message, Event)
    assert message.parents == ()
    assert "parents" not in message.to_cbor_map()


def test_every_cbv_step_and_epcis_sensor_type_is_accepted() -> None:
    assert len(BUSINESS_STEPS) == 41
    assert len(SENSOR_TYPES) == 72
    for step in BUSINESS_STEPS:
        payload = event_map()
        payload["step"] = step
        assert from_cbor_map(payload).to_cbor_map()["step"] == step
    sensors = [{"type": t, "value": 1, "uom": "C62"} for t in sorted(SENSOR_TYPES)]
    for start in range(0, len(sensors), 64):
        payload = reading_map()
        payload["sensors"] = sensors[start : start + 64]
        assert isinstance(from_cbor_map(payload), Reading)


def test_constructors_check_the_same_rules() -> None:
    lot = ProductKey.parse_canonical(LOT)
    with pytest.raises(MalformedMessage, match="seq must be an integer >= 1, got 0"):
        Reading("barn-1", 0, 0, (lot,), (Sensor("Temperature", 1, "CEL"),))
    with pytest.raises(MalformedMessage, match="sensors must hold 1 to 64"):
        Reading("barn-1", 1, 0, (lot,), ())
    with pytest.raises(MalformedMessage, match="products must hold 1 to 64"):
        Event("barn-1", 1, 0, (), "commissioning")
    with pytest.raises(MalformedMessage, match="is also one of the products"):
        Event("barn-1", 1, 0, (lot,), "packing", parents=(lot,))
    with pytest.raises(MalformedMessage, match="finite"):
        Sensor("Temperature", math.nan, "CEL")
    with pytest.raises(MalformedMessage, match="must be a tuple of ProductKey"):
        Reading("barn-1", 1, 0, [lot], (Sensor("Temperature", 1, "CEL"),))  # type: ignore[arg-type]


def test_event_data_is_frozen_and_message_hashable() -> None:
    lot = ProductKey.parse_canonical(LOT)
    source: dict[str, Any] = {"a": [1, {"b": 2}]}
    event = Event("barn-1", 1, 0, (lot,), "commissioning", data=source)
    source["a"].append(3)
    assert event.to_cbor_map()["data"] == {"a": [1, {"b": 2}]}
    assert event.data is not None
    with pytest.raises(TypeError):
        event.data["a"] = 1  # type: ignore[index]
    assert hash(event) == hash(Event("barn-1", 1, 0, (lot,), "commissioning", data={"a": [1]}))


def test_payload_encoding_is_deterministic_and_sorted() -> None:
    message = from_cbor_map(event_map())
    encoded = encode_payload(message)
    keys = list(cbor2.loads(encoded).keys())
    assert keys == sorted(keys, key=encode_deterministic)
    assert keys == ["v", "seq", "data", "step", "time", "type", "device", "parents", "location",
                    "products"]  # fmt: skip


def test_decode_payload_rejects_tags_and_non_deterministic_bytes() -> None:
    encoded = encode_payload(from_cbor_map(reading_map()))
    with pytest.raises(MalformedMessage, match="payload: trailing bytes"):
        decode_payload(encoded + b"\x00")
    tagged = encode_deterministic({**reading_map(), "time": cbor2.CBORTag(1, 5)})
    with pytest.raises(MalformedMessage, match="payload: CBOR tag 1 is not allowed"):
        decode_payload(tagged)
