"""Golden vectors of the product index (tests/vectors/index) and docs/product-index.md.

Each vector is checked twice: with tracecore (:mod:`tracecore.smt`, :mod:`tracecore.indexstate`)
and with :func:`independent_verify`, written from docs/product-index.md alone with hashlib and
base64, so that the page is shown to be enough to write a verifier in another language.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tracecore import smt
from tracecore.errors import MalformedMessage, ProofError
from tracecore.indexstate import (
    DeviceState,
    IndexValue,
    ProductState,
    device_key,
    fold,
    parse_value,
    product_key,
)
from tracecore.logentry import IndexRoot, parse_any_entry
from tracecore.merkle import leaf_hash as log_leaf_hash

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "index"
DOC = ROOT / "docs" / "product-index.md"
MANIFEST: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
BY_FILE = {entry["file"]: entry for entry in MANIFEST}
PROOFS = [e for e in MANIFEST if e["kind"] == "proof"]
MAPS = [e for e in MANIFEST if e["kind"] == "map"]
ERRORS: dict[str, type[Exception]] = {
    "ProofError": ProofError,
    "MalformedMessage": MalformedMessage,
}


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text("utf-8"))


def _b64(text: object) -> bytes:
    assert isinstance(text, str)
    return base64.b64decode(text, validate=True)


def _subject_of(value: IndexValue) -> dict[str, str]:
    if isinstance(value, ProductState):
        return {"product": value.product}
    return {"device": value.device}


def _key_of(subject: dict[str, str]) -> bytes:
    if "product" in subject:
        return product_key(subject["product"])
    return device_key(subject["device"])


def tracecore_check(entry: dict[str, Any], proof: dict[str, Any]) -> str:
    """Check a proof vector with tracecore as a bundle verifier does: parse, then verify.

    Returns "present" or "absent"; raises ProofError or MalformedMessage.
    """
    root = bytes.fromhex(entry["root_hex"])
    key = _b64(proof["key"])
    subject = entry["subject"]
    if key != _key_of(subject):
        raise ProofError("the proof's key is not the subject's key")
    value = None if proof["value"] is None else _b64(proof["value"])
    if value is not None and _subject_of(parse_value(value)) != subject:
        raise ProofError("the proof's value names another subject than its key")
    raw_other = proof["other"]
    other = (
        None
        if raw_other is None
        else smt.Leaf(_b64(raw_other["key"]), _b64(raw_other["value_hash"]))
    )
    smt.verify_proof(root, key, value, smt.MapProof(tuple(map(_b64, proof["siblings"])), other))
    return "absent" if value is None else "present"


def _outcome(entry: dict[str, Any]) -> tuple[str, str]:
    try:
        return tracecore_check(entry, _load(entry["file"])), ""
    except (ProofError, MalformedMessage) as exc:
        return type(exc).__name__, str(exc)


# -- the independent verifier: docs/product-index.md, "Verifying a proof", and nothing else ----


class Refused(Exception):
    """The independent verifier refuses a proof: ``error`` is "ProofError" or "MalformedMessage"."""

    def __init__(self, error: str = "ProofError") -> None:
        super().__init__(error)
        self.error = error


def _require(ok: bool, error: str = "ProofError") -> None:
    if not ok:
        raise Refused(error)


def independent_verify(root: bytes, subject: dict[str, str], proof: dict[str, Any]) -> str:
    """'present' or 'absent', or raises Refused; uses only hashlib and base64."""

    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def b(text: str) -> bytes:
        return base64.b64decode(text, validate=True)

    def bit(k: bytes, i: int) -> int:
        return (k[i // 8] >> (7 - i % 8)) & 1

    ((kind, name),) = subject.items()  # {"product": path} or {"device": id}
    key = b(proof["key"])
    _require(key == h(kind.encode() + b"\x00" + name.encode()))  # step 1: the subject's key
    siblings = [b(s) for s in proof["siblings"]]
    _require(len(siblings) <= 256 and all(len(s) == 32 for s in siblings))  # step 2
    depth, value, other = len(siblings), proof["value"], proof["other"]
    if value is not None:  # step 3: what the path ends in
        _require(other is None)
        _require(independent_value(b(value)).get(kind) == name)  # names the subject
        node = h(b"\x00" + key + h(b(value)))
    elif other is None:
        node = bytes(32)
    else:
        other_key, other_value_hash = b(other["key"]), b(other["value_hash"])
        _require(len(other_key) == 32 and len(other_value_hash) == 32 and other_key != key)
        _require(all(bit(other_key, i) == bit(key, i) for i in range(depth)))
        node = h(b"\x00" + other_key + other_value_hash)
    for i in reversed(range(depth)):  # step 4: fold up to the root
        pair = siblings[i] + node if bit(key, i) else node + siblings[i]
        node = h(b"\x01" + pair)
    _require(node == root)  # step 5
    return "absent" if value is None else "present"


def independent_value(data: bytes) -> dict[str, Any]:
    """Decode an index value (docs/product-index.md, "Values"); Refused("MalformedMessage")."""

    def item(pos: int) -> tuple[Any, int]:
        major, info = data[pos] >> 5, data[pos] & 31
        if data[pos] == 0xF6:
            return None, pos + 1
        _require(info < 28 and major in {0, 2, 3, 4, 5}, "MalformedMessage")
        size = 0 if info < 24 else 1 << (info - 24)
        n = info if info < 24 else int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
        pos += 1 + size
        if major == 0:
            return n, pos
        if major in {2, 3}:
            _require(pos + n <= len(data), "MalformedMessage")
            return (data[pos : pos + n] if major == 2 else data[pos : pos + n].decode()), pos + n
        items = []
        for _ in range(2 * n if major == 5 else n):
            value, pos = item(pos)
            items.append(value)
        return (items if major == 4 else dict(zip(items[::2], items[1::2], strict=True))), pos

    try:
        doc, end = item(0)
    except (IndexError, UnicodeDecodeError) as exc:
        raise Refused("MalformedMessage") from exc
    # Deterministic: re-encoding gives the same bytes (so no long forms, sorted keys, ...).
    _require(end == len(data) and independent_cbor(doc) == data, "MalformedMessage")
    _require(isinstance(doc, dict) and doc.get("v") == 1, "MalformedMessage")
    if set(doc) == {"v", "product", "chain", "recalls"}:
        chain = doc["chain"]
        _require(isinstance(doc["product"], str) and _ascending(doc["recalls"]), "MalformedMessage")
        _require(chain is None or _chain_ok(chain), "MalformedMessage")
    else:
        _require(set(doc) == {"v", "device", "registry"}, "MalformedMessage")
        _require(isinstance(doc["device"], str) and _ascending(doc["registry"]), "MalformedMessage")
    value: dict[str, Any] = doc
    return value


def _ascending(indexes: object) -> bool:
    """A list of log indexes, strictly ascending."""
    if not isinstance(indexes, list) or not all(isinstance(i, int) for i in indexes):
        return False
    return all(a < b for a, b in itertools.pairwise(indexes))


def _chain_ok(chain: object) -> bool:
    """[pseq >= 1, index, 32-byte leaf]."""
    if not isinstance(chain, list) or len(chain) != 3:
        return False
    pseq, index, leaf = chain
    ints = isinstance(pseq, int) and pseq >= 1 and isinstance(index, int)
    return ints and isinstance(leaf, bytes) and len(leaf) == 32


def independent_root(entries: list[tuple[bytes, bytes]], depth: int = 0) -> bytes:
    """The root of a map from its (key, value) pairs (docs/product-index.md, "The tree")."""
    if not entries:
        return bytes(32)
    if len(entries) == 1:
        key, value = entries[0]
        return hashlib.sha256(b"\x00" + key + hashlib.sha256(value).digest()).digest()
    left = [e for e in entries if not (e[0][depth // 8] >> (7 - depth % 8)) & 1]
    right = [e for e in entries if (e[0][depth // 8] >> (7 - depth % 8)) & 1]
    children = independent_root(left, depth + 1) + independent_root(right, depth + 1)
    return hashlib.sha256(b"\x01" + children).digest()


def independent_cbor(item: object) -> bytes:
    """Deterministic CBOR of the index values' types (docs/product-index.md, "The values")."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        size = next(s for s in (1, 2, 4, 8) if n < 1 << (8 * s))
        return bytes([major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[size]]) + n.to_bytes(size, "big")

    if item is None:
        return b"\xf6"
    if isinstance(item, int):
        return head(0, item)
    if isinstance(item, bytes):
        return head(2, len(item)) + item
    if isinstance(item, str):
        return head(3, len(item.encode())) + item.encode()
    if isinstance(item, list):
        return head(4, len(item)) + b"".join(independent_cbor(i) for i in item)
    assert isinstance(item, dict)
    pairs = sorted((independent_cbor(k), independent_cbor(v)) for k, v in item.items())
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def _decoded_to_native(doc: dict[str, Any]) -> dict[str, Any]:
    """A map entry's ``decoded`` value with its one byte string (the chain leaf) as bytes."""
    if doc.get("chain") is not None:
        pseq, index, leaf = doc["chain"]
        return doc | {"chain": [pseq, index, _b64(leaf)]}
    return doc


