"""A load driver: thousands of simulated devices in one process (issue 5, item 5).

:class:`ScaleLoad` runs ``devices`` devices spread round-robin over ``fleets``
:class:`~gateway.runtime.Fleet` objects (one MQTT connection and one SQLite outbox each).
Every device sends one signed message every ``period_s`` seconds, at a phase drawn from the
seed, so that the load is spread evenly instead of arriving in bursts. The first message of a
device is the ``commissioning`` event of its own lot (so that an ingest service has a product for
its readings); the others are readings of that lot.

Memory per device is kept small on purpose: no task per device, one scheduler task per fleet
with a heap of ``(next send time, device index)``; keys are derived from the seed
(``SHA-256("firmware_sim/scale/" + seed + "/" + device id)``), not read from key files; the
fleets' outboxes hold only unreceipted messages, on disk (``durable=False``: the SQLite file
survives a process crash, and a power cut is not what a load test is about).

Receipts are verified exactly as a :class:`Fleet` always does (pinned log key, exact stored
bytes). Without an ingest service every message simply stays in the outbox.

Command line (prints a JSON report, with this process's RSS and CPU time)::

    python -m firmware_sim.scale --broker mqtt://127.0.0.1:1885 --devices 10000 --period 10 \\
        --duration 120 --log-vkey HEX --outbox-dir /tmp/scale
    python -m firmware_sim.scale --idle      # the same imports, nothing run: the RSS baseline

``bench/devices.py`` drives both, with a real ``agritrace ingest`` beside them.

Note: every fleet subscribes to the receipts of *all* devices (``agritrace/v1/devices/+/
receipt``), so with K fleets on one broker each receipt is delivered K times (K - 1 of them are
counted as ``foreign_receipts``). One fleet per process is the cheap choice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import json
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, TextIO

from gateway.outbox import Outbox
from gateway.runtime import Device, Fleet, ResendPolicy
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress

__all__ = [
    "DEFAULT_GTIN",
    "SCALE_RESEND",
    "ProcessUsage",
    "ScaleConfig",
    "ScaleLoad",
    "ScaleReport",
    "device_ids",
    "device_key",
    "device_lot",
    "main",
    "process_usage",
]

DEFAULT_GTIN: Final = "09506000134352"
_CONNECT_WAIT_S: Final = 10.0
#: Resend after 2 min (not 30 s): near its capacity the service answers late, and resending
#: what it has not yet read only doubles its load (a first run at 30 s resent 74,544 of 120,000).
SCALE_RESEND: Final = ResendPolicy(initial_s=120.0)
# A few sensor sets, shared by all devices (no per-device tuples to keep in memory).
_SENSOR_SETS: Final = tuple(
    (Sensor("Temperature", round(2.0 + step / 10, 1), "CEL"), Sensor("RelativeHumidity", 60, "P1"))
    for step in range(50)
)


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    """What to simulate: how many devices, how often, over how many fleets."""

    devices: int
    period_s: float = 10.0
    fleets: int = 1
    seed: str = "agritrace-scale"
    prefix: str = "scale"
    gtin: str = DEFAULT_GTIN
    commission: bool = True

    def __post_init__(self) -> None:
        if self.devices < 1 or self.fleets < 1 or self.period_s <= 0:
            raise ValueError("devices and fleets must be >= 1 and period_s > 0")

    @property
    def nominal_rate(self) -> float:
        """Messages per second the devices are meant to send together."""
        return self.devices / self.period_s


def device_ids(config: ScaleConfig) -> list[str]:
    """Return the ids of the simulated devices, ``{prefix}-00000`` onwards."""
    return [f"{config.prefix}-{index:05d}" for index in range(config.devices)]


def device_key(seed: str, device_id: str) -> SignerKey:
    """Return the device's key, derived from ``seed`` (deterministic; for simulation only)."""
    digest = hashlib.sha256(f"firmware_sim/scale/{seed}/{device_id}".encode()).digest()
    return SignerKey(device_id, digest)


def device_lot(config: ScaleConfig, index: int) -> ProductKey:
    """Return the lot that device number ``index`` commissions and reports on."""
    return ProductKey(config.gtin, lot=f"S{index:06d}")


