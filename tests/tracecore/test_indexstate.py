"""What the product index maps (tracecore.indexstate), pure: keys, values, folding entries."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from tracecore import smt
from tracecore.errors import MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.indexstate import (
    ChainHead,
    DeviceState,
    IndexChanges,
    IndexValue,
    ProductState,
    device_key,
    fold,
    parse_value,
    product_key,
    touched_keys,
)
from tracecore.keys import device_kid
from tracecore.logentry import (
    GENESIS_PREV,
    Access,
    AnyEntry,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    KeyRevoked,
    KeyRotated,
    Recall,
)
from tracecore.merkle import leaf_hash

T0 = 1_795_000_000_000
LOT = ProductKey.parse("01/06901234567892/10/L261127")
CARTON = ProductKey.parse("01/06901234567892/10/L261127/21/C0001")
OTHER = ProductKey.parse("01/06901234567892/10/L999")
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def _prev(pseq: int) -> bytes:
    """A previous-entry hash (the fold reads positions, not links: the verifier checks those)."""
    return GENESIS_PREV if pseq == 1 else bytes([pseq]) * 32


def _message(device: str, seq: int, *chains: tuple[ProductKey, int]) -> DeviceMessageEntry:
    return DeviceMessageEntry(
        msg=hashlib.sha256(f"{device}/{seq}".encode()).digest(),
        device=device,
        seq=seq,
        received=T0 + seq,
        chains=tuple(ChainPosition(p, pseq, _prev(pseq)) for p, pseq in chains),
    )


#: A log: registrations, chains of two products, a key rotation, recalls, an access, a root.
LOG: list[AnyEntry] = [
    DeviceRegistered("hens01-collect", "gansu-hens-01", KEY_A, T0, T0),  # 0
    DeviceRegistered("pack-line-1", "gansu-hens-01", KEY_B, T0, T0),  # 1
    _message("hens01-collect", 1, (LOT, 1)),  # 2
    _message("hens01-collect", 2, (LOT, 2)),  # 3
    KeyRotated("hens01-collect", KEY_B, T0 + 5, T0 + 5),  # 4
    _message("pack-line-1", 1, (CARTON, 1), (LOT, 3)),  # 5
    Recall((LOT, OTHER), "salmonella", "admin", T0 + 9),  # 6
    Access("admin", "admin", "GET /v1/x", "/v1/x", (), T0 + 10),  # 7
    IndexRoot(size=8, root=bytes(32), time=T0 + 11),  # 8
    KeyRevoked("pack-line-1", device_kid(KEY_B), T0 + 12, "lost", T0 + 12),  # 9
    Recall((LOT,), "again", "admin", T0 + 13),  # 10
]
ENTRIES = [(n, entry, entry.to_bytes()) for n, entry in enumerate(LOG)]


def test_the_fold_of_a_log() -> None:
    """Chain heads are the newest chain entry, recalls and registries list their indexes."""
    values = fold(ENTRIES)
    assert values == {
        product_key(LOT.path): ProductState(
            LOT.path, ChainHead(3, 5, leaf_hash(ENTRIES[5][2])), (6, 10)
        ),
        product_key(CARTON.path): ProductState(
            CARTON.path, ChainHead(1, 5, leaf_hash(ENTRIES[5][2]))
        ),
        product_key(OTHER.path): ProductState(OTHER.path, None, (6,)),  # recalled, never seen
        device_key("hens01-collect"): DeviceState("hens01-collect", (0, 4)),
        device_key("pack-line-1"): DeviceState("pack-line-1", (1, 9)),
    }
    for key, value in values.items():
        assert value.key == key
        assert parse_value(value.to_bytes()) == value


def test_access_and_index_roots_touch_nothing() -> None:
    """Only messages, recalls and a device's registry entries name keys."""
    assert [touched_keys(entry) for entry in LOG[7:9]] == [[], []]
    assert touched_keys(LOG[5]) == [product_key(CARTON.path), product_key(LOT.path)]
    assert touched_keys(LOG[6]) == [product_key(LOT.path), product_key(OTHER.path)]
    assert touched_keys(LOG[9]) == [device_key("pack-line-1")]


def test_keys_are_domain_separated() -> None:
    """A product and a device of the same spelling have different keys."""
    assert product_key("abc-1") != device_key("abc-1")
    assert product_key(LOT.path) == hashlib.sha256(b"product\x00" + LOT.path.encode()).digest()
    assert device_key("abc-1") == hashlib.sha256(b"device\x00abc-1").digest()


