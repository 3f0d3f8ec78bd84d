"""Evidence bundles from the database: a product, its ancestors and the proofs (docs/bundle.md).

:func:`build_bundle` gathers, as of the latest checkpoint, every log entry of the product and of
its ancestors with the raw device messages, the registry entries of every device that signed
them, the recalls naming any of these products, an inclusion proof for each chain head and
each registry entry, and the checkpoint with its cosignatures. The result verifies offline
with :func:`tracecore.bundle.verify_bundle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from tracecore.bundle import Bundle, BundleEntry, Consistency
from tracecore.checkpoint import latest_checkpoint, served_note
from tracecore.errors import NotFound, ProofError
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall, parse_any_entry
from tracecore.storage.models import ChainLink, Product, ProductParent
from tracecore.storage.tree import consistency_proof, inclusion_proof

__all__ = ["MAX_LINEAGE", "build_bundle", "lineage"]

#: The most products one bundle covers (the product and its ancestors).
MAX_LINEAGE = 10_000


def lineage(session: Session, product: str) -> list[str]:
    """Return ``product`` and all its ancestors (breadth first, each once)."""
    seen = [product]
    frontier = [product]
    while frontier:
        parents = session.scalars(
            select(col(ProductParent.parent_key)).where(
                col(ProductParent.product_key).in_(frontier)
            )
        ).all()
        frontier = sorted(set(parents) - set(seen))
        seen.extend(frontier)
        if len(seen) > MAX_LINEAGE:
            raise NotFound(f"{product} has more than {MAX_LINEAGE} ancestors")
    return seen


@dataclass(frozen=True, slots=True)
class _Stored:
    """The columns of a log entry that a bundle needs."""

    index: int
    kind: str
    entry: bytes
    raw: bytes | None
    device_id: str | None


_ENTRY_COLUMNS = 'SELECT "index", kind, entry, raw, device_id FROM log_entries WHERE '


def _entries(session: Session, where: str, params: Sequence[object]) -> list[_Stored]:
    """Log entries matching ``where`` (``?`` placeholders), read on the DB-API cursor.

    A long chain is thousands of rows per scan; the driver's plain tuples cost a third of
    what SQLAlchemy rows do (bench/scan.py). ``where`` is a constant of this module; values
    travel only as parameters.
    """
    connection = session.connection()
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_ENTRY_COLUMNS + where.replace("?", mark), tuple(params))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return [
        _Stored(int(i), str(k), bytes(e), None if r is None else bytes(r), d)
        for i, k, e, r, d in rows
    ]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


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
        if len(_PROOFS) >= _PROOFS_SIZE:
            _PROOFS.pop(next(iter(_PROOFS)))
        _PROOFS[key] = found
    return found


def _names_any(entry: bytes, products: list[str]) -> bool:
    recall = parse_any_entry(entry)
    return isinstance(recall, Recall) and any(p.path in products for p in recall.products)


def build_bundle(session: Session, product: ProductKey, previous: int | None = None) -> Bundle:
    """Return the evidence bundle of ``product`` as of the latest checkpoint.

    With ``previous``, the bundle also carries a consistency proof from that tree size, so the
    verifier can check an older checkpoint the user kept (fork detection). Raises
    :class:`NotFound` for an unknown product or one with no entry in a checkpoint yet, and
    :class:`ProofError` for a ``previous`` size outside ``1..size``.
    """
    if session.get(Product, product.path) is None:
        raise NotFound(f"no product {product.path}")
    checkpoint = latest_checkpoint(session)
    if checkpoint is None:
        raise NotFound("the log has no checkpoint yet; retry in a few seconds")
    size = checkpoint.size
    products = lineage(session, product.path)
    in_tree = col(ChainLink.log_index) < size
    head_rows = session.execute(
        select(col(ChainLink.product_key), func.max(col(ChainLink.log_index)))
        .where(col(ChainLink.product_key).in_(products), in_tree)
        .group_by(col(ChainLink.product_key))
    ).all()
    heads = {int(index) for _, index in head_rows}
    if product.path not in {key for key, _ in head_rows}:
        raise NotFound(f"{product.path} has no entry in a checkpoint yet; retry in a few seconds")
    in_chains = (
        '"index" IN (SELECT log_index FROM chain_links '  # noqa: S608 (constant text, ? marks)
        f"WHERE product_key IN ({_marks(len(products))}) AND log_index < ?)"
    )
    messages = _entries(session, in_chains, [*products, size])
    devices = sorted({row.device_id for row in messages if row.device_id is not None})
    registry = (
        _entries(
            session,
            f"device_id IN ({_marks(len(devices))}) AND kind <> 'device_message' AND \"index\" < ?",
            [*devices, size],
        )
        if devices
        else []
    )
    recalls = [
        row
        for row in _entries(session, "kind = 'recall' AND \"index\" < ?", [size])
        if _names_any(row.entry, products)
    ]
    entries = sorted([*messages, *registry, *recalls], key=lambda row: row.index)
    items = tuple(
        BundleEntry(
            index=row.index,
            entry=row.entry,
            message=row.raw if row.kind == "device_message" else None,
            proof=(
                _proof(session, checkpoint.root, row.index, size)
                if row.index in heads or row.kind != "device_message"
                else None
            ),
        )
        for row in entries
    )
    consistency = None
    if previous is not None:
        if not 0 < previous <= size:
            raise ProofError(f"previous size must be between 1 and the checkpoint size {size}")
        consistency = Consistency(previous, tuple(consistency_proof(session, previous, size)))
    return Bundle(product, served_note(session, checkpoint), items, consistency)
