"""The log routes (/v1/log/...), checked by an external RFC 9162 verifier and from tiles alone.

The verifier below is written from RFC 9162 §2.1 and C2SP signed-note / tlog-checkpoint /
tlog-tiles only: it imports nothing of tracecore's Merkle or note code (only PyNaCl for Ed25519),
so it is an independent check of what the service serves. Entries are synthetic rows appended
straight into the database; checkpoints are made with tracecore.checkpoint at several sizes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from log_kit import NOW, append_entries
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlalchemy import Engine, insert

from traceapi.app import create_app
from tracecore.cbor import encode_deterministic
from tracecore.checkpoint import make_checkpoint
from tracecore.keys import SignerKey, write_key_file
from tracecore.note import cosign, parse_note
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Cosignature, LogEntry

LOG_KEY = SignerKey("agritrace.test/log", bytes(range(32)))
WITNESS_KEY = SignerKey("witness.test/w1", bytes(range(1, 33)))
ORIGIN = "agritrace.test/log"
VALID_MESSAGE = Path(__file__).parents[1] / "vectors" / "protocol" / "valid_reading.cbor"


# --- an independent verifier: RFC 9162 §2.1 and C2SP formats, from the texts alone ------------


def sha256(data: bytes) -> bytes:
    """SHA-256."""
    return hashlib.sha256(data).digest()


def rfc_leaf(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return sha256(b"\x00" + entry)


def rfc_node(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return sha256(b"\x01" + left + right)


def rfc_verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, path: list[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if leaf_index >= tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = rfc_node(r, p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def rfc_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step (for 0 < first < second)."""
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = rfc_node(c, fr)
            sr = rfc_node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = rfc_node(sr, c)
        fn //= 2
        sn //= 2
    return fr == first_hash and sr == second_hash and sn == 0


def parse_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    """C2SP signed-note vkey ``name+hexid+base64(0x01 || key)`` -> (name, key id, key)."""
    name, key_id, blob = vkey.strip().split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 0x01
    assert sha256(name.encode() + b"\n" + raw)[:4].hex() == key_id
    return name, bytes.fromhex(key_id), raw[1:]


def verify_checkpoint(note: str, vkey: str, origin: str) -> tuple[int, bytes, list[str]]:
    """Check a C2SP signed note by the log key; return (size, root, other signature lines)."""
    name, key_id, public_key = parse_vkey(vkey)
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    lines = signatures.removesuffix("\n").split("\n")
    mine = [line for line in lines if line.startswith(f"\u2014 {name} ")]
    assert len(mine) == 1
    blob = base64.b64decode(mine[0].split(" ")[2])
    assert blob[:4] == key_id
    VerifyKey(public_key).verify(text.encode(), blob[4:])  # raises BadSignatureError
    origin_line, size, root = text.removesuffix("\n").split("\n")[:3]
    assert origin_line == origin
    return int(size), base64.b64decode(root), [line for line in lines if line not in mine]


def tile_index_path(n: int) -> str:
    """C2SP tlog-tiles index encoding: 1234067 -> x001/x234/067."""
    parts = []
    while True:
        parts.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    parts.reverse()
    return "/".join([*("x" + p for p in parts[:-1]), parts[-1]])


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def client(engine: Engine, app_client: Any, tmp_path: Path) -> Iterator[Any]:
    """A running app on the test database, given the log's vkey."""
    app = create_app(
        Settings(data_dir=tmp_path, log_origin=ORIGIN),
        engine,
        clock=lambda: NOW,
        log_vkey=LOG_KEY.verifier,
    )
    with app_client(app) as running:
        yield running


def checkpoint_at(engine: Engine) -> int:
    """Make a checkpoint of the whole log now; return its size."""
    with session_scope(engine) as session:
        checkpoint = make_checkpoint(session, ORIGIN, LOG_KEY, NOW)
        assert checkpoint is not None
        return checkpoint.size


def get_hashes(client: Any, url: str) -> list[bytes]:
    """GET a proof route and decode its hashes."""
    response = client.get(url)
    assert response.status_code == 200, response.text
    return [base64.b64decode(h) for h in response.json()["hashes"]]


# --- the external verifier accepts every proof ---------------------------------------------


