"""Helpers for the tests that run ingest and device fleets through a real broker.

Imported by the test modules of tests/ingest, tests/firmware_sim and tests/bench as
``mqtt_kit`` (tests/ is on ``sys.path`` because of tests/conftest.py). Everything here is
test support: registering parties and devices straight in the database, running
``agritrace ingest`` as a subprocess, waiting for conditions, cleaning up broker sessions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

from gateway.outbox import Outbox
from gateway.runtime import Fleet, ResendPolicy
from ingest import IngestConfig, IngestStats, Processor, ServiceOptions
from ingest.service import run_ingest
from tracecore.backoff import Backoff
from tracecore.cose import parse_message
from tracecore.errors import KeyFileError
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, generate_signer, read_log_key
from tracecore.logentry import GENESIS_PREV, parse_entry
from tracecore.merkle import leaf_hash
from tracecore.mqtt import BrokerAddress
from tracecore.receipt import parse_receipt
from tracecore.settings import Settings
from tracecore.storage import create_party, register_device, session_scope

__all__ = [
    "DAY_MS",
    "IngestProcess",
    "check_chains_and_log",
    "check_exactly_once",
    "check_receipts",
    "count_rows",
    "free_port",
    "ingest_thread",
    "lot",
    "make_fleet",
    "now_ms",
    "provision",
    "unique",
    "wait_for",
    "wait_for_log_key",
    "wipe_session",
]

DAY_MS = 86_400_000
GTIN = "09506000134352"


def now_ms() -> int:
    """Wall-clock ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


def unique(prefix: str) -> str:
    """Return ``prefix`` plus a random suffix: ids that never collide with other test runs.

    The broker is shared by every test (and every concurrent run), so device ids, client ids
    and products are made unique per test.
    """
    return f"{prefix}-{secrets.token_hex(4)}"


def lot(name: str) -> ProductKey:
    """Return the product key of an egg lot ``name``."""
    return ProductKey.from_parts(GTIN, lot=name)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def provision(engine: Engine, party_id: str, device_ids: Iterable[str]) -> dict[str, SignerKey]:
    """Register party ``party_id`` (a farm) and its devices with fresh keys; return the keys."""
    keys = {device_id: generate_signer(device_id) for device_id in device_ids}
    since = now_ms() - DAY_MS
    with session_scope(engine) as session:
        create_party(session, party_id, party_id.title(), "farm", since)
        for device_id, key in keys.items():
            register_device(session, device_id, party_id, key.public_key, since)
    return keys


def make_fleet(
    broker: BrokerAddress,
    outbox_path: Path,
    log_public_key: bytes,
    keys: dict[str, SignerKey],
    *,
    client_id: str,
    resend_s: float = 2.0,
    resend_max_s: float = 10.0,
) -> Fleet:
    """Return a fleet of ``keys``' devices with a short resend timeout (tests)."""
    fleet = Fleet(
        broker,
        Outbox(outbox_path),
        log_public_key,
        client_id=client_id,
        resend=ResendPolicy(initial_s=resend_s, max_s=resend_max_s),
        reconnect=Backoff(initial=0.1, cap=2.0),
        scan_interval_s=0.2,
    )
    for device_id, key in keys.items():
        fleet.add_device(device_id, key)
    return fleet


def count_rows(engine: Engine, table: str, **where: object) -> int:
    """Count the rows of ``table`` whose columns equal ``where`` (``device_id__in`` for IN)."""
    t = SQLModel.metadata.tables[table]
    statement = select(func.count()).select_from(t)
    for name, value in where.items():
        if name.endswith("__in"):
            statement = statement.where(t.c[name[:-4]].in_(list(value)))  # type: ignore[call-overload]
        else:
            statement = statement.where(t.c[name] == value)
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())


async def wait_for_log_key(data_dir: Path) -> bytes:
    """Wait until ``agritrace ingest`` in ``data_dir`` has written its log key; return it.

    The file appears (O_EXCL create) a moment before its line is written, so poll until it
    reads as a whole key.
    """

    def readable() -> bool:
        try:
            read_log_key(data_dir / "keys", Settings().log_origin)
        except KeyFileError:
            return False
        return True

    await wait_for(readable, 20, "ingest to create the log key")
    return read_log_key(data_dir / "keys", Settings().log_origin).public_key


async def wait_for(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail with ``what`` after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wipe_session(broker: BrokerAddress, client_id: str) -> None:
    """Delete the broker's persistent session of ``client_id`` (connect with a clean session).

    Tests use unique client ids; without this, mosquitto would keep queueing messages for the
    sessions of finished tests until it restarts.
    """
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=True):
        pass


