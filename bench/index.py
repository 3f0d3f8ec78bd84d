"""Benchmark: the product index (a sparse Merkle map, docs/log.md) at 10^6 products.

On a fresh database (SQLite file, or an EMPTY PostgreSQL database with ``--db-url``) the map is
filled with ``--products`` synthetic products (each with a chain head, as after one device
message) through the storage path the checkpointer uses: :func:`tracecore.storage.index.
store_values` (``smt.update`` on the stored nodes, then the value and node rows written as
:func:`tracecore.storage.index.update_index` writes them), ``--fill-batch`` keys per call and
per transaction. Then, at that size, it measures

* the update cost per changed key for batches of 1, 100 and 2,000 keys (``--batches``): the
  chain heads of random existing products move (the common case), or new products arrive
  (inserts); each round is one transaction including its commit, the median of ``--rounds``;
  with the rows written per key;
* proofs: siblings per proof and its JSON size (median, p95), the time to read one
  (:func:`tracecore.storage.index.index_proofs`, own transaction) and to verify it
  (:func:`tracecore.smt.verify_proof`);
* storage per product: the bytes of ``index_nodes`` and ``index_values`` (SQLite's dbstat
  pages, or ``pg_total_relation_size``, indexes included) over the number of products, and
  the rows per product.

Run (about 6 minutes at 10^6 on two cores, most of it the fill)::

    .venv/bin/python -m bench.index
    .venv/bin/python -m bench.index --products 10000 --rounds 3          # quick
    .venv/bin/python -m bench.index --db-url postgresql+psycopg://...     # an EMPTY database

It is a script, not a test (tests/bench only checks that it runs).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine, text

from tracecore import smt
from tracecore.identifiers import ProductKey
from tracecore.indexstate import ChainHead, IndexValue, ProductState, product_key
from tracecore.storage.engine import make_engine, session_scope
from tracecore.storage.index import index_proofs, store_values
from tracecore.storage.migrate import upgrade

__all__ = [
    "BatchCost",
    "ProofCost",
    "Result",
    "fill",
    "main",
    "measure",
    "proof_json",
    "synthetic_product",
    "without_rowid",
]

_GTIN = "09506000134352"
_TABLES = ("index_nodes", "index_values")


@dataclass(frozen=True, slots=True)
class BatchCost:
    """One batch size: median microseconds and rows written per changed key."""

    kind: str  # "update" (existing keys) or "insert" (new keys)
    batch: int
    us_per_key: float
    ms_per_batch: float
    rows_per_key: float


@dataclass(frozen=True, slots=True)
class ProofCost:
    """Proofs of random present keys: size and times."""

    siblings_median: float
    siblings_p95: int
    siblings_max: int
    json_bytes_median: float
    json_bytes_p95: int
    read_ms_median: float
    read_ms_p95: float
    verify_us_median: float


@dataclass(frozen=True, slots=True)
class Result:
    """Everything one run measured."""

    dialect: str
    products: int
    fill_s: float
    batches: tuple[BatchCost, ...]
    proofs: ProofCost
    table_bytes: dict[str, int]
    table_rows: dict[str, int]

    @property
    def bytes_per_product(self) -> float:
        """Bytes of both tables (indexes included) over the products."""
        return sum(self.table_bytes.values()) / self.products

    @property
    def rows_per_product(self) -> float:
        """Rows of both tables over the products."""
        return sum(self.table_rows.values()) / self.products


def synthetic_product(number: int, *, pseq: int = 1, index: int | None = None) -> ProductState:
    """The index value of synthetic product ``number`` (a lot of one GTIN) with a chain head."""
    path = ProductKey(_GTIN, lot=f"IX{number:010d}").path
    at = number if index is None else index
    leaf = smt.value_hash(number.to_bytes(8, "big") + pseq.to_bytes(4, "big"))
    return ProductState(path, ChainHead(pseq, at, leaf))


def _values(states: Sequence[ProductState]) -> dict[bytes, IndexValue]:
    return {product_key(state.product): state for state in states}


def fill(engine: Engine, products: int, batch: int, start: int = 0) -> bytes:
    """Insert products ``start .. start+products-1`` into the stored map; return the root."""
    root = smt.EMPTY
    for first in range(start, start + products, batch):
        last = min(start + products, first + batch)
        with session_scope(engine) as session:
            root = store_values(
                session, _values([synthetic_product(n) for n in range(first, last)])
            ).root
    return root


def _p95(values: Sequence[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def _batch_cost(
    engine: Engine, kind: str, batch: int, rounds: int, make: Callable[[int], list[ProductState]]
) -> BatchCost:
    times, rows = [], []
    for _ in range(rounds):
        states = make(batch)
        started = time.perf_counter()
        with session_scope(engine) as session:
            result = store_values(session, _values(states))
        times.append(time.perf_counter() - started)
        rows.append((len(result.writes) + len(states)) / batch)
    median = statistics.median(times)
    return BatchCost(kind, batch, median / batch * 1e6, median * 1000, statistics.median(rows))


def proof_json(key: bytes, value: bytes | None, proof: smt.MapProof) -> bytes:
    """A proof as an API would serve it: JSON, hashes and bytes in base64 (RFC 4648 §4)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    other = proof.other
    doc = {
        "key": b64(key),
        "value": None if value is None else b64(value),
        "siblings": [b64(h) for h in proof.siblings],
        "other": None
        if other is None
        else {"key": b64(other.key), "value_hash": b64(other.value_hash)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _proof_cost(engine: Engine, root: bytes, keys: Sequence[bytes], samples: int) -> ProofCost:
    sizes, lengths, reads, verifies = [], [], [], []
    for key in keys[:samples]:
        started = time.perf_counter()
        with session_scope(engine) as session:
            value, proof = index_proofs(session, [key])[key]
        reads.append((time.perf_counter() - started) * 1000)
        if value is None:
            raise AssertionError("a filled product has no stored value")
        started = time.perf_counter()
        smt.verify_proof(root, key, value, proof)
        verifies.append((time.perf_counter() - started) * 1e6)
        lengths.append(len(proof.siblings))
        sizes.append(len(proof_json(key, value, proof)))
    return ProofCost(
        siblings_median=statistics.median(lengths),
        siblings_p95=int(_p95(lengths)),
        siblings_max=max(lengths),
        json_bytes_median=statistics.median(sizes),
        json_bytes_p95=int(_p95(sizes)),
        read_ms_median=statistics.median(reads),
        read_ms_p95=_p95(reads),
        verify_us_median=statistics.median(verifies),
    )


def _storage(engine: Engine) -> tuple[dict[str, int], dict[str, int]]:
    sizes, rows = {}, {}
    with engine.connect() as conn:
        for table in _TABLES:
            count = text(f"SELECT count(*) FROM {table}")  # noqa: S608 (a name of _TABLES)
            rows[table] = int(conn.execute(count).scalar_one())
            if engine.dialect.name == "sqlite":
                # dbstat: every page of the table and of its indexes (the primary key's).
                query = (
                    "SELECT sum(pgsize) FROM dbstat WHERE name = :t OR name IN "
                    "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t)"
                )
                sizes[table] = int(conn.execute(text(query), {"t": table}).scalar_one() or 0)
            else:
                query = "SELECT pg_total_relation_size(CAST(:t AS regclass))"
                sizes[table] = int(conn.execute(text(query), {"t": table}).scalar_one())
    return sizes, rows


def without_rowid(engine: Engine) -> None:
    """SQLite: recreate the (empty) index tables ``WITHOUT ROWID``, for a storage experiment.

    The migration creates them as rowid tables whose primary key is a second B-tree (an
    automatic index); a WITHOUT ROWID table is that B-tree alone (SQLite docs, "Clustered
    Indexes and the WITHOUT ROWID Optimization"). Columns and constraints stay the same.
    """
    with engine.begin() as conn:
        for table in _TABLES:
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).scalar_one()
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.exec_driver_sql(f"{sql} WITHOUT ROWID")


def measure(engine: Engine, args: argparse.Namespace, rng: random.Random) -> Result:
    """Fill the map on a fresh migrated ``engine`` and measure updates, proofs and storage."""
    n = args.products
    started = time.perf_counter()
    root = fill(engine, n, args.fill_batch)
    fill_s = time.perf_counter() - started
    if n <= 100_000:  # the stored map's root is the one computed from scratch
        hashes = {
            product_key(state.product): smt.value_hash(state.to_bytes())
            for state in map(synthetic_product, range(n))
        }
        if root != smt.root_of(hashes):
            raise AssertionError("the stored map's root is not the root of its leaves")
    table_bytes, table_rows = _storage(engine)
    sample = rng.sample(range(n), args.samples)
    present = [product_key(synthetic_product(i).product) for i in sample]
    proofs = _proof_cost(engine, root, present, args.samples)
    pseq = 1
    inserted = n

    def moved(batch: int) -> list[ProductState]:
        nonlocal pseq
        pseq += 1
        return [synthetic_product(i, pseq=pseq) for i in rng.sample(range(n), batch)]

    def new(batch: int) -> list[ProductState]:
        nonlocal inserted
        inserted += batch
        return [synthetic_product(i) for i in range(inserted - batch, inserted)]

    costs = [_batch_cost(engine, "update", b, args.rounds, moved) for b in args.batches]
    costs += [_batch_cost(engine, "insert", b, args.rounds, new) for b in args.batches]
    _spot_check(engine, n, rng)
    return Result(
        dialect=engine.dialect.name,
        products=n,
        fill_s=fill_s,
        batches=tuple(costs),
        proofs=proofs,
        table_bytes=table_bytes,
        table_rows=table_rows,
    )


def _spot_check(engine: Engine, products: int, rng: random.Random) -> None:
    """What was timed is right: a proof from the stored map verifies against its root."""
    key = product_key(synthetic_product(rng.randrange(products)).product)
    with session_scope(engine) as session:
        value, proof = index_proofs(session, [key])[key]
        top = session.connection().exec_driver_sql(
            "SELECT a, b FROM index_nodes WHERE path = ?"
            if engine.dialect.name == "sqlite"
            else "SELECT a, b FROM index_nodes WHERE path = %s",
            (smt.node_path(0, b""),),
        )
        a, b = top.one()
    if value is None:
        raise AssertionError("a filled product has no stored value")
    smt.verify_proof(smt.node_hash(bytes(a), bytes(b)), key, value, proof)


def _table(result: Result, out: TextIO) -> None:
    p = result.proofs
    out.write(
        f"\n{result.dialect}: {result.products:,} products, filled in {result.fill_s:.1f} s\n"
    )
    header = f"{'change':>7} | {'batch':>6} | {'us/key':>8} | {'ms/batch':>9} | {'rows/key':>8}"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for c in result.batches:
        out.write(
            f"{c.kind:>7} | {c.batch:>6,} | {c.us_per_key:>8.1f} | {c.ms_per_batch:>9.2f} | "
            f"{c.rows_per_key:>8.2f}\n"
        )
    out.write(
        f"proof: siblings median {p.siblings_median:.0f}, p95 {p.siblings_p95}, max "
        f"{p.siblings_max}; JSON median {p.json_bytes_median:,.0f} B, p95 {p.json_bytes_p95:,} B; "
        f"read median {p.read_ms_median:.2f} ms, p95 {p.read_ms_p95:.2f} ms; "
        f"verify median {p.verify_us_median:.0f} us\n"
    )
    parts = ", ".join(
        f"{t} {result.table_bytes[t] / 1e6:,.1f} MB / {result.table_rows[t]:,} rows"
        for t in _TABLES
    )
    out.write(
        f"storage: {parts}; {result.bytes_per_product:,.0f} B and "
        f"{result.rows_per_product:.2f} rows per product\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--fill-batch", type=int, default=65_536, help="keys per fill update")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 2_000])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per batch size (median)")
    parser.add_argument("--samples", type=int, default=200, help="proofs timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes")
    parser.add_argument("--db-url", default=None, help="an EMPTY database instead of SQLite")
    parser.add_argument(
        "--without-rowid",
        action="store_true",
        help="SQLite experiment: the index tables WITHOUT ROWID (not what the migration makes)",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> Result:
    """Run the benchmark and print the table; return the result."""
    args = _parser().parse_args(argv)
    args.samples = min(args.samples, args.products)
    rng = random.Random(args.seed)  # noqa: S311 (benchmark sampling, not cryptography)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        engine = make_engine(args.db_url or f"sqlite:///{Path(tmp) / 'index.sqlite3'}")
        try:
            upgrade(engine)
            if args.without_rowid:
                if engine.dialect.name != "sqlite":
                    raise SystemExit("--without-rowid is a SQLite experiment")
                without_rowid(engine)
            result = measure(engine, args, rng)
        finally:
            engine.dispose()
    _table(result, out)
    return result


if __name__ == "__main__":
    main()
