"""Tests of tracecore.logentry: the log entry of an accepted device message."""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracecore.cbor import encode_deterministic
from tracecore.errors import AgritraceError, MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.logentry import (
    GENESIS_PREV,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    KeyRevoked,
    KeyRotated,
    RegistryEntry,
    parse_any_entry,
    parse_entry,
)
from tracecore.merkle import leaf_hash

LOT = ProductKey.parse("01/06901234567892/10/L261127")
CARTON = ProductKey.parse("01/06901234567892/10/L261127/21/C0001")
MSG = hashlib.sha256(b"cose bytes").digest()


def _entry(**changes: object) -> DeviceMessageEntry:
    fields: dict[str, object] = {
        "msg": MSG,
        "device": "hens01-collect",
        "seq": 7,
        "received": 1_795_000_000_000,
        "chains": (
            ChainPosition(LOT, 3, bytes(range(32))),
            ChainPosition(CARTON, 1, GENESIS_PREV),
        ),
    }
    fields.update(changes)
    return DeviceMessageEntry(**fields)  # type: ignore[arg-type]


def test_entry_encoding_is_the_documented_map() -> None:
    """The entry is the deterministic CBOR map of design.md, chains in the message's order."""
    expected = encode_deterministic(
        {
            "v": 1,
            "kind": "device_message",
            "msg": MSG,
            "device": "hens01-collect",
            "seq": 7,
            "received": 1_795_000_000_000,
            "chains": [
                {"product": LOT.path, "pseq": 3, "prev": bytes(range(32))},
                {"product": CARTON.path, "pseq": 1, "prev": bytes(32)},
            ],
        }
    )
    entry = _entry()
    assert entry.to_bytes() == expected
    assert entry.leaf_hash == hashlib.sha256(b"\x00" + expected).digest()
    assert entry.leaf_hash == leaf_hash(expected)


def test_entry_round_trips() -> None:
    """parse_entry(to_bytes()) gives the same entry back."""
    entry = _entry()
    assert parse_entry(entry.to_bytes()) == entry


def test_entry_without_chains_round_trips() -> None:
    """A device message naming no product (a key rotation) is an entry with no chains."""
    entry = _entry(chains=())
    assert parse_entry(entry.to_bytes()) == entry


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"msg": b"short"}, "msg must be 32 bytes"),
        ({"device": "Bad Device"}, "device id"),
        ({"seq": 0}, "seq must be >= 1"),
        ({"chains": (ChainPosition(LOT, 1, GENESIS_PREV),) * 2}, "each product once"),
    ],
)
def test_bad_entries_are_refused(changes: dict[str, object], message: str) -> None:
    """An entry that breaks a rule cannot be constructed."""
    with pytest.raises(AgritraceError, match=message):
        _entry(**changes)


def test_chain_genesis_rule() -> None:
    """prev is all zeros exactly for pseq 1."""
    with pytest.raises(MalformedMessage, match="first entry"):
        ChainPosition(LOT, 1, bytes(range(32)))
    with pytest.raises(MalformedMessage, match="first entry"):
        ChainPosition(LOT, 2, GENESIS_PREV)


def test_non_deterministic_bytes_are_refused() -> None:
    """The same map encoded with an unsorted key order is not an entry."""
    data = _entry().to_bytes()
    # Re-encode with "chains" first: a valid CBOR map, but not in the deterministic key order.
    decoded = cbor2.loads(data)
    loose = cbor2.dumps({"chains": decoded["chains"], **decoded})
    assert loose != data
    with pytest.raises(MalformedMessage):
        parse_entry(loose)


def test_flipped_byte_changes_the_leaf() -> None:
    """Any change to an entry changes its leaf hash (so chains and the log detect it)."""
    data = bytearray(_entry().to_bytes())
    original = leaf_hash(bytes(data))
    data[-1] ^= 1
    assert leaf_hash(bytes(data)) != original


REGISTRY_ENTRIES = [
    DeviceRegistered("hens01-collect", "gansu-hens-01", bytes(range(32)), 1_000, 1_000),
    KeyRotated("hens01-collect", bytes(range(1, 33)), 5_000, 5_001),
    KeyRevoked("hens01-collect", bytes(8), 4_000, "gateway stolen", 6_000),
]


@pytest.mark.parametrize("entry", REGISTRY_ENTRIES, ids=lambda e: type(e).__name__)
def test_registry_entries_round_trip(entry: RegistryEntry) -> None:
    """Registry facts encode deterministically and parse back to the same value."""
    data = entry.to_bytes()
    assert parse_any_entry(data) == entry
    assert cbor2.loads(data)["v"] == 1


def test_parse_any_entry_reads_device_messages_too() -> None:
    """parse_any_entry dispatches on kind, including device messages."""
    entry = _entry()
    assert parse_any_entry(entry.to_bytes()) == entry