# -- the vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", PROOFS, ids=[e["file"] for e in PROOFS])
def test_proof_vector_outcome(entry: dict[str, Any]) -> None:
    """tracecore gives each proof its expected outcome, and a refusal its stated reason."""
    outcome, message = _outcome(entry)
    assert outcome == entry["expect"], entry["description"]
    if outcome in ERRORS:
        assert entry["reason"] in message, (message, entry["description"])


@pytest.mark.parametrize("entry", PROOFS, ids=[e["file"] for e in PROOFS])
def test_independent_verifier_agrees(entry: dict[str, Any]) -> None:
    """The verifier written from the docs accepts and refuses exactly what tracecore does."""
    try:
        got = independent_verify(
            bytes.fromhex(entry["root_hex"]), entry["subject"], _load(entry["file"])
        )
    except Refused as exc:
        got = exc.error
    assert got == _outcome(entry)[0] == entry["expect"], entry["description"]


@pytest.mark.parametrize("entry", PROOFS, ids=[e["file"] for e in PROOFS])
def test_proof_root_is_its_maps(entry: dict[str, Any]) -> None:
    """A proof vector proves against the root of the map it names."""
    assert (
        _load(entry["map"])["root"] == base64.b64encode(bytes.fromhex(entry["root_hex"])).decode()
    )
    assert BY_FILE[entry["map"]]["root_hex"] == entry["root_hex"]


