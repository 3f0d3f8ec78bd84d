"""Drain rate of the real ingest service against a bare MQTT subscriber (issue 3, item 9).

Run by hand, not a test::

    .venv/bin/python -m bench.ingest --messages 100000 --devices 1000            # SQLite
    .venv/bin/python -m bench.ingest --messages 100000 --devices 1000 --db postgres

A backlog of signed readings waits in mosquitto (``--broker``, default
``$AGRITRACE_TEST_MQTT_URL``) for persistent sessions, subscribed before the backlog was
published and then disconnected: the ingest service's and one per ceiling. In the same run
the bench then times

1. the ceilings (bench/ceilings.py), each draining the backlog and doing nothing with it: the
   bare aiomqtt subscriber, paho-mqtt in a plain thread, ingest's own client (ingest/mqtt)
   receiving and acknowledging only, and the same client also publishing one receipt-sized
   QoS 1 message per message; ``--ceilings aiomqtt,paho,hot,hot-receipts`` (the default) picks
   them, ``--ceilings none`` skips them all;
2. the real ingest service (``run_ingest`` + ``Processor``, as ``agritrace ingest`` runs them)
   draining the same backlog up to the last commit and the last receipt published (QoS 1,
   acknowledged by the broker),

and prints every rate and ingest's ratio to each ceiling: the ratio is read against the
client it is bound by (docs/benchmarks.md). The log checkpointer runs beside ingest as in
``agritrace ingest`` (a companion task every ``--checkpoint-seconds``, default the service's
2 s; 0 leaves it out, as this benchmark ran before the product index). With ``--workers N``
the ingest side is N worker processes on the MQTT 5 shared subscription
(``AGRITRACE_INGEST_SHARED=1``, design.md "Scale-out"), each with its own persistent session
and checkpointer, as a deployment with N replicas runs them. Setup (registering devices,
commissioning one product per device, signing the backlog, publishing it) is not timed.
``--db postgres`` creates a fresh database on the server of ``--pg-url`` (default
``$AGRITRACE_TEST_PG_URL``) and drops it after.

``--index-products N`` runs the product index's A/B instead (bench/ingest_ab.py): the index
filled with N products, then drains of ``--messages`` each with the index update off (A) and
on (B), alternating, ``--pairs`` times, and their ratio::

    .venv/bin/python -m bench.ingest --index-products 1000000 --messages 20000
    .venv/bin/python -m bench.ingest --index-products 1000000 --messages 20000 --workload distinct
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hashlib
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiomqtt
import nacl.signing
import psutil
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from bench import ceilings
from bench.stages import stage_table
from ingest import Inbound, IngestConfig, IngestStats, Processor, ServiceOptions, run_ingest
from ingest.checkpointer import run_checkpointer
from ingest.service import Companion, settle_garbage_collector, subscription_topic
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.settings import Settings
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.topics import up_topic

if TYPE_CHECKING:
    from bench.ingest_ab import IndexAB

__all__ = ["BenchResult", "index_ab", "main"]

_GTIN = "09506000134352"
#: The service's default least time between product-index roots (AGRITRACE_INDEX_SECONDS).
_INDEX_SECONDS = Settings.model_fields["index_seconds"].default
_IDLE_S = 30.0
_ORIGIN = "bench.localhost/log"
_SENSORS = (Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 71, "P1"))


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What one run measured."""

    messages: int
    bare_seconds: float
    ingest_seconds: float
    bare_received: int
    ingest_accepted: int
    receipts_published: int
    entries: int
    #: CPU seconds of this process and its worker processes during the ingest drain.
    ingest_cpu_seconds: float = 0.0
    #: Of which in the garbage collector of the ingest process (one worker only).
    ingest_gc_seconds: float = 0.0
    #: The clients that drained the same backlog in the same run (bench/ceilings.py); the
    #: bare subscriber's numbers (``bare_*``) are those of the ``aiomqtt`` one, 0 without it.
    ceilings: tuple[ceilings.Ceiling, ...] = ()

    @property
    def bare_rate(self) -> float:
        """Messages per second of the bare subscriber (0 when it did not run)."""
        return self.bare_received / self.bare_seconds if self.bare_seconds > 0 else 0.0

    @property
    def ingest_rate(self) -> float:
        """Messages per second of ingest (commit + receipts)."""
        return self.receipts_published / self.ingest_seconds

    @property
    def ratio(self) -> float:
        """Ingest rate over bare rate (NaN when the bare subscriber did not run)."""
        return self.ingest_rate / self.bare_rate if self.bare_rate > 0 else float("nan")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> BenchResult:
    """Run the benchmark with command-line ``argv``; print a report to ``out``; return it."""
    args = _parser().parse_args(argv)
    broker = BrokerAddress.parse(args.broker or os.environ.get("AGRITRACE_TEST_MQTT_URL", ""))
    with _database(args) as db_url:
        result = asyncio.run(_run(args, broker, db_url, out))
    counts = {c.label: c.received for c in result.ceilings}
    counts["ingest"] = result.receipts_published
    if min(counts.values()) < result.messages:
        short = ", ".join(f"{n:,} ({label})" for label, n in counts.items())
        out.write(
            f"WARNING: only {short} of the backlog arrived before {_IDLE_S:.0f} s without one: "
            "raise mosquitto's max_queued_messages, or see why that drain stalled\n"
        )
    verify_us, sign_us = _crypto_costs()
    cpu_us = result.ingest_cpu_seconds / max(1, result.receipts_published) * 1e6
    gc_us = result.ingest_gc_seconds / max(1, result.receipts_published) * 1e6
    bare_us = f"{1e6 / result.bare_rate:.0f} us" if result.bare_rate else "(not run)"
    cpu_lines = (
        f"  ingest CPU per message:  {cpu_us:10.0f} us  (all threads and worker processes)\n"
        f"    of which in GC:        {gc_us:10.0f} us  (the ingest process)\n"
        if result.ingest_cpu_seconds
        else "  ingest CPU per message:  not measured with --workers\n"
    )
    out.write(
        f"\n{result.messages:,} messages from {args.devices:,} devices, db={args.db}, "
        f"batch={args.batch_size}, workers={args.workers or 1}\n"
        f"{ceilings.report(result.ceilings)}"
        f"  ingest (commit+receipt): {result.ingest_rate:10,.0f} msg/s  "
        f"({result.ingest_seconds:.2f} s)  {ceilings.ratios(result.ceilings, result.ingest_rate)}\n"
        f"  ratio ingest / bare:     {result.ratio:10.2f}\n"
        f"{cpu_lines}"
        f"  per message, one core:   bare receive {bare_us}, "
        f"Ed25519 verify {verify_us:.0f} us + receipt sign {sign_us:.0f} us\n"
    )
    if args.profile:
        stage_table(
            args.profile, args.profile_rate, result.receipts_published, args.profile_sampling
        ).write(out)
    return result


