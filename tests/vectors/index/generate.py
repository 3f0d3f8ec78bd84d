"""Generate the product index golden vectors (run by hand, never by the tests).

    cd /work/wt/NAME && PYTHONPATH=. /work/main/.venv/bin/python tests/vectors/index/generate.py

Writes the maps (``map_*.json``), the proofs (``proof_*.json`` must verify, ``bad_*.json`` must
be refused), the ``index_root`` log entry (``index_root_entry.cbor``) and ``manifest.json`` next
to this file, and prints the hex blocks of the worked example of docs/product-index.md.
Everything is deterministic: the small map is the index of a fixed twelve-entry log (fixed
times, keys and hashes derived from labels), folded by :func:`tracecore.indexstate.fold`; the
absent products are the first of a fixed list of candidate lots whose proofs take the wanted
shape. tests/tracecore/test_index_vectors.py checks every vector against tracecore and against
an independent verifier, and that :func:`build` still gives these exact bytes.

A proof file is one proof exactly as an evidence bundle carries it (docs/product-index.md,
"Proofs in JSON"): base64 (RFC 4648 §4, with padding) for every byte string.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracecore import smt
from tracecore.identifiers import ProductKey
from tracecore.indexstate import (
    DeviceState,
    IndexValue,
    ProductState,
    device_key,
    fold,
    product_key,
)
from tracecore.logentry import (
    GENESIS_PREV,
    Access,
    AnyEntry,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    KeyRotated,
    Recall,
)
from tracecore.merkle import leaf_hash as log_leaf_hash

HERE = Path(__file__).resolve().parent
LABEL_PREFIX = b"agritrace/vectors/index/"
T0 = 1_795_766_400_000  # 2026-11-27T08:00:00Z in ms since the Unix epoch
HOUR = 3_600_000

BARN = "farm-linden-barn-2"
PACKER = "packer-nord-line-1"

LOT = "01/06901234567892/10/L261127"  # two chain entries, then packed; recalled twice
LOT2 = "01/06901234567892/10/L261128"  # a chain, never recalled
CARTON1 = "01/06901234567892/10/L261127/21/C0001"
CARTON2 = "01/06901234567892/10/L261127/21/C0002"  # recalled by an inspector
RECALL_ONLY = "01/06901234567892/10/L261130"  # recalled, never named by a device: chain null
SLASH_LOT = ProductKey.from_parts("06901234567892", lot="L26/11").path  # lot with a "/"
SERIAL = "01/06901234567892/21/S0001"
EGGS = "01/09506000134352/10/EGG-2026-001"
PRODUCTS = [LOT, LOT2, CARTON1, CARTON2, RECALL_ONLY, SLASH_LOT, SERIAL, EGGS]
#: Candidate absent products, searched in this order for the wanted proof shapes.
ABSENT_CANDIDATES = [f"01/06901234567892/10/L2612{n:02d}" for n in range(1, 100)]


def label_hash(label: str) -> bytes:
    """SHA-256 of "agritrace/vectors/index/" + label: the 32-byte stand-ins of the log."""
    return hashlib.sha256(LABEL_PREFIX + label.encode()).digest()


def b64(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4), as evidence bundles spell bytes."""
    return base64.b64encode(data).decode("ascii")


def pk(path: str) -> ProductKey:
    """Parse a canonical product key."""
    return ProductKey.parse_canonical(path)


# -- the log and its index -----------------------------------------------------------------------


