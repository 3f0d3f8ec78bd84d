"""10,000 simulated devices in one process: memory, CPU and achieved rate (issue 5, item 5).

Run by hand, not a test::

    .venv/bin/python -m bench.devices --devices 10000 --period 10 --duration 120 \\
        --broker mqtt://127.0.0.1:1885

Setup (not timed): a temporary data directory with a log key and a SQLite database in which the
devices are registered directly (one transaction; keys derived from the seed as
:mod:`firmware_sim.scale` derives them), a persistent MQTT session for ingest subscribed before
anything is published, and a real ``agritrace ingest`` in its own process (``--no-ingest``
leaves it out: the messages then stay in the simulator's outbox).

Measured: the simulator runs in a child process (``python -m firmware_sim.scale``) that imports
only firmware_sim, so its RSS is the simulator's own; it reports its VmHWM/VmRSS
(/proc/self/status) and CPU time (getrusage). A second child with the same imports that runs
nothing gives the baseline, hence the memory per device. Each device sends its commissioning
event first, then a reading every ``--period`` seconds at a seeded phase; after ``--duration``
the simulator waits up to ``--drain`` seconds for the last receipts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiomqtt
from sqlalchemy import func, select
from sqlmodel import SQLModel

from firmware_sim.scale import ScaleConfig, device_ids, device_key
from tracecore.keys import load_or_create_log_key
from tracecore.mqtt import BrokerAddress
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.topics import UP_WILDCARD

__all__ = ["DevicesResult", "main"]

_ORIGIN = "bench.agritrace.localhost/log"
_PARTY = "bench-farm"


@dataclass(frozen=True, slots=True)
class DevicesResult:
    """What one run measured (``report``/``usage`` as the simulator printed them)."""

    report: dict[str, float]
    usage: dict[str, float]
    baseline: dict[str, float]
    ingest: bool
    entries: int

    @property
    def per_device_kb(self) -> float:
        """Peak RSS above the idle baseline, per device, in kB."""
        extra = self.usage["peak_rss_mb"] - self.baseline["rss_mb"]
        return extra * 1024 / self.report["devices"]


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> DevicesResult:
    """Run the benchmark with command-line ``argv``; print a report to ``out``; return it."""
    args = _parser().parse_args(argv)
    broker_url = args.broker or os.environ.get("AGRITRACE_TEST_MQTT_URL", "")
    broker = BrokerAddress.parse(broker_url)
    run_id = secrets.token_hex(3)
    config = ScaleConfig(
        devices=args.devices, period_s=args.period, fleets=args.fleets, prefix=f"sim-{run_id}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        data_dir = Path(directory)
        ingest_id, fleet_prefix = f"bench-ingest-{run_id}", f"bench-sim-{run_id}"
        log_vkey = _setup(data_dir, config, out, ingest=args.ingest)
        ingest = None
        try:
            if args.ingest:
                asyncio.run(_subscribe(broker, ingest_id))
                ingest = _start_ingest(data_dir, broker_url, ingest_id)
            out.write(
                f"simulating {config.devices:,} devices for {args.duration:g} s "
                f"(+ up to {args.drain:g} s for receipts) ...\n"
            )
            out.flush()
            result = _child(
                [
                    "--broker", broker_url, "--devices", str(config.devices),
                    "--period", str(config.period_s), "--duration", str(args.duration),
                    "--drain", str(args.drain if args.ingest else 0),
                    "--fleets", str(config.fleets),
                    "--seed", config.seed, "--prefix", config.prefix,
                    "--client-prefix", fleet_prefix, "--log-vkey", log_vkey.hex(),
                    "--outbox-dir", str(data_dir / "outbox"),
                ]
            )  # fmt: skip
            baseline = _child(["--idle"])["usage"]
        finally:
            if ingest is not None:
                _stop(ingest)
            asyncio.run(
                _forget_sessions(
                    broker, [ingest_id, *(f"{fleet_prefix}-{k}" for k in range(config.fleets))]
                )
            )
        entries = _count_entries(data_dir) if args.ingest else 0
    outcome = DevicesResult(result["report"], result["usage"], baseline, args.ingest, entries)
    _print(outcome, out)
    return outcome


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.devices", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between messages")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of sending")
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for receipts")
    parser.add_argument("--fleets", type=int, default=1, help="MQTT connections / outboxes")
    parser.add_argument("--broker", default=None, help="mqtt://host:port of mosquitto")
    parser.add_argument(
        "--no-ingest", dest="ingest", action="store_false", help="no ingest: nothing is receipted"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    return parser


def _setup(data_dir: Path, config: ScaleConfig, out: TextIO, *, ingest: bool) -> bytes:
    """Create the log key; with ``ingest``, register every device; return the log public key."""
    log_key, _ = load_or_create_log_key(data_dir / "keys", _ORIGIN)
    if not ingest:
        return log_key.public_key
    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{data_dir / 'agritrace.sqlite3'}")
    try:
        upgrade(engine)
        since = time.time_ns() // 1_000_000 - 86_400_000
        with session_scope(engine) as session:
            create_party(session, _PARTY, "Bench Farm", "farm", since)
            for device_id in device_ids(config):
                public_key = device_key(config.seed, device_id).public_key
                register_device(session, device_id, _PARTY, public_key, since)
    finally:
        engine.dispose()
    out.write(
        f"setup: {config.devices:,} devices registered in {time.perf_counter() - started:.1f} s\n"
    )
    return log_key.public_key


async def _subscribe(broker: BrokerAddress, client_id: str) -> None:
    """Create ingest's persistent session before anything is published (nothing is lost)."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, clean_session=False
    ) as client:
        await client.subscribe(UP_WILDCARD, qos=1)


