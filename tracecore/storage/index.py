"""The stored product index: its update by the checkpointer, and its proofs (docs/log.md).

The index is a sparse Merkle map (:mod:`tracecore.smt`) from each product to its chain head and
recalls and from each device to its registry entries (:mod:`tracecore.indexstate`), as of a log
size. ``index_nodes`` holds its subtrees by path, ``index_values`` each key's value.

:func:`update_index` is the checkpointer's step: it folds the entries appended since the last
index root into the map and appends an ``index_root`` log entry with the new root, in the
checkpoint round's transaction, so that the checkpoint signed right after it commits to the root
and the stored map is always the one the latest ``index_root`` entry names. Only the integrator
writes the index (one at a time: :func:`tracecore.storage.logwriter.checkpoint_transaction`).

:func:`index_proofs` reads proofs of presence or absence for a set of keys from the stored map;
:func:`latest_index_root` says which root they prove against.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy.orm import Session

from tracecore import smt
from tracecore.errors import MalformedMessage, NotFound, StorageError
from tracecore.indexstate import IndexChanges, IndexValue, parse_value, touched_keys
from tracecore.logentry import IndexRoot, parse_any_entry
from tracecore.storage.logwriter import append_registry_entry, hold_write_lock
from tracecore.storage.rawsql import fetch_all, fetch_one, marks
from tracecore.storage.tree import log_size

__all__ = [
    "INDEX_CHUNK",
    "IndexPlan",
    "StoredRoot",
    "index_proofs",
    "latest_index_root",
    "plan_index",
    "read_nodes",
    "store_values",
    "update_index",
]

_log = logging.getLogger(__name__)

#: Log entries folded per map update while catching up (bounds memory on a first build).
INDEX_CHUNK: Final = 1 << 16
#: Values per ``IN (...)`` list (SQLite's default limit on parameters is far above this).
_IN_CHUNK: Final = 500

_LATEST_ROOT = (
    "SELECT \"index\", entry FROM log_entries WHERE kind <> 'device_message' "
    "AND kind = 'index_root' ORDER BY \"index\" DESC LIMIT 1"
)
_ENTRIES = 'SELECT "index", entry FROM log_entries WHERE "index" >= ? AND "index" < ? ORDER BY 1'
_NODES = "SELECT path, leaf, a, b FROM index_nodes WHERE path IN ({})"
_VALUES = "SELECT key, value FROM index_values WHERE key IN ({})"
_PUT_NODE = (
    "INSERT INTO index_nodes (path, leaf, a, b) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (path) DO UPDATE SET leaf = excluded.leaf, a = excluded.a, b = excluded.b"
)
_PUT_VALUE = (
    "INSERT INTO index_values (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


@dataclass(frozen=True, slots=True)
class StoredRoot:
    """An ``index_root`` entry of the log: where it is, its bytes, what it says."""

    index: int
    entry: bytes
    root: IndexRoot


def _chunks(items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _stored_root(row: tuple[object, ...] | None) -> StoredRoot | None:
    if row is None:
        return None
    index, entry = int(row[0]), bytes(row[1])  # type: ignore[call-overload]
    parsed = parse_any_entry(entry)
    if not isinstance(parsed, IndexRoot):  # the kind column and the bytes disagree
        raise StorageError(f"log entry {index} is stored as index_root but is not one")
    return StoredRoot(index, entry, parsed)


def latest_index_root(session: Session) -> StoredRoot | None:
    """The newest ``index_root`` entry of the log."""
    return _stored_root(fetch_one(session, _LATEST_ROOT))


def read_nodes(session: Session, paths: Sequence[bytes]) -> dict[bytes, smt.Node]:
    """The stored index nodes of ``paths`` (a :data:`tracecore.smt.NodeReader`)."""
    found: dict[bytes, smt.Node] = {}
    for chunk in _chunks(paths):
        for path, leaf, a, b in fetch_all(session, _NODES.format(marks(len(chunk))), chunk):
            node: smt.Node = (
                smt.Leaf(bytes(a), bytes(b)) if leaf else smt.Interior(bytes(a), bytes(b))
            )
            found[bytes(path)] = node
    return found


def _read_values(session: Session, keys: Sequence[bytes]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for chunk in _chunks(keys):
        for key, value in fetch_all(session, _VALUES.format(marks(len(chunk))), chunk):
            found[bytes(key)] = bytes(value)
    return found


def index_proofs(
    session: Session, keys: Sequence[bytes]
) -> dict[bytes, tuple[bytes | None, smt.MapProof]]:
    """Each key's stored value (None when absent) and its proof in the stored map."""
    proofs = smt.prove(lambda paths: read_nodes(session, paths), keys)
    values = _read_values(session, sorted(set(keys)))
    return {key: (values.get(key), proofs[key]) for key in keys}


