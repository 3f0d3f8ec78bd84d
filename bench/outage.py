"""A broker outage of an hour: what the gateway resends, and what ingest receives (issue 9).

Run by hand, not a test::

    .venv/bin/python -m bench.outage                       # 4 sensors, 1 h outage, time / 100
    .venv/bin/python -m bench.outage --sensors 8 --outage-s 1800 --scale 50

Everything is real and runs on this machine: a mosquitto of the bench's own (persistence on, the
limits of deploy/mosquitto.conf) on a free port, ``agritrace ingest`` in its own process
(SQLite, its health port for the counters), and one gateway :class:`~gateway.runtime.Fleet` with
``--sensors`` devices, each commissioning its own lot first.

Time is scaled by ``--scale`` (S): the readings carry device times one second apart, as sensors
at 1 reading/s make them, but are produced S times faster; the outage lasts ``outage_s / S``
seconds of real time; the fleet's resend policy (30 s, capped at 1 h: docs/protocol.md §8) and
its reconnect backoff (capped at 30 s) are divided by S too. What is not scaled is how fast
mosquitto and ingest work, nor ingest's own reconnect backoff (up to 30 s): a scaled run is
therefore *harder* on the resend schedule than the real hour (the backlog takes S times
longer to drain, measured in resend timeouts), never easier.

Two phases in the same run, each of ``sensors * outage_s`` readings:

* **baseline**: the broker stays up while the readings are produced;
* **outage**: the bench stops mosquitto (SIGTERM: it saves its sessions), keeps it down while
  the readings are produced, and starts it again on the same port.

For each phase it prints the messages, the arrivals at ingest (``agritrace_ingest_received_total``
on its ``/metrics``), those answered as duplicates (``agritrace_ingest_duplicates_total``: the
same bytes again, ingest/processor.py rule 7), arrivals per message, the fleet's resends, and the
time from the last reading (baseline) or from the broker's restart (outage) until every message
is receipted. It also measures what an outbox holds on disk per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx

from gateway.outbox import Outbox, OutboxBound, StoredReceipt
from gateway.runtime import Fleet, ResendPolicy
from tracecore.backoff import Backoff
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, load_or_create_log_key
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade

__all__ = ["OutageConfig", "OutageRun", "PhaseResult", "disk_per_message", "main", "run"]

_ORIGIN = "bench.agritrace.localhost/log"
_PARTY = "outage-farm"
_GTIN = "06901234567892"
_SENSORS = (Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 71, "P1"))


@dataclass(frozen=True, slots=True)
class OutageConfig:
    """One scenario: how many sensors, how long the outage (device time), the time scale."""

    sensors: int = 4
    outage_s: int = 3600
    scale: float = 100.0
    baseline: bool = True
    #: The fleet's resend policy before scaling (docs/protocol.md §8: the reference values).
    resend_initial_s: float = 30.0
    resend_max_s: float = 3600.0
    #: The longest wait for the outbox to empty after a phase (real seconds).
    drain_timeout_s: float = 600.0

    def resend_policy(self) -> ResendPolicy:
        """The fleet's resend policy, divided by the scale."""
        return ResendPolicy(
            initial_s=self.resend_initial_s / self.scale, max_s=self.resend_max_s / self.scale
        )


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """What one phase measured."""

    name: str
    messages: int
    arrivals: int
    duplicates: int
    resent: int
    produce_s: float
    drain_s: float
    #: Seconds from the restart until ingest was connected again (None: no outage).
    ingest_back_s: float | None = None
    #: (seconds since the restart or the last reading, messages receipted so far) every 5 s.
    timeline: tuple[tuple[float, int], ...] = ()

    @property
    def arrivals_per_message(self) -> float:
        """Arrivals at ingest per message: 1.0 means no message arrived twice."""
        return self.arrivals / self.messages if self.messages else 0.0


