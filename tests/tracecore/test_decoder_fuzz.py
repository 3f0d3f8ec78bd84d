"""Hostile input: parse_message never raises anything but MessageRejected, and never hangs.

Property tests (hypothesis) over random bytes, random CBOR and mutated real messages (bit flips,
truncation, insertion, deletion, splicing), 10,600 examples in all; plus fixed worst cases
(deep nesting, huge declared lengths, maximal sizes) with a per-call time bound.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracecore.cbor import encode_deterministic
from tracecore.cose import MAX_MESSAGE_BYTES, SignedMessage, parse_message, sign_cose
from tracecore.errors import MessageRejected
from tracecore.receipt import parse_receipt

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "protocol"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
SEEDS = [
    (VECTORS / e["file"]).read_bytes()
    for e in MANIFEST
    if 0 < len((VECTORS / e["file"]).read_bytes()) <= MAX_MESSAGE_BYTES
]
PUBLIC_KEYS = sorted({bytes.fromhex(e["public_key_hex"]) for e in MANIFEST})
KEY = nacl.signing.SigningKey(hashlib.sha256(b"test_decoder_fuzz").digest())
CALL_LIMIT_SECONDS = 0.5

_BASE = settings(
    deadline=None,  # wall-clock deadlines flake on a busy machine; check() bounds CPU time
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BUDGET: dict[str, int] = {}


def fuzz(name: str, examples: int) -> settings:
    """Settings for one property test with ``examples`` examples (recorded in BUDGET)."""
    BUDGET[name] = examples
    return settings(_BASE, max_examples=examples)


def check(raw: bytes) -> None:
    """The property: a SignedMessage or a MessageRejected, and verify behaves the same way."""
    # CPU time of this thread, not wall time: a decoder that loops or blows up on some input
    # burns CPU; a busy machine (CI running beside other work) only stretches wall time. The
    # collector is paused for the call: a full collection of everything the test session keeps
    # alive is not the decoder's time (it once cost 1.5 s here).
    gc.disable()
    try:
        start = time.thread_time()
        try:
            signed = parse_message(raw)
        except MessageRejected:
            signed = None
        spent = time.thread_time() - start
    finally:
        gc.enable()
    assert spent < CALL_LIMIT_SECONDS
    if signed is not None:
        assert isinstance(signed, SignedMessage)
        for public_key in PUBLIC_KEYS:
            with contextlib.suppress(MessageRejected):
                signed.verify(public_key)
    with contextlib.suppress(MessageRejected):
        parse_receipt(raw)


@fuzz("test_random_bytes", 2500)
@given(st.binary(max_size=2048))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@fuzz("test_random_bytes_after_cose_header", 1000)
@given(st.binary(max_size=512).map(lambda b: b"\xd2\x84" + b))
def test_random_bytes_after_cose_header(raw: bytes) -> None:
    check(raw)


seeds = st.sampled_from(SEEDS)


@fuzz("test_bit_flips", 1500)
@given(seeds, st.lists(st.integers(min_value=0, max_value=8 * 16384), min_size=1, max_size=8))
def test_bit_flips(seed: bytes, bits: list[int]) -> None:
    data = bytearray(seed)
    for bit in bits:
        index = (bit // 8) % len(data)
        data[index] ^= 1 << (bit % 8)
    check(bytes(data))


@fuzz("test_truncation", 1200)
@given(seeds, st.integers(min_value=0, max_value=16384))
def test_truncation(seed: bytes, cut: int) -> None:
    check(seed[: cut % (len(seed) + 1)])


@fuzz("test_insertion", 1500)
@given(seeds, st.integers(min_value=0, max_value=16384), st.binary(min_size=1, max_size=16))
def test_insertion(seed: bytes, at: int, inserted: bytes) -> None:
    position = at % (len(seed) + 1)
    check(seed[:position] + inserted + seed[position:])


@fuzz("test_deletion", 1000)
@given(seeds, st.integers(min_value=0, max_value=16384), st.integers(min_value=1, max_value=32))
def test_deletion(seed: bytes, at: int, length: int) -> None:
    position = at % len(seed)
    check(seed[:position] + seed[position + length :])


@fuzz("test_splicing", 1200)
@given(seeds, seeds, st.integers(min_value=0, max_value=16384), st.integers(0, 16384))
def test_splicing(first: bytes, second: bytes, cut_first: int, cut_second: int) -> None:
    check(first[: cut_first % (len(first) + 1)] + second[cut_second % (len(second) + 1) :])


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=10) | st.integers(-30, 30), children, max_size=6)
    ),
    max_leaves=12,
)

field_names = st.sampled_from(
    ["v", "device", "seq", "time", "products", "type", "sensors", "step", "parents", "location",
     "data", "uom", "value"]
)  # fmt: skip


@fuzz("test_signed_random_payload_maps", 700)
@given(st.dictionaries(field_names, cbor_values, max_size=10))
def test_signed_random_payload_maps(payload: dict[str, Any]) -> None:
    """Correctly signed envelopes around random maps with our field names: field rules only."""
    check(sign_cose(encode_deterministic(payload), KEY))


def _envelope(payload: object) -> bytes:
    return encode_deterministic(
        cbor2.CBORTag(18, [encode_deterministic({1: -8, 4: bytes(8)}), {}, payload, bytes(64)])
    )


HOSTILE: list[tuple[str, bytes]] = [
    ("nested arrays 16 KiB", bytes([0x81]) * (MAX_MESSAGE_BYTES - 1) + b"\x00"),
    ("nested maps 16 KiB", bytes([0xA1, 0x00]) * (MAX_MESSAGE_BYTES // 2)),
    ("nested tags 16 KiB", bytes([0xD2]) * MAX_MESSAGE_BYTES),
    ("indefinite arrays 16 KiB", bytes([0x9F]) * MAX_MESSAGE_BYTES),
    ("nested arrays in payload", _envelope(bytes([0x81]) * 16000 + b"\x00")),
    ("huge bstr length", b"\xd2\x84\x5b" + b"\xff" * 8),
    ("huge array length", b"\xd2\x9b" + b"\xff" * 8),
    ("huge map length", b"\xbb\x00\x00\x00\x00\xff\xff\xff\xff"),
    ("huge text length", b"\x7b\x7f\xff\xff\xff\xff\xff\xff\xff"),
    ("array of 16k zeros", b"\xd2\x59\x3f\xf0" + bytes(16368)),
    ("map of 3k int keys", _envelope(encode_deterministic(dict.fromkeys(range(3000), 0)))),
    ("payload array of 15k maps", _envelope(encode_deterministic({"sensors": [{}] * 15000}))),
    ("oversize by one", b"\x00" * (MAX_MESSAGE_BYTES + 1)),
    ("one megabyte", b"\xd2" * 1_000_000),
    ("bignum tags", b"\xd2\x84" + b"\xc2\x5a\x00\x00\x3f\x00" + bytes(16128)),
]


@pytest.mark.parametrize("raw", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_are_refused_quickly(raw: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(MessageRejected):
        parse_message(raw)
    assert time.perf_counter() - start < CALL_LIMIT_SECONDS


def test_total_example_budget() -> None:
    """At least 10,000 generated examples across the property tests of this module."""
    assert len(BUDGET) == 8
    assert sum(BUDGET.values()) >= 10_000
