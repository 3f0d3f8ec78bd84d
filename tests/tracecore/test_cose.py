"""COSE_Sign1 envelope: signing, parsing and verifying device messages (tracecore.cose)."""

from __future__ import annotations

import hashlib

import cbor2
import nacl.signing
import pytest

from tracecore.cbor import decode_strict, encode_deterministic
from tracecore.cose import (
    MAX_MESSAGE_BYTES,
    CoseSign1,
    CoseSigner,
    SignedMessage,
    parse_cose,
    parse_message,
    protected_header,
    sig_structure,
    sign_cose,
    sign_message,
)
from tracecore.errors import (
    BadSignature,
    KeyFileError,
    MalformedMessage,
    RejectReason,
    UnknownKey,
)
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import Event, Reading, Sensor, encode_payload

LOT = ProductKey.parse_canonical("01/09506000134352/10/EGG-2026-001")


@pytest.fixture
def device_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"test_cose device").digest())


@pytest.fixture
def other_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"test_cose other").digest())


@pytest.fixture
def reading() -> Reading:
    return Reading(
        device="farm-linden-barn-2",
        seq=1,
        time=1_767_258_000_000,
        products=(LOT,),
        sensors=(Sensor("Temperature", 4.5, "CEL"),),
    )


def public(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def test_round_trip(device_key: nacl.signing.SigningKey, reading: Reading) -> None:
    raw = sign_message(reading, device_key)
    signed = parse_message(raw)
    assert isinstance(signed, SignedMessage)
    assert signed.message == reading
    assert signed.raw == raw
    assert signed.kid == device_kid(public(device_key))
    assert signed.payload == encode_payload(reading)
    assert signed.sha256 == hashlib.sha256(raw).digest()
    signed.verify(public(device_key))
    assert sign_message(reading, device_key) == raw  # Ed25519 is deterministic


def test_wire_layout_byte_by_byte(device_key: nacl.signing.SigningKey, reading: Reading) -> None:
    """RFC 9052 §4.2: d2 84 | bstr(protected) | a0 | bstr(payload) | 5840 signature."""
    raw = sign_message(reading, device_key)
    kid = device_kid(public(device_key))
    protected = bytes.fromhex("a2012704 48") + kid  # {1: -8, 4: h'<kid>'}
    assert protected_header(kid) == protected
    payload = encode_payload(reading)
    assert raw[:2] == b"\xd2\x84"
    assert raw[2:3] == b"\x4d"  # bstr of 13 bytes
    assert raw[3:16] == protected
    assert raw[16:17] == b"\xa0"
    rest = raw[17:]
    payload_head = encode_deterministic(payload)[: -len(payload)]
    assert rest.startswith(payload_head + payload)
    signature_part = rest[len(payload_head) + len(payload) :]
    assert signature_part[:2] == b"\x58\x40"
    assert len(signature_part) == 66
    tbs = sig_structure(protected, payload)
    # RFC 9052 §4.4: ["Signature1", protected, h'', payload]
    assert tbs.startswith(b"\x84\x6aSignature1\x4d" + protected + b"\x40")
    assert decode_strict(tbs) == ["Signature1", protected, b"", payload]
    nacl.signing.VerifyKey(public(device_key)).verify(tbs, signature_part[2:])


def test_verify_wrong_key_is_unknown_key(
    device_key: nacl.signing.SigningKey,
    other_key: nacl.signing.SigningKey,
    reading: Reading,
) -> None:
    signed = parse_message(sign_message(reading, device_key))
    with pytest.raises(UnknownKey) as info:
        signed.verify(public(other_key))
    assert info.value.reason is RejectReason.UNKNOWN_KEY


def test_verify_kid_matches_but_signature_wrong(
    device_key: nacl.signing.SigningKey, other_key: nacl.signing.SigningKey, reading: Reading
) -> None:
    payload = encode_payload(reading)
    protected = protected_header(device_kid(public(device_key)))
    forged = other_key.sign(sig_structure(protected, payload)).signature
    raw = encode_deterministic(cbor2.CBORTag(18, [protected, {}, payload, forged]))
    signed = parse_message(raw)
    with pytest.raises(BadSignature) as info:
        signed.verify(public(device_key))
    assert info.value.reason is RejectReason.BAD_SIGNATURE
    assert isinstance(info.value.__cause__, Exception)


def test_every_signature_bit_matters(device_key: nacl.signing.SigningKey, reading: Reading) -> None:
    raw = sign_message(reading, device_key)
    for bit in range(0, 512, 7):
        tampered = bytearray(raw)
        tampered[len(raw) - 64 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadSignature):
            parse_message(bytes(tampered)).verify(public(device_key))


def test_payload_change_is_bad_signature(
    device_key: nacl.signing.SigningKey, reading: Reading
) -> None:
    raw = bytearray(sign_message(reading, device_key))
    raw[raw.index(b"\xf9\x44\x80") + 2] = 0x81  # 4.5 -> 4.50390625, still deterministic
    signed = parse_message(bytes(raw))
    assert isinstance(signed.message, Reading)
    assert signed.message.sensors[0].value == 4.50390625
    with pytest.raises(BadSignature):
        signed.verify(public(device_key))


def test_verify_rejects_bad_public_key_length(
    device_key: nacl.signing.SigningKey, reading: Reading
) -> None:
    signed = parse_message(sign_message(reading, device_key))
    with pytest.raises(KeyFileError, match="32 bytes"):
        signed.verify(b"\x00" * 31)


def test_generic_layer(device_key: nacl.signing.SigningKey) -> None:
    raw = sign_cose(b"\xa0", device_key)
    cose = parse_cose(raw)
    assert isinstance(cose, CoseSign1)
    assert cose.payload == b"\xa0"
    assert cose.to_be_signed() == sig_structure(cose.protected, b"\xa0")
    assert cose.sha256 == hashlib.sha256(raw).digest()
    cose.verify(public(device_key))
    with pytest.raises(MalformedMessage, match="payload must be a map"):
        parse_message(sign_cose(b"\x80", device_key))


def _envelope(protected: object, unprotected: object, payload: object, sig: object) -> bytes:
    return encode_deterministic(cbor2.CBORTag(18, [protected, unprotected, payload, sig]))


KID = bytes(range(8))
PROTECTED = encode_deterministic({1: -8, 4: KID})
PAYLOAD = b"\xa0"
SIG = bytes(64)

ENVELOPE_CASES: list[tuple[str, bytes, str]] = [
    ("untagged", encode_deterministic([PROTECTED, {}, PAYLOAD, SIG]), "expected CBOR tag 18"),
    ("COSE_Sign tag 98", encode_deterministic(cbor2.CBORTag(98, [PROTECTED, {}, PAYLOAD, SIG])),
     "tag 98 is not allowed"),
    ("tag of a map", encode_deterministic(cbor2.CBORTag(18, {})), "array of 4 items, got map"),
    ("array of 5", encode_deterministic(cbor2.CBORTag(18, [PROTECTED, {}, PAYLOAD, SIG, 0])),
     "array of 4 items, got array of 5 items"),
    ("protected map", _envelope({1: -8, 4: KID}, {}, PAYLOAD, SIG),
     "protected header must be a byte string, got map"),
    ("protected empty bstr", _envelope(b"", {}, PAYLOAD, SIG), "protected header: empty input"),
    ("protected empty map", _envelope(b"\xa0", {}, PAYLOAD, SIG), "lacks alg"),
    ("protected not map", _envelope(b"\x80", {}, PAYLOAD, SIG), "must be a map, got array"),
    ("protected non-deterministic", _envelope(bytes.fromhex("a2042701") + b"", {}, PAYLOAD, SIG),
     "not valid CBOR"),
    ("protected unsorted", _envelope(bytes.fromhex("a20448") + KID + b"\x01\x27", {}, PAYLOAD, SIG),
     "protected header: not in deterministic encoding"),
    ("alg ES256", _envelope(encode_deterministic({1: -7, 4: KID}), {}, PAYLOAD, SIG),
     "unsupported alg -7 (ES256)"),
    ("alg text", _envelope(encode_deterministic({1: "EdDSA", 4: KID}), {}, PAYLOAD, SIG),
     "unsupported alg 'EdDSA'"),
    ("alg float", _envelope(encode_deterministic({1: -8.0, 4: KID}), {}, PAYLOAD, SIG),
     "unsupported alg -8.0"),
    ("alg label true", _envelope(encode_deterministic({True: -8, 4: KID}), {}, PAYLOAD, SIG),
     "labels must be integers, got bool"),
    ("alg label 1.0", _envelope(encode_deterministic({1.0: -8, 4: KID}), {}, PAYLOAD, SIG),
     "labels must be integers, got float"),
    ("alg label text", _envelope(encode_deterministic({"1": -8, 4: KID}), {}, PAYLOAD, SIG),
     "labels must be integers, got text string"),
    ("no kid", _envelope(encode_deterministic({1: -8}), {}, PAYLOAD, SIG), "lacks kid"),
    ("kid text", _envelope(encode_deterministic({1: -8, 4: "k"}), {}, PAYLOAD, SIG),
     "kid must be a byte string of 8 bytes, got text string"),
    ("kid 7 bytes", _envelope(encode_deterministic({1: -8, 4: KID[:7]}), {}, PAYLOAD, SIG),
     "got byte string of 7 bytes"),
    ("crit header", _envelope(encode_deterministic({1: -8, 2: [4], 4: KID}), {}, PAYLOAD, SIG),
     "only alg (1) and kid (4), also has 2"),
    ("unprotected kid", _envelope(PROTECTED, {4: KID}, PAYLOAD, SIG),
     "unprotected header must be an empty map"),
    ("unprotected array", _envelope(PROTECTED, [], PAYLOAD, SIG),
     "unprotected header must be an empty map"),
    ("payload nil", _envelope(PROTECTED, {}, None, SIG), "detached payloads are not supported"),
    ("payload text", _envelope(PROTECTED, {}, "{}", SIG), "payload must be a byte string"),
    ("signature 65", _envelope(PROTECTED, {}, PAYLOAD, bytes(65)), "of 64 bytes, got byte string"),
    ("signature empty", _envelope(PROTECTED, {}, PAYLOAD, b""), "of 64 bytes"),
    ("signature text", _envelope(PROTECTED, {}, PAYLOAD, "x" * 64), "got text string"),
    ("self-describe tag", b"\xd9\xd9\xf7" + _envelope(PROTECTED, {}, PAYLOAD, SIG),
     "tag 55799 is not allowed"),
    ("nested tag 18", encode_deterministic(cbor2.CBORTag(18, cbor2.CBORTag(18, []))),
     "array of 4 items, got tag"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "detail"), [c[1:] for c in ENVELOPE_CASES], ids=[c[0] for c in ENVELOPE_CASES]
)
def test_envelope_rules(raw: bytes, detail: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_cose(raw)
    assert detail in info.value.detail
    assert info.value.reason is RejectReason.MALFORMED


def test_size_limit(device_key: nacl.signing.SigningKey) -> None:
    big = Event(
        device="farm-linden-barn-2",
        seq=2,
        time=0,
        products=(LOT,),
        step="inspecting",
        data={"note": "x" * (MAX_MESSAGE_BYTES - 300)},
    )
    raw = sign_message(big, device_key)
    assert len(raw) <= MAX_MESSAGE_BYTES
    parse_message(raw).verify(public(device_key))
    bigger = Event(
        device="farm-linden-barn-2",
        seq=2,
        time=0,
        products=(LOT,),
        step="inspecting",
        data={"note": "x" * MAX_MESSAGE_BYTES},
    )
    with pytest.raises(MalformedMessage, match="16384-byte limit"):
        sign_message(bigger, device_key)
    with pytest.raises(MalformedMessage, match="16384-byte limit"):
        parse_message(sign_cose(encode_payload(bigger), device_key))
    with pytest.raises(MalformedMessage, match="16384-byte limit"):
        parse_message(b"\xff" * (MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize("raw", ["text", None, bytearray(b"\xa0"), 5])
def test_non_bytes_input_is_malformed(raw: object) -> None:
    with pytest.raises(MalformedMessage, match="message must be bytes"):
        parse_message(raw)  # type: ignore[arg-type]


def test_field_rule_failure_surfaces_from_parse_message(
    device_key: nacl.signing.SigningKey,
) -> None:
    payload = encode_deterministic(
        {
            "v": 1,
            "device": "farm-linden-barn-2",
            "seq": 0,
            "time": 0,
            "products": [LOT.path],
            "type": "reading",
            "sensors": [{"type": "Temperature", "value": 1, "uom": "CEL"}],
        }
    )
    with pytest.raises(MalformedMessage, match="seq must be an integer >= 1, got 0"):
        parse_message(sign_cose(payload, device_key))


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_cose_signer_gives_the_generic_encoders_bytes(
    device_key: nacl.signing.SigningKey, size: int
) -> None:
    """The hand-assembled envelope equals the generic deterministic encoding, at every head size."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    kid = device_kid(bytes(device_key.verify_key))
    protected = protected_header(kid)
    signature = device_key.sign(sig_structure(protected, payload)).signature
    expected = encode_deterministic(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    assert sig_structure(protected, payload) == encode_deterministic(
        ["Signature1", protected, b"", payload]
    )
    signer = CoseSigner(device_key)
    assert signer.sign(payload) == expected
    assert sign_cose(payload, device_key) == expected
    assert signer.kid == kid
