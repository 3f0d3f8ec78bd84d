"""``python -m bench`` (``make bench``): every benchmark in one command, and the report.

Runs, one after the other on this machine:

1. the ingest drain (bench/ingest.py): a backlog of signed readings through a bare subscriber
   and through ingest, on a mosquitto this command starts (or ``--broker``);
2. scan latency (bench/scan.py): JSON scans of a 1,000-entry carton and lot at 50 users against
   ``/healthz`` in the same command, with 3 API processes, and their peak memory;
3. proofs from stored hashes (bench/proofs.py) at 10⁴, 10⁵ and 10⁶ leaves;
4. offline verification (bench/verify.py) of a 10,000-entry bundle against bare Ed25519;
5. the ingest core's rate as the log grows: ``Processor.process`` appending batches to one
   SQLite log, the rate of each segment against the first (flat or not), and the process's
   peak memory;
6. the product index (bench/index.py) at 10⁶ products: update cost per key by batch size,
   proofs and storage per product. Its A/B against ingest (``python -m bench.ingest
   --index-products``) takes long and is run by hand (docs/benchmarks.md, "The product index").

It writes the tables into docs/benchmarks.md between the ``bench:begin`` and ``bench:end``
markers (the rest of the file, the analysis, is kept) and prints the full output of each
benchmark on stdout. ``--quick`` runs everything small (a minute or two) to check the harness;
its numbers are not worth writing down, so it writes to ``--out`` only when asked to.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import nacl.signing

from bench import index as index_bench
from bench import ingest as ingest_bench
from bench import proofs as proofs_bench
from bench import scan as scan_bench
from bench import verify as verify_bench
from ingest import Inbound, IngestConfig, Processor
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Event, Reading, Sensor
from tracecore.storage import create_party, make_engine, register_device, session_scope, upgrade
from tracecore.topics import up_topic

__all__ = ["Growth", "main", "replace_generated"]

BEGIN: Final = "<!-- bench:begin (written by `make bench`; edit bench/__main__.py instead) -->"
END: Final = "<!-- bench:end -->"
_T0: Final = 1_767_258_000_000


@dataclass(frozen=True, slots=True)
class Growth:
    """The ingest core's rate per segment of a growing log, and the process's peak memory."""

    segment: int
    rates: tuple[float, ...]
    peak_rss_mb: float

    @property
    def last_over_first(self) -> float:
        """The last segment's rate over the first one's: 1.0 is a flat rate."""
        return self.rates[-1] / self.rates[0]


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> str:
    """Run every benchmark; write the report into ``--out``; return the report's markdown."""
    args = _parser().parse_args(argv)
    quick = args.quick
    sections: list[str] = []
    started = time.monotonic()

    with _broker(args.broker) as broker:
        messages, devices = (2_000, 50) if quick else (100_000, 1_000)
        out.write(f"== ingest drain: {messages:,} messages from {devices:,} devices\n")
        drain = ingest_bench.main(
            ["--messages", str(messages), "--devices", str(devices), "--broker", broker], out=out
        )
    sections.append(_drain_table(drain, messages, devices))

    seconds, users = ("5", "10") if quick else ("60", "50")
    scans: dict[str, dict[str, scan_bench.LocustResult]] = {}
    memory: dict[str, list[float]] = {}
    for key in ("carton", "lot"):
        out.write(f"== scans of the {key}\n")

        def note_memory(pid: int, key: str = key) -> None:
            memory[key] = _peak_rss_tree(pid)

        scans[key] = scan_bench.main(
            ["--workers", "3", "--seconds", seconds, "--users", users, "--key", key],
            out=out,
            before_stop=note_memory,
        )
    sections.append(_scan_table(scans, memory, users, seconds))

    sizes = [1_000, 10_000] if quick else [10_000, 100_000, 1_000_000]
    out.write(f"== proofs at {', '.join(f'{s:,}' for s in sizes)} leaves\n")
    proofs = proofs_bench.main(["--sizes", *map(str, sizes)], out=out)
    sections.append(_proofs_table(proofs))

    entries = 1_000 if quick else 10_000
    out.write(f"== offline verification of {entries:,} entries\n")
    verified = verify_bench.measure(verify_bench.build(entries), runs=3)
    sections.append(_verify_table(verified))

    total, segment = (6_000, 2_000) if quick else (300_000, 50_000)
    out.write(f"== ingest core as the log grows to {total:,} entries\n")
    growth = measure_growth(total, segment, out)
    sections.append(_growth_table(growth, total))

    products = 2_000 if quick else 1_000_000
    out.write(f"== the product index at {products:,} products\n")
    index = index_bench.main(["--products", str(products)], out=out)
    sections.append(_index_table(index))

    report = _header(quick, time.monotonic() - started) + "\n\n".join(sections) + "\n"
    if args.out is not None:
        path: Path = args.out
        path.write_text(replace_generated(path.read_text(), report))
        out.write(f"\nwrote the tables into {path}\n")
    else:
        out.write("\n" + report)
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the harness")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the markdown file to write the tables into (make bench: docs/benchmarks.md)",
    )
    parser.add_argument("--broker", default=None, help="mqtt://host:port of a mosquitto to use")
    return parser