@pytest.mark.parametrize("entry", MAPS, ids=[e["file"] for e in MAPS])
def test_map_vector(entry: dict[str, Any]) -> None:
    """Each map's keys, values and root follow from its subjects, by tracecore and by the docs."""
    doc = _load(entry["file"])
    pairs = [(_b64(e["key"]), _b64(e["value"])) for e in doc["entries"]]
    assert len(pairs) == entry["keys"]
    assert [k for k, _ in pairs] == sorted({k for k, _ in pairs}), "keys sorted and distinct"
    for item, (key, value) in zip(doc["entries"], pairs, strict=True):
        subject = {k: item[k] for k in ("product", "device") if k in item}
        parsed = parse_value(value)
        assert _subject_of(parsed) == subject
        assert key == _key_of(subject) == parsed.key
        ((kind, name),) = subject.items()
        assert key == hashlib.sha256(kind.encode() + b"\x00" + name.encode()).digest()
        assert independent_cbor(_decoded_to_native(item["decoded"])) == value
        assert independent_value(value) == _decoded_to_native(item["decoded"])
    root = bytes.fromhex(entry["root_hex"])
    assert _b64(doc["root"]) == root
    assert smt.root_of({k: smt.value_hash(v) for k, v in pairs}) == root
    assert independent_root(pairs) == root


def test_small_map_is_the_index_of_its_log() -> None:
    """map_small.json holds exactly the values tracecore folds from its log, nothing else."""
    doc = _load("map_small.json")
    log = [_b64(e) for e in doc["log"]]
    values = fold((i, parse_any_entry(data), data) for i, data in enumerate(log))
    assert {k: v.to_bytes() for k, v in values.items()} == {
        _b64(e["key"]): _b64(e["value"]) for e in doc["entries"]
    }
    kinds = Counter(type(v) for v in values.values())
    assert kinds[ProductState] >= 6
    assert kinds[DeviceState] == 2
    products = [v for v in values.values() if isinstance(v, ProductState)]
    assert any(p.recalls and p.chain for p in products)
    assert any(p.recalls and p.chain is None for p in products)
    assert any(not p.recalls for p in products)


def test_index_root_entry_vector() -> None:
    """The index_root entry parses, names map_small's root and its log's size, and hashes right."""
    entry = BY_FILE["index_root_entry.cbor"]
    data = (VECTORS / entry["file"]).read_bytes()
    parsed = parse_any_entry(data)
    assert isinstance(parsed, IndexRoot)
    assert parsed.to_bytes() == data
    assert parsed.root.hex() == entry["root_hex"] == BY_FILE["map_small.json"]["root_hex"]
    assert parsed.size == entry["size"] == len(_load("map_small.json")["log"])
    assert parsed.time == entry["time"]
    assert log_leaf_hash(data).hex() == entry["leaf_hash_hex"]
    assert hashlib.sha256(b"\x00" + data).hexdigest() == entry["leaf_hash_hex"]
    doc = {"v": 1, "kind": "index_root", "time": parsed.time, "size": parsed.size}
    assert independent_cbor(doc | {"root": parsed.root}) == data


