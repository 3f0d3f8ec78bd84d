"""Benchmark: RFC 9162 proofs served from stored Merkle nodes, at 10^4, 10^5 and 10^6 leaves.

For each size a fresh SQLite database (the default engine, WAL mode) is filled with synthetic
log entries as fast as SQLite takes them, integrated once (:func:`tracecore.storage.tree.integrate`,
timed), then the median (and 95th percentile) time to produce an inclusion proof for a random
leaf and a consistency proof from a random older size to the full size is measured, each in its
own transaction, as the API does per request (issue 4 target: inclusion <= 5 ms at 10^6).

Run (takes about a minute, most of it filling the 10^6-leaf database)::

    .venv/bin/python -m bench.proofs
    .venv/bin/python -m bench.proofs --sizes 1000 --samples 20   # quick
    .venv/bin/python -m bench.proofs --db-url postgresql+psycopg://...   # an EMPTY database

It is a script, not a test (tests/bench only checks that it runs).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine, insert

from tracecore.merkle import leaf_hash, root_of, verify_consistency, verify_inclusion
from tracecore.storage.engine import make_engine, session_scope
from tracecore.storage.migrate import upgrade
from tracecore.storage.models import LogEntry
from tracecore.storage.tree import consistency_proof, inclusion_proof, integrate, root_at

__all__ = ["Result", "fill", "main", "measure"]

_FILL_CHUNK = 50_000
_ENTRIES = LogEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Result:
    """Timings at one tree size, in milliseconds (integration in seconds)."""

    size: int
    fill_s: float
    integrate_s: float
    inclusion_ms: float
    inclusion_p95_ms: float
    consistency_ms: float
    consistency_p95_ms: float
    proof_hashes: int


def _entry(index: int) -> bytes:
    return b"bench entry " + index.to_bytes(8, "big")


def fill(engine: Engine, size: int) -> None:
    """Append ``size`` synthetic log entries (not device messages) in large batches."""
    for start in range(0, size, _FILL_CHUNK):
        rows = []
        for index in range(start, min(size, start + _FILL_CHUNK)):
            entry = _entry(index)
            rows.append(
                {
                    "index": index,
                    "kind": "statement",
                    "raw": None,
                    "raw_sha256": hashlib.sha256(entry).digest(),
                    "entry": entry,
                    "leaf_hash": leaf_hash(entry),
                    "received_ms": index,
                }
            )
        with session_scope(engine) as session:
            session.connection().execute(insert(_ENTRIES), rows)


def _timed(samples: int, work: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _p95(times: Sequence[float]) -> float:
    return sorted(times)[max(0, round(0.95 * len(times)) - 1)]


def measure(engine: Engine, size: int, samples: int, rng: random.Random) -> Result:
    """Fill, integrate and time proofs at ``size`` leaves on a fresh migrated ``engine``."""
    started = time.perf_counter()
    fill(engine, size)
    fill_s = time.perf_counter() - started
    started = time.perf_counter()
    with session_scope(engine) as session:
        integrate(session)
    integrate_s = time.perf_counter() - started
    with session_scope(engine) as session:
        root = root_at(session, size)

    hashes = 0

    def one_inclusion() -> None:
        nonlocal hashes
        index = rng.randrange(size)
        with session_scope(engine) as session:
            proof = inclusion_proof(session, index, size)
        hashes = max(hashes, len(proof))

    def one_consistency() -> None:
        old = rng.randrange(1, size)
        with session_scope(engine) as session:
            consistency_proof(session, old, size)

    inclusion = _timed(samples, one_inclusion)
    consistency = _timed(samples, one_consistency)
    _spot_check(engine, size, root, rng)
    return Result(
        size=size,
        fill_s=fill_s,
        integrate_s=integrate_s,
        inclusion_ms=statistics.median(inclusion),
        inclusion_p95_ms=_p95(inclusion),
        consistency_ms=statistics.median(consistency),
        consistency_p95_ms=_p95(consistency),
        proof_hashes=hashes,
    )


def _spot_check(engine: Engine, size: int, root: bytes, rng: random.Random) -> None:
    """Make sure what was timed is right: proofs verify, and the root is the leaves' MTH."""
    index, old = rng.randrange(size), rng.randrange(1, size)
    with session_scope(engine) as session:
        verify_inclusion(
            index, size, leaf_hash(_entry(index)), inclusion_proof(session, index, size), root
        )
        proof = consistency_proof(session, old, size)
        verify_consistency(old, size, root_at(session, old), root, proof)
    if size <= 100_000:
        assert root == root_of([leaf_hash(_entry(i)) for i in range(size)])  # noqa: S101


def _table(results: Sequence[Result], out: TextIO) -> None:
    header = (
        f"{'leaves':>9} | {'fill s':>7} | {'integrate s':>11} | {'inclusion ms':>12} | "
        f"{'p95':>6} | {'consistency ms':>14} | {'p95':>6} | {'hashes':>6}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in results:
        print(
            f"{r.size:>9,} | {r.fill_s:>7.2f} | {r.integrate_s:>11.2f} | "
            f"{r.inclusion_ms:>12.3f} | {r.inclusion_p95_ms:>6.3f} | "
            f"{r.consistency_ms:>14.3f} | {r.consistency_p95_ms:>6.3f} | {r.proof_hashes:>6}",
            file=out,
        )


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> list[Result]:
    """Run the benchmark and print the table; return the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.proofs", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=200, help="proofs timed per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument("--db-url", default=None, help="an EMPTY database instead (one size)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)  # noqa: S311 (benchmark sampling, not cryptography)
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in args.sizes:
            url = args.db_url or f"sqlite:///{Path(tmp) / f'bench-{size}.sqlite3'}"
            engine = make_engine(url)
            try:
                upgrade(engine)
                results.append(measure(engine, size, args.samples, rng))
            finally:
                engine.dispose()
            if args.db_url:
                break
    _table(results, out)
    return results


if __name__ == "__main__":
    main()