@pytest.mark.parametrize("cut", [0, 1, 3, 5, 6, 9, 11])
def test_incremental_folds_equal_the_fold_of_the_whole(cut: int) -> None:
    """Folding [cut, n) on top of the stored values of [0, cut) gives the whole fold, reading
    each stored key at most once."""
    stored = fold(ENTRIES[:cut])
    reads: list[bytes] = []

    def current(key: bytes) -> IndexValue | None:
        reads.append(key)
        return stored.get(key)

    changes = IndexChanges(current)
    for index, entry, data in ENTRIES[cut:]:
        changes.apply(index, entry, data)
    assert stored | changes.values == fold(ENTRIES)
    assert len(reads) == len(set(reads))
    assert set(changes.values) == {k for _, e, _ in ENTRIES[cut:] for k in touched_keys(e)}
    whole = fold(ENTRIES)
    expected = {k: smt.value_hash(v.to_bytes()) for k, v in whole.items()}
    tree = smt.MemoryTree()
    tree.apply({k: smt.value_hash(v.to_bytes()) for k, v in stored.items()})
    tree.apply(changes.value_hashes())
    assert tree.root == smt.root_of(expected)


# --- parse_value -------------------------------------------------------------------------------

GOOD = ProductState(LOT.path, ChainHead(3, 5, bytes(range(32))), (6, 10))


def _product_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "v": 1,
        "product": LOT.path,
        "chain": [3, 5, bytes(range(32))],
        "recalls": [6, 10],
    }
    return {k: v for k, v in (doc | changes).items() if v is not _DROP}


_DROP = object()


def _canonical(doc: object) -> bytes:
    return cbor2.dumps(doc, canonical=True)


def test_good_values_round_trip() -> None:
    """Product and device values parse back to themselves, chain null included."""
    for value in (
        GOOD,
        ProductState(OTHER.path, None, (6,)),
        ProductState(CARTON.path, ChainHead(1, 0, bytes(32))),
        DeviceState("pack-line-1", (1, 9)),
        DeviceState("pack-line-1"),
    ):
        assert parse_value(value.to_bytes()) == value
    assert _canonical(_product_doc()) == GOOD.to_bytes()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_product_doc(v=2), "v = 1"),
        ([1, LOT.path], "v = 1"),
        (_product_doc(recalls=_DROP), "product's or a device's keys"),
        (_product_doc(extra=1), "product's or a device's keys"),
        ({"v": 1, "device": "pack-line-1", "registry": [1], "chain": None}, "device's keys"),
        (_product_doc(product=b"01/06901234567892/10/L261127"), "product is text"),
        (_product_doc(product="01/6901234567892/10/L261127"), "product"),  # not canonical
        (_product_doc(product="/01/06901234567892/10/L261127"), "product"),
        (_product_doc(chain=[3, 5]), "chain is"),
        (_product_doc(chain={"pseq": 3}), "chain is"),
        (_product_doc(chain=[0, 5, bytes(32)]), "chain position"),
        (_product_doc(chain=[3, -1, bytes(32)]), "chain position"),
        (_product_doc(chain=[True, 5, bytes(32)]), "chain position"),
        (_product_doc(chain=[3, 5, bytes(31)]), "chain leaf"),
        (_product_doc(chain=[3, 5, "00" * 32]), "chain leaf"),
        (_product_doc(recalls=[10, 6]), "ascending"),
        (_product_doc(recalls=[6, 6]), "ascending"),
        (_product_doc(recalls=[-1]), "log indexes"),
        (_product_doc(recalls=[True]), "log indexes"),
        (_product_doc(recalls=6), "log indexes"),
        ({"v": 1, "device": "Pack-Line-1", "registry": [1]}, "device"),
        ({"v": 1, "device": 7, "registry": [1]}, "device is text"),
        ({"v": 1, "device": "pack-line-1", "registry": [1, 0]}, "ascending"),
    ],
)
def test_malformed_values_are_refused(doc: object, message: str) -> None:
    """Every rule of the value's form is checked, with a MalformedMessage naming it."""
    with pytest.raises(MalformedMessage, match=message):
        parse_value(_canonical(doc))


def test_non_deterministic_encodings_are_refused() -> None:
    """Keys out of order, long integer heads, indefinite lengths, trailing bytes: refused."""
    good = GOOD.to_bytes()
    unordered = cbor2.dumps(
        {"product": LOT.path, "v": 1, "chain": [3, 5, bytes(range(32))], "recalls": [6, 10]}
    )
    assert cbor2.loads(unordered) == cbor2.loads(good)
    assert unordered != good
    long_head = good.replace(b"\x61v\x01", b"\x61v\x18\x01", 1)
    assert long_head != good
    indefinite = b"\xbf" + good[1:] + b"\xff"
    for data in (unordered, long_head, indefinite, good + b"\x00", good[:-1], b""):
        with pytest.raises(MalformedMessage):
            parse_value(data)