def test_external_verifier_accepts_every_proof(engine: Engine, client: Any) -> None:
    """Checkpoints at many sizes; every inclusion and consistency proof verifies per RFC 9162."""
    vkey = client.get("/v1/log/vkey").text
    checkpoints: dict[int, bytes] = {}
    leaves: list[bytes] = []
    # Each round appends an index root after the new entries, so sizes are at least 2 apart.
    for target in (2, 4, 7, 9, 64, 66, 100, 256, 258, 300):
        append_entries(engine, target - len(leaves) - 1)
        assert checkpoint_at(engine) == target
        response = client.get("/v1/log/checkpoint")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        size, root, _ = verify_checkpoint(response.text, vkey, ORIGIN)
        assert size == target
        for index in range(len(leaves), size):
            entry = client.get(f"/v1/log/entries/{index}").json()
            leaves.append(rfc_leaf(base64.b64decode(entry["entry"])))
            assert base64.b64decode(entry["leaf_hash"]) == leaves[-1]
        assert entry["decoded_entry"]["kind"] == "index_root"
        assert entry["decoded_entry"]["size"] == size - 1
        checkpoints[size] = root
    for size, root in checkpoints.items():
        indices = range(size) if size <= 65 else range(0, size, 7)
        for index in indices:
            path = get_hashes(client, f"/v1/log/proof/inclusion?index={index}&size={size}")
            assert rfc_verify_inclusion(index, size, leaves[index], path, root), (index, size)
        for old, old_root in checkpoints.items():
            if old >= size:
                continue
            path = get_hashes(client, f"/v1/log/proof/consistency?old={old}&new={size}")
            assert rfc_verify_consistency(old, size, old_root, root, path), (old, size)
        assert get_hashes(client, f"/v1/log/proof/consistency?old={size}&new={size}") == []


