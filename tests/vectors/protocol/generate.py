"""Generate the device protocol golden vectors (run by hand, never by the tests).

    cd /work/main && .venv/bin/python tests/vectors/protocol/generate.py

Writes ``*.cbor`` (the exact bytes a device would publish, or a receipt the service would send)
and ``manifest.json`` next to this file, and prints the worked example of docs/protocol.md.
Everything is deterministic: keys come from fixed seeds (SHA-256 of a label), times are fixed,
and Ed25519 signatures are deterministic (RFC 8032 §5.1.6), so running it again gives the same
bytes. tests/tracecore/test_vectors.py checks the files against tracecore and checks that
re-signing each valid message reproduces it byte for byte.

These private keys are public test keys. Never use them for anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing

from tracecore.cbor import encode_deterministic
from tracecore.cose import sig_structure, sign_cose, sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import (
    Event,
    KeyRotation,
    Reading,
    Sensor,
    rotation_pop_input,
    sign_rotation_pop,
)
from tracecore.receipt import Receipt, sign_receipt

HERE = Path(__file__).resolve().parent
SEED_PREFIX = b"agritrace/vectors/protocol/"
T0 = 1_767_258_000_000  # 2026-01-01T09:00:00Z in ms since the Unix epoch

EGG_LOT = "01/09506000134352/10/EGG-2026-001"
CARTONS = [f"01/09506000134369/21/C{n:05d}" for n in (1, 2, 3)]
PALLETS = ["01/09506000134369/10/EGG-2026-001/21/P01", "01/09506000134369/10/EGG-2026-001/21/P02"]
ANIMAL = "01/09506000134376/21/DE0123456789"
CARCASS = "01/09506000134383/10/K2026-0001/21/DE0123456789"


def seed(label: str) -> bytes:
    """Return the Ed25519 seed of a test key: SHA-256("agritrace/vectors/protocol/" + label)."""
    return hashlib.sha256(SEED_PREFIX + label.encode()).digest()


def key(label: str) -> nacl.signing.SigningKey:
    """Return the signing key with the seed of ``label``."""
    return nacl.signing.SigningKey(seed(label))


def pk(keys: ProductKey | str) -> ProductKey:
    """Parse a canonical product key."""
    return keys if isinstance(keys, ProductKey) else ProductKey.parse_canonical(keys)


BARN = "farm-linden-barn-2"
COLLECTOR = "farm-linden-collector"
PACKER = "packer-nord-line-1"
TRUCK = "carrier-kuehl-truck-7"
ABATTOIR = "abattoir-sued-line-1"
LOG = "log"
OTHER = "not-registered"
#: The barn sensor's next key, which it rotates onto in the key rotation vectors.
BARN_NEXT = "farm-linden-barn-2/next"

READING = Reading(
    device=BARN,
    seq=1,
    time=T0,
    products=(pk(EGG_LOT),),
    sensors=(Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 71, "P1")),
)


def reading_map(**changes: Any) -> dict[str, Any]:
    """The payload map of READING with some fields replaced (``None`` deletes a field)."""
    result = READING.to_cbor_map()
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


# -- raw CBOR building blocks for the non-deterministic variants ---------------------------------


def head(major: int, argument: int, width: int | None = None) -> bytes:
    """A CBOR head; ``width`` (1, 2, 4, 8 bytes) forces a non-shortest argument."""
    if width is None:
        return _shortest_head(major, argument)
    code = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes(((major << 5) | code,)) + argument.to_bytes(width, "big")


def _shortest_head(major: int, argument: int) -> bytes:
    for width, limit in ((0, 23), (1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        if argument <= limit:
            if width == 0:
                return bytes(((major << 5) | argument,))
            return head(major, argument, width)
    return head(major, argument, 8)


def map_in_order(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A definite-length map with the given encoded key/value pairs, in the given order."""
    return _shortest_head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def envelope(
    protected: Any, unprotected: Any, payload: Any, signature: Any, tag: int | None = 18
) -> bytes:
    """A COSE_Sign1-like structure in deterministic CBOR (parts are taken as given)."""
    body = [protected, unprotected, payload, signature]
    return encode_deterministic(body if tag is None else cbor2.CBORTag(tag, body))