def log_entries() -> list[AnyEntry]:
    """Twelve log entries: two devices, their messages, a key rotation, recalls, an access."""
    entries: list[AnyEntry] = []

    def leaf(index: int) -> bytes:
        return log_leaf_hash(entries[index].to_bytes())

    def message(device: str, seq: int, hours: int, *chains: tuple[str, int, int | None]) -> None:
        entries.append(
            DeviceMessageEntry(
                msg=label_hash(f"msg/{device}/{seq}"),
                device=device,
                seq=seq,
                received=T0 + hours * HOUR,
                chains=tuple(
                    ChainPosition(pk(p), pseq, GENESIS_PREV if prev is None else leaf(prev))
                    for p, pseq, prev in chains
                ),
            )
        )

    entries.append(DeviceRegistered(BARN, "farm-linden", label_hash(f"key/{BARN}"), T0, T0))
    entries.append(DeviceRegistered(PACKER, "packer-nord", label_hash(f"key/{PACKER}"), T0, T0))
    message(BARN, 1, 1, (LOT, 1, None), (LOT2, 1, None))  # 2
    message(BARN, 2, 2, (LOT, 2, 2))  # 3
    message(PACKER, 1, 3, (CARTON1, 1, None), (CARTON2, 1, None), (LOT, 3, 3))  # 4
    entries.append(
        Recall((pk(LOT), pk(RECALL_ONLY)), "Salmonella found at the barn", "admin", T0 + 4 * HOUR)
    )  # 5
    entries.append(
        KeyRotated(BARN, label_hash(f"key/{BARN}/next"), T0 + 5 * HOUR, T0 + 5 * HOUR)
    )  # 6
    message(PACKER, 2, 6, (SLASH_LOT, 1, None), (CARTON1, 2, 4), (SERIAL, 1, None), (EGGS, 1, None))
    entries.append(
        Access("admin", "admin", "GET /v1/recalls", "/v1/recalls", ("farm-linden",), T0 + 7 * HOUR)
    )  # 8: changes no index key
    entries.append(Recall((pk(CARTON2),), "carton damaged", "lab-kiel", T0 + 8 * HOUR))  # 9
    message(BARN, 3, 9, (LOT2, 2, 2))  # 10
    entries.append(Recall((pk(LOT),), "second positive sample", "lab-kiel", T0 + 10 * HOUR))  # 11
    return entries


def subject_of(value: IndexValue) -> dict[str, str]:
    """The manifest's name of what a key is about: {"product": path} or {"device": id}."""
    if isinstance(value, ProductState):
        return {"product": value.product}
    return {"device": value.device}


def key_of(subject: dict[str, str]) -> bytes:
    """The index key of a subject."""
    if "product" in subject:
        return product_key(subject["product"])
    return device_key(subject["device"])


def decoded(value: IndexValue) -> dict[str, Any]:
    """The value as JSON (byte strings in base64), as the log API shows decoded CBOR."""
    if isinstance(value, DeviceState):
        return {"v": 1, "device": value.device, "registry": list(value.registry)}
    chain = value.chain
    return {
        "v": 1,
        "product": value.product,
        "chain": None if chain is None else [chain.pseq, chain.index, b64(chain.leaf)],
        "recalls": list(value.recalls),
    }


@dataclass
class IndexMap:
    """A map of the vectors: its values by key, its tree and root."""

    values: dict[bytes, bytes]
    log: list[bytes] = field(default_factory=list)
    tree: smt.MemoryTree = field(default_factory=smt.MemoryTree)

    def __post_init__(self) -> None:
        if self.values:
            self.tree.apply({k: smt.value_hash(v) for k, v in self.values.items()})
        assert self.tree.root == smt.root_of({k: smt.value_hash(v) for k, v in self.values.items()})

    @property
    def root(self) -> bytes:
        return self.tree.root

    def proof(self, subject: dict[str, str]) -> dict[str, Any]:
        """The honest proof of a subject's key, as JSON."""
        key = key_of(subject)
        proof = self.tree.prove(key)
        return proof_json(key, self.values.get(key), proof.siblings, proof.other)

    def to_json(self, parsed: dict[bytes, IndexValue]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "root": b64(self.root),
            "entries": [
                {
                    **subject_of(parsed[key]),
                    "key": b64(key),
                    "value": b64(value),
                    "decoded": decoded(parsed[key]),
                }
                for key, value in sorted(self.values.items())
            ],
        }
        if self.log:
            doc["log"] = [b64(entry) for entry in self.log]
        return doc


def proof_json(
    key: bytes,
    value: bytes | None,
    siblings: Iterable[bytes],
    other: smt.Leaf | None,
) -> dict[str, Any]:
    """A proof exactly as a bundle carries it (docs/product-index.md, "Proofs in JSON")."""
    return {
        "key": b64(key),
        "value": None if value is None else b64(value),
        "siblings": [b64(s) for s in siblings],
        "other": None
        if other is None
        else {"key": b64(other.key), "value_hash": b64(other.value_hash)},
    }


# -- vectors -------------------------------------------------------------------------------------


@dataclass
class Vector:
    """One file and its manifest entry."""

    file: str
    data: bytes
    entry: dict[str, Any]


@dataclass
class Case:
    """A proof vector: the proof of ``subject`` against the root of the map ``map_file``."""

    file: str
    subject: dict[str, str]
    proof: dict[str, Any]
    expect: str  # "present", "absent", or the error: "ProofError", "MalformedMessage"
    description: str
    reason: str | None = None  # for an error: words its message contains

    def vector(self, map_file: str, root: bytes) -> Vector:
        entry: dict[str, Any] = {
            "file": self.file,
            "kind": "proof",
            "map": map_file,
            "root_hex": root.hex(),
            "subject": self.subject,
            "expect": self.expect,
        }
        if self.reason is not None:
            entry["reason"] = self.reason
        entry["description"] = self.description
        return Vector(self.file, _json_bytes(self.proof), entry)


