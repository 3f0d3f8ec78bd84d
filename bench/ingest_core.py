"""Throughput of the ingest processing core (``Processor.process``) without MQTT.

Run by hand, not a test::

    .venv/bin/python -m bench.ingest_core                       # SQLite file in a temp dir
    .venv/bin/python -m bench.ingest_core --db postgresql+psycopg://USER:PW@HOST/EMPTY_DB
    .venv/bin/python -m bench.ingest_core --profile             # cProfile, top 25 by tottime
    .venv/bin/python -m bench.ingest_core --synchronous NORMAL  # SQLite: the old, unsafe setting
    .venv/bin/python -m bench.ingest_core --preparsed           # the processor without parsing

Registers one farm with ``--devices`` devices, commissions ``--products`` products, then times
``--batches`` calls of ``process()`` on batches of ``--batch`` pre-signed readings (each from a
device about one product) and prints messages per second. Signing the messages is not timed;
everything ``process()`` does (parse, key lookup, signature checks, sequencing, receipts, the
commit) is. A PostgreSQL database must be empty (this script migrates it).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
from sqlalchemy import Engine, event

import ingest.processor
from ingest import Inbound, IngestConfig, Processor
from tracecore.cose import SignedMessage, parse_message, sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Event, Reading, Sensor
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.topics import up_topic

T0 = 1_767_258_000_000


def _key(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"bench/" + label.encode()).digest())


def _setup(engine: Engine, args: argparse.Namespace) -> tuple[Processor, list[list[Inbound]]]:
    """Register devices, commission products; return the processor and the timed batches."""
    upgrade(engine)
    devices = [f"bench-{i:05d}" for i in range(args.devices)]
    keys = {d: _key(d) for d in devices}
    with session_scope(engine) as session:
        create_party(session, "bench-farm", "Bench Farm", "farm", T0 - 1)
        for d in devices:
            register_device(session, d, "bench-farm", bytes(keys[d].verify_key), T0 - 1)
    products = [ProductKey("09506000134352", lot=f"B{i:05d}") for i in range(args.products)]
    processor = Processor(
        engine, SignerKey("bench-log", bytes(32)), IngestConfig(verify_threads=args.threads)
    )
    setup = []
    for number, start in enumerate(range(0, len(products), 64), start=1):
        event = Event(devices[0], number, T0, tuple(products[start : start + 64]), "commissioning")
        setup.append(Inbound(up_topic(devices[0]), sign_message(event, keys[devices[0]]), T0))
    processor.process(setup, T0)
    seqs = dict.fromkeys(devices, 100)
    sensors = (Sensor("Temperature", 4.5, "CEL"),)
    work: list[list[Inbound]] = []
    n = 0
    for _ in range(args.batches):
        batch = []
        for _ in range(args.batch):
            d = devices[n % len(devices)]
            seqs[d] += 1
            reading = Reading(d, seqs[d], T0, (products[n % len(products)],), sensors)
            batch.append(Inbound(up_topic(d), sign_message(reading, keys[d]), T0 + n))
            n += 1
        work.append(batch)
    return processor, work


def _preparse(work: list[list[Inbound]]) -> None:
    """Parse the timed messages now and let the processor look them up instead of parsing.

    Measures the processor's own work (rules, sequencing, SQL) without COSE/CBOR parsing, which
    is a separate module with its own benchmark. Parsed messages are immutable, so a cached one
    is what parsing the same bytes again returns.
    """
    parsed = {
        inbound.payload: parse_message(inbound.payload) for batch in work for inbound in batch
    }

    def lookup(payload: bytes) -> SignedMessage:
        found = parsed.get(payload)
        return found if found is not None else parse_message(payload)

    ingest.processor.parse_message = lookup  # type: ignore[assignment]


def _pragma(statement: str) -> Callable[[Any, Any], None]:
    def run(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(statement)

    return run


def main() -> None:
    """Parse the options, set up the database, run and time the batches."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--preparsed",
        action="store_true",
        help="parse the timed messages before timing (the processor's own CPU, without parsing)",
    )
    parser.add_argument(
        "--resend",
        action="store_true",
        help="then process the same batches again (every message a duplicate: a resend storm)",
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite only: NORMAL measures the setting agritrace used before (unsafe: see "
        'docs/operations.md, "Durability"); FULL is what make_engine sets',
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        engine = make_engine(url)
        if args.synchronous != "FULL":
            # After make_engine's own listener, so this value wins on every connection.
            event.listen(engine, "connect", _pragma(f"PRAGMA synchronous={args.synchronous}"))
        processor, work = _setup(engine, args)
        if args.preparsed:
            _preparse(work)
        profiler = cProfile.Profile() if args.profile else None
        started, cpu_started = time.perf_counter(), time.process_time()
        thread_started = time.thread_time()
        if profiler:
            profiler.enable()
        for batch in work:
            result = processor.process(batch, T0 + 10_000_000)
            if result.accepted != len(batch):
                raise SystemExit(f"not every reading was accepted: {result}")
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        thread_cpu = time.thread_time() - thread_started
        resend = None
        if args.resend:
            again = time.perf_counter()
            for batch in work:
                result = processor.process(batch, T0 + 10_000_000)
                if result.duplicates != len(batch):
                    raise SystemExit(f"not every resend was a duplicate: {result}")
            resend = time.perf_counter() - again
        processor.close()
        engine.dispose()
    total = args.batch * args.batches
    print(
        f"{url.split(':', 1)[0]} (synchronous={args.synchronous}): {total} readings in "
        f"{args.batches} batches of {args.batch}: "
        f"{elapsed:.2f} s, {total / elapsed:,.0f} msgs/s, "
        f"{elapsed / args.batches * 1000:.1f} ms per batch; this process used {cpu:.2f} s "
        "of CPU (all threads; the database server's CPU not counted)"
    )
    # The calling thread runs process() itself: parsing, the rules, sequencing and the SQLite
    # driver's work; signature checks and receipt signatures run in the pool's threads.
    print(f"the calling thread used {thread_cpu / total * 1e6:.0f} us of CPU per message")
    if resend is not None:
        print(
            f"the same {total} again, as resends: {resend:.2f} s, {total / resend:,.0f} msgs/s, "
            f"{elapsed / resend:.1f}x the rate of new messages"
        )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
