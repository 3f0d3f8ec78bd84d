"""Interop with an independent COSE library: pycose verifies ours, we verify pycose's.

design.md, "Device protocol": "Any COSE library must be able to verify it." pycose is a test-only
dependency. pycose 1.1.0 cannot decode *tagged* messages when cbor2 >= 6 is installed (cbor2 6
decodes the array inside a tag as a tuple and pycose checks for ``list``; upstream issue
TimothyClaeys/pycose#141; the map inside comes as a frozendict too), so :func:`pycose_decode`
falls back to pycose's own ``from_cose_obj`` on the decoded array, as a list with a dict: header
parsing and signature checking are still pycose's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from tracecore.cose import parse_message, sign_message
from tracecore.errors import BadSignature
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import Event, Reading, Sensor, encode_payload

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "protocol"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
VALID = [e for e in MANIFEST if e["expect"] == "valid"]
SEED = hashlib.sha256(b"test_pycose_interop").digest()
LOT = ProductKey.parse_canonical("01/09506000134352/10/EGG-2026-001")
MESSAGES: list[Reading | Event] = [
    Reading("farm-linden-barn-2", 1, 0, (LOT,), (Sensor("Temperature", -1.25, "CEL"),)),
    Event(
        "packer-nord-line-1",
        2**40,
        2**53,
        (ProductKey.parse_canonical("01/09506000134369/21/C00001"),),
        "packing",
        parents=(LOT,),
        location="414/9506000999999",
        data={"n": [1, 2.5, None, True, {"x": "y"}]},
    ),
]


def pycose_decode(raw: bytes) -> Sign1Message:
    """Decode a tagged COSE_Sign1 with pycose (working around pycose#141 under cbor2 6)."""
    try:
        return Sign1Message.decode(raw)
    except TypeError:
        item = cbor2.loads(raw)
        assert item.tag == 18
        # cbor2 6 also gives the unprotected map inside a tag as a frozendict; pycose wants dict.
        protected, unprotected, payload, signature = item.value
        return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def okp_public(public_key: bytes) -> OKPKey:
    return OKPKey(crv=Ed25519, x=public_key)


@pytest.mark.parametrize("entry", VALID, ids=[e["file"] for e in VALID])
def test_pycose_verifies_valid_vectors(entry: dict[str, Any]) -> None:
    message = pycose_decode((VECTORS / entry["file"]).read_bytes())
    public_key = bytes.fromhex(entry["public_key_hex"])
    assert message.phdr[Algorithm] is EdDSA
    assert message.phdr[KID] == device_kid(public_key)
    assert message.uhdr == {}
    message.key = okp_public(public_key)
    assert message.verify_signature()


@pytest.mark.parametrize("message", MESSAGES, ids=["reading", "event"])
def test_pycose_verifies_what_we_sign(message: Reading | Event) -> None:
    key = nacl.signing.SigningKey(SEED)
    decoded = pycose_decode(sign_message(message, key))
    decoded.key = okp_public(bytes(key.verify_key))
    assert decoded.verify_signature()
    assert decoded.payload == encode_payload(message)


def test_pycose_rejects_a_tampered_message() -> None:
    key = nacl.signing.SigningKey(SEED)
    raw = bytearray(sign_message(MESSAGES[0], key))
    raw[-1] ^= 0x40
    decoded = pycose_decode(bytes(raw))
    decoded.key = okp_public(bytes(key.verify_key))
    assert not decoded.verify_signature()


@pytest.mark.parametrize("message", MESSAGES, ids=["reading", "event"])
def test_we_verify_what_pycose_signs(message: Reading | Event) -> None:
    key = nacl.signing.SigningKey(SEED)
    public_key = bytes(key.verify_key)
    cose = Sign1Message(
        phdr={Algorithm: EdDSA, KID: device_kid(public_key)},
        payload=encode_payload(message),
    )
    cose.key = OKPKey(crv=Ed25519, x=public_key, d=SEED)
    raw = cose.encode(tag=True)
    signed = parse_message(raw)
    signed.verify(public_key)
    assert signed.message == message
    # Same header, same payload, deterministic Ed25519: byte-identical to our own signing.
    assert raw == sign_message(message, key)


def test_pycose_signature_under_other_key_is_bad_signature() -> None:
    key = nacl.signing.SigningKey(SEED)
    other_seed = hashlib.sha256(b"other").digest()
    other_public = bytes(nacl.signing.SigningKey(other_seed).verify_key)
    cose = Sign1Message(
        phdr={Algorithm: EdDSA, KID: device_kid(bytes(key.verify_key))},
        payload=encode_payload(MESSAGES[0]),
    )
    cose.key = OKPKey(crv=Ed25519, x=other_public, d=other_seed)
    signed = parse_message(cose.encode(tag=True))
    with pytest.raises(BadSignature):
        signed.verify(bytes(key.verify_key))