@dataclass(slots=True)
class OutageRun:
    """A finished run: its phases and where its database and outbox are (for checks)."""

    config: OutageConfig
    phases: list[PhaseResult] = field(default_factory=list)
    sent: dict[tuple[str, int], bytes] = field(default_factory=dict)
    db_url: str = ""
    outbox_path: Path = Path()
    log_public_key: bytes = b""
    ingest_log: str = ""
    fleet_connects: int = 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> OutageRun:
    """Run the benchmark with command-line ``argv``; print a report to ``out``; return it."""
    args = _parser().parse_args(argv)
    config = OutageConfig(
        sensors=args.sensors, outage_s=args.outage_s, scale=args.scale, baseline=args.baseline
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = run(config, Path(directory), out)
        per_message, per_receipt = disk_per_message(Path(directory) / "disk", args.disk_messages)
    _print(result, out)
    out.write(
        f"  outbox on disk:       {per_message:6.0f} bytes per unreceipted message, "
        f"{per_receipt:.0f} per kept receipt ({args.disk_messages:,} two-sensor readings, "
        "after VACUUM)\n"
    )
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--sensors", type=int, default=4, help="devices at 1 reading/s each")
    parser.add_argument("--outage-s", type=int, default=3600, help="outage in device seconds")
    parser.add_argument("--scale", type=float, default=100.0, help="device time / real time")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="only the outage phase"
    )
    parser.add_argument("--disk-messages", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    return parser


def run(config: OutageConfig, directory: Path, out: TextIO) -> OutageRun:
    """Run the scenario in ``directory`` (kept: database, outbox, logs); return what it saw."""
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = directory / "data"
    log_key, _ = load_or_create_log_key(data_dir / "keys", _ORIGIN)
    db_url = f"sqlite:///{(data_dir / 'agritrace.sqlite3').resolve()}"
    devices = [f"sensor-{n:02d}" for n in range(config.sensors)]
    keys = {
        d: SignerKey(d, hashlib.sha256(b"bench/outage/" + d.encode()).digest()) for d in devices
    }
    _register(db_url, keys)
    port, health_port = _free_port(), _free_port()
    broker = _Mosquitto(directory / "mosquitto", port)
    result = OutageRun(
        config,
        db_url=db_url,
        outbox_path=directory / "gateway.outbox",
        log_public_key=log_key.public_key,
    )
    broker.start()
    ingest = _start_ingest(data_dir, db_url, port, health_port)
    try:
        asyncio.run(_scenario(config, broker, keys, health_port, result, out))
    finally:
        _stop(ingest)
        broker.stop()
        result.ingest_log = (data_dir / "ingest.log").read_text(errors="replace")
    return result


def _register(db_url: str, keys: dict[str, SignerKey]) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        since = time.time_ns() // 1_000_000 - 86_400_000
        with session_scope(engine) as session:
            create_party(session, _PARTY, "Outage Farm", "farm", since)
            for device_id, key in keys.items():
                register_device(session, device_id, _PARTY, key.public_key, since)
    finally:
        engine.dispose()


async def _scenario(  # noqa: PLR0917
    config: OutageConfig,
    broker: _Mosquitto,
    keys: dict[str, SignerKey],
    health_port: int,
    result: OutageRun,
    out: TextIO,
) -> None:
    metrics = _Metrics(f"http://127.0.0.1:{health_port}/metrics")
    await metrics.wait_connected(60)
    fleet = Fleet(
        BrokerAddress("127.0.0.1", broker.port),
        # No bound: the bench measures resends, not the bound (tests/gateway covers it).
        Outbox(result.outbox_path, bound=OutboxBound(max_messages=None, max_bytes=None)),
        result.log_public_key,
        client_id="outage-gateway",
        resend=config.resend_policy(),
        reconnect=Backoff(initial=min(0.2, 30.0 / config.scale), cap=30.0 / config.scale),
        scan_interval_s=min(0.5, max(0.02, 0.5 / config.scale)),
    )
    for device_id, key in keys.items():
        fleet.add_device(device_id, key)
    now = time.time_ns() // 1_000_000
    # Device times: the phases' readings one second apart, all in the past (ingest refuses a
    # clock more than 5 minutes ahead: docs/protocol.md §8), after the lots' commissioning.
    start_ms = now - 2 * config.outage_s * 1000 - 60_000
    lots = {d: ProductKey.from_parts(_GTIN, lot=f"OUT-{d.upper()}") for d in keys}
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(stop), name="outage-fleet")
            for device in fleet.devices.values():
                seq, raw = await device.send_event(
                    [lots[device.id]], "commissioning", time_ms=start_ms - 1000
                )
                result.sent[device.id, seq] = raw
            await _settled(fleet, config.drain_timeout_s)
            out.write(
                f"{config.sensors} sensors, outage of {config.outage_s:,} s device time, "
                f"time / {config.scale:g}: {config.outage_s / config.scale:.1f} s real\n"
            )
            if config.baseline:
                result.phases.append(
                    await _phase("baseline", config, fleet, lots, start_ms, metrics, result, None)
                )
                out.write(f"  {_line(result.phases[-1])}\n")
            result.phases.append(
                await _phase(
                    "outage",
                    config,
                    fleet,
                    lots,
                    start_ms + config.outage_s * 1000,
                    metrics,
                    result,
                    broker,
                )
            )
            out.write(f"  {_line(result.phases[-1])}\n")
            stop.set()
    finally:
        result.fleet_connects = fleet.stats.connects
        fleet.outbox.close()