def index_ab(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> IndexAB:
    """Run the product index's A/B (``--index-products``); print the report; return it."""
    # bench.ingest_ab builds on this module's helpers: imported here, not in a cycle.
    from bench.ingest_ab import report, run_ab  # noqa: PLC0415

    args = _parser().parse_args(argv)
    if args.index_products is None or args.index_products < 0:
        raise SystemExit("--index-products N (N >= 0) is required for the index A/B")
    if args.workers:
        raise SystemExit("the index A/B runs one ingest process (no --workers)")
    broker = BrokerAddress.parse(args.broker or os.environ.get("AGRITRACE_TEST_MQTT_URL", ""))
    with _database(args) as db_url:
        result = asyncio.run(run_ab(args, broker, db_url, out))
    report(result, args, out)
    return result


def _crypto_costs(count: int = 5_000) -> tuple[float, float]:
    """Microseconds of one Ed25519 verify and one sign (PyNaCl), measured now on this machine.

    Ingest cannot avoid either per message (design.md: verify every signature, sign every
    receipt), so next to the bare receive time they bound what any ingest could reach here.
    """
    key = nacl.signing.SigningKey(hashlib.sha256(b"bench/ingest/floor").digest())
    payload = bytes(150)
    signed = [key.sign(payload + n.to_bytes(4, "big")) for n in range(count)]
    started = time.perf_counter()
    for message in signed:
        key.verify_key.verify(message)
    verify = time.perf_counter() - started
    started = time.perf_counter()
    for message in signed:
        key.sign(message.message)
    sign = time.perf_counter() - started
    return verify / count * 1e6, sign / count * 1e6


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--broker", default=None, help="mqtt://host:port of mosquitto")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL server for --db postgres")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--linger-ms", type=int, default=50)
    parser.add_argument("--verify-threads", type=int, default=2)
    parser.add_argument(
        "--signature-processes",
        type=int,
        default=Settings.model_fields["signature_processes"].default,
        help="worker processes for signatures (the service's AGRITRACE_SIGNATURE_PROCESSES)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the ingest drain with py-spy (raw format) to this file; print CPU by stage",
    )
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--profile-sampling",
        choices=("cpu", "gil", "wall"),
        default="cpu",
        help="with --profile: cpu samples running threads; gil only the thread holding the "
        "interpreter lock (py-spy --gil: the serialized part, which bounds one process); wall "
        "every thread, waiting ones too (py-spy --idle: where the critical path waits)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes")
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=2.0,
        help="the log checkpointer's interval beside ingest (0: none)",
    )
    parser.add_argument(
        "--index-seconds",
        type=float,
        default=_INDEX_SECONDS,
        help="least time between product-index roots (the service's AGRITRACE_INDEX_SECONDS)",
    )
    parser.add_argument(
        "--index-products",
        type=int,
        default=None,
        help="run the product index A/B with the index prefilled with N products",
    )
    parser.add_argument(
        "--ceilings",
        type=ceilings.parse_ceilings,
        default=ceilings.CEILINGS,
        help=f"clients that drain the same backlog first (default {','.join(ceilings.CEILINGS)}; "
        "none: only the ingest drain)",
    )
    parser.add_argument("--pairs", type=int, default=2, help="A/B: pairs of phases (A B A B)")
    parser.add_argument(
        "--workload",
        choices=("per-device", "distinct"),
        default="per-device",
        help="A/B: one lot per device, or a different product in every message (worst case)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="N > 0: N ingest processes on the shared subscription (0: one, in this process)",
    )
    return parser


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    """Yield the URL of a fresh, empty database (SQLite file or new PostgreSQL database)."""
    if args.db == "sqlite":
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            yield f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
        return
    server = make_url(args.pg_url or os.environ["AGRITRACE_TEST_PG_URL"])
    name = f"agritrace_bench_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _key(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"bench/ingest/" + label.encode()).digest())