def test_root_from_tiles_alone(engine: Engine, client: Any) -> None:
    """The checkpoint's root is rebuilt from tlog-tiles hash tiles; bundles hash to level 0."""
    append_entries(engine, 600)
    assert checkpoint_at(engine) == 601  # and the index root
    size, root, _ = verify_checkpoint(
        client.get("/v1/log/checkpoint").text, client.get("/v1/log/vkey").text, ORIGIN
    )
    tiles: dict[tuple[int, int], list[bytes]] = {}

    def fetch(path: str, cache: str) -> bytes:
        response = client.get(f"/v1/log/{path}")
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["cache-control"].startswith(cache)
        return bytes(response.content)

    for level in range(3):
        width = size >> (8 * level)  # hashes of this level in the tree
        for n in range((width + 255) // 256):
            w = min(256, width - n * 256)
            partial = f".p/{w}" if w < 256 else ""
            cache = "public, max-age=60" if partial else "public, max-age=31536000, immutable"
            data = fetch(f"tile/{level}/{tile_index_path(n)}{partial}", cache)
            assert len(data) == 32 * w
            tiles[level, n] = [data[i : i + 32] for i in range(0, len(data), 32)]
            if level == 0:
                bundle = fetch(f"tile/entries/{tile_index_path(n)}{partial}", cache)
                entries = []
                while bundle:
                    (length,) = struct.unpack(">H", bundle[:2])
                    entries.append(bundle[2 : 2 + length])
                    bundle = bundle[2 + length :]
                assert [rfc_leaf(e) for e in entries] == tiles[level, n]

    def subtree(height: int, idx: int) -> bytes:
        """MTH of the complete subtree of 2**height leaves at idx, from tile hashes only."""
        level, extra = divmod(height, 8)
        first = idx << extra  # index of its first hash among level-`level` tile hashes
        hashes = [tiles[level, i // 256][i % 256] for i in range(first, first + (1 << extra))]
        while len(hashes) > 1:
            hashes = [rfc_node(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0:
            return subtree(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return rfc_node(mth(lo, lo + k), mth(lo + k, hi))

    # Level-1 hashes are the MTHs of full level-0 tiles (C2SP tlog-tiles).
    assert tiles[1, 0][1] == subtree(8, 1)
    assert mth(0, size) == root


# --- the routes one by one ----------------------------------------------------------------------


def test_vkey_from_the_key_file(engine: Engine, app_client: Any, tmp_path: Path) -> None:
    """Without log_vkey, the app serves the public half of DATA_DIR/keys/log.key, or 404."""
    settings = Settings(data_dir=tmp_path, log_origin=ORIGIN)
    with app_client(create_app(settings, engine)) as running:
        missing = running.get("/v1/log/vkey")
        assert missing.status_code == 404
        assert "agritrace keys new" in missing.json()["detail"]
        key = SignerKey(ORIGIN, bytes(range(5, 37)))  # named after the origin, in log.key
        write_key_file(settings.keys_dir, key, "log")
        response = running.get("/v1/log/vkey")
    assert response.status_code == 200
    assert response.text == f"{key.verifier}\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_checkpoint_is_404_before_the_first(client: Any) -> None:
    """No checkpoint yet: 404 on the checkpoint, 400 on proofs (size beyond checkpoint 0)."""
    assert client.get("/v1/log/checkpoint").status_code == 404
    response = client.get("/v1/log/proof/inclusion?index=0&size=1")
    assert response.status_code == 400
    assert "latest checkpoint size 0" in response.json()["detail"]
    assert client.get("/v1/log/tile/0/000.p/1").status_code == 404


def test_checkpoint_carries_cosignatures(engine: Engine, client: Any) -> None:
    """The served checkpoint ends with the witnesses' tlog-cosignature/v1 lines."""
    append_entries(engine, 3)
    assert checkpoint_at(engine) == 4  # 3 entries and the index root
    note = client.get("/v1/log/checkpoint").text
    line = cosign(parse_note(note).text, WITNESS_KEY, NOW // 1000)
    with session_scope(engine) as session:
        session.add(
            Cosignature(checkpoint_size=4, witness=WITNESS_KEY.name, line=line, received_ms=NOW)
        )
    served = client.get("/v1/log/checkpoint")
    assert served.headers["cache-control"] == "no-cache"
    size, _, others = verify_checkpoint(served.text, client.get("/v1/log/vkey").text, ORIGIN)
    assert size == 4
    assert others == [line]


def test_tampered_checkpoint_fails_the_external_check(engine: Engine, client: Any) -> None:
    """The independent verifier is not a rubber stamp: a changed size breaks the signature."""
    append_entries(engine, 3)
    assert checkpoint_at(engine) == 4  # 3 entries and the index root
    note = client.get("/v1/log/checkpoint").text.replace("\n4\n", "\n5\n", 1)
    with pytest.raises(BadSignatureError):
        verify_checkpoint(note, client.get("/v1/log/vkey").text, ORIGIN)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/v1/log/proof/inclusion?size=4", "'index' is required"),
        ("/v1/log/proof/inclusion?index=0", "'size' is required"),
        ("/v1/log/proof/inclusion?index=abc&size=4", "index must be a non-negative decimal"),
        ("/v1/log/proof/inclusion?index=-1&size=4", "index must be a non-negative decimal"),
        ("/v1/log/proof/inclusion?index=01&size=4", "index must be a non-negative decimal"),
        ("/v1/log/proof/inclusion?index=0&size=5", "latest checkpoint size 4"),
        ("/v1/log/proof/inclusion?index=0&size=0", "latest checkpoint size 4"),
        ("/v1/log/proof/inclusion?index=4&size=4", "index must be below size 4"),
        ("/v1/log/proof/consistency?old=0&new=4", "old must be between 1 and new"),
        ("/v1/log/proof/consistency?old=3&new=2", "old must be between 1 and new"),
        ("/v1/log/proof/consistency?old=1&new=5", "latest checkpoint size 4"),
        ("/v1/log/proof/consistency?old=1&new=" + "9" * 30, "new must be a non-negative"),
        ("/v1/log/entries/4", "below the latest checkpoint size 4"),
        ("/v1/log/entries/x", "index must be a non-negative decimal"),
        ("/v1/log/tile/00/000", "tile level"),
        ("/v1/log/tile/64/000", "tile level"),
        ("/v1/log/tile/0/1", "3 digits"),
        ("/v1/log/tile/0/001/002", "3 digits"),
        ("/v1/log/tile/0/x000/001", "canonical"),
        ("/v1/log/tile/0/000.p/256", "width"),
        ("/v1/log/tile/0/000.p/0", "width"),
        ("/v1/log/tile/0/000.p/04", "width"),
        ("/v1/log/tile/entries/abc", "3 digits"),
    ],
)
def test_bad_parameters_are_400_with_a_reason(
    engine: Engine, client: Any, url: str, message: str
) -> None:
    """Malformed or out-of-range parameters get 400 and a message naming the problem."""
    append_entries(engine, 3)
    assert checkpoint_at(engine) == 4  # 3 entries and the index root
    response = client.get(url)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_tiles_beyond_the_checkpoint_are_404(engine: Engine, client: Any) -> None:
    """Only tiles the latest checkpoint commits to are served, even if entries exist beyond."""
    append_entries(engine, 299)
    assert checkpoint_at(engine) == 300  # 299 entries and the index root
    append_entries(engine, 300)  # sequenced but not yet checkpointed
    ok: Callable[[str], int] = lambda path: client.get(f"/v1/log/{path}").status_code  # noqa: E731
    assert ok("tile/0/000") == 200
    assert ok("tile/0/001.p/44") == 200
    assert ok("tile/0/001.p/10") == 200  # a smaller prefix is committed too
    assert ok("tile/0/001.p/45") == 404
    assert ok("tile/0/001") == 404
    assert ok("tile/entries/001") == 404
    assert ok("tile/1/000.p/1") == 200
    assert ok("tile/1/000.p/2") == 404
    assert ok("tile/2/000.p/1") == 404
    assert ok("tile/0/x001/000") == 404


def test_entry_with_a_cose_message_is_decoded(engine: Engine, client: Any) -> None:
    """An entry's JSON carries its bytes, leaf hash, the raw COSE and both decoded."""
    raw = VALID_MESSAGE.read_bytes()
    entry = encode_deterministic({"v": 1, "kind": "statement", "text": "hello"})
    table: Any = LogEntry.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        session.connection().execute(
            insert(table),
            [
                {
                    "index": 0,
                    "kind": "statement",
                    "raw": raw,
                    "raw_sha256": sha256(raw),
                    "entry": entry,
                    "leaf_hash": rfc_leaf(entry),
                    "received_ms": NOW,
                }
            ],
        )
    checkpoint_at(engine)
    body = client.get("/v1/log/entries/0").json()
    assert base64.b64decode(body["entry"]) == entry
    assert base64.b64decode(body["leaf_hash"]) == rfc_leaf(entry)
    assert base64.b64decode(body["raw"]) == raw
    assert body["decoded_entry"] == {"v": 1, "kind": "statement", "text": "hello"}
    message = body["decoded_message"]
    assert message["tag"] == 18
    assert message["payload"]["type"] == "reading"
    assert len(base64.b64decode(message["signature"])) == 64


def test_log_routes_are_public(engine: Engine, client: Any) -> None:
    """Every /v1/log route answers the same with no token, a bad token or the admin's."""
    append_entries(engine, 299)
    assert checkpoint_at(engine) == 300  # 299 entries and the index root
    paths = client.app.openapi()["paths"]
    # The document has a path per tile index length (traceapi.openapi): one route serves them.
    log_routes = sorted(
        {
            re.sub(r"/(x\{n\d\}/)*\{n\d\}(\.p/\{width\})?$", "/{rest}", path)
            for path in paths
            if path.startswith("/v1/log/")
        }
    )
    assert len(log_routes) == 8
    concrete = {
        "/v1/log/entries/{index}": "/v1/log/entries/3",
        "/v1/log/tile/entries/{rest}": "/v1/log/tile/entries/000",
        "/v1/log/tile/{level}/{rest}": "/v1/log/tile/1/000.p/1",
        "/v1/log/proof/inclusion": "/v1/log/proof/inclusion?index=3&size=300",
        "/v1/log/proof/consistency": "/v1/log/proof/consistency?old=3&new=300",
    }
    for route in log_routes:
        url = concrete.get(route, route)
        answers = {
            client.get(url, headers=headers).status_code
            for headers in ({}, {"Authorization": "Bearer at_nonsense"}, {"Authorization": "x"})
        }
        assert answers == {200}, (route, answers)
