"""The product index's cost to ingest: A/B drains with and without the index update.

``python -m bench.ingest --index-products N`` runs this. It fills the product index with ``N``
synthetic products first (:func:`bench.index.fill`, then an ``index_root`` entry naming that
map, as the checkpointer would have appended it), registers the devices and commissions their
products, then drains ``--messages`` signed readings per phase through the real ingest service
(``run_ingest``) with the log checkpointer beside it as ``agritrace ingest`` runs it
(``run_checkpointer`` as a companion task, every ``--checkpoint-seconds``, default the
service's 2 s), in phases A B A B (``--pairs``):

* A: the checkpointer runs with :func:`tracecore.storage.index.update_index` replaced by a
  no-op *inside this benchmark only* (it integrates and signs checkpoints, no index);
* B: the checkpointer as shipped (integrates, folds the index, appends ``index_root``, signs).

Before each phase, untimed, one real checkpoint round folds what the previous phase left, so
every phase starts with the index caught up. Each phase's backlog is published while ingest
is offline (its persistent session queues it); the phase is timed from the service's start to
the last receipt published. The report gives each phase's msg/s, and B over A (the median of
each side). ``--workload distinct`` names a different product in every message (commissioned
in the setup), the worst case where each message changes a key of its own; ``per-device``
(the default) is ``bench.ingest``'s workload, one lot per device.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy import Engine

import ingest.checkpointer
import tracecore.checkpoint
from bench.index import fill
from bench.ingest import _GTIN, _ORIGIN, _SENSORS, _IdleWatch, _key, _publish, _session_client
from ingest import Inbound, IngestConfig, IngestStats, Processor, ServiceOptions, run_ingest
from ingest.checkpointer import checkpoint_once, run_checkpointer
from ingest.service import Companion, subscription_topic
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.logentry import IndexRoot
from tracecore.message import Event, Reading
from tracecore.mqtt import BrokerAddress
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.storage.index import IndexPlan, StoredRoot
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

__all__ = ["IndexAB", "Phase", "run_ab"]

_COMMISSION_BATCH = 64


@dataclass(frozen=True, slots=True)
class Phase:
    """One timed drain."""

    label: str  # "A" (no index update) or "B" (index updated)
    messages: int
    seconds: float
    receipted: int
    index_roots: int  # index_root entries the phase's checkpoint rounds appended

    @property
    def rate(self) -> float:
        """Messages per second (receipted)."""
        return self.receipted / self.seconds


@dataclass(frozen=True, slots=True)
class IndexAB:
    """The phases of one A/B run, in the order they ran."""

    products: int
    workload: str
    phases: tuple[Phase, ...]

    def rates(self, label: str) -> list[float]:
        """The msg/s of the phases with ``label``."""
        return [p.rate for p in self.phases if p.label == label]

    @property
    def ratio(self) -> float:
        """Median msg/s with the index update over the median without it."""
        return statistics.median(self.rates("B")) / statistics.median(self.rates("A"))


def _no_index_update(_session: object, _now_ms: int, **_: object) -> StoredRoot | None:
    return None


def _no_index_plan(_session: object, _now_ms: int, **_: object) -> IndexPlan | None:
    return None


@contextmanager
def _index_update(*, enabled: bool) -> Iterator[None]:
    """Phase A: the checkpointer skips the index, its fold and its plan alike (a
    benchmark-only patch, never a setting)."""
    real = tracecore.checkpoint.update_index
    real_plan = ingest.checkpointer.plan_index
    if not enabled:
        tracecore.checkpoint.update_index = _no_index_update  # type: ignore[assignment]
        ingest.checkpointer.plan_index = _no_index_plan  # type: ignore[assignment]
    try:
        yield
    finally:
        tracecore.checkpoint.update_index = real
        ingest.checkpointer.plan_index = real_plan


def _prefill(engine: Engine, products: int, now: int) -> None:
    """Fill the map with synthetic products and log an ``index_root`` entry naming it.

    The entry says "the map over the first 0 entries": the synthetic products stand for the
    history of a log this benchmark does not replay; everything ingested after is folded in.
    """
    root = fill(engine, products, 65_536, start=0) if products else None
    with log_session(engine) as session:
        if root is not None:
            append_registry_entry(session, IndexRoot(size=0, root=root, time=now), now)


class _Devices:
    """The bench's devices, their keys and the next seq of each."""

    def __init__(self, run_id: str, count: int) -> None:
        self.names = [f"bench-{run_id}-{i:05d}" for i in range(count)]
        self.keys = {d: _key(d) for d in self.names}
        self.next_seq = dict.fromkeys(self.names, 1)

    def seq(self, device: str) -> int:
        seq = self.next_seq[device]
        self.next_seq[device] = seq + 1
        return seq


def _product(workload: str, devices: _Devices, n: int) -> ProductKey:
    """The product message ``n`` names: its device's lot, or product ``n`` of its own."""
    if workload == "distinct":
        return ProductKey(_GTIN, lot=f"AB{n:010d}")
    return ProductKey(_GTIN, lot=devices.names[n % len(devices.names)][-14:].upper())