async def _phase(  # noqa: PLR0917 (one call site, each argument named there)
    name: str,
    config: OutageConfig,
    fleet: Fleet,
    lots: dict[str, ProductKey],
    first_ms: int,
    metrics: _Metrics,
    result: OutageRun,
    broker: _Mosquitto | None,
) -> PhaseResult:
    """Produce ``outage_s`` readings per sensor at the scaled rate, the broker down if given."""
    received, duplicates = await metrics.settled_counts()
    resent = fleet.stats.resent
    if broker is not None:
        await asyncio.to_thread(broker.stop)
        async with asyncio.timeout(60):
            while fleet.connected.is_set():  # noqa: ASYNC110 (the fleet offers no "lost" event)
                await asyncio.sleep(0.01)
    began = time.monotonic()
    for k in range(config.outage_s):
        # Paced: tick k is due k / scale seconds after the start (no sleep when behind).
        ahead = began + k / config.scale - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        for device in fleet.devices.values():
            seq, raw = await device.send_reading(
                [lots[device.id]], _SENSORS, time_ms=first_ms + k * 1000
            )
            result.sent[device.id, seq] = raw
    produced = time.monotonic()
    if broker is not None:
        await asyncio.to_thread(broker.start)
    back = time.monotonic()
    watch = _Watch(fleet, metrics, back)
    async with asyncio.TaskGroup() as tasks:
        watcher = tasks.create_task(watch.run(), name="outage-watch")
        await _settled(fleet, config.drain_timeout_s)
        watcher.cancel()
    drained = time.monotonic()
    received_after, duplicates_after = await metrics.settled_counts()
    return PhaseResult(
        name=name,
        messages=config.outage_s * len(fleet.devices),
        arrivals=received_after - received,
        duplicates=duplicates_after - duplicates,
        resent=fleet.stats.resent - resent,
        produce_s=produced - began,
        drain_s=drained - back,
        ingest_back_s=watch.ingest_back_s if broker is not None else None,
        timeline=tuple(watch.timeline),
    )


