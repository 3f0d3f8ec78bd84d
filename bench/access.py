"""What busy inspectors cost ingest: the access trail, group-committed or one commit per access.

Run by hand, not a test::

    .venv/bin/python -m bench.access                    # SQLite file in a temp dir
    .venv/bin/python -m bench.access --db postgresql+psycopg://USER:PW@HOST/EMPTY_DB

Every authenticated read is an ``access`` log entry committed under the log's single-writer
lock, the lock ingest takes for each batch of device messages (docs/inspection.md, "The access
trail"). This times the ingest core (``Processor.process`` on batches of signed readings, as
``bench.ingest_core``) in one process while another process records accesses as fast as its
``--readers`` threads can, in three rounds run one after the other on one database:

1. ``alone``: nobody reads;
2. ``grouped``: the readers go through :class:`traceapi.access.AccessTrail`, which commits the
   accesses that wait during a write together (what the API does);
3. ``single``: each access is its own transaction under the lock (no grouping);
4. ``alone again``: nobody reads (how far the rate drifted as the database grew).

and prints, per round, ingest messages/s, its ratio to ``alone``, and the accesses committed
per second with how many transactions they took. ``--rate`` caps the readers (accesses/s in
all) to model a realistic busy console instead of the worst case.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from bench.ingest_core import T0, _setup
from traceapi.access import AccessTrail
from tracecore.logentry import Access
from tracecore.storage import create_party, make_engine, session_scope
from tracecore.storage.access import append_accesses
from tracecore.storage.logwriter import log_session

_READER = "bench-agency"


def _access(n: int) -> Access:
    target = f"/console/products/01/09506000134352/10/B{n % 200:05d}"
    return Access(
        _READER, "inspector", "GET /console/products/{key:path}", target, ("bench-farm",), T0 + n
    )


def _readers(  # noqa: PLR0917 (a process target takes positional arguments)
    url: str,
    mode: str,
    threads: int,
    rate: float,
    events: tuple[ProcessEvent, ProcessEvent],
    out: multiprocessing.Queue,
) -> None:
    """Record accesses from ``threads`` threads until ``stop``; report (accesses, transactions).

    ``events`` are (ready, stop): ready is set once the first access is committed.
    """
    ready, stop = events
    engine = make_engine(url)
    trail = AccessTrail(engine)
    counter = iter(range(10**12))
    lock = threading.Lock()
    done = [0, 0]
    interval = threads / rate if rate > 0 else 0.0

    def one() -> None:
        with lock:
            n = next(counter)
        if mode == "grouped":
            trail.record(_access(n))
        else:
            with log_session(engine) as session:
                append_accesses(session, [_access(n)], T0 + n)
            with lock:
                done[1] += 1
        with lock:
            done[0] += 1
        ready.set()

    def loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            one()
            if interval:
                time.sleep(max(0.0, interval - (time.perf_counter() - started)))

    workers = [threading.Thread(target=loop, name=f"reader-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    transactions = trail.counters.batches if mode == "grouped" else done[1]
    out.put((done[0], transactions))
    engine.dispose()


def main() -> None:
    """Parse the options, set up one database, time ingest in the three rounds."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--batches", type=int, default=30, help="per round")
    parser.add_argument("--threads", type=int, default=2, help="ingest verify threads")
    parser.add_argument("--readers", type=int, default=8, help="reader threads")
    parser.add_argument("--rate", type=float, default=0.0, help="accesses/s cap (0: none)")
    args = parser.parse_args()
    # "alone" again at the end shows how much the rate drifted as the database grew.
    rounds = ("alone", "grouped", "single", "alone again")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        engine = make_engine(url)
        # All three rounds' batches are made up front (fresh sequence numbers for each round).
        wanted = args.batches * len(rounds)
        setup_args = argparse.Namespace(**{**vars(args), "batches": wanted})
        processor, work = _setup(engine, setup_args)
        with session_scope(engine) as session:
            create_party(session, _READER, "Bench Agency", "inspector", T0 - 1)
        context = multiprocessing.get_context("spawn")
        results = {}
        for number, mode in enumerate(rounds):
            batches = work[number * args.batches : (number + 1) * args.batches]
            ready, stop = context.Event(), context.Event()
            out: multiprocessing.Queue = context.Queue()
            reader = None
            if not mode.startswith("alone"):
                reader = context.Process(
                    target=_readers,
                    args=(url, mode, args.readers, args.rate, (ready, stop), out),
                    name=f"readers-{mode}",
                )
                reader.start()
                if not ready.wait(120):
                    raise SystemExit("the readers did not start")
                time.sleep(1)  # let the readers reach their pace before timing starts
            started = time.perf_counter()
            for batch in batches:
                result = processor.process(batch, T0 + 10_000_000)
                if result.accepted != len(batch):
                    raise SystemExit(f"not every reading was accepted: {result}")
            elapsed = time.perf_counter() - started
            accesses = transactions = 0
            if reader is not None:
                stop.set()
                accesses, transactions = out.get(timeout=120)
                reader.join(60)
            results[mode] = (args.batch * len(batches) / elapsed, accesses, transactions, elapsed)
        processor.close()
        engine.dispose()
    base = results["alone"][0]
    print(
        f"{url.split(':', 1)[0]}: {args.batches} batches of {args.batch} readings per round; "
        f"{args.readers} reader threads, rate cap {args.rate or 'none'}"
    )
    print(
        f"{'round':8} {'ingest msgs/s':>14} {'vs alone':>9} {'accesses/s':>11} {'per commit':>11}"
    )
    for mode, (rate, accesses, transactions, elapsed) in results.items():
        per_commit = f"{accesses / transactions:.1f}" if transactions else "-"
        print(
            f"{mode:11} {rate:14,.0f} {rate / base:9.2f} {accesses / elapsed:11,.0f} "
            f"{per_commit:>11}"
        )


if __name__ == "__main__":
    main()
