"""The key_rotation payload: field rules, and its proof of possession (docs/protocol.md §5)."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.signing
import pytest

from tracecore.cbor import encode_deterministic
from tracecore.cose import parse_message, sign_cose, sign_message
from tracecore.errors import BadRotation, MalformedMessage, RejectReason
from tracecore.keys import device_kid
from tracecore.message import (
    ROTATION_POP_CONTEXT,
    KeyRotation,
    decode_payload,
    encode_payload,
    rotation_pop_input,
    sign_rotation_pop,
    verify_rotation_pop,
)

OLD = nacl.signing.SigningKey(hashlib.sha256(b"rotation-test/old").digest())
NEW = nacl.signing.SigningKey(hashlib.sha256(b"rotation-test/new").digest())
OLD_KID = device_kid(bytes(OLD.verify_key))
DEVICE = "farm-gw-1"
T = 1_767_258_000_000


def _rotation(**changes: Any) -> KeyRotation:
    fields: dict[str, Any] = {
        "device": DEVICE,
        "seq": 7,
        "time": T,
        "new_key": bytes(NEW.verify_key),
        "pop": sign_rotation_pop(NEW, DEVICE, 7, T, OLD_KID),
    }
    return KeyRotation(**(fields | changes))


def _payload(**changes: Any) -> dict[str, Any]:
    result = _rotation().to_cbor_map()
    for name, value in changes.items():
        if value is None:
            result.pop(name)
        else:
            result[name] = value
    return result


def test_rotation_round_trips_and_names_no_product() -> None:
    """Encoding then parsing a signed rotation gives it back; it has no products."""
    rotation = _rotation()
    signed = parse_message(sign_message(rotation, OLD))
    assert signed.message == rotation
    assert signed.message.products == ()
    assert signed.kid == OLD_KID
    assert decode_payload(encode_payload(rotation)) == rotation
    assert set(rotation.to_cbor_map()) == {"v", "device", "seq", "time", "type", "new_key", "pop"}


def test_pop_verifies_for_the_rotation_it_was_made_for() -> None:
    """The new key's signature over the domain-separated array is a valid proof."""
    rotation = _rotation()
    verify_rotation_pop(rotation, OLD_KID)
    expected = encode_deterministic(
        [ROTATION_POP_CONTEXT, DEVICE, 7, T, OLD_KID, bytes(NEW.verify_key)]
    )
    assert rotation_pop_input(DEVICE, 7, T, OLD_KID, bytes(NEW.verify_key)) == expected
    assert expected.startswith(b"\x86\x78\x19agritrace key rotation v1")


@pytest.mark.parametrize(
    ("what", "rotation", "old_kid"),
    [
        ("another seq", _rotation(seq=8), OLD_KID),
        ("another time", _rotation(time=T + 1), OLD_KID),
        ("another device", _rotation(device="farm-gw-2"), OLD_KID),
        ("another old kid", _rotation(), bytes(8)),
        ("another new key", _rotation(new_key=bytes(OLD.verify_key)), OLD_KID),
        ("signed by the old key", _rotation(pop=sign_rotation_pop(OLD, DEVICE, 7, T, OLD_KID)),
         OLD_KID),
        ("zero signature", _rotation(pop=bytes(64)), OLD_KID),
    ],
)  # fmt: skip
def test_pop_bound_to_everything(what: str, rotation: KeyRotation, old_kid: bytes) -> None:
    """A proof made for one rotation does not verify for any other."""
    with pytest.raises(BadRotation, match="pop does not verify") as info:
        verify_rotation_pop(rotation, old_kid)
    assert info.value.reason is RejectReason.BAD_ROTATION, what


def test_pop_refuses_a_small_order_new_key() -> None:
    """A new key that is not a point of the prime-order subgroup is refused, not checked."""
    identity = bytes([1]) + bytes(31)  # the neutral element: any "signature" could match it
    with pytest.raises(BadRotation, match="not a valid Ed25519 public key"):
        verify_rotation_pop(_rotation(new_key=identity), OLD_KID)


def test_parsing_does_not_check_the_pop() -> None:
    """Parse, then verify: a bad pop parses; verifying it is a separate call."""
    raw = sign_message(_rotation(pop=bytes(64)), OLD)
    signed = parse_message(raw)
    signed.verify(bytes(OLD.verify_key))
    assert isinstance(signed.message, KeyRotation)
    with pytest.raises(BadRotation):
        verify_rotation_pop(signed.message, signed.kid)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_payload(new_key=bytes(31)), "new_key must be 32 bytes"),
        (_payload(new_key=bytes(33)), "new_key must be 32 bytes"),
        (_payload(new_key="00" * 32), "new_key must be a byte string"),
        (_payload(pop=bytes(63)), "pop must be 64 bytes"),
        (_payload(pop=None), "lacks required field 'pop'"),
        (_payload(new_key=None), "lacks required field 'new_key'"),
        (_payload(products=["01/09506000134352/10/L1"]), "unknown field 'products'"),
        (_payload(sensors=[]), "unknown field 'sensors'"),
        (_payload(v=2), "v must be 1"),
        (_payload(seq=0), "seq must be an integer >= 1"),
        (_payload(time=-1), "time must be an integer"),
        (_payload(device="Gateway 1"), "device"),
    ],
)
def test_field_rules(payload: dict[str, Any], message: str) -> None:
    """Every broken field rule of a rotation is malformed, naming the field."""
    raw = sign_cose(encode_deterministic(payload), OLD)
    with pytest.raises(MalformedMessage, match=message):
        parse_message(raw)


def test_reading_keeps_its_rules() -> None:
    """A reading with rotation fields is still refused by the reading rules, as before."""
    payload = _payload()
    payload["type"] = "reading"
    with pytest.raises(MalformedMessage, match="unknown field 'new_key'"):
        parse_message(sign_cose(encode_deterministic(payload), OLD))
