"""Scan latency and throughput under locust (issue 6, item 11), against /healthz in the same run.

Run by hand, not a test::

    .venv/bin/python -m bench.scan                       # 1,000-entry lot, 50 users, 30 s runs
    .venv/bin/python -m bench.scan --workers 2 --seconds 60

Setup (untimed): a fresh SQLite database with a farm, a lot with ``--entries`` signed readings
ingested through the real :class:`ingest.Processor`, a serialized carton made from it, and a
signed checkpoint. Then ``agritrace api`` serves it on loopback and locust (headless,
loadtests/scan.py) runs four times in this command:

1. ``JsonScanUser`` with think time (``--wait``, default 0.5-1.5 s): latency p50/p95/p99 of
   JSON scans as buyers cause them;
2. ``PageScanUser`` with the same think time: the product page (HTML, Chinese) a phone opens;
3. ``HealthUser`` with the same think time: the baseline latency;
4. and 5. JSON scans and healthz again with no think time: the most requests per second each
   can get, and their ratio (scans per second / healthz per second).

It also prints the size of the product page (HTML with its inline SVG).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from ingest import Inbound, Processor
from tracecore.checkpoint import make_checkpoint
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, load_or_create_log_key
from tracecore.logentry import DeviceRegistered
from tracecore.message import DeviceMessage, Event, Reading, Sensor
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

__all__ = ["LocustResult", "free_port", "main"]

_ORIGIN = "bench.scan/log"
_LOT = ProductKey.parse("01/06901234567892/10/BENCH1")
_CARTON = ProductKey.parse("01/06901234567892/10/BENCH1/21/C0001")


@dataclass(frozen=True, slots=True)
class LocustResult:
    """One locust run's aggregate numbers for one request name."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


