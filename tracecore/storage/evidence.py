"""Evidence bundles from the database: a product, its ancestors and the proofs (docs/bundle.md).

:func:`build_bundle` gathers, as of the latest checkpoint, every log entry of the product and of
its ancestors with the raw device messages, the registry entries of every device that signed
them, the recalls naming any of these products, an inclusion proof for each chain head and
each registry entry, the newest ``index_root`` entry under the checkpoint with the product
index's proofs for each of these products and devices, and the checkpoint with its
cosignatures. The result verifies offline
with :func:`tracecore.bundle.verify_bundle`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from tracecore.bundle import Bundle, BundleEntry, Consistency, IndexEvidence, IndexProof
from tracecore.checkpoint import latest_checkpoint, served_note
from tracecore.errors import NotFound, ProofError, StorageError
from tracecore.identifiers import ProductKey
from tracecore.indexstate import device_key, product_key
from tracecore.logentry import Recall, parse_any_entry
from tracecore.smt import MapProof
from tracecore.storage.index import StoredRoot, index_proofs, latest_index_root
from tracecore.storage.models import REGISTRY_WHERE, Checkpoint
from tracecore.storage.rawsql import Row, fetch_all, fetch_one, marks
from tracecore.storage.tree import consistency_proof, inclusion_proof

__all__ = [
    "MAX_LINEAGE",
    "build_bundle",
    "bundle_at",
    "descendants",
    "lineage",
    "named_in_recalls",
]

#: The most products one bundle covers (the product and its ancestors).
MAX_LINEAGE = 10_000


_PARENTS = "SELECT parent_key FROM product_parents WHERE product_key IN ({})"
_CHILDREN = "SELECT product_key FROM product_parents WHERE parent_key IN ({})"


def _walk(session: Session, start: list[str], query: str, what: str) -> list[str]:
    """``start`` and every product reached from it by ``query`` (breadth first, each once)."""
    seen = list(start)
    known = set(seen)
    frontier = list(start)
    while frontier:
        found = fetch_all(session, query.format(marks(len(frontier))), frontier)
        frontier = sorted({str(key) for (key,) in found} - known)
        seen.extend(frontier)
        known.update(frontier)
        if len(seen) > MAX_LINEAGE:
            raise NotFound(f"{', '.join(start)} has more than {MAX_LINEAGE} {what}")
    return seen


def lineage(session: Session, product: str) -> list[str]:
    """Return ``product`` and all its ancestors (breadth first, each once)."""
    return _walk(session, [product], _PARENTS, "ancestors")


_ENTRY_COLUMNS = 'SELECT "index", kind, entry, raw, device_id FROM log_entries WHERE '
_CHAIN_ENTRIES = (
    'SELECT l."index", l.kind, l.entry, l.raw, l.device_id FROM chain_links c '
    'JOIN log_entries l ON l."index" = c.log_index '
    "WHERE c.product_key IN ({}) AND c.log_index < ?"
)


def _rows(session: Session, where: str, params: Sequence[object]) -> list[Row]:
    """Log entries matching ``where`` (``?`` placeholders), read on the DB-API cursor.

    A long chain is thousands of rows per scan; the driver's plain tuples cost a third of
    what SQLAlchemy rows do (bench/scan.py). ``where`` is a constant of this module; values
    travel only as parameters.
    """
    return fetch_all(session, _ENTRY_COLUMNS + where, params)


# Both use the partial index ix_log_entries_registry (tracecore.storage.models.REGISTRY_WHERE).
_REGISTRY_KINDS = ("device_registered", "key_rotated", "key_revoked")
_RECALLS_WHERE = f'{REGISTRY_WHERE} AND kind = ? AND "index" < ?'
_HEADS = (
    "SELECT product_key, MAX(log_index) FROM chain_links "
    "WHERE product_key IN ({}) AND log_index < ? GROUP BY product_key"
)


_K = TypeVar("_K")
_V = TypeVar("_V")
_PROOFS: dict[tuple[bytes, int, int], tuple[bytes, ...]] = {}
_PROOFS_SIZE = 8192


def _proof(session: Session, root: bytes, index: int, size: int) -> tuple[bytes, ...]:
    """The inclusion proof of ``index`` in the tree of ``size`` and ``root``, remembered.

    A proof is only ever used after it is verified against the signed checkpoint's root, so
    a remembered proof is as good as a fresh one: a wrong one fails, and the right one for
    (root, index, size) never changes (the root names the tree, whichever database it is in).
    What the database says about the entries is still read and checked at every call.
    """
    key = (root, index, size)
    found = _PROOFS.get(key)
    if found is None:
        found = tuple(inclusion_proof(session, index, size))
        _remember(_PROOFS, key, found, _PROOFS_SIZE)
    return found


def _remember(memo: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Keep ``value`` in ``memo``, forgetting the oldest entry past ``limit`` entries."""
    if len(memo) >= limit:
        memo.pop(next(iter(memo)))
    memo[key] = value