def _executemany(session: Session, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    connection = session.connection()
    text = sql if connection.dialect.name == "sqlite" else sql.replace("?", "%s")
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(text, rows)
    finally:
        cursor.close()


def _fold_range(session: Session, start: int, end: int) -> bytes | None:
    """Fold entries ``[start, end)`` into the stored map; the new root (None: nothing changed)."""
    values = _changed_values(session, start, end)
    if not values:
        return None
    return store_values(session, values).root


def _changed_values(session: Session, start: int, end: int) -> dict[bytes, IndexValue]:
    """The new value of each key that entries ``[start, end)`` change (reads only)."""
    rows = fetch_all(session, _ENTRIES, [start, end])
    if len(rows) != end - start:
        raise NotFound(f"log entries [{start}, {end}) are not all present")
    parsed = []
    unparsed: list[tuple[int, MalformedMessage]] = []
    for i, e in rows:
        try:
            parsed.append((int(i), parse_any_entry(bytes(e)), bytes(e)))
        except MalformedMessage as exc:
            # Ingest and the registry write only well-formed entries; one that is not changes
            # no key, here and in every monitor (docs/log.md), which report it.
            unparsed.append((int(i), exc))
    if unparsed:
        first, reason = unparsed[0]
        _log.warning(
            "%d log entries in [%d, %d) do not parse, the index skips them; the first, %d: %s",
            len(unparsed),
            start,
            end,
            first,
            reason,
        )
    keys = sorted({key for _, entry, _ in parsed for key in touched_keys(entry)})
    if not keys:
        return {}
    stored = {key: parse_value(value) for key, value in _read_values(session, keys).items()}

    def current(key: bytes) -> IndexValue | None:
        return stored.get(key)

    changes = IndexChanges(current)
    for index, entry, data in parsed:
        changes.apply(index, entry, data)
    return changes.values


def store_values(session: Session, values: Mapping[bytes, IndexValue]) -> smt.Update:
    """Set each key of ``values`` to its value in the stored map; return the map update.

    Reads the nodes on the keys' paths, computes the new subtrees (:func:`tracecore.smt.update`)
    and writes the values and every changed node in the caller's transaction. Appends no
    ``index_root`` entry: that is :func:`update_index`'s job (benchmarks fill the map with it).
    """
    encoded, result = _compute(session, values)
    _write(session, encoded, result)
    return result


def _compute(
    session: Session, values: Mapping[bytes, IndexValue]
) -> tuple[list[tuple[bytes, bytes]], smt.Update]:
    """The value rows and the map update of ``values`` (reads only)."""
    # Each value is encoded once, for its leaf and its row (docs/benchmarks.md, "The product
    # index": encoding them twice was 3 % of a 2,000-key update).
    encoded = sorted((key, value.to_bytes()) for key, value in values.items())
    hashes = {key: smt.value_hash(data) for key, data in encoded}
    return encoded, smt.update(lambda paths: read_nodes(session, paths), hashes)


def _write(session: Session, encoded: list[tuple[bytes, bytes]], result: smt.Update) -> None:
    _executemany(session, _PUT_VALUE, encoded)
    _executemany(
        session,
        _PUT_NODE,
        [
            (path, isinstance(node, smt.Leaf), *_columns(node))
            for path, node in sorted(result.writes.items())
        ],
    )


def _columns(node: smt.Node) -> tuple[bytes, bytes]:
    return (node.key, node.value_hash) if isinstance(node, smt.Leaf) else (node.left, node.right)


def _stored_map_root(session: Session) -> bytes:
    top = read_nodes(session, [smt.node_path(0, b"")])
    node = top.get(smt.node_path(0, b""))
    return smt.EMPTY if node is None else node.hash


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """A fold computed ahead, without any lock: :func:`update_index` writes it under the lock.

    ``after`` is the log index of the root it extends (None: the first root); it is written only
    if that is still the newest root then (one checkpointer folds at a time, so the map it read
    is the map it writes to).
    """

    after: int | None
    size: int
    values: list[tuple[bytes, bytes]]
    update: smt.Update | None


def _due(
    session: Session, now_ms: int, min_interval_ms: int
) -> tuple[StoredRoot | None, int] | None:
    """The newest root and the log size, when a new root is due; else None."""
    last = latest_index_root(session)
    size = log_size(session)
    # Idle: nothing after the last root, and nothing between its size and itself (an entry
    # that ingest appended while the last round folded lands there; it is folded now).
    if size == 0 or (last is not None and size == last.index + 1 == last.root.size + 1):
        return None
    # A clock that went back (a stepped clock, a test's) never holds the index back.
    if last is not None and 0 <= now_ms - last.root.time < min_interval_ms:
        return None
    return last, size


def plan_index(session: Session, now_ms: int, *, min_interval_ms: int = 0) -> IndexPlan | None:
    """Compute the next fold with reads only, for :func:`update_index` to write (or None).

    None when no root is due (as :func:`update_index` decides) or when more than
    :data:`INDEX_CHUNK` entries wait (a first build: folded in chunks under the lock instead).
    On SQLite, where the checkpoint round holds the database's only write lock, this keeps the
    reads and the Python work of the fold out of the time ingest cannot commit.
    """
    due = _due(session, now_ms, min_interval_ms)
    if due is None:
        return None
    last, size = due
    start = 0 if last is None else last.root.size
    if size - start > INDEX_CHUNK:
        return None
    values = _changed_values(session, start, size)
    encoded, update = _compute(session, values) if values else ([], None)
    return IndexPlan(None if last is None else last.index, size, encoded, update)


def update_index(
    session: Session, now_ms: int, *, min_interval_ms: int = 0, plan: IndexPlan | None = None
) -> StoredRoot | None:
    """Fold the entries appended since the last index root and log the new root.

    Call in the checkpoint round's transaction (:func:`tracecore.storage.logwriter.
    checkpoint_transaction`), before :func:`tracecore.checkpoint.make_checkpoint`. Returns the
    new ``index_root`` entry, or None when the last root covers every entry before it and
    none was appended after it (an idle log gets no new root), or when the last root is less
    than ``min_interval_ms`` old by ``now_ms`` (``AGRITRACE_INDEX_SECONDS``: a busy log folds
    more changes per root, and a product changed many times between two roots costs one
    update; docs/log.md). The map is folded without the log's write lock; only the append of
    the root takes it (PostgreSQL), so ingest waits for the append, not for the map.
    """
    if plan is not None:
        last = latest_index_root(session)
        if plan.after == (None if last is None else last.index):
            if plan.update is not None:
                _write(session, plan.values, plan.update)
            planned = _stored_map_root(session) if plan.update is None else plan.update.root
            return _append_root(session, plan.size, planned, now_ms)
        # Another checkpointer folded since the plan was made: fold afresh.
    due = _due(session, now_ms, min_interval_ms)
    if due is None:
        return None
    last, size = due
    start = 0 if last is None else last.root.size
    root: bytes | None = None
    for chunk in range(start, size, INDEX_CHUNK):
        root = _fold_range(session, chunk, min(size, chunk + INDEX_CHUNK)) or root
    if root is None:
        root = _stored_map_root(session)
    return _append_root(session, size, root, now_ms)


def _append_root(session: Session, size: int, root: bytes, now_ms: int) -> StoredRoot:
    hold_write_lock(session)
    entry = IndexRoot(size=size, root=root, time=now_ms)
    index = append_registry_entry(session, entry, now_ms)
    return StoredRoot(index, entry.to_bytes(), entry)