def _json_bytes(doc: object) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _map_vector(file: str, index: IndexMap, parsed: dict[bytes, IndexValue], text: str) -> Vector:
    entry = {
        "file": file,
        "kind": "map",
        "root_hex": index.root.hex(),
        "keys": len(index.values),
        "description": text,
    }
    return Vector(file, _json_bytes(index.to_json(parsed)), entry)


def _flip(data: bytes) -> bytes:
    """``data`` with its last bit flipped."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _absent_subjects(index: IndexMap) -> tuple[str, str]:
    """The first candidate lots whose absence proofs end in an empty subtree / another leaf."""
    empty = other = None
    for path in ABSENT_CANDIDATES:
        proof = index.tree.prove(product_key(path))
        if proof.other is None and empty is None and proof.siblings:
            empty = path
        if proof.other is not None and other is None:
            other = path
    assert empty is not None
    assert other is not None
    return empty, other


def small_map() -> tuple[IndexMap, dict[bytes, IndexValue]]:
    """The index of :func:`log_entries`, folded by tracecore, and its parsed values."""
    entries = log_entries()
    raw = [e.to_bytes() for e in entries]
    parsed = fold((i, e, b) for i, (e, b) in enumerate(zip(entries, raw, strict=True)))
    return IndexMap({k: v.to_bytes() for k, v in parsed.items()}, raw), parsed


def good_cases(index: IndexMap) -> list[Case]:
    """Proofs of the small map that must verify."""
    absent_empty, absent_other = _absent_subjects(index)
    return [
        Case(file, subject, index.proof(subject), expect, text)
        for file, subject, expect, text in [
            ("proof_present_recalled.json", {"product": LOT}, "present",
             f"{LOT}: chain head pseq 3 at index 4, recalled by entries 5 and 11"),
            ("proof_present_no_recall.json", {"product": LOT2}, "present",
             f"{LOT2}: chain head pseq 2 at index 10, no recall (recalls [])"),
            ("proof_present_recall_only.json", {"product": RECALL_ONLY}, "present",
             f"{RECALL_ONLY}: recalled by entry 5 but never named by a device: chain null"),
            ("proof_present_percent_encoded.json", {"product": SLASH_LOT}, "present",
             f"{SLASH_LOT}: lot 'L26/11', spelled %2F in the path the key hashes"),
            ("proof_present_device.json", {"device": BARN}, "present",
             f"device {BARN}: registered (entry 0), key rotated (entry 6)"),
            ("proof_absent_empty.json", {"product": absent_empty}, "absent",
             f"{absent_empty}: never logged; the path ends in an empty subtree"),
            ("proof_absent_other_leaf.json", {"product": absent_other}, "absent",
             f"{absent_other}: never logged; the path ends in another key's leaf (other)"),
            ("proof_absent_device.json", {"device": "farm-linden-barn-3"}, "absent",
             "device farm-linden-barn-3: never registered"),
        ]
    ]  # fmt: skip


ROOT_MISMATCH = "does not lead to the index root"


def bad_cases(index: IndexMap, parsed: dict[bytes, IndexValue]) -> list[Case]:
    """Tampered proofs of the small map that must be refused, each for its reason."""
    recalled = {"product": LOT}
    present = index.proof(recalled)
    lot_key = product_key(LOT)
    sibs = present["siblings"]
    lot_state = parsed[lot_key]
    assert isinstance(lot_state, ProductState)
    unrecalled = ProductState(lot_state.product, lot_state.chain, ()).to_bytes()
    value = base64.b64decode(present["value"])
    forged_other = {"key": b64(_flip(lot_key)), "value_hash": b64(smt.value_hash(value))}
    absent_empty, absent_other = _absent_subjects(index)
    absent = index.proof({"product": absent_other})
    depth = len(absent["siblings"])
    stranger = next(
        k
        for k in sorted(index.values)
        if any(smt.bit(k, d) != smt.bit(product_key(absent_other), d) for d in range(depth))
    )
    off_path = {"key": b64(stranger), "value_hash": b64(smt.value_hash(index.values[stranger]))}
    wrong_key = hashlib.sha256(LOT.encode()).digest()
    wrong = index.tree.prove(wrong_key)
    device_as_product = index.tree.prove(product_key(BARN))
    # RFC 8949 §4.2.1: the recall index 5 spelled with a one-byte argument (18 05), not 05.
    long_form = value.replace(b"\x67recalls\x82\x05", b"\x67recalls\x82\x18\x05")
    assert long_form != value
    return [
        Case("bad_changed_sibling.json", recalled,
             present | {"siblings": [b64(_flip(base64.b64decode(sibs[0]))), *sibs[1:]]},
             "ProofError", "proof_present_recalled with the last bit of its first sibling flipped",
             ROOT_MISMATCH),
        Case("bad_missing_sibling.json", recalled, present | {"siblings": sibs[:-1]},
             "ProofError",
             "proof_present_recalled without its last sibling (the path ends one level too high)",
             ROOT_MISMATCH),
        Case("bad_extra_sibling.json", recalled, present | {"siblings": [*sibs, b64(smt.EMPTY)]},
             "ProofError",
             "proof_present_recalled with an extra empty sibling (the path ends one level too low)",
             ROOT_MISMATCH),
        Case("bad_value_recalls_emptied.json", recalled, present | {"value": b64(unrecalled)},
             "ProofError",
             "forged 'no recall': proof_present_recalled with recalls [5, 11] emptied to [] (a"
             " well-formed value, but not the one in the map)", ROOT_MISMATCH),
        Case("bad_absent_but_present.json", recalled, present | {"value": None}, "ProofError",
             "absence claimed for a present product: its own siblings, value null, other null",
             ROOT_MISMATCH),
        Case("bad_absent_other_key_forged.json", recalled,
             present | {"value": None, "other": forged_other}, "ProofError",
             "absence claimed for a present product: its own siblings and value hash, 'other'"
             " naming another key that shares all but the last bit (the other leaf is computed"
             " from the other key, so it no longer is the product's leaf)", ROOT_MISMATCH),
        Case("bad_other_is_key.json", recalled,
             present | {"value": None, "other": forged_other | {"key": b64(lot_key)}},
             "ProofError",
             "absence claimed for a present product with 'other' = its own key and value hash:"
             " this folds to the root, so other == key must be refused",
             "ends in the key's own leaf"),
        Case("bad_other_off_path.json", {"product": absent_other},
             absent | {"other": off_path}, "ProofError",
             "proof_absent_other_leaf with 'other' replaced by a key of the map that does not"
             f" share the product's first {depth} bits", "not on the key's path"),
        Case("bad_presence_with_other.json", recalled, present | {"other": forged_other},
             "ProofError",
             "proof_present_recalled with an 'other' leaf: a presence proof has other null",
             "not another's"),
        Case("bad_wrong_key_derivation.json", recalled,
             proof_json(wrong_key, None, wrong.siblings, wrong.other), "ProofError",
             "a correct proof of ABSENCE, but of SHA-256(path) without the 'product' 0x00"
             f" prefix: it folds to the root, yet says nothing about {LOT}",
             "not the subject's key"),
        Case("bad_wrong_key_kind.json", {"device": BARN},
             proof_json(product_key(BARN), None, device_as_product.siblings,
                        device_as_product.other), "ProofError",
             f"a correct proof of absence of SHA-256('product' 0x00 '{BARN}'): the device's key"
             " is SHA-256('device' 0x00 id)", "not the subject's key"),
        Case("bad_value_other_subject.json", recalled,
             present | {"value": b64(index.values[product_key(LOT2)])}, "ProofError",
             f"proof_present_recalled carrying the value of {LOT2}", "names another"),
        Case("bad_value_not_deterministic.json", recalled, present | {"value": b64(long_form)},
             "MalformedMessage",
             "proof_present_recalled whose value spells recall index 5 as 1805: same data, not"
             " the deterministic encoding (RFC 8949 §4.2.1)", "deterministic"),
        Case("bad_too_many_siblings.json", {"product": absent_empty},
             proof_json(product_key(absent_empty), None, [smt.EMPTY] * 257, None), "ProofError",
             "257 siblings: no path in a tree of 256-bit keys is longer than 256", "at most 256"),
        Case("bad_sibling_length.json", recalled,
             present | {"siblings": [b64(base64.b64decode(sibs[0])[:31]), *sibs[1:]]},
             "ProofError", "proof_present_recalled whose first sibling is 31 bytes", "32 bytes"),
    ]  # fmt: skip


def small_map_vectors() -> tuple[list[Vector], IndexMap, dict[bytes, IndexValue]]:
    """The small map, its good proofs and the tampered ones."""
    index, parsed = small_map()
    name = "map_small.json"
    text = (
        "the index of the 12-entry log in 'log' (base64 entries, index 0 first): 8 products,"
        " 2 devices; each entry gives the subject, key, value (its deterministic CBOR) and the"
        " value decoded (byte strings in base64)"
    )
    cases = [*good_cases(index), *bad_cases(index, parsed)]
    return (
        [_map_vector(name, index, parsed, text), *(c.vector(name, index.root) for c in cases)],
        index,
        parsed,
    )


def tiny_map_vectors(parsed: dict[bytes, IndexValue]) -> list[Vector]:
    """The empty map and the map of one key."""
    empty = IndexMap({})
    assert empty.root == smt.EMPTY
    key = product_key(LOT)
    one = IndexMap({key: parsed[key].to_bytes()})
    assert one.root == smt.leaf_hash(key, smt.value_hash(one.values[key]))
    return [
        _map_vector("map_empty.json", empty, {}, "the empty map: its root is 32 zero bytes"),
        Case("proof_empty_map_absent.json", {"product": LOT}, empty.proof({"product": LOT}),
             "absent", "any key in the empty map: no siblings, value null, other null",
             ).vector("map_empty.json", empty.root),
        _map_vector("map_one.json", one, parsed,
                    f"a map of one key ({LOT}): its root is that key's leaf"),
        Case("proof_one_key_present.json", {"product": LOT}, one.proof({"product": LOT}),
             "present", "the map's only key: no siblings, the leaf is the root",
             ).vector("map_one.json", one.root),
        Case("proof_one_key_absent.json", {"product": LOT2}, one.proof({"product": LOT2}),
             "absent",
             "another key: no siblings, other = the only key's leaf (sharing the first 0 bits)",
             ).vector("map_one.json", one.root),
    ]  # fmt: skip


def index_root_vector(index: IndexMap) -> Vector:
    """The ``index_root`` entry that commits the small map, at index 12 of its log."""
    entry = IndexRoot(size=len(index.log), root=index.root, time=T0 + 11 * HOUR)
    data = entry.to_bytes()
    return Vector(
        "index_root_entry.cbor",
        data,
        {
            "file": "index_root_entry.cbor",
            "kind": "log_entry",
            "size": entry.size,
            "root_hex": entry.root.hex(),
            "time": entry.time,
            "leaf_hash_hex": log_leaf_hash(data).hex(),
            "expect": "valid",
            "description": (
                "the index_root log entry committing map_small.json: size 12 (its log), "
                "written at index 12; leaf_hash is its RFC 9162 leaf hash SHA-256(0x00 || entry)"
            ),
        },
    )


def all_vectors() -> list[Vector]:
    """Every vector, in manifest order."""
    vectors, index, parsed = small_map_vectors()
    return [*vectors, *tiny_map_vectors(parsed), index_root_vector(index)]


def build() -> dict[str, bytes]:
    """Every file this script writes (name -> bytes), manifest.json included."""
    vectors = all_vectors()
    files = {v.file: v.data for v in vectors}
    assert len(files) == len(vectors), "duplicate vector file names"
    files["manifest.json"] = _json_bytes([v.entry for v in vectors])
    return files


def worked_example(show: Callable[[str], object]) -> None:
    """Print the hex blocks of the docs/product-index.md worked example."""
    vectors, index, parsed = small_map_vectors()
    key = product_key(LOT)
    value = index.values[key]
    root_entry = index_root_vector(index)
    for name, data in [
        ("key_input", b"product\x00" + LOT.encode()),
        ("key", key),
        ("device_key_input", b"device\x00" + BARN.encode()),
        ("device_key", device_key(BARN)),
        ("value", value),
        ("value_hash", smt.value_hash(value)),
        ("leaf", smt.leaf_hash(key, smt.value_hash(value))),
        ("root", index.root),
        ("index_root_entry", root_entry.data),
        ("index_root_leaf_hash", log_leaf_hash(root_entry.data)),
    ]:
        show(f"<!-- hex:{name} -->\n```text\n{_wrap(data.hex())}\n```\n")
    del vectors, parsed


def _wrap(text: str, width: int = 64) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def main() -> None:
    """Write the vectors and the manifest; print the worked example."""
    files = build()
    for old in HERE.iterdir():
        if old.suffix in {".json", ".cbor"} and old.name not in files:
            old.unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    worked_example(lambda text: sys.stdout.write(text + "\n"))
    sys.stdout.write(f"# wrote {len(files)} files to {HERE}\n")


if __name__ == "__main__":
    main()