@pytest.mark.parametrize(
    "value",
    [
        {"v": 1, "kind": "party_deleted", "time": 1},
        {
            "v": 2,
            "kind": "key_rotated",
            "device": "dev-1",
            "key": bytes(32),
            "valid_from": 1,
            "time": 1,
        },
        {
            "v": 1,
            "kind": "key_rotated",
            "device": "dev-1",
            "key": "k" * 32,
            "valid_from": 1,
            "time": 1,
        },
        {
            "v": 1,
            "kind": "key_rotated",
            "device": "dev-1",
            "key": bytes(32),
            "valid_from": -1,
            "time": 1,
        },
        {
            "v": 1,
            "kind": "key_revoked",
            "device": "dev-1",
            "kid": bytes(8),
            "since": 1,
            "reason": "",
            "time": 1,
        },
        {"v": 1, "kind": "key_revoked", "device": "dev-1", "kid": bytes(8), "since": 1, "time": 1},
    ],
)
def test_bad_registry_entries_are_refused(value: dict[str, object]) -> None:
    """Unknown kinds, versions, wrong types and missing fields are malformed."""
    with pytest.raises(MalformedMessage):
        parse_any_entry(encode_deterministic(value))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["chains"][0].update({"extra": 1}),
        lambda m: m.update({"seq": True}),
        lambda m: m["chains"][0].update({"pseq": "3"}),
        lambda m: m.update({"device": b"hens01-collect"}),
        lambda m: m.update({"chains": {"product": LOT.path}}),
    ],
)
def test_entries_with_extra_keys_or_wrong_types_are_refused(change: Any) -> None:
    """A deterministic map that is not exactly an entry (extra key, wrong type) is malformed."""
    value = cbor2.loads(_entry().to_bytes())
    change(value)
    with pytest.raises(MalformedMessage):
        parse_entry(encode_deterministic(value))


def _reference_bytes(entry: DeviceMessageEntry) -> bytes:
    """The entry through the generic deterministic encoder (the definition of its bytes)."""
    return encode_deterministic(
        {
            "v": 1,
            "kind": "device_message",
            "msg": entry.msg,
            "device": entry.device,
            "seq": entry.seq,
            "received": entry.received,
            "chains": [
                {"product": c.product.path, "pseq": c.pseq, "prev": c.prev} for c in entry.chains
            ],
        }
    )


_HASH = st.binary(min_size=32, max_size=32)
_U64 = st.integers(min_value=0, max_value=2**64 - 1)
# Near every head boundary (RFC 8949 §3: 23/24, 255/256, 65535/65536, 2**32-1/2**32).
_EDGES = st.sampled_from([23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1])
# AI 82 characters (GS1 General Specifications Figure 7.11-1), percent-encoded in the path.
_VALUE = st.from_regex(r"[A-Za-z0-9!\"%&'()*+,\-./:;<=>?_]{1,18}", fullmatch=True).filter(
    lambda v: v not in {".", ".."}
)


@st.composite
def _chains(draw: st.DrawFn) -> tuple[ChainPosition, ...]:
    count = draw(st.sampled_from([0, 1, 1, 2, 3, 23, 24]))
    chains = []
    for number in range(count):
        lot = draw(st.none() | _VALUE)
        serial = draw(st.none() | _VALUE)
        key = ProductKey("06901234567892", lot=f"{lot or ''}{number}", serial=serial)
        pseq = draw(st.integers(min_value=1, max_value=2**64 - 1) | _EDGES)
        prev = GENESIS_PREV if pseq == 1 else draw(_HASH.filter(lambda h: h != GENESIS_PREV))
        chains.append(ChainPosition(key, pseq, prev))
    return tuple(chains)


@settings(max_examples=200, deadline=None)
@given(
    msg=_HASH,
    device=st.from_regex(r"[a-z0-9-]{3,64}", fullmatch=True),
    seq=st.integers(min_value=1, max_value=2**64 - 1) | _EDGES,
    received=_U64 | _EDGES,
    chains=_chains(),
)
def test_entry_bytes_equal_the_generic_encoder(
    msg: bytes, device: str, seq: int, received: int, chains: tuple[ChainPosition, ...]
) -> None:
    """The directly assembled entry bytes equal encode_deterministic's, for any valid entry."""
    entry = DeviceMessageEntry(msg=msg, device=device, seq=seq, received=received, chains=chains)
    data = entry.to_bytes()
    assert data == _reference_bytes(entry)
    assert parse_entry(data) == entry


@pytest.mark.parametrize("field", ["seq", "received"])
def test_entry_integers_beyond_64_bits_are_refused_as_before(field: str) -> None:
    """An integer the deterministic encoding cannot hold raises the generic encoder's error."""
    entry = _entry(**{field: 2**64})
    with pytest.raises(ValueError, match="64") as direct:
        entry.to_bytes()
    with pytest.raises(ValueError, match="64") as generic:
        _reference_bytes(entry)
    assert str(direct.value) == str(generic.value)
