"""Golden vectors of the device protocol (tests/vectors/protocol) and the docs' worked example."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest

from tracecore.cose import SignedMessage, parse_message, sig_structure, sign_message
from tracecore.errors import MessageRejected, RejectReason
from tracecore.keys import device_kid
from tracecore.message import (
    Event,
    KeyRotation,
    Reading,
    from_cbor_map,
    rotation_pop_input,
    verify_rotation_pop,
)
from tracecore.receipt import SignedReceipt, parse_receipt, sign_receipt

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "protocol"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
BY_FILE = {entry["file"]: entry for entry in MANIFEST}
MESSAGE_TYPES = {"reading": Reading, "event": Event, "key_rotation": KeyRotation}


def _outcome(entry: dict[str, Any]) -> tuple[str, SignedMessage | SignedReceipt | None]:
    raw = (VECTORS / entry["file"]).read_bytes()
    parse = parse_receipt if entry["kind"] == "receipt" else parse_message
    try:
        parsed = parse(raw)
        parsed.verify(bytes.fromhex(entry["public_key_hex"]))
        if isinstance(parsed, SignedMessage) and isinstance(parsed.message, KeyRotation):
            verify_rotation_pop(parsed.message, parsed.kid)  # docs/protocol.md §5
    except MessageRejected as exc:
        return exc.reason.value, None
    return "valid", parsed


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_vector_outcome(entry: dict[str, Any]) -> None:
    outcome, parsed = _outcome(entry)
    assert outcome == entry["expect"], entry["description"]
    if outcome != "valid":
        return
    assert parsed is not None
    assert parsed.raw == (VECTORS / entry["file"]).read_bytes()
    if entry["kind"] == "message":
        assert isinstance(parsed, SignedMessage)
        assert isinstance(parsed.message, MESSAGE_TYPES[entry["message_type"]])


@pytest.mark.parametrize(
    "entry",
    [e for e in MANIFEST if e["expect"] == "valid"],
    ids=[e["file"] for e in MANIFEST if e["expect"] == "valid"],
)
def test_resigning_reproduces_valid_vector(entry: dict[str, Any]) -> None:
    raw = (VECTORS / entry["file"]).read_bytes()
    key = nacl.signing.SigningKey(bytes.fromhex(entry["seed_hex"]))
    assert bytes(key.verify_key).hex() == entry["public_key_hex"]
    if entry["kind"] == "receipt":
        assert sign_receipt(parse_receipt(raw).receipt, key) == raw
    else:
        assert sign_message(parse_message(raw).message, key) == raw


def test_manifest_covers_the_protocol() -> None:
    files = {path.name for path in VECTORS.glob("*.cbor")}
    assert files == set(BY_FILE), "every .cbor file is in the manifest and vice versa"
    expects = Counter(e["expect"] for e in MANIFEST if e["kind"] == "message")
    assert expects["valid"] >= 4
    assert expects[RejectReason.MALFORMED.value] >= 20
    assert expects[RejectReason.BAD_SIGNATURE.value] >= 2
    assert expects[RejectReason.UNKNOWN_KEY.value] >= 2
    types = Counter(e.get("message_type") for e in MANIFEST if e["expect"] == "valid")
    assert types["reading"] >= 2
    assert types["event"] >= 2
    assert any(e["kind"] == "receipt" and e["expect"] == "valid" for e in MANIFEST)
    assert types["key_rotation"] >= 1
    assert expects[RejectReason.BAD_ROTATION.value] >= 4
    for entry in MANIFEST:
        assert set(entry) >= {"file", "public_key_hex", "expect", "description"}
        assert entry["expect"] == "valid" or entry["expect"] in set(RejectReason)


def test_valid_event_with_parents_exists() -> None:
    raw = (VECTORS / "valid_event_packing_parents.cbor").read_bytes()
    message = parse_message(raw).message
    assert isinstance(message, Event)
    assert message.step == "packing"
    assert message.parents
    assert len(message.products) == 3


def test_receipt_vector_matches_its_message() -> None:
    receipt_entry = BY_FILE["receipt_valid.cbor"]
    receipt = parse_receipt((VECTORS / "receipt_valid.cbor").read_bytes())
    message = parse_message((VECTORS / receipt_entry["matches"]).read_bytes())
    assert receipt.matches(message)
    other = parse_message((VECTORS / "valid_event_commissioning.cbor").read_bytes())
    assert not receipt.matches(other)


def test_rotation_vector_names_the_key_of_its_new_seed() -> None:
    """The valid rotation's new_key is the key of its new_seed_hex, whose pop verifies."""
    entry = BY_FILE["valid_key_rotation.cbor"]
    signed = parse_message((VECTORS / entry["file"]).read_bytes())
    rotation = signed.message
    assert isinstance(rotation, KeyRotation)
    new = nacl.signing.SigningKey(bytes.fromhex(entry["new_seed_hex"]))
    assert rotation.new_key == bytes(new.verify_key)
    assert signed.kid == device_kid(bytes.fromhex(entry["public_key_hex"]))
    signed_bytes = rotation_pop_input(
        rotation.device, rotation.seq, rotation.time, signed.kid, rotation.new_key
    )
    assert new.sign(signed_bytes).signature == rotation.pop
    assert rotation.products == ()