_INDEX_PROOFS: dict[tuple[bytes, bytes], tuple[bytes | None, MapProof]] = {}
_INDEX_PROOFS_SIZE = 8192


def _index_proofs(
    session: Session, root: bytes, keys: list[bytes]
) -> dict[bytes, tuple[bytes | None, MapProof]]:
    """Each key's value and proof in the product index of ``root``, remembered like
    :func:`_proof`: the map's root names the map, so the right answer for (root, key) never
    changes, and a wrong one fails the verifier. Only keys not remembered are read."""
    found = {key: _INDEX_PROOFS[(root, key)] for key in keys if (root, key) in _INDEX_PROOFS}
    missing = [key for key in keys if key not in found]
    if missing:
        read = index_proofs(session, missing)
        for key, answer in read.items():
            _remember(_INDEX_PROOFS, (root, key), answer, _INDEX_PROOFS_SIZE)
        found.update(read)
    return found


def descendants(session: Session, products: list[str]) -> list[str]:
    """Every product made, directly or not, from any of ``products`` (breadth first, each once;
    ``products`` themselves excluded)."""
    return _walk(session, list(products), _CHILDREN, "descendants")[len(products) :]


def _recall_entries(session: Session, size: int) -> list[tuple[Row, Recall]]:
    """The recall entries among the first ``size`` log entries, each with its parsed entry."""
    found = []
    for row in _rows(session, _RECALLS_WHERE, ["recall", size]):
        recall = parse_any_entry(bytes(row[2]))
        if isinstance(recall, Recall):
            found.append((row, recall))
    return found


def named_in_recalls(session: Session, size: int) -> frozenset[str]:
    """The products the recall entries among the first ``size`` log entries name.

    With every product made from them (:func:`descendants`' lineage table), they are the
    products whose scan verdict is ``recalled`` as of a checkpoint of ``size``: the bundle of a
    product carries exactly the recalls that name it or an ancestor (:func:`bundle_at`), and
    the verdict is ``recalled`` when one does (:func:`tracecore.verdict.decide`).
    """
    entries = _recall_entries(session, size)
    return frozenset(p.path for _, recall in entries for p in recall.products)


def build_bundle(session: Session, product: ProductKey, previous: int | None = None) -> Bundle:
    """Return the evidence bundle of ``product`` as of the latest checkpoint.

    With ``previous``, the bundle also carries a consistency proof from that tree size, so the
    verifier can check an older checkpoint the user kept (fork detection). Raises
    :class:`NotFound` for an unknown product or one with no entry in a checkpoint yet, and
    :class:`ProofError` for a ``previous`` size outside ``1..size``.
    """
    if fetch_one(session, _PRODUCT, [product.path]) is None:
        raise NotFound(f"no product {product.path}")
    checkpoint = latest_checkpoint(session)
    if checkpoint is None:
        raise NotFound("the log has no checkpoint yet; retry in a few seconds")
    return bundle_at(session, product, checkpoint, previous)


_PRODUCT = 'SELECT 1 FROM products WHERE "key" = ?'


#: How often a bundle is rebuilt when the checkpointer moved the product index on meanwhile.
_INDEX_RETRIES = 5


def bundle_at(
    session: Session, product: ProductKey, checkpoint: Checkpoint, previous: int | None = None
) -> Bundle:
    """Return the evidence bundle of ``product``, a known product, as of ``checkpoint``.

    :func:`build_bundle` without its two lookups, for a caller that has made them already.
    The stored product index is always the one of the newest ``index_root`` entry; when that
    entry is newer than ``checkpoint`` (a checkpoint round committed after the caller read
    it), the bundle is made as of the newer latest checkpoint instead, so that its index
    proofs and its checkpoint agree.
    """
    for _ in range(_INDEX_RETRIES):
        newest = latest_index_root(session)
        if newest is not None and newest.index >= checkpoint.size:
            fresh = latest_checkpoint(session)
            if fresh is None or fresh.size <= checkpoint.size:
                raise StorageError("the product index is newer than the latest checkpoint")
            checkpoint = fresh
            continue
        bundle = _bundle_at(session, product, checkpoint, previous, newest)
        # The proofs were read from the stored index: it must still be the same one.
        again = latest_index_root(session)
        if (None if again is None else again.index) == (None if newest is None else newest.index):
            return bundle
    raise StorageError("the product index kept changing while the bundle was read; retry")