def main(
    argv: Sequence[str] | None = None,
    out: TextIO = sys.stdout,
    before_stop: Callable[[int], None] | None = None,
) -> dict[str, LocustResult]:
    """Run the benchmark; print a table to ``out``; return the results by run name.

    ``before_stop`` is called with the API server's process id after the last run, before the
    server stops (``python -m bench`` reads the processes' peak memory there).
    """
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory)
        out.write(f"setup: a lot with {args.entries:,} readings ...\n")
        _populate(data, args.entries)
        port = free_port()
        env = {
            **os.environ,
            "AGRITRACE_DATA_DIR": str(data),
            "AGRITRACE_DB_URL": "",
            "AGRITRACE_LOG_ORIGIN": _ORIGIN,
            "AGRITRACE_LOAD_KEYS": (
                f"{_CARTON.path},{_LOT.path}"
                if args.key == "carton"
                else f"{_LOT.path},{_CARTON.path}"
            ),
        }
        server = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            [sys.executable, "-m", "agritrace", "api", "--port", str(port),
             "--workers", str(args.workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(base)
            # Warm every API process: a process's first scan of a product parses and verifies
            # every message (later ones reuse that work). New connections land on the
            # processes at random, so a few per process make sure each one got its first.
            for _ in range(10 * args.workers):
                for key in (_CARTON, _LOT):
                    httpx.get(
                        f"{base}/{key.path}", headers={"Accept": "application/json"}, timeout=60
                    )
            first = env["AGRITRACE_LOAD_KEYS"].split(",", 1)[0]
            page = httpx.get(f"{base}/{first}", headers={"Accept-Language": "zh-CN"}, timeout=60)
            out.write(f"page: {len(page.content):,} bytes of HTML and SVG ({first})\n")
            runs = {
                "scan, think time": ("JsonScanUser", args.wait),
                "page, think time": ("PageScanUser", args.wait),
                "healthz, think time": ("HealthUser", args.wait),
                "scan, no wait": ("JsonScanUser", "0"),
                "healthz, no wait": ("HealthUser", "0"),
            }
            results = {}
            for label, (user, wait) in runs.items():
                out.write(f"locust: {label} ({args.users} users, {args.seconds} s) ...\n")
                results[label] = _locust(base, user, wait, args=args, env=env, data=data)
            if before_stop is not None:
                before_stop(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    _report(results, args, out)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000, help="readings of the lot")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--wait", default="0.5,1.5", help="think time: 'a,b' seconds, or 'c'")
    parser.add_argument("--workers", type=int, default=1, help="API server processes")
    parser.add_argument(
        "--spawn-rate",
        type=int,
        default=10,
        help="users started per second; statistics count from when all are running",
    )
    parser.add_argument(
        "--key",
        choices=("carton", "lot"),
        default="carton",
        help="scan the serialized carton (each scan is logged: a write) or the lot (read only)",
    )
    return parser


def _key(label: str) -> SignerKey:
    return SignerKey(label, hashlib.sha256(b"bench/scan/" + label.encode()).digest())


def _populate(data: Path, entries: int) -> None:
    """The database and log key of the run, in ``data``."""
    engine = make_engine(f"sqlite:///{(data / 'agritrace.sqlite3').resolve()}")
    try:
        upgrade(engine)
        log_key, _ = load_or_create_log_key(data / "keys", _ORIGIN)
        now = time.time_ns() // 1_000_000 - 2 * 86_400_000
        collect, climate = _key("bench-collect"), _key("bench-climate")
        with session_scope(engine) as session:
            create_party(session, "bench-farm", "Bench Farm", "farm", now)
        with log_session(engine) as session:
            for key in (collect, climate):
                device = register_device(session, key.name, "bench-farm", key.public_key, now)
                entry = DeviceRegistered(
                    key.name, "bench-farm", key.public_key, device.valid_from_ms, now
                )
                append_registry_entry(session, entry, now)
        messages: list[tuple[SignerKey, DeviceMessage]] = [
            (collect, Event(collect.name, 1, now + 1, (_LOT,), "commissioning"))
        ]
        messages += [
            (
                climate,
                Reading(
                    climate.name,
                    n + 1,
                    now + 1000 + n * 60_000,
                    (_LOT,),
                    (Sensor("Temperature", 3.0 + (n % 40) / 10, "CEL"),),
                ),
            )
            for n in range(entries)
        ]
        messages.append(
            (
                collect,
                Event(
                    collect.name,
                    2,
                    now + 2000 + entries * 60_000,
                    (_CARTON,),
                    "commissioning",
                    parents=(_LOT,),
                ),
            )
        )
        received = now + 3000 + entries * 60_000
        batch = [
            Inbound(up_topic(k.name), sign_message(m, k.signing_key), received) for k, m in messages
        ]
        processor = Processor(engine, log_key)
        try:
            for start in range(0, len(batch), 500):
                processor.process(batch[start : start + 500], received)
        finally:
            processor.close()
        with session_scope(engine) as session:
            make_checkpoint(session, _ORIGIN, log_key, received + 1)
    finally:
        engine.dispose()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API at {base} did not come up")


def _locust(
    base: str, user: str, wait: str, *, args: argparse.Namespace, env: dict[str, str], data: Path
) -> LocustResult:
    prefix = data / f"locust-{user}-{wait.replace(',', '_')}"
    locustfile = Path(__file__).parents[1] / "loadtests" / "scan.py"
    subprocess.run(  # noqa: S603 (the venv's locust, fixed arguments)
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
         "-u", str(args.users), "-r", str(args.spawn_rate), "--reset-stats",
         "-t", f"{args.seconds + args.users // args.spawn_rate}s",
         "--host", base, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", user],
        env={**env, "AGRITRACE_LOAD_WAIT": wait},
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=args.seconds + 120,
    )  # fmt: skip
    with (prefix.parent / f"{prefix.name}_stats.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] != "Aggregated"]
    (row,) = rows
    return LocustResult(
        name=row["Name"],
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=float(row["Requests/s"]),
        p50=float(row["50%"]),
        p95=float(row["95%"]),
        p99=float(row["99%"]),
    )


def _report(results: dict[str, LocustResult], args: argparse.Namespace, out: TextIO) -> None:
    out.write(
        f"\n{args.users} users, {args.seconds} s per run, API workers={args.workers}, "
        f"lot of {args.entries:,} readings (the carton's scan covers {args.entries + 2:,} "
        "device messages)\n"
        f"{'run':<22}{'requests':>10}{'failed':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}\n"
    )
    for label, r in results.items():
        out.write(
            f"{label:<22}{r.requests:>10,}{r.failures:>8,}{r.rps:>9.1f}{r.p50:>9.0f}{r.p95:>9.0f}"
            f"{r.p99:>9.0f}\n"
        )
    scan, health = results["scan, no wait"], results["healthz, no wait"]
    ratio = scan.rps / health.rps if health.rps else 0.0
    out.write(f"throughput ratio scan / healthz (no wait): {ratio:.2f}\n")


if __name__ == "__main__":
    main()