def test_oversize_vector_is_otherwise_valid() -> None:
    """The oversize vector is refused for its size alone: its payload would pass."""
    raw = (VECTORS / "malformed_oversize.cbor").read_bytes()
    assert len(raw) > 16384
    payload = cbor2.loads(raw).value[2]
    assert isinstance(from_cbor_map(cbor2.loads(payload)), Event)


# ---------------------------------------------------------------------------------------------
# docs/protocol.md worked example: every <!-- hex:NAME --> block must equal the computed value
# ---------------------------------------------------------------------------------------------

_HEX_BLOCK = re.compile(r"<!-- hex:([a-z0-9_]+) -->\s*```text\n([0-9a-f\s]+?)```")


def _doc_hex() -> dict[str, bytes]:
    text = PROTOCOL_DOC.read_text("utf-8")
    blocks: dict[str, bytes] = {}
    for name, body in _HEX_BLOCK.findall(text):
        assert name not in blocks, f"hex block {name} appears twice"
        blocks[name] = bytes.fromhex("".join(body.split()))
    return blocks


def _expected_example() -> dict[str, bytes]:
    raw = (VECTORS / "valid_reading.cbor").read_bytes()
    entry = BY_FILE["valid_reading.cbor"]
    signed = parse_message(raw)
    receipt_raw = (VECTORS / "receipt_valid.cbor").read_bytes()
    receipt_entry = BY_FILE["receipt_valid.cbor"]
    log_public = bytes.fromhex(receipt_entry["public_key_hex"])
    return {
        "seed": bytes.fromhex(entry["seed_hex"]),
        "public_key": bytes.fromhex(entry["public_key_hex"]),
        "kid": device_kid(bytes.fromhex(entry["public_key_hex"])),
        "protected": signed.protected,
        "payload": signed.payload,
        "sig_structure": sig_structure(signed.protected, signed.payload),
        "signature": signed.signature,
        "message": raw,
        "message_sha256": hashlib.sha256(raw).digest(),
        "log_seed": bytes.fromhex(receipt_entry["seed_hex"]),
        "log_public_key": log_public,
        "log_kid": device_kid(log_public),
        "receipt_payload": parse_receipt(receipt_raw).payload,
        "receipt": receipt_raw,
        **_rotation_example(),
    }


def _rotation_example() -> dict[str, bytes]:
    entry = BY_FILE["valid_key_rotation.cbor"]
    raw = (VECTORS / entry["file"]).read_bytes()
    signed = parse_message(raw)
    rotation = signed.message
    assert isinstance(rotation, KeyRotation)
    return {
        "rotation_new_seed": bytes.fromhex(entry["new_seed_hex"]),
        "rotation_new_key": rotation.new_key,
        "rotation_new_kid": device_kid(rotation.new_key),
        "rotation_pop_input": rotation_pop_input(
            rotation.device, rotation.seq, rotation.time, signed.kid, rotation.new_key
        ),
        "rotation_pop": rotation.pop,
        "rotation_payload": signed.payload,
        "rotation_message": raw,
    }


def test_protocol_doc_worked_example_matches_vectors() -> None:
    blocks = _doc_hex()
    expected = _expected_example()
    assert set(blocks) == set(expected)
    for name, value in expected.items():
        assert blocks[name].hex() == value.hex(), f"docs/protocol.md hex:{name} drifted"


def test_worked_example_is_consistent() -> None:
    """The seed in the doc signs the doc's Sig_structure into the doc's signature."""
    blocks = _doc_hex()
    key = nacl.signing.SigningKey(blocks["seed"])
    assert bytes(key.verify_key) == blocks["public_key"]
    assert hashlib.sha256(blocks["public_key"]).digest()[:8] == blocks["kid"]
    assert key.sign(blocks["sig_structure"]).signature == blocks["signature"]
    assert (
        blocks["seed"] == hashlib.sha256(b"agritrace/vectors/protocol/farm-linden-barn-2").digest()
    )
    assert blocks["log_seed"] == hashlib.sha256(b"agritrace/vectors/protocol/log").digest()