async def _run(
    args: argparse.Namespace, broker: BrokerAddress, db_url: str, out: TextIO
) -> BenchResult:
    run_id = secrets.token_hex(3)
    devices = [f"bench-{run_id}-{i:05d}" for i in range(args.devices)]
    ingest_id = f"bench-ingest-{run_id}"
    ceiling_ids = {name: f"bench-{name}-{run_id}" for name in args.ceilings}
    worker_ids = [f"{ingest_id}-w{i}" for i in range(args.workers)]
    engine = make_engine(db_url)
    log_key = SignerKey("bench-log", hashlib.sha256(b"bench/ingest/log").digest())
    config = IngestConfig(
        batch_size=args.batch_size,
        linger_ms=args.linger_ms,
        verify_threads=args.verify_threads,
        signature_processes=args.signature_processes,
    )
    processor = Processor(engine, log_key, config)
    try:
        now = time.time_ns() // 1_000_000
        out.write(f"setup: {args.devices} devices, signing {args.messages:,} readings ...\n")
        setup = _register_and_commission(engine, processor, devices, now)
        backlog = _sign_backlog(devices, args.messages, now)
        # Every session exists (subscribed, then offline) before the backlog is published.
        await ceilings.open_sessions(broker, ceiling_ids)
        sessions = worker_ids or [ingest_id]
        for client_id in sessions:
            async with _session_client(broker, client_id, shared=client_id in worker_ids) as c:
                await c.subscribe(subscription_topic(shared=client_id in worker_ids), qos=1)
        out.write("publishing the backlog ...\n")
        await _publish(broker, backlog)

        measured = []
        for name, client_id in ceiling_ids.items():
            out.write(f"draining with the ceiling {ceilings.LABELS[name]} ...\n")
            measured.append(
                await ceilings.drain(
                    name,
                    broker,
                    client_id,
                    marker=f"/bench-{run_id}-",  # others' messages may share the broker
                    expected=len(backlog),
                    batch_size=args.batch_size,
                    idle_s=_IDLE_S,
                )
            )
        bare = next((c for c in measured if c.name == "aiomqtt"), ceilings.Ceiling("aiomqtt", 0, 0))
        bare_seconds, bare_received = bare.seconds, bare.received

        out.write(f"draining with ingest ({args.workers or 1} worker(s)) ...\n")
        if worker_ids:
            ingest_seconds, accepted, receipted = _drain_with_workers(
                args, broker, db_url, worker_ids, len(backlog)
            )
            entries = _count_entries(engine, devices)
            return BenchResult(
                messages=len(backlog),
                bare_seconds=bare_seconds,
                ingest_seconds=ingest_seconds,
                bare_received=bare_received,
                ingest_accepted=accepted,
                receipts_published=receipted,
                entries=entries - setup,
                ceilings=tuple(measured),
            )
        drain = await _drain_in_process(
            args, broker, ingest_id, (engine, log_key), processor, messages=len(backlog)
        )
        entries = _count_entries(engine, devices)
    finally:
        processor.close()
        engine.dispose()
        await ceilings.forget_sessions(broker, ceiling_ids)
        for client_id in [ingest_id, *worker_ids]:
            async with _session_client(broker, client_id, shared=False, clean=True):
                pass
    return BenchResult(
        messages=len(backlog),
        bare_seconds=bare_seconds,
        ingest_seconds=drain.seconds,
        bare_received=bare_received,
        ingest_accepted=drain.stats.accepted,
        receipts_published=drain.stats.receipts_published,
        entries=entries - setup,
        ingest_cpu_seconds=drain.cpu_seconds,
        ingest_gc_seconds=drain.gc_seconds,
        ceilings=tuple(measured),
    )