def protected_for(signer: nacl.signing.SigningKey, alg: int = -8, **extra: Any) -> bytes:
    header: dict[int, Any] = {1: alg, 4: device_kid(bytes(signer.verify_key))}
    for label, value in extra.items():
        header[int(label.removeprefix("h"))] = value
    return encode_deterministic(header)


def signed_envelope(payload: bytes, signer: nacl.signing.SigningKey, protected: bytes) -> bytes:
    """An envelope with a correct Ed25519 signature over an arbitrary protected header."""
    signature = signer.sign(sig_structure(protected, payload)).signature
    return envelope(protected, {}, payload, signature)


# -- vectors ---------------------------------------------------------------------------------------


@dataclass
class Vector:
    file: str
    data: bytes
    public_key_label: str
    expect: str
    description: str
    kind: str = "message"
    seed_label: str | None = None  # for valid vectors: re-signing must reproduce the file
    message_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def valid_vectors() -> list[tuple[Vector, Reading | Event]]:
    commissioning = Event(
        device=COLLECTOR,
        seq=17,
        time=T0 + 60_000,
        products=(pk(EGG_LOT),),
        step="commissioning",
        location="414/9506000134352",
        data={"count": 21600, "laid": "2026-01-01", "flock": "linden-barn-2", "organic": True},
    )
    packing = Event(
        device=PACKER,
        seq=1042,
        time=T0 + 3 * 3_600_000,
        products=tuple(pk(c) for c in CARTONS),
        step="packing",
        parents=(pk(EGG_LOT),),
        location="414/9506000999999",
        data={"eggs_per_carton": 10, "grade": "A", "size": "M"},
    )
    truck = Reading(
        device=TRUCK,
        seq=90_001,
        time=T0 + 26 * 3_600_000 + 123,
        products=tuple(pk(p) for p in PALLETS),
        sensors=(
            Sensor("Temperature", 3.25, "CEL"),
            Sensor("Temperature", -0.5, "CEL"),
            Sensor("RelativeHumidity", 88.4, "P1"),
            Sensor("Speed", 82, "KMH"),
        ),
    )
    killing = Event(
        device=ABATTOIR,
        seq=3,
        time=T0 + 5 * 86_400_000,
        products=(pk(CARCASS),),
        step="killing",
        parents=(pk(ANIMAL),),
        data={
            "inspection": {"ante_mortem": "pass", "vet": "dr-mayer"},
            "treatments": [{"drug": "oxytetracycline", "dose": 2.5, "withdrawal_days": 14}],
            "test": {"disease": "BSE", "result": "negative", "lab": "lab-kiel"},
            "warm_mass_kg": 312.5,
            "note": None,
        },
    )
    cases: list[tuple[str, str, Reading | Event, str]] = [
        ("valid_reading.cbor", BARN, READING,
         ("reading: barn temperature (half-float 4.5 CEL) and humidity (int 71 P1) for an egg lot;"
         " the worked example of docs/protocol.md")),
        ("valid_event_commissioning.cbor", COLLECTOR, commissioning,
         "event: commissioning of an egg lot with a GLN location (AI 414) and data"),
        ("valid_event_packing_parents.cbor", PACKER, packing,
         "event: packing three serialized cartons from the egg lot (parents)"),
        ("valid_reading_multi_product.cbor", TRUCK, truck,
         ("reading: cold-chain truck, two pallets, four sensors incl. a negative and a"
         " single-precision float")),
        ("valid_event_killing_data.cbor", ABATTOIR, killing,
         "event: killing, carcass from an animal (parents), nested data: treatment, test"),
    ]  # fmt: skip
    result = []
    for name, label, message, description in cases:
        raw = sign_message(message, key(label))
        vector = Vector(
            name, raw, label, "valid", description, seed_label=label, message_type=_type(message)
        )
        result.append((vector, message))
    return result


def _type(message: Reading | Event) -> str:
    return "reading" if isinstance(message, Reading) else "event"