class _Watch:
    """Receipts over time during a drain, and when ingest is connected again."""

    def __init__(self, fleet: Fleet, metrics: _Metrics, began: float) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.began = began
        self.start = fleet.stats.receipted
        self.ingest_back_s: float | None = None
        self.timeline: list[tuple[float, int]] = []

    async def run(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(0.25)
            elapsed = time.monotonic() - self.began
            if self.ingest_back_s is None:
                with contextlib.suppress(httpx.TransportError):
                    values = await self.metrics.read()
                    if values.get("agritrace_ingest_broker_connected") == 1:
                        self.ingest_back_s = elapsed
            if elapsed >= tick * 5:
                self.timeline.append((elapsed, self.fleet.stats.receipted - self.start))
                tick += 1


async def _settled(fleet: Fleet, within_s: float) -> None:
    async with asyncio.timeout(within_s):
        await fleet.wait_settled()


class _Metrics:
    """ingest's counters from its health port's ``/metrics``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def read(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(self.url)).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition(" ")
                values[name] = float(value)
        return values

    async def wait_connected(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await self.read()).get("agritrace_ingest_broker_connected") == 1:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not connect to the broker")
            await asyncio.sleep(0.1)

    async def settled_counts(self) -> tuple[int, int]:
        """Received and duplicates once they stop moving (late resends still arriving)."""
        last: tuple[int, int] | None = None
        while True:
            values = await self.read()
            now = (
                int(values["agritrace_ingest_received_total"]),
                int(values["agritrace_ingest_duplicates_total"]),
            )
            if now == last:
                return now
            last = now
            await asyncio.sleep(1.0)


class _Mosquitto:
    """A mosquitto of the bench's own that keeps its sessions on disk across restarts."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mosquitto.conf").write_text(
            # As root, mosquitto would switch to its own user, who cannot write this directory.
            f"user {getpass.getuser()}\n"
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            # deploy/mosquitto.conf: sessions and queued QoS 1 messages survive a restart,
            # and a backlog is not dropped at the default 1,000 queued messages per client.
            f"persistence true\npersistence_location {directory}/\nautosave_interval 30\n"
            "max_queued_messages 1000000\nmax_inflight_messages 100\n"
        )

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.starts += 1
        with (self.directory / f"mosquitto-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 (the mosquitto binary, our config)
                [binary, "-c", str(self.directory / "mosquitto.conf")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while not _listening(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"mosquitto did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions) and wait until the port is closed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        self.process.wait(30)


def _start_ingest(
    data_dir: Path, db_url: str, port: int, health_port: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
    env |= {
        "AGRITRACE_DATA_DIR": str(data_dir),
        "AGRITRACE_DB_URL": db_url,
        "AGRITRACE_MQTT_URL": f"mqtt://127.0.0.1:{port}",
        "AGRITRACE_LOG_ORIGIN": _ORIGIN,
        "AGRITRACE_INGEST_CLIENT_ID": "outage-ingest",
        "AGRITRACE_INGEST_HEALTH_PORT": str(health_port),
    }
    agritrace = Path(sys.executable).with_name("agritrace")
    command = [str(agritrace)] if agritrace.exists() else [sys.executable, "-m", "agritrace"]
    with (data_dir / "ingest.log").open("wb") as log:
        return subprocess.Popen([*command, "ingest"], env=env, stdout=log, stderr=log)  # noqa: S603


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def disk_per_message(directory: Path, count: int) -> tuple[float, float]:
    """Bytes on disk per unreceipted message, then per kept receipt, of a ``count``-message outbox.

    Two-sensor readings from 4 devices, stored as :class:`Fleet` stores them; then each is
    settled with a receipt of the real size (219 bytes), so only receipts remain. The file is
    measured after a checkpoint and VACUUM (what it holds, not free pages).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "size.outbox"
    keys = [SignerKey(f"s-{n}", hashlib.sha256(bytes([n])).digest()) for n in range(4)]
    lot = ProductKey.from_parts(_GTIN, lot="SIZE")
    with Outbox(path, durable=False, bound=OutboxBound(None, None)) as outbox:
        for start in range(0, count, 1000):
            batch = []
            for n in range(start, min(count, start + 1000)):
                key = keys[n % 4]

                def build(seq: int, key: SignerKey = key, n: int = n) -> bytes:
                    reading = Reading(key.name, seq, 1_767_258_000_000 + n, (lot,), _SENSORS)
                    return sign_message(reading, key.signing_key)

                batch.append((key.name, build))
            outbox.append_many(batch, now_ms=0, next_send_ms=0)
    per_message = _compacted_size(path) / count
    with Outbox(path, durable=False, bound=OutboxBound(None, None)) as outbox:
        items = outbox.pending()
        receipts = [
            StoredReceipt(
                i.device_id, i.seq, i.seq, bytes(32), hashlib.sha256(i.raw).digest(), bytes(219), 0
            )
            for i in items
        ]
        for start in range(0, len(receipts), 5000):
            outbox.settle(receipts[start : start + 5000])
    return per_message, _compacted_size(path) / count


def _compacted_size(path: Path) -> int:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    finally:
        db.close()
    return path.stat().st_size


def _line(phase: PhaseResult) -> str:
    after = "the restart" if phase.name == "outage" else "the last reading"
    back = "" if phase.ingest_back_s is None else f", ingest back after {phase.ingest_back_s:.1f} s"
    timeline = ", ".join(f"{n:,} at {t:.0f} s" for t, n in phase.timeline)
    return (
        f"{phase.name:8}: {phase.messages:,} messages, {phase.arrivals:,} arrivals at ingest "
        f"({phase.duplicates:,} duplicates), {phase.arrivals_per_message:.3f} per message, "
        f"{phase.resent:,} resent, produced in {phase.produce_s:.1f} s, "
        f"drained {phase.drain_s:.1f} s after {after}{back}\n    receipted: {timeline}"
    )


def _print(result: OutageRun, out: TextIO) -> None:
    config = result.config
    out.write(
        f"\n{config.sensors} sensors x {config.outage_s:,} s at 1 reading/s, time / "
        f"{config.scale:g} (resend {config.resend_initial_s / config.scale:g} s capped at "
        f"{config.resend_max_s / config.scale:g} s)\n"
        "  phase      messages   arrivals  duplicates  per message   resent  drain s\n"
    )
    for phase in result.phases:
        out.write(
            f"  {phase.name:8} {phase.messages:10,} {phase.arrivals:10,} {phase.duplicates:11,}"
            f" {phase.arrivals_per_message:12.3f} {phase.resent:8,} {phase.drain_s:8.1f}\n"
        )
    out.write(f"  fleet connects: {result.fleet_connects}\n")


if __name__ == "__main__":
    main()