@dataclass(frozen=True, slots=True)
class _Drain:
    seconds: float
    cpu_seconds: float
    gc_seconds: float
    stats: IngestStats


async def _drain_in_process(
    args: argparse.Namespace,
    broker: BrokerAddress,
    client_id: str,
    database: tuple[Engine, SignerKey],
    processor: Processor,
    *,
    messages: int,
) -> _Drain:
    """Run ingest in this process until the backlog is receipted (or stalls); time it."""
    stop = asyncio.Event()
    stats = IngestStats()
    options = ServiceOptions(
        broker=broker, client_id=client_id, batch_size=args.batch_size, linger_ms=args.linger_ms
    )
    engine, log_key = database
    profiler = (
        _Profiler(args.profile, args.profile_rate, args.profile_sampling) if args.profile else None
    )
    if profiler is not None:
        await asyncio.to_thread(profiler.start)
    settle_garbage_collector()  # as agritrace ingest does before its first message
    cpu = _CpuMeter()
    started = time.perf_counter()
    with _GcMeter() as collector:
        async with asyncio.TaskGroup() as tasks:
            companions = _checkpointer(engine, log_key, args.checkpoint_seconds, args.index_seconds)
            tasks.create_task(
                run_ingest(processor, options, stop, companions=companions, stats=stats),
                name="ingest",
            )
            idle = _IdleWatch()
            # Poll the counters (5 ms): done when every message is receipted, or when nothing
            # has moved for _IDLE_S (the broker dropped part of the backlog).
            while stats.receipts_published < messages:
                if idle.stalled((stats.received, stats.receipts_published)):
                    break
                await asyncio.sleep(0.005)
            last_progress = idle.last_progress
            if stats.receipts_published >= messages:
                last_progress = time.perf_counter()
            seconds = last_progress - started
            cpu_seconds = cpu.seconds()
            if profiler is not None:
                await asyncio.to_thread(profiler.stop)
            stop.set()
    return _Drain(seconds, cpu_seconds, collector.seconds, stats)