def payload_variants() -> list[tuple[str, bytes, str]]:
    """Payloads that break one field rule, each signed correctly by the barn key."""
    enc = encode_deterministic
    sorted_pairs = sorted(
        ((enc(k), enc(v)) for k, v in READING.to_cbor_map().items()), key=lambda kv: kv[0]
    )
    unsorted = map_in_order(list(reversed(sorted_pairs)))
    long_seq = map_in_order([(k, head(0, 1, 4) if k == enc("seq") else v) for k, v in sorted_pairs])
    sensors = [s.to_cbor_map() for s in READING.sensors]
    double_sensors = enc([{**sensors[0], "value": 0.0}, sensors[1]]).replace(
        b"\xf9\x00\x00", b"\xfb" + b"\x40\x12" + bytes(6)
    )  # 4.5 as a double
    long_float = map_in_order(
        [(k, double_sensors if k == enc("sensors") else v) for k, v in sorted_pairs]
    )
    many = [f"01/09506000134352/10/L{n}" for n in range(65)]
    event = Event(
        device=BARN, seq=5, time=T0, products=(pk(EGG_LOT),), step="inspecting"
    ).to_cbor_map()
    deep: Any = 0
    for _ in range(20):
        deep = [deep]
    return [
        ("malformed_payload_unsorted_keys.cbor", unsorted,
         "payload map keys not in bytewise order of their encodings (RFC 8949 §4.2.1)"),
        ("malformed_payload_long_int.cbor", long_seq,
         "payload seq 1 encoded in 5 bytes (1a00000001) instead of 1 (RFC 8949 §4.2.1)"),
        ("malformed_payload_long_float.cbor", long_float,
         "sensor value 4.5 encoded as a double, fits a half (RFC 8949 §4.2.1)"),
        ("malformed_payload_not_map.cbor", enc([1, 2, 3]), "payload is an array, not a map"),
        ("malformed_payload_tag.cbor", enc(reading_map(time=cbor2.CBORTag(1, T0 // 1000))),
         "payload time wrapped in CBOR tag 1 (epoch date): no tags allowed in payloads"),
        ("malformed_payload_deep_nesting.cbor", enc({**event, "data": {"x": deep}}),
         "event data nested 22 levels deep (CBOR limit 16, data limit 4)"),
        ("malformed_unknown_field.cbor", enc(reading_map(battery=87)),
         "payload has unknown field 'battery'"),
        ("malformed_missing_field.cbor", enc(reading_map(time=None)), "payload lacks 'time'"),
        ("malformed_v2.cbor", enc(reading_map(v=2)), "v = 2"),
        ("malformed_type_unknown.cbor", enc(reading_map(type="alarm")), "type = 'alarm'"),
        ("malformed_device_id.cbor", enc(reading_map(device="Barn_2")),
         "device id with upper case and '_'"),
        ("malformed_seq_zero.cbor", enc(reading_map(seq=0)), "seq = 0"),
        ("malformed_seq_too_big.cbor", enc(reading_map(seq=2**63)), "seq = 2**63"),
        ("malformed_seq_negative.cbor", enc(reading_map(seq=-1)), "seq = -1"),
        ("malformed_time_too_big.cbor", enc(reading_map(time=2**53 + 1)), "time = 2**53 + 1"),
        ("malformed_time_float.cbor", enc(reading_map(time=float(T0))),
         "time as a float, not an integer"),
        ("malformed_products_empty.cbor", enc(reading_map(products=[])), "products = []"),
        ("malformed_products_65.cbor", enc(reading_map(products=many)), "65 products"),
        ("malformed_products_duplicate.cbor", enc(reading_map(products=[EGG_LOT, EGG_LOT])),
         "the same product key twice"),
        ("malformed_product_not_canonical.cbor",
         enc(reading_map(products=["01/9506000134352/10/EGG-2026-001"])),
         "product key with a GTIN-13 instead of the zero-padded GTIN-14"),
        ("malformed_product_gtin_check_digit.cbor",
         enc(reading_map(products=["01/09506000134353/10/EGG-2026-001"])),
         "GTIN with a wrong check digit (3, expected 2)"),
        ("malformed_reading_without_sensors.cbor", enc(reading_map(sensors=None)),
         "reading without sensors"),
        ("malformed_reading_sensors_empty.cbor", enc(reading_map(sensors=[])), "sensors = []"),
        ("malformed_reading_nan.cbor",
         enc(reading_map(sensors=[{**sensors[0], "value": math.nan}])),
         "sensor value NaN (f97e00)"),
        ("malformed_reading_infinity.cbor",
         enc(reading_map(sensors=[{**sensors[0], "value": math.inf}])),
         "sensor value +Infinity (f97c00)"),
        ("malformed_reading_sensor_type.cbor",
         enc(reading_map(sensors=[{**sensors[0], "type": "temp"}])),
         "sensor type 'temp' is not an EPCIS 2.0 measurement type"),
        ("malformed_reading_uom.cbor",
         enc(reading_map(sensors=[{**sensors[0], "uom": "celsius"}])),
         "uom 'celsius' is not a UN/CEFACT Rec 20 code"),
        ("malformed_reading_with_step.cbor", enc(reading_map(step="shipping")),
         "reading with an event field (step)"),
        ("malformed_event_unknown_step.cbor", enc({**event, "step": "laying"}),
         "event step 'laying' is not a CBV 2.0 business step"),
        ("malformed_event_without_step.cbor", enc({k: v for k, v in event.items() if k != "step"}),
         "event without step"),
        ("malformed_event_with_sensors.cbor", enc({**event, "sensors": sensors}),
         "event with sensors"),
        ("malformed_event_parent_is_product.cbor", enc({**event, "parents": [EGG_LOT]}),
         "event whose parents repeat one of its products"),
        ("malformed_event_location_too_long.cbor", enc({**event, "location": "x" * 201}),
         "location of 201 characters"),
        ("malformed_event_data_not_map.cbor", enc({**event, "data": [1, 2]}),
         "event data is an array"),
        ("malformed_event_data_bytes.cbor", enc({**event, "data": {"raw": b"\x00"}}),
         "event data holds a byte string"),
    ]  # fmt: skip


def malformed_envelopes() -> list[tuple[str, bytes, str]]:
    """COSE-level breakage, on top of the valid reading."""
    barn = key(BARN)
    good = sign_message(READING, barn)
    payload = encode_deterministic(READING.to_cbor_map())
    protected = protected_for(barn)
    signature = barn.sign(sig_structure(protected, payload)).signature
    enc = encode_deterministic
    long_sig = (
        bytes((0xD2, 0x84)) + enc(protected) + b"\xa0" + enc(payload) + head(2, 64, 2) + signature
    )
    indefinite = b"\xd2\x9f" + enc(protected) + b"\xa0" + enc(payload) + enc(signature) + b"\xff"
    big_event = Event(
        device=BARN,
        seq=6,
        time=T0,
        products=(pk(EGG_LOT),),
        step="inspecting",
        data={"note": "x" * 16_300},
    )
    oversize = sign_cose(enc(big_event.to_cbor_map()), barn)
    assert len(oversize) > 16384, len(oversize)
    return [
        ("malformed_not_cbor.cbor", b'{"v":1,"device":"farm-linden-barn-2"}',
         "JSON text, not CBOR (0x7b starts a text string with an 8-byte length: truncated)"),
        ("malformed_empty.cbor", b"", "zero bytes"),
        ("malformed_untagged.cbor", good[1:], "COSE_Sign1 array without tag 18"),
        ("malformed_wrong_tag.cbor", b"\xd1" + good[1:],
         "tag 17 (COSE_Mac0) instead of 18"),
        ("malformed_array_of_3.cbor", b"\xd2\x83" + enc(protected) + b"\xa0" + enc(payload),
         "array of 3 items (no signature)"),
        ("malformed_protected_not_bstr.cbor",
         envelope({1: -8, 4: device_kid(bytes(barn.verify_key))}, {}, payload, signature),
         "protected header is a map, not a byte string wrapping one"),
        ("malformed_alg_es256.cbor", signed_envelope(payload, barn, protected_for(barn, alg=-7)),
         "alg -7 (ES256) instead of -8 (EdDSA)"),
        ("malformed_protected_extra.cbor",
         signed_envelope(payload, barn, protected_for(barn, h3="application/cbor")),
         "protected header with content type (3) besides alg and kid"),
        ("malformed_kid_length.cbor",
         signed_envelope(payload, barn, enc({1: -8, 4: bytes(barn.verify_key)})),
         "kid of 32 bytes (the whole public key) instead of 8"),
        ("malformed_unprotected_not_empty.cbor",
         envelope(protected, {4: device_kid(bytes(barn.verify_key))}, payload, signature),
         "kid repeated in the unprotected header: it must be an empty map"),
        ("malformed_detached_payload.cbor", envelope(protected, {}, None, signature),
         "payload nil (detached): not supported"),
        ("malformed_signature_63.cbor", envelope(protected, {}, payload, signature[:63]),
         "signature of 63 bytes"),
        ("malformed_envelope_long_length.cbor", long_sig,
         "signature length 64 encoded as 590040 instead of 5840 (RFC 8949 §4.2.1)"),
        ("malformed_indefinite_array.cbor", indefinite,
         "indefinite-length array (9f ... ff) (RFC 8949 §4.2.1)"),
        ("malformed_trailing_bytes.cbor", good + b"\x00", "one byte after the COSE_Sign1"),
        ("malformed_oversize.cbor", oversize,
         f"{len(oversize)} bytes, more than 16384 (otherwise valid and signed)"),
    ]  # fmt: skip


def signature_vectors() -> list[Vector]:
    barn = key(BARN)
    good = bytearray(sign_message(READING, barn))
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    # The payload holds the half float 4.5 = f94480; make it 4.50390625 = f94481 after signing.
    tampered = bytearray(good)
    offset = tampered.index(b"\xf9\x44\x80")
    tampered[offset + 2] = 0x81
    payload = encode_deterministic(READING.to_cbor_map())
    protected = protected_for(barn)
    over_payload = envelope(protected, {}, payload, barn.sign(payload).signature)
    wrong_context = envelope(
        protected,
        {},
        payload,
        barn.sign(encode_deterministic(["Signature", protected, b"", payload])).signature,
    )
    other = key(OTHER)
    by_other = sign_message(READING, other)
    kid_swapped = signed_envelope(payload, barn, protected_for(other))
    return [
        Vector("bad_signature_bit_flip.cbor", bytes(flipped), BARN, "bad_signature",
               "valid reading with the last signature bit flipped"),
        Vector("bad_signature_payload_changed.cbor", bytes(tampered), BARN, "bad_signature",
               "temperature changed from 4.5 to 4.50390625 after signing (still well-formed)"),
        Vector("bad_signature_over_payload.cbor", over_payload, BARN, "bad_signature",
               "Ed25519 over the payload bytes instead of the Sig_structure"),
        Vector("bad_signature_wrong_context.cbor", wrong_context, BARN, "bad_signature",
               "Sig_structure with context 'Signature' instead of 'Signature1'"),
        Vector("unknown_key_other_signer.cbor", by_other, BARN, "unknown_key",
               "signed (correctly) by another key: its kid is not the kid of the given key"),
        Vector("unknown_key_kid_mismatch.cbor", kid_swapped, BARN, "unknown_key",
               "signed by the given key but carrying another key's kid"),
    ]  # fmt: skip


def rotation(new_label: str = BARN_NEXT, pop_label: str | None = None, **pop_args: Any) -> bytes:
    """The barn sensor rotating onto ``new_label``'s key: seq 2, an hour after READING.

    ``pop_label`` signs the proof of possession instead of the new key; ``pop_args`` replace
    the values (``device``, ``seq``, ``time``, ``old_kid``) it is computed over.
    """
    barn = key(BARN)
    fields: dict[str, Any] = {
        "device": BARN,
        "seq": 2,
        "time": T0 + 3_600_000,
        "old_kid": device_kid(bytes(barn.verify_key)),
    }
    pop = sign_rotation_pop(key(pop_label or new_label), **(fields | pop_args))
    new_key = bytes(key(new_label).verify_key)
    return sign_message(KeyRotation(BARN, 2, T0 + 3_600_000, new_key, pop), barn)


def rotation_map(**changes: Any) -> dict[str, Any]:
    """The payload map of the valid rotation with some fields replaced (``None`` deletes)."""
    result: dict[str, Any] = cbor2.loads(cbor2.loads(rotation()).value[2])
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def rotation_vectors() -> list[Vector]:
    """Key rotations (docs/protocol.md §5): expect is the outcome of parse, verify, verify_pop."""
    barn = key(BARN)
    good = rotation()
    flipped = cbor2.loads(cbor2.loads(good).value[2])
    flipped["pop"] = flipped["pop"][:-1] + bytes((flipped["pop"][-1] ^ 0x01,))
    enc = encode_deterministic
    return [
        Vector("valid_key_rotation.cbor", good, BARN, "valid",
               ("key rotation: the barn sensor, signing with its key, names its next key (seed"
                " SHA-256 of 'agritrace/vectors/protocol/farm-linden-barn-2/next') with that"
                " key's proof of possession"),
               seed_label=BARN, message_type="key_rotation",
               extra={"new_seed_hex": seed(BARN_NEXT).hex()}),
        Vector("bad_rotation_pop_bit_flip.cbor", sign_cose(enc(flipped), barn), BARN,
               "bad_rotation", "key rotation whose pop has its last bit flipped"),
        Vector("bad_rotation_pop_other_new_key.cbor",
               sign_cose(enc(rotation_map(new_key=bytes(key(OTHER).verify_key))), barn), BARN,
               "bad_rotation",
               "key rotation naming another new key than the one whose pop it carries"),
        Vector("bad_rotation_pop_by_old_key.cbor", rotation(pop_label=BARN), BARN,
               "bad_rotation", "key rotation whose pop is signed by the old key, not the new"),
        Vector("bad_rotation_pop_other_seq.cbor", rotation(seq=1), BARN, "bad_rotation",
               "key rotation whose pop was made for seq 1, not the message's seq 2"),
        Vector("bad_rotation_pop_other_old_kid.cbor",
               rotation(old_kid=device_kid(bytes(key(OTHER).verify_key))), BARN,
               "bad_rotation", "key rotation whose pop names another old kid than the signer's"),
        Vector("malformed_rotation_new_key_31.cbor",
               sign_cose(enc(rotation_map(new_key=bytes(key(BARN_NEXT).verify_key)[:31])), barn),
               BARN, "malformed", "key rotation with a new_key of 31 bytes"),
        Vector("malformed_rotation_pop_63.cbor",
               sign_cose(enc(rotation_map(pop=bytes(63))), barn), BARN, "malformed",
               "key rotation with a pop of 63 bytes"),
        Vector("malformed_rotation_with_products.cbor",
               sign_cose(enc(rotation_map(products=[EGG_LOT])), barn), BARN, "malformed",
               "key rotation naming a product: a rotation has no products"),
        Vector("malformed_rotation_without_pop.cbor",
               sign_cose(enc(rotation_map(pop=None)), barn), BARN, "malformed",
               "key rotation without its pop"),
        Vector("malformed_rotation_new_key_text.cbor",
               sign_cose(enc(rotation_map(new_key=bytes(key(BARN_NEXT).verify_key).hex())), barn),
               BARN, "malformed", "key rotation whose new_key is hex text, not a byte string"),
    ]  # fmt: skip


def receipt_vectors(reading_raw: bytes) -> list[Vector]:
    log = key(LOG)
    entry_hash = hashlib.sha256(b"\x00" + b"example log entry (placeholder)").digest()
    receipt = Receipt(
        device=BARN,
        seq=READING.seq,
        index=41,
        entry=entry_hash,
        msg=hashlib.sha256(reading_raw).digest(),
        time=READING.time + 850,
    )
    good = sign_receipt(receipt, log)
    flipped = bytearray(good)
    flipped[-1] ^= 0x80
    short_entry = {**receipt.to_cbor_map(), "entry": entry_hash[:31]}
    return [
        Vector("receipt_valid.cbor", good, LOG, "valid",
               "receipt for valid_reading.cbor: leaf index 41, entry = RFC 9162 leaf hash of a"
               " placeholder entry", kind="receipt", seed_label=LOG,
               extra={"matches": "valid_reading.cbor"}),
        Vector("receipt_bad_signature.cbor", bytes(flipped), LOG, "bad_signature",
               "receipt with one signature bit flipped", kind="receipt"),
        Vector("receipt_unknown_key.cbor", sign_receipt(receipt, key(BARN)), LOG, "unknown_key",
               "receipt signed by a device key instead of the log key", kind="receipt"),
        Vector("receipt_malformed_entry.cbor",
               sign_cose(encode_deterministic(short_entry), log), LOG, "malformed",
               "receipt whose entry hash is 31 bytes", kind="receipt"),
    ]  # fmt: skip


def all_vectors() -> list[Vector]:
    valid = valid_vectors()
    vectors = [vector for vector, _ in valid]
    barn = key(BARN)
    for name, payload, description in payload_variants():
        raw = sign_cose(payload, barn)
        vectors.append(Vector(name, raw, BARN, "malformed", description))
    for name, raw, description in malformed_envelopes():
        vectors.append(Vector(name, raw, BARN, "malformed", description))
    vectors += signature_vectors()
    vectors += receipt_vectors(vectors[0].data)
    vectors += rotation_vectors()
    return vectors


def manifest_entry(vector: Vector) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": vector.file,
        "kind": vector.kind,
        "public_key_hex": bytes(key(vector.public_key_label).verify_key).hex(),
        "expect": vector.expect,
        "description": vector.description,
    }
    if vector.seed_label is not None:
        entry["seed_hex"] = seed(vector.seed_label).hex()
    if vector.message_type is not None:
        entry["message_type"] = vector.message_type
    entry.update(vector.extra)
    return entry


def worked_example(show: Callable[[str], object]) -> None:
    """Print the values of the docs/protocol.md worked example (valid_reading.cbor)."""
    barn = key(BARN)
    public = bytes(barn.verify_key)
    kid = device_kid(public)
    payload = encode_deterministic(READING.to_cbor_map())
    protected = protected_for(barn)
    tbs = sig_structure(protected, payload)
    raw = sign_message(READING, barn)
    receipt = receipt_vectors(raw)[0].data
    receipt_payload = cbor2.loads(receipt).value[2]
    for name, value in [
        ("seed", seed(BARN)),
        ("public_key", public),
        ("kid", kid),
        ("protected", protected),
        ("payload", payload),
        ("sig_structure", tbs),
        ("signature", barn.sign(tbs).signature),
        ("message", raw),
        ("message_sha256", hashlib.sha256(raw).digest()),
        ("log_seed", seed(LOG)),
        ("log_public_key", bytes(key(LOG).verify_key)),
        ("log_kid", device_kid(bytes(key(LOG).verify_key))),
        ("receipt_payload", receipt_payload),
        ("receipt", receipt),
        *rotation_example(),
    ]:
        show(f"<!-- hex:{name} -->\n```text\n{_wrap(value.hex())}\n```\n")


def rotation_example() -> list[tuple[str, bytes]]:
    """The values of the key rotation example of docs/protocol.md (valid_key_rotation.cbor)."""
    raw = rotation()
    payload = cbor2.loads(raw).value[2]
    fields = cbor2.loads(payload)
    kid = device_kid(bytes(key(BARN).verify_key))
    return [
        ("rotation_new_seed", seed(BARN_NEXT)),
        ("rotation_new_key", fields["new_key"]),
        ("rotation_new_kid", device_kid(fields["new_key"])),
        ("rotation_pop_input", rotation_pop_input(BARN, 2, T0 + 3_600_000, kid, fields["new_key"])),
        ("rotation_pop", fields["pop"]),
        ("rotation_payload", payload),
        ("rotation_message", raw),
    ]


def _wrap(text: str, width: int = 64) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def main() -> None:
    """Write the vectors and the manifest; print the worked example."""
    vectors = all_vectors()
    names = [v.file for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector file names"
    for old in HERE.glob("*.cbor"):
        if old.name not in names:
            old.unlink()
    for vector in vectors:
        (HERE / vector.file).write_bytes(vector.data)
    manifest = [manifest_entry(v) for v in vectors]
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    worked_example(lambda text: sys.stdout.write(text + "\n"))
    sys.stdout.write(f"# wrote {len(vectors)} vectors to {HERE}\n")


if __name__ == "__main__":
    main()
