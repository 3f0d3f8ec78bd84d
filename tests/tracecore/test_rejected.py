"""A refused message read again: which check refused it, and its bytes decoded as far as they go.

Checked against the protocol's golden vectors (tests/vectors/protocol) and, for robustness,
against any bytes at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracecore.cbor import encode_deterministic
from tracecore.cose import sign_cose
from tracecore.errors import RejectReason
from tracecore.keys import SignerKey
from tracecore.rejected import (
    CHECKS,
    Check,
    DecodedRejection,
    check_path,
    decode_rejected,
    hex_dump,
    refused_by,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "protocol"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text())
MESSAGES = [entry for entry in MANIFEST if entry["kind"] == "message"]
TOPIC = "agritrace/v1/devices/farm-linden-barn-2/up"

#: The form check each malformed vector breaks first; every other malformed vector breaks a
#: payload field rule.
FORM_CHECKS = {
    "malformed_oversize.cbor": Check.SIZE,
    "malformed_not_cbor.cbor": Check.CBOR,
    "malformed_empty.cbor": Check.CBOR,
    "malformed_wrong_tag.cbor": Check.CBOR,
    "malformed_envelope_long_length.cbor": Check.CBOR,
    "malformed_indefinite_array.cbor": Check.CBOR,
    "malformed_trailing_bytes.cbor": Check.CBOR,
    "malformed_untagged.cbor": Check.COSE,
    "malformed_array_of_3.cbor": Check.COSE,
    "malformed_protected_not_bstr.cbor": Check.COSE,
    "malformed_alg_es256.cbor": Check.COSE,
    "malformed_protected_extra.cbor": Check.COSE,
    "malformed_kid_length.cbor": Check.COSE,
    "malformed_unprotected_not_empty.cbor": Check.COSE,
    "malformed_detached_payload.cbor": Check.COSE,
    "malformed_signature_63.cbor": Check.COSE,
    "malformed_payload_unsorted_keys.cbor": Check.PAYLOAD_CBOR,
    "malformed_payload_long_int.cbor": Check.PAYLOAD_CBOR,
    "malformed_payload_long_float.cbor": Check.PAYLOAD_CBOR,
    "malformed_payload_tag.cbor": Check.PAYLOAD_CBOR,
    "malformed_payload_deep_nesting.cbor": Check.PAYLOAD_CBOR,
}


def signer(label: str) -> SignerKey:
    """A deterministic key named ``label``."""
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


def _raw(entry: dict[str, Any]) -> bytes:
    return (VECTORS / entry["file"]).read_bytes()


@pytest.mark.parametrize(
    "entry", [e for e in MESSAGES if e["expect"] == "malformed"], ids=lambda e: e["file"]
)
def test_each_malformed_vector_names_the_form_check_it_breaks(entry: dict[str, Any]) -> None:
    """Parsing the stored bytes again finds the check a malformed message failed."""
    expected = FORM_CHECKS.get(entry["file"], Check.FIELDS)
    assert refused_by(RejectReason.MALFORMED, _raw(entry), TOPIC) is expected


@pytest.mark.parametrize(
    "entry", [e for e in MESSAGES if e["expect"] != "malformed"], ids=lambda e: e["file"]
)
def test_well_formed_bytes_pass_every_form_check(entry: dict[str, Any]) -> None:
    """Bytes that parse (valid, or refused later) name no form check; other reasons their own."""
    raw = _raw(entry)
    assert refused_by(RejectReason.MALFORMED, raw, TOPIC) is None
    assert refused_by(RejectReason.BAD_SIGNATURE, raw, TOPIC) is Check.SIGNATURE
    assert refused_by(RejectReason.UNKNOWN_KEY, raw, TOPIC) is Check.KEY_KNOWN


def test_every_reason_stands_for_a_check() -> None:
    """Every reason but malformed names one check of its own, whatever the bytes."""
    named = {reason: refused_by(reason, b"", TOPIC) for reason in RejectReason}
    assert named.pop(RejectReason.MALFORMED) is Check.CBOR  # no bytes: not one CBOR item
    assert None not in named.values()
    assert len(set(named.values())) == len(named)


@pytest.mark.parametrize(
    "topic",
    ["agritrace/v1/devices/A B/up", "agritrace/v2/devices/dev-a/up", "<b>x</b>", ""],
)
def test_a_bad_topic_is_the_topic_check(topic: str) -> None:
    """A topic ingest cannot attribute is refused before the bytes are looked at."""
    raw = _raw(MESSAGES[0])
    assert refused_by(RejectReason.MALFORMED, raw, topic) is Check.TOPIC


@pytest.mark.parametrize("refused", CHECKS)
def test_the_path_marks_the_checks_before_as_passed(refused: Check) -> None:
    """Before the refusing check everything passed, after it nothing was looked at; a
    too_large message is refused before any other check."""
    steps = check_path(refused)
    assert [step.check for step in steps] == list(CHECKS)
    states = [step.state for step in steps]
    at = CHECKS.index(refused)
    assert states[at] == "refused"
    assert states.count("refused") == 1
    assert set(states[at + 1 :]) <= {"not_reached"}
    if refused is Check.READ_LIMIT:
        assert set(states[1:]) == {"not_reached"}
    else:
        assert set(states[:at]) == {"passed"}


def test_a_valid_message_decodes_whole() -> None:
    """The worked example of docs/protocol.md: header, payload fields, signature."""
    entry = MESSAGES[0]
    assert entry["file"] == "valid_reading.cbor"
    decoded = decode_rejected(_raw(entry))
    kid = hashlib.sha256(bytes.fromhex(entry["public_key_hex"])).digest()[:8].hex()
    assert decoded.kid == kid
    assert decoded.alg == "-8 (EdDSA)"
    assert decoded.profile_error is None
    assert decoded.fields_error is None
    assert decoded.message is not None
    assert decoded.message.device == "farm-linden-barn-2"
    assert decoded.payload is not None
    fields = {(item.depth, item.name): item.value for item in decoded.payload.items}
    assert fields[(1, "device")] == '"farm-linden-barn-2"'
    assert fields[(1, "seq")] == "1"
    assert fields[(3, "value")] in {"4.5", "71"}
    assert decoded.signature is not None
    assert decoded.signature.startswith("h'dcf516f8")


def test_a_payload_that_does_not_parse_is_a_hex_dump() -> None:
    """Unsorted payload keys: the envelope parses, the payload is dumped with the complaint."""
    raw = (VECTORS / "malformed_payload_unsorted_keys.cbor").read_bytes()
    decoded = decode_rejected(raw)
    assert decoded.profile_error is None
    assert decoded.payload is not None
    assert decoded.payload.items == ()
    assert decoded.payload.error is not None
    assert "deterministic" in decoded.payload.error
    assert decoded.payload.dump[0].startswith("0000  a7 68 70 72 6f 64 75 63")


def test_not_cbor_is_a_hex_dump_of_the_message() -> None:
    """Bytes that are no CBOR at all: nothing decoded, the first bytes dumped."""
    decoded = decode_rejected(b"\x00\x01hello<script>", prefix_only=True)
    assert decoded.envelope.error is not None
    line = "0000  00 01 68 65 6c 6c 6f 3c 73 63 72 69 70 74 3e     |..hello<script>|"
    assert decoded.envelope.dump == (line,)
    assert decoded.prefix_only
    assert decoded.payload is None


def test_long_and_invisible_text_is_cut_and_escaped() -> None:
    """Text values and keys full of control characters stay short and visible."""
    payload = encode_deterministic({"\x01" * 300: "\x00" * 1000, "v": "a" * 5000})
    decoded = decode_rejected(sign_cose(payload, signer("x").signing_key))
    assert decoded.payload is not None
    _bounded(decoded)
    values = {item.name: item.value for item in decoded.payload.items}
    assert values["v"].endswith("… (5000 characters)")
    (escaped,) = [name for name in values if name.startswith('"')]
    assert escaped.startswith('"\\u0001')
    assert all(value.isprintable() for value in values.values())


def test_hex_dump_stops_at_its_limit() -> None:
    """A dump shows 16 bytes a line, up to its limit."""
    lines = hex_dump(bytes(range(256)) * 4)
    assert len(lines) == 16
    assert lines[1].startswith("0010  10 11 12")
    assert lines[-1].endswith("|................|")


def _bounded(decoded: DecodedRejection) -> None:
    parts = [decoded.envelope, decoded.protected, decoded.unprotected, decoded.payload]
    for part in parts:
        if part is None:
            continue
        assert len(part.items) <= 400
        assert len(part.dump) <= 16
        for item in part.items:
            assert len(item.value) <= 240
            assert len(item.name) <= 240


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_decode_without_an_error(raw: bytes) -> None:
    """Whatever a device sent, reading it again raises nothing and shows bounded text."""
    _bounded(decode_rejected(raw))
    for reason in RejectReason:
        refused_by(reason, raw, TOPIC)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_changed_messages_decode_without_an_error(data: st.DataObject) -> None:
    """The vectors with bytes changed, cut or added decode as far as they go."""
    raw = bytearray(_raw(data.draw(st.sampled_from([e for e in MESSAGES if _raw(e)]))))
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=8))
    _bounded(decode_rejected(bytes(raw)))
    refused_by(RejectReason.MALFORMED, bytes(raw), TOPIC)