async def _forget_sessions(broker: BrokerAddress, client_ids: list[str]) -> None:
    """Drop the run's persistent sessions from the broker (they would queue messages forever)."""
    for client_id in client_ids:
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=client_id, clean_session=True
        ):
            pass


def _start_ingest(data_dir: Path, broker_url: str, client_id: str) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "AGRITRACE_DATA_DIR": str(data_dir),
        "AGRITRACE_MQTT_URL": broker_url,
        "AGRITRACE_LOG_ORIGIN": _ORIGIN,
        "AGRITRACE_INGEST_CLIENT_ID": client_id,
    }
    env.pop("AGRITRACE_DB_URL", None)
    agritrace = Path(sys.executable).with_name("agritrace")
    command = [str(agritrace)] if agritrace.exists() else [sys.executable, "-m", "agritrace"]
    with (data_dir / "ingest.log").open("wb") as log:
        return subprocess.Popen([*command, "ingest"], env=env, stdout=log, stderr=log)  # noqa: S603


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _child(arguments: list[str]) -> dict[str, dict[str, float]]:
    """Run ``python -m firmware_sim.scale ARGUMENTS`` and return the JSON it printed."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "firmware_sim.scale", *arguments],
        capture_output=True,
        check=False,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the simulator failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _count_entries(data_dir: Path) -> int:
    engine = make_engine(f"sqlite:///{data_dir / 'agritrace.sqlite3'}")
    log = SQLModel.metadata.tables["log_entries"]
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(log)).scalar_one())
    finally:
        engine.dispose()


def _print(result: DevicesResult, out: TextIO) -> None:
    report, usage, baseline = result.report, result.usage, result.baseline
    nominal = report["nominal_rate"]
    out.write(
        f"\n{int(report['devices']):,} devices over {int(report['fleets'])} fleet(s), "
        f"one message every {report['period_s']:g} s, "
        f"ingest={'agritrace ingest' if result.ingest else 'none'}\n"
        f"  duration (send window):  {report['duration_s']:10.1f} s\n"
        f"  messages sent:           {int(report['sent']):10,}  "
        f"(published {int(report['published']):,}, resent {int(report['resent']):,})\n"
        f"  receipted:               {int(report['receipted']):10,}  "
        f"(log entries {result.entries:,})\n"
        f"  send rate:               {report['send_rate']:10,.1f} msg/s  "
        f"(nominal {nominal:,.1f}, {report['send_rate'] / nominal:.1%})\n"
        f"  worst send lag:          {int(report['max_lag_ms']):10,} ms\n"
        f"  outbox backlog at end:   {int(report['backlog']):10,}\n"
        f"  RSS peak / end:          {usage['peak_rss_mb']:10.1f} / {usage['rss_mb']:.1f} MB\n"
        f"  baseline RSS (idle):     {baseline['rss_mb']:10.1f} MB (same imports)\n"
        f"  per device:              {result.per_device_kb:10.2f} kB (peak - baseline)\n"
        f"  CPU in the send window:  {report['window_cpu_s']:10.1f} s  "
        f"({report['window_cpu_s'] / report['duration_s']:.0%} of one core)\n"
        f"  CPU, whole process:      {usage['cpu_s']:10.1f} s  "
        f"(setup of devices and keys {report['setup_s']:.1f} s wall)\n"
    )


if __name__ == "__main__":
    main()