@dataclass(frozen=True, slots=True)
class ScaleReport:
    """What one run of :meth:`ScaleLoad.run` did (counters summed over the fleets)."""

    devices: int
    fleets: int
    period_s: float
    duration_s: float
    nominal_rate: float
    sent: int
    published: int
    resent: int
    receipted: int
    bad_receipts: int
    foreign_receipts: int
    publish_failures: int
    backlog: int
    max_lag_ms: int
    window_cpu_s: float
    connected: bool

    @property
    def send_rate(self) -> float:
        """Messages created (signed and stored) per second of the send window."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """This process's memory (from /proc/self/status) and CPU time (getrusage), in MB and s."""

    rss_mb: float
    peak_rss_mb: float
    cpu_s: float


def process_usage() -> ProcessUsage:
    """Return this process's current and peak RSS (VmRSS, VmHWM) and CPU seconds so far."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                fields[name] = int(value.split()[0]) / 1024  # kB -> MB
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessUsage(
        rss_mb=fields.get("VmRSS", 0.0),
        peak_rss_mb=fields.get("VmHWM", 0.0),
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


class ScaleLoad:
    """``config.devices`` devices over ``config.fleets`` fleets; run it with :meth:`run`."""

    def __init__(
        self,
        broker: BrokerAddress,
        outbox_dir: Path,
        log_public_key: bytes,
        config: ScaleConfig,
        *,
        client_prefix: str = "scale",
        resend: ResendPolicy | None = None,
    ) -> None:
        """Create the fleets (outboxes in ``outbox_dir``), the devices and their schedule.

        ``client_prefix`` names the fleets' MQTT sessions (``{client_prefix}-{k}``); it must be
        stable across restarts of the same simulation and unique on the broker.
        """
        self.config = config
        rng = random.Random(f"{config.seed}/phases")  # noqa: S311 (load shape, not secrets)
        self.fleets = [
            Fleet(
                broker,
                Outbox(outbox_dir / f"{client_prefix}-{k}.sqlite3", durable=False),
                log_public_key,
                client_id=f"{client_prefix}-{k}",
                resend=resend or SCALE_RESEND,
                rng=random.Random(f"{config.seed}/fleet/{k}"),  # noqa: S311 (jitter)
            )
            for k in range(config.fleets)
        ]
        # Per fleet: the devices (by index) and a heap of (next send offset in s, index).
        self._devices: list[Device] = []
        self._lots = [device_lot(config, index) for index in range(config.devices)]
        self._heaps: list[list[tuple[float, int]]] = [[] for _ in self.fleets]
        for index, device_id in enumerate(device_ids(config)):
            k = index % config.fleets
            self._devices.append(
                self.fleets[k].add_device(device_id, device_key(config.seed, device_id))
            )
            self._heaps[k].append((rng.uniform(0, config.period_s), index))
        for heap in self._heaps:
            heapq.heapify(heap)
        self._sent_first = bytearray(config.devices)  # 1 once the device's first message left
        self._max_lag_ms = 0

    async def run(self, duration_s: float, *, drain_s: float = 0.0) -> ScaleReport:
        """Send for ``duration_s`` seconds, then wait up to ``drain_s`` for the last receipts.

        Sending starts when every fleet is connected (or after 10 s without it: messages then
        wait in the outboxes). Returns the counters; the outboxes keep what was not receipted.
        """
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            for fleet in self.fleets:
                tasks.create_task(fleet.run(stop), name=f"scale-{fleet.client_id}")
            connected = await self._wait_connected()
            started, cpu_started = time.monotonic(), process_usage().cpu_s
            await asyncio.gather(
                *(self._schedule(k, started, duration_s) for k in range(len(self.fleets)))
            )
            await asyncio.sleep(max(0.0, duration_s - (time.monotonic() - started)))
            elapsed = time.monotonic() - started
            window_cpu_s = process_usage().cpu_s - cpu_started
            await self._drain(drain_s)
            stop.set()
        return self._report(elapsed, window_cpu_s, connected=connected)

    async def _wait_connected(self) -> bool:
        try:
            async with asyncio.timeout(_CONNECT_WAIT_S):
                for fleet in self.fleets:
                    await fleet.connected.wait()
        except TimeoutError:
            return False
        return True

    async def _drain(self, drain_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                for fleet in self.fleets:
                    await fleet.wait_settled()

    async def _schedule(self, k: int, started: float, duration_s: float) -> None:
        """Send each device's messages of fleet ``k`` at their times, until ``duration_s``."""
        heap, period = self._heaps[k], self.config.period_s
        while heap:
            due, index = heap[0]
            if due >= duration_s:
                return
            wait = due - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            heapq.heapreplace(heap, (due + period, index))
            self._max_lag_ms = max(self._max_lag_ms, int(-wait * 1000))
            await self._send(index)

    async def _send(self, index: int) -> None:
        device, lot = self._devices[index], self._lots[index]
        if self.config.commission and not self._sent_first[index]:
            await device.send_event([lot], "commissioning")
        else:
            sensors = _SENSOR_SETS[(index + device.fleet.stats.created) % len(_SENSOR_SETS)]
            await device.send_reading([lot], sensors)
        self._sent_first[index] = 1

    def backlog(self) -> int:
        """Return how many messages wait for a receipt, over all fleets."""
        return sum(fleet.pending_count() for fleet in self.fleets)

    def close(self) -> None:
        """Close the outbox files (they stay on disk)."""
        for fleet in self.fleets:
            fleet.outbox.close()

    def _report(self, elapsed: float, window_cpu_s: float, *, connected: bool) -> ScaleReport:
        stats = [fleet.stats for fleet in self.fleets]
        return ScaleReport(
            devices=self.config.devices,
            fleets=len(self.fleets),
            period_s=self.config.period_s,
            duration_s=elapsed,
            nominal_rate=self.config.nominal_rate,
            sent=sum(s.created for s in stats),
            published=sum(s.published for s in stats),
            resent=sum(s.resent for s in stats),
            receipted=sum(s.receipted for s in stats),
            bad_receipts=sum(s.bad_receipts for s in stats),
            foreign_receipts=sum(s.foreign_receipts for s in stats),
            publish_failures=sum(s.publish_failures for s in stats),
            backlog=self.backlog(),
            max_lag_ms=self._max_lag_ms,
            window_cpu_s=window_cpu_s,
            connected=connected,
        )


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the load (or, with ``--idle``, nothing) and print one JSON object to ``out``."""
    args = _parser().parse_args(argv)
    if args.idle:
        # The baseline: an interpreter with this module's imports and an event loop, idle.
        asyncio.run(asyncio.sleep(0))
        out.write(json.dumps({"usage": asdict(process_usage())}) + "\n")
        return 0
    if not args.log_vkey or args.outbox_dir is None:
        sys.stderr.write("--log-vkey and --outbox-dir are required (or --idle)\n")
        return 2
    config = ScaleConfig(
        devices=args.devices,
        period_s=args.period,
        fleets=args.fleets,
        seed=args.seed,
        prefix=args.prefix,
        commission=not args.no_commission,
    )
    setup_started = time.monotonic()
    load = ScaleLoad(
        BrokerAddress.parse(args.broker),
        args.outbox_dir,
        bytes.fromhex(args.log_vkey),
        config,
        client_prefix=args.client_prefix,
        resend=ResendPolicy(initial_s=args.resend) if args.resend else None,
    )
    setup_s = time.monotonic() - setup_started
    try:
        report = asyncio.run(load.run(args.duration, drain_s=args.drain))
    finally:
        load.close()
    result = asdict(report) | {"send_rate": report.send_rate, "setup_s": setup_s}
    out.write(json.dumps({"report": result, "usage": asdict(process_usage())}) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim.scale", description=__doc__)
    parser.add_argument("--idle", action="store_true", help="report the baseline RSS and exit")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between messages")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of sending")
    parser.add_argument("--drain", type=float, default=0.0, help="seconds to wait for receipts")
    parser.add_argument("--fleets", type=int, default=1, help="MQTT connections / outboxes")
    parser.add_argument("--seed", default="agritrace-scale", help="derives keys and phases")
    parser.add_argument("--prefix", default="scale", help="device ids are PREFIX-00000 ...")
    parser.add_argument("--client-prefix", default="scale", help="MQTT client ids PREFIX-k")
    parser.add_argument("--log-vkey", default="", help="the pinned log public key (hex)")
    parser.add_argument("--outbox-dir", type=Path, default=None)
    parser.add_argument(
        "--resend", type=float, default=0.0, help="first resend after S seconds (default 120)"
    )
    parser.add_argument("--no-commission", action="store_true", help="readings only")
    return parser


if __name__ == "__main__":
    sys.exit(main())
