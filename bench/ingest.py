"""Drain rate of the real ingest service against a bare MQTT subscriber (issue 3, item 9).

Run by hand, not a test::

    .venv/bin/python -m bench.ingest --messages 100000 --devices 1000            # SQLite
    .venv/bin/python -m bench.ingest --messages 100000 --devices 1000 --db postgres

A backlog of signed readings waits in mosquitto (``--broker``, default
``$AGRITRACE_TEST_MQTT_URL``) for two persistent sessions, subscribed before the backlog was
published and then disconnected: the ingest service's and a bare subscriber's. In the same run
the bench then times

1. the bare aiomqtt subscriber draining the backlog and doing nothing with it, and
2. the real ingest service (``run_ingest`` + ``Processor``, as ``agritrace ingest`` runs them)
   draining the same backlog up to the last commit and the last receipt published (QoS 1,
   acknowledged by the broker),

and prints both rates and their ratio. Setup (registering devices, commissioning one product
per device, signing the backlog, publishing it) is not timed. ``--db postgres`` creates a fresh
database on the server of ``--pg-url`` (default ``$AGRITRACE_TEST_PG_URL``) and drops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiomqtt
import nacl.signing
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from ingest import Inbound, IngestConfig, IngestStats, Processor, ServiceOptions, run_ingest
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.topics import UP_WILDCARD, up_topic

__all__ = ["BenchResult", "main"]

_GTIN = "09506000134352"
_IDLE_S = 5.0
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

    @property
    def bare_rate(self) -> float:
        """Messages per second of the bare subscriber."""
        return self.bare_received / self.bare_seconds

    @property
    def ingest_rate(self) -> float:
        """Messages per second of ingest (commit + receipts)."""
        return self.receipts_published / self.ingest_seconds

    @property
    def ratio(self) -> float:
        """Ingest rate over bare rate."""
        return self.ingest_rate / self.bare_rate


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> BenchResult:
    """Run the benchmark with command-line ``argv``; print a report to ``out``; return it."""
    args = _parser().parse_args(argv)
    broker = BrokerAddress.parse(args.broker or os.environ.get("AGRITRACE_TEST_MQTT_URL", ""))
    with _database(args) as db_url:
        result = asyncio.run(_run(args, broker, db_url, out))
    if min(result.bare_received, result.receipts_published) < result.messages:
        out.write(
            f"WARNING: only {result.bare_received:,} (bare) and {result.receipts_published:,} "
            "(ingest) of the backlog arrived: raise mosquitto's max_queued_messages\n"
        )
    out.write(
        f"\n{result.messages:,} messages from {args.devices:,} devices, db={args.db}, "
        f"batch={args.batch_size}\n"
        f"  bare aiomqtt subscriber: {result.bare_rate:10,.0f} msg/s  "
        f"({result.bare_seconds:.2f} s)\n"
        f"  ingest (commit+receipt): {result.ingest_rate:10,.0f} msg/s  "
        f"({result.ingest_seconds:.2f} s)\n"
        f"  ratio ingest / bare:     {result.ratio:10.2f}\n"
    )
    return result


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
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes")
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
    ingest_id, bare_id = f"bench-ingest-{run_id}", f"bench-bare-{run_id}"
    engine = make_engine(db_url)
    log_key = SignerKey("bench-log", hashlib.sha256(b"bench/ingest/log").digest())
    config = IngestConfig(
        batch_size=args.batch_size, linger_ms=args.linger_ms, verify_threads=args.verify_threads
    )
    processor = Processor(engine, log_key, config)
    try:
        now = time.time_ns() // 1_000_000
        out.write(f"setup: {args.devices} devices, signing {args.messages:,} readings ...\n")
        setup = _register_and_commission(engine, processor, devices, now)
        backlog = _sign_backlog(devices, args.messages, now)
        # Both sessions exist (subscribed, then offline) before the backlog is published.
        for client_id in (ingest_id, bare_id):
            async with aiomqtt.Client(
                broker.host, broker.port, identifier=client_id, clean_session=False
            ) as client:
                await client.subscribe(UP_WILDCARD, qos=1)
        out.write("publishing the backlog ...\n")
        await _publish(broker, backlog)

        out.write("draining with a bare subscriber ...\n")
        bare_seconds, bare_received = await _bare_drain(broker, bare_id, run_id, len(backlog))

        out.write("draining with ingest ...\n")
        stop = asyncio.Event()
        stats = IngestStats()
        options = ServiceOptions(
            broker=broker,
            client_id=ingest_id,
            batch_size=args.batch_size,
            linger_ms=args.linger_ms,
        )
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run_ingest(processor, options, stop, stats=stats), name="ingest")
            last_progress, seen = time.perf_counter(), -1
            # Poll the counters (5 ms): done when every message is receipted, or when nothing
            # has moved for _IDLE_S (the broker dropped part of the backlog).
            while stats.receipts_published < len(backlog):
                if stats.receipts_published != seen:
                    seen, last_progress = stats.receipts_published, time.perf_counter()
                elif time.perf_counter() - last_progress > _IDLE_S:
                    break
                await asyncio.sleep(0.005)
            if stats.receipts_published >= len(backlog):
                last_progress = time.perf_counter()
            ingest_seconds = last_progress - started
            stop.set()
        entries = _count_entries(engine, devices)
    finally:
        processor.close()
        engine.dispose()
        for client_id in (ingest_id, bare_id):
            async with aiomqtt.Client(
                broker.host, broker.port, identifier=client_id, clean_session=True
            ):
                pass
    return BenchResult(
        messages=len(backlog),
        bare_seconds=bare_seconds,
        ingest_seconds=ingest_seconds,
        bare_received=bare_received,
        ingest_accepted=stats.accepted,
        receipts_published=stats.receipts_published,
        entries=entries - setup,
    )


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


async def _bare_drain(
    broker: BrokerAddress, client_id: str, run_id: str, expected: int
) -> tuple[float, int]:
    """Drain the backlog doing nothing with it; return the seconds taken and the count.

    Stops at ``expected`` messages, or after ``_IDLE_S`` without one (a broker whose
    ``max_queued_messages`` is lower than the backlog drops the rest: the count shows it).
    """
    marker = f"/bench-{run_id}-"
    received = 0
    started = last = time.perf_counter()
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, clean_session=False
    ) as client:
        iterator = aiter(client.messages)
        while received < expected:
            try:
                async with asyncio.timeout(_IDLE_S):
                    message = await anext(iterator)
            except TimeoutError:
                break
            if marker in message.topic.value:  # others' messages may share the broker
                received += 1
                last = time.perf_counter()
    return last - started, received


def _count_entries(engine: Engine, devices: list[str]) -> int:
    log = SQLModel.metadata.tables["log_entries"]
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(log).where(log.c.device_id.in_(devices))
            ).scalar_one()
        )


if __name__ == "__main__":
    main()