def replace_generated(document: str, report: str) -> str:
    """``document`` with the text between the bench markers replaced by ``report``.

    A document without the markers gets them, with the report, at its end.
    """
    block = f"{BEGIN}\n{report.rstrip()}\n{END}"
    if BEGIN in document and END in document:
        head, _, rest = document.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block + tail
    return document.rstrip() + "\n\n" + block + "\n"


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[str]:
    """``url``, or a mosquitto of our own on a free port with room for a whole backlog."""
    if url:
        yield url
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = scan_bench.free_port()
    with tempfile.TemporaryDirectory() as directory:
        conf = Path(directory) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 2000000\nset_tcp_nodelay true\n"
        )
        process = subprocess.Popen(  # noqa: S603 (the mosquitto binary, a fixed config)
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while not _listening(port):
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start")
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _peak_rss_tree(pid: int) -> list[float]:
    """Peak resident memory (MB, VmHWM) of the processes ``pid`` started (or ``pid`` itself)."""
    children_file = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(c) for c in children_file.read_text().split()] if children_file.exists() else []
    peaks: list[float] = []
    for process in children or [pid]:
        status = Path(f"/proc/{process}/status")
        lines = status.read_text().splitlines() if status.exists() else []
        peaks.extend(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))
    return peaks


def measure_growth(total: int, segment: int, out: TextIO) -> Growth:
    """Append ``total`` signed readings to a fresh SQLite log in batches of 500, and time each
    ``segment`` of them (signing is not timed)."""
    sensors = (Sensor("Temperature", 4.5, "CEL"),)
    devices = [f"grow-{i:03d}" for i in range(100)]
    keys = {d: nacl.signing.SigningKey(hashlib.sha256(d.encode()).digest()) for d in devices}
    products = [ProductKey("09506000134352", lot=f"G{i:05d}") for i in range(200)]
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        engine = make_engine(f"sqlite:///{Path(directory) / 'grow.sqlite3'}")
        try:
            upgrade(engine)
            with session_scope(engine) as session:
                create_party(session, "grow-farm", "Growth Farm", "farm", _T0 - 1)
                for d in devices:
                    register_device(session, d, "grow-farm", bytes(keys[d].verify_key), _T0 - 1)
            processor = Processor(engine, SignerKey("grow-log", bytes(32)), IngestConfig())
            try:
                commissioning = [
                    Event(
                        devices[0], seq, _T0, tuple(products[start : start + 64]), "commissioning"
                    )
                    for seq, start in enumerate(range(0, len(products), 64), start=1)
                ]
                processor.process(
                    [Inbound(up_topic(devices[0]), sign_message(e, keys[devices[0]]), _T0)
                     for e in commissioning],
                    _T0,
                )  # fmt: skip
                seqs = dict.fromkeys(devices, 10)
                n = 0
                for start in range(0, total, segment):
                    batches = []
                    for _ in range(0, segment, 500):
                        batch = []
                        for _ in range(500):
                            d = devices[n % len(devices)]
                            seqs[d] += 1
                            reading = Reading(
                                d, seqs[d], _T0 + n, (products[n % len(products)],), sensors
                            )
                            batch.append(Inbound(up_topic(d), sign_message(reading, keys[d]), _T0))
                            n += 1
                        batches.append(batch)
                    began = time.perf_counter()
                    for batch in batches:
                        processor.process(batch, _T0 + 10_000_000)
                    rates.append(segment / (time.perf_counter() - began))
                    out.write(
                        f"  entries {start:>9,} to {start + segment:>9,}: {rates[-1]:8,.0f} msg/s\n"
                    )
            finally:
                processor.close()
        finally:
            engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Growth(segment, tuple(rates), peak)


def _header(quick: bool, seconds: float) -> str:  # noqa: FBT001
    today = dt.datetime.now(tz=dt.UTC).date().isoformat()
    note = " **--quick: sizes too small to mean anything**" if quick else ""
    return (
        f"### Measured by `make bench` on {today}{note}\n\n"
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; SQLite; the whole command took "
        f"{seconds / 60:.0f} min. Ratios compare two things measured in the same command.\n\n"
    )