def _setup(
    engine: Engine, processor: Processor, devices: _Devices, args: argparse.Namespace, now: int
) -> None:
    """Register the devices; commission every product the phases will name (untimed)."""
    with session_scope(engine) as session:
        create_party(session, "bench-farm", "Bench Farm", "farm", now - 86_400_000)
        for device in devices.names:
            register_device(
                session, device, "bench-farm", bytes(devices.keys[device].verify_key), now - 1
            )
    total = args.messages * args.pairs * 2
    names = len(devices.names)
    count = total if args.workload == "distinct" else names
    by_device: dict[str, list[ProductKey]] = {}
    for n in range(count):
        by_device.setdefault(devices.names[n % names], []).append(
            _product(args.workload, devices, n)
        )
    batch: list[Inbound] = []
    for device, products in by_device.items():
        for start in range(0, len(products), _COMMISSION_BATCH):
            lots = tuple(products[start : start + _COMMISSION_BATCH])
            event = Event(device, devices.seq(device), now - 1000, lots, "commissioning")
            batch.append(Inbound(up_topic(device), sign_message(event, devices.keys[device]), now))
    for start in range(0, len(batch), 500):
        result = processor.process(batch[start : start + 500], now)
        if result.accepted != len(batch[start : start + 500]):
            raise SystemExit(f"not every commissioning was accepted: {result}")


def _backlog(
    devices: _Devices, workload: str, first: int, count: int, now: int
) -> list[tuple[str, bytes]]:
    """Readings ``first .. first+count-1``, round-robin over the devices."""
    backlog = []
    names = devices.names
    for n in range(first, first + count):
        device = names[n % len(names)]
        reading = Reading(
            device=device,
            seq=devices.seq(device),
            time=now - 500 + n % 100,
            products=(_product(workload, devices, n),),
            sensors=_SENSORS,
        )
        backlog.append((up_topic(device), sign_message(reading, devices.keys[device])))
    return backlog


def _count_roots(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM log_entries WHERE kind = 'index_root'"
            ).scalar_one()
        )


async def _drain(
    processor: Processor,
    options: ServiceOptions,
    companions: dict[str, Companion],
    expected: int,
) -> tuple[float, int]:
    """Run ingest with the checkpointer until ``expected`` receipts; seconds and receipts."""
    stop = asyncio.Event()
    stats = IngestStats()
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(
            run_ingest(
                processor,
                options,
                stop,
                companions=companions,
                stats=stats,
            ),
            name="ingest",
        )
        idle = _IdleWatch()
        while stats.receipts_published < expected:
            if idle.stalled((stats.received, stats.receipts_published)):
                break
            await asyncio.sleep(0.005)
        last = time.perf_counter() if stats.receipts_published >= expected else idle.last_progress
        stop.set()
    return last - started, stats.receipts_published


async def run_ab(
    args: argparse.Namespace, broker: BrokerAddress, db_url: str, out: TextIO
) -> IndexAB:
    """Prefill, set up, then run the A B A B drains (see the module docstring)."""
    run_id = secrets.token_hex(3)
    devices = _Devices(run_id, args.devices)
    client_id = f"bench-ab-{run_id}"
    engine = make_engine(db_url)
    log_key = SignerKey("bench-log", hashlib.sha256(b"bench/ingest/log").digest())
    config = IngestConfig(
        batch_size=args.batch_size, linger_ms=args.linger_ms, verify_threads=args.verify_threads
    )
    options = ServiceOptions(
        broker=broker, client_id=client_id, batch_size=args.batch_size, linger_ms=args.linger_ms
    )
    companions: dict[str, Companion] = {}
    if args.checkpoint_seconds > 0:
        companions["log-checkpointer"] = functools.partial(
            run_checkpointer,
            engine,
            log_key,
            _ORIGIN,
            args.checkpoint_seconds,
            index_seconds=args.index_seconds,
        )
    processor = Processor(engine, log_key, config)
    phases: list[Phase] = []
    try:
        now = time.time_ns() // 1_000_000
        upgrade(engine)
        out.write(f"prefilling the index with {args.index_products:,} products ...\n")
        started = time.perf_counter()
        _prefill(engine, args.index_products, now)
        out.write(f"  {time.perf_counter() - started:.1f} s\n")
        out.write(f"setup: {args.devices} devices, workload {args.workload} ...\n")
        _setup(engine, processor, devices, args, now)
        async with _session_client(broker, client_id, shared=False) as client:
            await client.subscribe(subscription_topic(shared=False), qos=1)
        for number, label in enumerate("AB" * args.pairs):
            now = time.time_ns() // 1_000_000
            backlog = _backlog(devices, args.workload, number * args.messages, args.messages, now)
            await _publish(broker, backlog)
            # Untimed: fold what the last phase left, so each phase starts caught up.
            await asyncio.to_thread(checkpoint_once, engine, log_key, _ORIGIN, now)
            roots = _count_roots(engine)
            with _index_update(enabled=label == "B"):
                seconds, receipted = await _drain(processor, options, companions, len(backlog))
            phase = Phase(label, len(backlog), seconds, receipted, _count_roots(engine) - roots)
            phases.append(phase)
            out.write(
                f"  phase {label}: {phase.rate:8,.0f} msg/s ({seconds:.2f} s, "
                f"{receipted:,} receipted, {phase.index_roots} index roots)\n"
            )
    finally:
        processor.close()
        engine.dispose()
        async with _session_client(broker, client_id, shared=False, clean=True):
            pass
    return IndexAB(args.index_products, args.workload, tuple(phases))


def report(result: IndexAB, args: argparse.Namespace, out: TextIO) -> None:
    """Print the A/B summary."""
    a, b = result.rates("A"), result.rates("B")
    out.write(
        f"\nindex A/B: {result.products:,} products in the index, workload {result.workload}, "
        f"{args.messages:,} messages per phase from {args.devices:,} devices, db={args.db}, "
        f"checkpoint every {args.checkpoint_seconds:g} s, an index root at most every "
        f"{args.index_seconds:g} s\n"
        f"  A (no index update): {', '.join(f'{r:,.0f}' for r in a)} msg/s\n"
        f"  B (index updated):   {', '.join(f'{r:,.0f}' for r in b)} msg/s\n"
        f"  ratio B / A (medians): {result.ratio:.3f} ({(1 - result.ratio) * 100:+.1f} % cost)\n"
    )