def _bundle_at(
    session: Session,
    product: ProductKey,
    checkpoint: Checkpoint,
    previous: int | None,
    root: StoredRoot | None,
) -> Bundle:
    """The bundle as of ``checkpoint``, with proofs from the stored index of ``root`` (the
    newest index root, which :func:`bundle_at` found under the checkpoint)."""
    size = checkpoint.size
    products = lineage(session, product.path)
    head_rows = fetch_all(session, _HEADS.format(marks(len(products))), [*products, size])
    heads = {int(index) for _, index in head_rows}
    if product.path not in {str(key) for key, _ in head_rows}:
        raise NotFound(f"{product.path} has no entry in a checkpoint yet; retry in a few seconds")
    # One row per chain link: an entry that names several products of the lineage comes once
    # per product, and the dict keeps it once. A join, not "index" IN (subquery): SQLite then
    # walks the covering chain index and seeks each entry once, 30 % less time for a
    # 1,000-entry lineage (docs/benchmarks.md, "Scans").
    linked = fetch_all(session, _CHAIN_ENTRIES.format(marks(len(products))), [*products, size])
    messages = list({row[0]: row for row in linked}.values())
    devices = sorted({row[4] for row in messages if row[4] is not None})
    registry = (
        _rows(
            session,
            f"{REGISTRY_WHERE} AND kind IN ({marks(len(_REGISTRY_KINDS))}) "
            f'AND device_id IN ({marks(len(devices))}) AND "index" < ?',
            [*_REGISTRY_KINDS, *devices, size],
        )
        if devices
        else []
    )
    named = set(products)
    recalls = [
        row
        for row, recall in _recall_entries(session, size)
        if any(p.path in named for p in recall.products)
    ]
    index_rows = [] if root is None else _rows(session, '"index" = ?', [root.index])
    rows = sorted([*messages, *registry, *recalls, *index_rows], key=lambda row: int(row[0]))
    proofs = {
        int(row[0]): _proof(session, checkpoint.root, int(row[0]), size)
        for row in rows
        if int(row[0]) in heads or row[1] != "device_message"
    }
    consistency = None
    if previous is not None:
        if not 0 < previous <= size:
            raise ProofError(f"previous size must be between 1 and the checkpoint size {size}")
        consistency = Consistency(previous, tuple(consistency_proof(session, previous, size)))
    index = None
    if root is not None:
        keys = [product_key(p) for p in products] + [device_key(d) for d in devices]
        found = _index_proofs(session, root.root.root, sorted(set(keys)))
        index = IndexEvidence(
            root.index, tuple(IndexProof(key, *found[key]) for key in sorted(set(keys)))
        )
    note = served_note(session, checkpoint)
    return _assemble(product, note, rows, proofs, consistency, index=index)


@dataclass(frozen=True, slots=True)
class _Built:
    """A bundle built before, with exactly what it was built from."""

    rows: list[Row]
    proofs: dict[int, tuple[bytes, ...]]
    index: IndexEvidence | None
    bundle: Bundle


_BUNDLES: OrderedDict[tuple[str, str, Consistency | None], _Built] = OrderedDict()
_BUNDLES_SIZE = 256
_BUNDLES_LOCK = threading.Lock()


def _assemble(
    product: ProductKey,
    note: str,
    rows: list[Row],
    proofs: dict[int, tuple[bytes, ...]],
    consistency: Consistency | None,
    *,
    index: IndexEvidence | None,
) -> Bundle:
    """The bundle of these rows; the same object again when every value read is the same.

    The last bundle of (product, checkpoint note, consistency proof) is kept with the rows and
    proofs it was built from, and reused only if this call's rows and proofs are equal to them,
    every byte compared: an edited row makes a fresh bundle, freshly verified. What is reused
    is only the objects, never a verdict. Comparing is several times cheaper than hashing the
    same bytes (bench/scan.py), and the rows were read from the database either way.
    """
    key = (product.path, note, consistency)
    with _BUNDLES_LOCK:
        found = _BUNDLES.get(key)
        if found is not None:
            _BUNDLES.move_to_end(key)
    if found is not None and found.rows == rows and found.proofs == proofs and found.index == index:
        return found.bundle
    items = tuple(
        BundleEntry(
            index=int(index),
            entry=bytes(entry),
            message=bytes(raw) if kind == "device_message" and raw is not None else None,
            proof=proofs.get(int(index)),
        )
        for index, kind, entry, raw, _device in rows
    )
    bundle = Bundle(product, note, items, consistency, index=index)
    with _BUNDLES_LOCK:
        _BUNDLES[key] = _Built(rows, proofs, index, bundle)
        _BUNDLES.move_to_end(key)
        while len(_BUNDLES) > _BUNDLES_SIZE:
            _BUNDLES.popitem(last=False)
    return bundle