def test_vectors_cover_the_proof_shapes() -> None:
    """The good proofs include every shape a verifier meets, the bad ones every refusal."""
    proofs = {e["file"]: _load(e["file"]) for e in PROOFS}

    def shape(name: str) -> tuple[bool, int, bool]:
        proof = proofs[name]
        return proof["value"] is not None, len(proof["siblings"]), proof["other"] is not None

    assert shape("proof_absent_empty.json")[::2] == (False, False)
    assert shape("proof_absent_empty.json")[1] >= 1
    assert shape("proof_absent_other_leaf.json")[::2] == (False, True)
    assert shape("proof_absent_other_leaf.json")[1] >= 1
    assert shape("proof_empty_map_absent.json") == (False, 0, False)
    assert shape("proof_one_key_present.json") == (True, 0, False)
    assert shape("proof_one_key_absent.json") == (False, 0, True)
    assert BY_FILE["map_empty.json"]["root_hex"] == "00" * 32
    expects = Counter(e["expect"] for e in PROOFS)
    assert expects["present"] >= 4
    assert expects["absent"] >= 4
    assert expects["ProofError"] >= 10
    assert expects["MalformedMessage"] >= 1
    assert set(expects) <= {"present", "absent", *ERRORS}
    assert {p.name for p in VECTORS.iterdir()} == {*BY_FILE, "manifest.json", "generate.py"}


def _generator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("index_vectors_generate", VECTORS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules; the test leaves no module behind.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """generate.py, run now, gives these exact bytes (computed in memory, nothing written)."""
    built: dict[str, bytes] = _generator(monkeypatch).build()
    assert set(built) == set(BY_FILE) | {"manifest.json"}
    for name, data in built.items():
        assert (VECTORS / name).read_bytes() == data, f"{name} differs from generate.py's"


# -- docs/product-index.md worked example ---------------------------------------------------------

_HEX_BLOCK = re.compile(r"<!-- hex:([a-z0-9_]+) -->\s*```text\n([0-9a-f\s]+?)```")


def _doc_hex() -> dict[str, bytes]:
    blocks: dict[str, bytes] = {}
    for name, body in _HEX_BLOCK.findall(DOC.read_text("utf-8")):
        assert name not in blocks, f"hex block {name} appears twice"
        blocks[name] = bytes.fromhex("".join(body.split()))
    return blocks


def test_doc_worked_example_matches_vectors() -> None:
    """Every hex block of docs/product-index.md is the value the vectors hold."""
    recalled = BY_FILE["proof_present_recalled.json"]
    proof = _load(recalled["file"])
    device = BY_FILE["proof_present_device.json"]
    value = _b64(proof["value"])
    key_input = b"product\x00" + recalled["subject"]["product"].encode()
    device_input = b"device\x00" + device["subject"]["device"].encode()
    root_entry = BY_FILE["index_root_entry.cbor"]
    expected = {
        "key_input": key_input,
        "key": hashlib.sha256(key_input).digest(),
        "device_key_input": device_input,
        "device_key": hashlib.sha256(device_input).digest(),
        "value": value,
        "value_hash": smt.value_hash(value),
        "leaf": smt.leaf_hash(_b64(proof["key"]), smt.value_hash(value)),
        "root": bytes.fromhex(recalled["root_hex"]),
        "index_root_entry": (VECTORS / root_entry["file"]).read_bytes(),
        "index_root_leaf_hash": bytes.fromhex(root_entry["leaf_hash_hex"]),
    }
    assert expected["key"] == _b64(proof["key"])
    assert expected["device_key"] == _b64(_load(device["file"])["key"])
    blocks = _doc_hex()
    assert set(blocks) == set(expected)
    for name, data in expected.items():
        assert blocks[name].hex() == data.hex(), f"docs/product-index.md hex:{name} drifted"


def test_doc_lists_every_vector() -> None:
    """The table of docs/product-index.md names every vector file."""
    text = DOC.read_text("utf-8")
    for name in BY_FILE:
        assert f"`{name}`" in text, f"docs/product-index.md does not list {name}"