@dataclass
class IngestProcess:
    """``agritrace ingest`` as a subprocess (start, SIGTERM, SIGKILL, restart)."""

    data_dir: Path
    db_url: str
    broker: BrokerAddress
    client_id: str
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def env(self) -> dict[str, str]:
        """The environment of the subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
        env.update(
            {
                "AGRITRACE_DATA_DIR": str(self.data_dir),
                "AGRITRACE_DB_URL": self.db_url,
                "AGRITRACE_MQTT_URL": f"mqtt://{self.broker.host}:{self.broker.port}",
                "AGRITRACE_INGEST_CLIENT_ID": self.client_id,
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        """Start the process (its output goes to ``data_dir/ingest-N.log``)."""
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / f"ingest-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
            [str(Path(sys.executable).with_name("agritrace")), "ingest"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def log_text(self) -> str:
        """All output of every start so far."""
        return "\n".join(
            (self.data_dir / f"ingest-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    async def wait_connected(self) -> None:
        """Wait until the current start has connected to the broker (its log says so).

        A SIGTERM that arrives while Python is still importing cannot be handled yet: the
        process dies of it. A test of the clean shutdown waits for this first.
        """
        log = self.data_dir / f"ingest-{self.starts}.log"
        while "ingest connected to" not in log.read_text(errors="replace"):
            assert self.process is not None
            assert self.process.poll() is None, self.log_text()
            await asyncio.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the running process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; return its exit status."""
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def check_exactly_once(engine: Engine, sent: dict[tuple[str, int], bytes], per_device: int) -> None:
    """Every sent message is logged once with its exact bytes; each device has seq 1..n."""
    log = SQLModel.metadata.tables["log_entries"]
    devices = sorted({device for device, _ in sent})
    with engine.connect() as conn:
        rows = conn.execute(
            select(log.c.device_id, log.c.seq, log.c.raw).where(log.c.device_id.in_(devices))
        ).all()
    stored = collections.Counter((row.device_id, row.seq) for row in rows)
    assert len(rows) == len(sent)
    assert max(stored.values()) == 1
    seqs: dict[str, set[int]] = collections.defaultdict(set)
    for row in rows:
        seqs[row.device_id].add(row.seq)
        assert row.raw == sent[row.device_id, row.seq]
    assert all(s == set(range(1, per_device + 1)) for s in seqs.values())
    assert len(seqs) == len({device for device, _ in sent})


def check_chains_and_log(engine: Engine) -> None:
    """No index gap, every leaf hash right, every product chain intact from the entry bytes."""
    log = SQLModel.metadata.tables["log_entries"]
    links = SQLModel.metadata.tables["chain_links"]
    with engine.connect() as conn:
        entries = conn.execute(
            select(log.c.index, log.c.kind, log.c.entry, log.c.leaf_hash).order_by(log.c.index)
        ).all()
        chain_rows = conn.execute(
            select(links.c.product_key, links.c.pseq, links.c.log_index).order_by(
                links.c.product_key, links.c.pseq
            )
        ).all()
    assert [row.index for row in entries] == list(range(len(entries))), "index gap in the log"
    by_index = {row.index: row for row in entries}
    for row in entries:
        assert row.leaf_hash == leaf_hash(row.entry)
    chains: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for row in chain_rows:
        chains[row.product_key].append((row.pseq, row.log_index))
    assert chains
    for product, positions in chains.items():
        assert [pseq for pseq, _ in positions] == list(range(1, len(positions) + 1)), product
        prev = GENESIS_PREV
        for pseq, index in positions:
            entry_bytes = by_index[index].entry
            entry = parse_entry(entry_bytes)
            (position,) = [c for c in entry.chains if c.product.path == product]
            assert position.pseq == pseq
            assert position.prev == prev, f"{product} pseq {pseq}: chain broken"
            prev = leaf_hash(entry_bytes)


def check_receipts(fleets: list[Fleet], sent: dict[tuple[str, int], bytes], log_key: bytes) -> None:
    """Every device holds a verified receipt for every message; the outboxes are empty."""
    held: set[tuple[str, int]] = set()
    for fleet in fleets:
        assert fleet.outbox.pending_count() == 0
        for stored in fleet.outbox.receipts():
            receipt = parse_receipt(stored.raw)
            receipt.verify(log_key)
            assert receipt.matches(parse_message(sent[stored.device_id, stored.seq]))
            held.add((stored.device_id, stored.seq))
        assert fleet.stats.bad_receipts == 0
        fleet.outbox.close()
    assert held == set(sent)


@contextlib.contextmanager
def ingest_thread(engine: Engine, log_key: SignerKey, broker: BrokerAddress) -> Iterator[None]:
    """Run the ingest service on ``broker`` in a thread with its own loop, during the block."""
    client_id = unique("ingest")
    processor = Processor(engine, log_key, IngestConfig(batch_size=50))
    options = ServiceOptions(broker, client_id=client_id, linger_ms=20, reconnect_initial_s=0.1)
    stats = IngestStats()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def serve() -> None:
        loop.run_until_complete(run_ingest(processor, options, stop, stats=stats))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while stats.connects < 1:
        assert time.monotonic() < deadline, "ingest did not connect"
        time.sleep(0.05)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        processor.close()
        asyncio.run(wipe_session(broker, client_id))
