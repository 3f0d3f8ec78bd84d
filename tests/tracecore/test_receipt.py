"""Receipts signed by the log key (tracecore.receipt)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import nacl.signing
import pytest

from tracecore.cbor import encode_deterministic
from tracecore.cose import parse_message, sign_cose, sign_message
from tracecore.errors import BadSignature, MalformedMessage, UnknownKey
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import Reading, Sensor
from tracecore.receipt import Receipt, SignedReceipt, parse_receipt, sign_receipt

LOG_KEY = nacl.signing.SigningKey(hashlib.sha256(b"test_receipt log").digest())
DEVICE_KEY = nacl.signing.SigningKey(hashlib.sha256(b"test_receipt device").digest())
LOT = ProductKey.parse_canonical("01/09506000134352/10/EGG-2026-001")
READING = Reading("farm-linden-barn-2", 9, 1_767_258_000_000, (LOT,), (Sensor("Mass", 61, "GRM"),))
MESSAGE = parse_message(sign_message(READING, DEVICE_KEY))
ENTRY = hashlib.sha256(b"\x00entry").digest()


def receipt(**changes: Any) -> Receipt:
    fields: dict[str, Any] = {
        "device": READING.device,
        "seq": READING.seq,
        "index": 0,
        "entry": ENTRY,
        "msg": MESSAGE.sha256,
        "time": READING.time + 5,
    }
    fields.update(changes)
    return Receipt(**fields)


def test_round_trip_and_matches() -> None:
    raw = sign_receipt(receipt(), LOG_KEY)
    signed = parse_receipt(raw)
    assert isinstance(signed, SignedReceipt)
    assert signed.receipt == receipt()
    assert signed.kid == device_kid(bytes(LOG_KEY.verify_key))
    assert signed.sha256 == hashlib.sha256(raw).digest()
    signed.verify(bytes(LOG_KEY.verify_key))
    assert signed.matches(MESSAGE)
    assert sign_receipt(receipt(), LOG_KEY) == raw


def test_payload_is_the_documented_map() -> None:
    signed = parse_receipt(sign_receipt(receipt(index=41), LOG_KEY))
    assert signed.payload == encode_deterministic(
        {
            "v": 1,
            "device": "farm-linden-barn-2",
            "seq": 9,
            "index": 41,
            "entry": ENTRY,
            "msg": MESSAGE.sha256,
            "time": READING.time + 5,
        }
    )


@pytest.mark.parametrize(
    "changes",
    [{"device": "farm-linden-barn-3"}, {"seq": 10}, {"msg": hashlib.sha256(b"other").digest()}],
    ids=["device", "seq", "msg"],
)
def test_does_not_match_another_message(changes: dict[str, Any]) -> None:
    signed = parse_receipt(sign_receipt(receipt(**changes), LOG_KEY))
    assert not signed.matches(MESSAGE)


def test_verify_with_device_key_is_unknown_key() -> None:
    signed = parse_receipt(sign_receipt(receipt(), DEVICE_KEY))
    with pytest.raises(UnknownKey):
        signed.verify(bytes(LOG_KEY.verify_key))


def test_tampered_receipt_is_bad_signature() -> None:
    raw = bytearray(sign_receipt(receipt(index=5), LOG_KEY))
    raw[raw.index(b"eindex") + 6] = 6  # index 5 -> 6
    signed = parse_receipt(bytes(raw))
    assert signed.receipt.index == 6
    with pytest.raises(BadSignature):
        signed.verify(bytes(LOG_KEY.verify_key))


FIELD_RULES: list[tuple[dict[str, Any], str]] = [
    ({"device": "Barn"}, "receipt device: device id must match"),
    ({"device": 5}, "receipt device must be text"),
    ({"seq": 0}, "receipt seq must be an integer in 1.."),
    ({"seq": True}, "receipt seq must be an integer"),
    ({"index": -1}, "receipt index must be an integer in 0.."),
    ({"index": 2**63}, "receipt index must be an integer in 0.."),
    ({"time": 2**53 + 1}, "receipt time must be an integer in 0..9007199254740992"),
    (
        {"entry": bytes(31)},
        "receipt entry must be a byte string of 32 bytes, got byte string of 31",
    ),
    ({"entry": "00" * 32}, "receipt entry must be a byte string of 32 bytes, got text string"),
    ({"msg": bytes(33)}, "receipt msg must be a byte string of 32 bytes"),
]


@pytest.mark.parametrize(("changes", "detail"), FIELD_RULES)
def test_receipt_field_rules(changes: dict[str, Any], detail: str) -> None:
    with pytest.raises(MalformedMessage, match=re.escape(detail)):
        receipt(**changes)
    payload = {**receipt().to_cbor_map(), **changes}
    with pytest.raises(MalformedMessage, match=re.escape(detail)):
        parse_receipt(sign_cose(encode_deterministic(payload), LOG_KEY))


@pytest.mark.parametrize(
    ("payload_change", "detail"),
    [
        ({"v": 2}, "receipt v must be 1, got 2"),
        ({"extra": 1}, "receipt has unknown field 'extra'"),
        ({1: 1}, "receipt payload keys must be text"),
    ],
)
def test_receipt_map_rules(payload_change: dict[Any, Any], detail: str) -> None:
    payload = {**receipt().to_cbor_map(), **payload_change}
    with pytest.raises(MalformedMessage, match=re.escape(detail)):
        parse_receipt(sign_cose(encode_deterministic(payload), LOG_KEY))


def test_receipt_missing_field_and_not_map() -> None:
    payload = receipt().to_cbor_map()
    del payload["entry"]
    with pytest.raises(MalformedMessage, match="lacks required field 'entry'"):
        parse_receipt(sign_cose(encode_deterministic(payload), LOG_KEY))
    with pytest.raises(MalformedMessage, match="receipt payload must be a map, got array"):
        parse_receipt(sign_cose(b"\x80", LOG_KEY))


def test_device_message_is_not_a_receipt() -> None:
    with pytest.raises(MalformedMessage, match="unknown field"):
        parse_receipt(MESSAGE.raw)