class _GcMeter:
    """Time spent in the garbage collector (all generations) while in use, via gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        del info
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def __enter__(self) -> _GcMeter:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


class _CpuMeter:
    """CPU seconds used by this process and its children since it was made (psutil)."""

    def __init__(self) -> None:
        self._start = self._total()

    @staticmethod
    def _total() -> float:
        me = psutil.Process()
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            with suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total

    def seconds(self) -> float:
        """CPU seconds since this meter was made."""
        return self._total() - self._start


class _Profiler:
    """py-spy attached to this process (and its worker processes) for the ingest drain only."""

    def __init__(self, path: Path, rate: int, sampling: str = "cpu") -> None:
        self.path = path
        self.rate = rate
        self.sampling = sampling
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start sampling; return once py-spy has attached."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.process = subprocess.Popen(  # noqa: S603  (our own tool, our own pid)
            [
                spy,
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--subprocesses",
                "--nonblocking",
                *({"cpu": [], "gil": ["--gil"], "wall": ["--idle"]}[self.sampling]),
                "-o",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy needs a moment to attach; the drain is not timed yet

    def stop(self) -> None:
        """Stop sampling and wait for py-spy to write its file."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        _, errors = self.process.communicate(timeout=120)
        if self.process.returncode not in (0, -signal.SIGINT):
            raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')}")


def _checkpointer(
    engine: Engine, log_key: SignerKey, seconds: float, index_seconds: float = 0.0
) -> dict[str, Companion]:
    """The log checkpointer as ``agritrace ingest`` runs it beside ingest (none for 0 s)."""
    if seconds <= 0:
        return {}
    run = functools.partial(
        run_checkpointer, engine, log_key, _ORIGIN, seconds, index_seconds=index_seconds
    )
    return {"log-checkpointer": run}


class _IdleWatch:
    """Tells a drain that stopped (nothing moved for ``_IDLE_S``) from one that is busy.

    A poll that comes late (the event loop it shares with the service was busy for a while)
    restarts the idle clock instead of counting the busy time as idle.
    """

    def __init__(self) -> None:
        self.last_progress = self._last_poll = time.perf_counter()
        self._seen: tuple[int, ...] | None = None

    def stalled(self, counters: tuple[int, ...]) -> bool:
        """Record this poll's counters; True once nothing has moved for ``_IDLE_S``."""
        now = time.perf_counter()
        late = now - self._last_poll > 1.0
        self._last_poll = now
        if counters != self._seen or late:
            self._seen, self.last_progress = counters, now
            return False
        return now - self.last_progress > _IDLE_S


def _session_client(
    broker: BrokerAddress, client_id: str, *, shared: bool, clean: bool = False
) -> aiomqtt.Client:
    """A client on the session ``client_id``: MQTT 5 with an expiry for shared ones."""
    if shared:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        return aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
        )
    return aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=clean)


def _drain_with_workers(
    args: argparse.Namespace,
    broker: BrokerAddress,
    db_url: str,
    worker_ids: list[str],
    expected: int,
) -> tuple[float, int, int]:
    """Run one ingest process per id until every message is receipted (or nothing moves).

    Returns the seconds taken, the accepted count and the receipts published, summed over the
    workers. Each worker reports its counters through shared memory every 5 ms.
    """
    context = multiprocessing.get_context("spawn")
    receipted = context.Array("q", len(worker_ids))
    accepted = context.Array("q", len(worker_ids))
    stop = context.Event()
    # The clock starts once every worker has imported, opened its database and started its
    # signature worker: a deployment's workers are up before the backlog they drain, and the
    # interpreter's start-up is not ingest's rate.
    ready = context.Barrier(len(worker_ids) + 1)
    workers = [
        context.Process(
            target=_worker,
            args=(
                _WorkerSpec(
                    i,
                    str(broker),
                    db_url,
                    client_id,
                    args.batch_size,
                    args.linger_ms,
                    args.verify_threads,
                    args.signature_processes,
                    args.checkpoint_seconds,
                    args.index_seconds,
                ),
                receipted,
                accepted,
                stop,
                ready,
            ),
            name=client_id,
        )
        for i, client_id in enumerate(worker_ids)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)
    started = time.perf_counter()
    idle = _IdleWatch()
    while sum(receipted[:]) < expected:
        if idle.stalled((sum(receipted[:]),)):
            break
        time.sleep(0.005)
    last_progress = idle.last_progress
    if sum(receipted[:]) >= expected:
        last_progress = time.perf_counter()
    stop.set()
    for worker in workers:
        worker.join(60)
    return last_progress - started, sum(accepted[:]), sum(receipted[:])