def _drain_table(result: ingest_bench.BenchResult, messages: int, devices: int) -> str:
    return (
        f"**Ingest drain** (`python -m bench.ingest`): {messages:,} signed readings from "
        f"{devices:,} devices, one ingest worker, SQLite, mosquitto on loopback.\n\n"
        "| | msg/s | ratio to the bare subscriber |\n|---|---:|---:|\n"
        f"| bare aiomqtt subscriber | {result.bare_rate:,.0f} | 1.00 |\n"
        f"| ingest (verify, sequence, commit, receipt) | {result.ingest_rate:,.0f} "
        f"| {result.ratio:.2f} |\n"
    )


def _scan_table(
    scans: dict[str, dict[str, scan_bench.LocustResult]],
    memory: dict[str, list[float]],
    users: str,
    seconds: str,
) -> str:
    rows = [
        (
            f"**Scans** (`python -m bench.scan --workers 3`): {users} locust users, {seconds} s "
            "per run, JSON scans and the product page (HTML, zh) with 0.5 to 1.5 s think time, "
            "then no think time for capacity; "
            "`/healthz` in the same command as the baseline.\n"
        ),
        "| product | run | req/s | p50 ms | p95 ms | p99 ms | capacity ratio to /healthz |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, results in scans.items():
        scan, health = results["scan, no wait"], results["healthz, no wait"]
        ratio = scan.rps / health.rps if health.rps else 0.0
        for label, result in results.items():
            shown = f"{ratio:.2f}" if label == "scan, no wait" else ""
            rows.append(
                f"| {key} | {label} | {result.rps:,.1f} | {result.p50:,.0f} | {result.p95:,.0f} "
                f"| {result.p99:,.0f} | {shown} |"
            )
    peaks = [f"{key}: {', '.join(f'{m:.0f}' for m in mb)}" for key, mb in memory.items()]
    rows.append(f"\nPeak memory of the API processes (MB): {'; '.join(peaks)}.\n")
    return "\n".join(rows)


def _proofs_table(results: Sequence[proofs_bench.Result]) -> str:
    rows = [
        (
            "**Proofs** (`python -m bench.proofs`): 200 random proofs per size from stored "
            "hashes, each in its own transaction.\n"
        ),
        "| leaves | inclusion median ms | p95 | consistency median ms | p95 | hashes |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {r.size:,} | {r.inclusion_ms:.2f} | {r.inclusion_p95_ms:.2f} | "
        f"{r.consistency_ms:.2f} | {r.consistency_p95_ms:.2f} | {r.proof_hashes} |"
        for r in results
    ]
    return "\n".join(rows) + "\n"


def _index_table(result: index_bench.Result) -> str:
    p = result.proofs
    rows = [
        (
            f"**Product index** (`python -m bench.index`): {result.products:,} products; "
            "median of 7 rounds per batch, one transaction each.\n"
        ),
        "| change | batch | µs per key | ms per batch | rows written per key |",
        "|---|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {c.kind} | {c.batch:,} | {c.us_per_key:,.0f} | {c.ms_per_batch:,.1f} | "
        f"{c.rows_per_key:.1f} |"
        for c in result.batches
    ]
    rows.append(
        f"\nProofs: {p.siblings_median:.0f} siblings (p95 {p.siblings_p95}), JSON "
        f"{p.json_bytes_median:,.0f} B, read {p.read_ms_median:.2f} ms (p95 "
        f"{p.read_ms_p95:.2f}), verify {p.verify_us_median:.0f} µs. Storage: "
        f"{result.bytes_per_product:,.0f} B and {result.rows_per_product:.2f} rows per product."
    )
    return "\n".join(rows) + "\n"


def _verify_table(result: verify_bench.Result) -> str:
    return (
        "**Offline verification** (`python -m bench.verify`): parse and check a bundle as "
        "`agritrace verify` does, against bare Ed25519 checks of the same signatures.\n\n"
        "| entries | bundle | verify | Ed25519 only | ratio |\n|---:|---:|---:|---:|---:|\n"
        f"| {result.entries:,} | {result.bundle_bytes / 1e6:.1f} MB | {result.verify_s:.2f} s "
        f"| {result.baseline_s:.2f} s | {result.ratio:.1f}x |\n"
    )


def _growth_table(growth: Growth, total: int) -> str:
    rows = [
        (
            f"**Ingest rate as the log grows** (`Processor.process`, batches of 500, SQLite): "
            f"{total:,} readings appended to one log, timed per {growth.segment:,}.\n"
        ),
        "| log entries | msg/s | ratio to the first segment |",
        "|---:|---:|---:|",
    ]
    rows += [
        f"| {i * growth.segment:,} to {(i + 1) * growth.segment:,} | {rate:,.0f} "
        f"| {rate / growth.rates[0]:.2f} |"
        for i, rate in enumerate(growth.rates)
    ]
    rows.append(
        f"\nLast segment over first: {growth.last_over_first:.2f}. Peak memory of the "
        f"benchmark process (ingest core in-process, after everything above): "
        f"{growth.peak_rss_mb:.0f} MB.\n"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