@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    """What one worker process needs to know (picklable, for the spawn start method)."""

    index: int
    broker_url: str
    db_url: str
    client_id: str
    batch_size: int
    linger_ms: int
    verify_threads: int
    signature_processes: int
    checkpoint_seconds: float
    index_seconds: float


def _worker(spec: _WorkerSpec, receipted: Any, accepted: Any, stop: Any, ready: Any) -> None:
    """One ingest worker process: run the service until ``stop`` is set; report counters.

    Set up as ``agritrace ingest`` is (the garbage collector settled after start-up), then waits
    at ``ready`` for the other workers and the clock.
    """
    engine = make_engine(spec.db_url)
    log_key = SignerKey("bench-log", hashlib.sha256(b"bench/ingest/log").digest())
    config = IngestConfig(
        batch_size=spec.batch_size,
        linger_ms=spec.linger_ms,
        verify_threads=spec.verify_threads,
        signature_processes=spec.signature_processes,
    )
    processor = Processor(engine, log_key, config)
    options = ServiceOptions(
        broker=BrokerAddress.parse(spec.broker_url),
        client_id=spec.client_id,
        shared=True,
        batch_size=spec.batch_size,
        linger_ms=spec.linger_ms,
    )
    index = spec.index
    settle_garbage_collector()
    ready.wait(timeout=120)

    async def run() -> None:
        stopping, stats = asyncio.Event(), IngestStats()
        async with asyncio.TaskGroup() as tasks:
            companions = _checkpointer(engine, log_key, spec.checkpoint_seconds, spec.index_seconds)
            tasks.create_task(
                run_ingest(processor, options, stopping, companions=companions, stats=stats),
                name="ingest",
            )
            while not stop.is_set():
                receipted[index], accepted[index] = stats.receipts_published, stats.accepted
                await asyncio.sleep(0.005)
            stopping.set()
        receipted[index], accepted[index] = stats.receipts_published, stats.accepted

    try:
        asyncio.run(run())
    finally:
        processor.close()
        engine.dispose()


def _register_and_commission(
    engine: Engine, processor: Processor, devices: list[str], now: int
) -> int:
    """Register the devices; commission one lot per device (through the processor, untimed)."""
    upgrade(engine)
    with session_scope(engine) as session:
        create_party(session, "bench-farm", "Bench Farm", "farm", now - 86_400_000)
        for device in devices:
            register_device(
                session, device, "bench-farm", bytes(_key(device).verify_key), now - 86_400_000
            )
    batch = [
        Inbound(
            up_topic(device),
            sign_message(
                Event(device, 1, now - 1000, (_lot(device),), "commissioning"), _key(device)
            ),
            now,
        )
        for device in devices
    ]
    for start in range(0, len(batch), 500):
        processor.process(batch[start : start + 500], now)
    return len(batch)


def _lot(device: str) -> ProductKey:
    return ProductKey(_GTIN, lot=device[-14:].upper())


def _sign_backlog(devices: list[str], count: int, now: int) -> list[tuple[str, bytes]]:
    """Readings round-robin over the devices, seq 2 onwards (1 was the commissioning)."""
    keys = {device: _key(device) for device in devices}
    backlog = []
    for n in range(count):
        device = devices[n % len(devices)]
        reading = Reading(
            device=device,
            seq=2 + n // len(devices),
            time=now - 500 + n % 100,
            products=(_lot(device),),
            sensors=_SENSORS,
        )
        backlog.append((up_topic(device), sign_message(reading, keys[device])))
    return backlog


async def _publish(broker: BrokerAddress, backlog: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(broker.host, broker.port, max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 1_000_000
        for start in range(0, len(backlog), 2000):
            await asyncio.gather(
                *(client.publish(t, raw, qos=1) for t, raw in backlog[start : start + 2000])
            )


def _count_entries(engine: Engine, devices: list[str]) -> int:
    log = SQLModel.metadata.tables["log_entries"]
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(log).where(log.c.device_id.in_(devices))
            ).scalar_one()
        )


if __name__ == "__main__":
    if "--index-products" in sys.argv:
        index_ab()
    else:
        main()
