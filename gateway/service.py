"""``agritrace gateway``: the long-running process of a farm's gateway.

It loads ``gateway.toml`` (:mod:`gateway.config`), the device identity (the provisioning file
and the key it was made for), and runs, in one TaskGroup of named tasks:

* the runtime (:class:`gateway.runtime.Fleet`): the MQTT connection to the service, sends,
  resends, verified receipts;
* one task per source (:mod:`gateway.sources`, :mod:`gateway.spool`);
* the status: a line per source on the terminal every ``status_interval`` seconds, and the
  same counters as Prometheus metrics when ``metrics`` is set (:mod:`gateway.status`);
* key rotation on its schedule and on request (:mod:`gateway.rotation`). While a rotation
  is in flight the sources' inputs wait (nothing new is signed): a message signed by the old
  key after the service applied the rotation would be refused, and one signed by the new key
  before the service knows it too (docs/gateway.md, "Rotating the device key").

It stops when ``stop`` is set (SIGTERM or SIGINT in the CLI); what is not receipted stays in the
outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TextIO

from gateway.config import EventsSource, GatewayConfig, LinesSource, MqttSource
from gateway.control import take_rotation_request
from gateway.outbox import Outbox
from gateway.rotation import RotationState, resume_rotation, rotate_device_key
from gateway.runtime import Device, Fleet, wall_clock_ms
from gateway.sources import run_lines_source, run_mqtt_source
from gateway.spool import run_events_source
from gateway.status import Status, prometheus_text, status_lines
from tracecore.errors import ConfigError, MessageRejected, OutboxFull
from tracecore.identifiers import ProductKey
from tracecore.keys import (
    SignerKey,
    VerifierKey,
    device_fingerprint,
    kid_fingerprint,
    read_key_file,
)
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.provisioning import Provisioning

__all__ = ["Gateway", "load_identity", "run_gateway"]

_log = logging.getLogger(__name__)
#: How often an input held during a key rotation looks whether the gateway is stopping.
INPUT_WAIT_POLL_S: Final = 0.2
#: How often an input that waits for room in a full outbox tries again.
OUTBOX_FULL_RETRY_S: Final = 1.0
#: What a source's reading does when the outbox is full (docs/gateway.md).
WhenFull = Literal["wait", "drop"]
#: How often a rotation request or a due schedule is looked for.
ROTATION_POLL_S: Final = 1.0
#: Longest time inputs wait for a rotation's receipt before they go on under the old key.
ROTATION_HOLD_S: Final = 300.0
#: Longest wait for a metrics request's headers.
_METRICS_READ_TIMEOUT_S: Final = 5.0


def load_identity(provisioning_path: Path, keys_dir: Path) -> tuple[Provisioning, SignerKey]:
    """Read the provisioning file and the device key it was made for.

    Raises:
        ConfigError: no file, no key, or a key whose fingerprint is not the file's (a file made
            for another gateway: docs/gateway.md).
    """
    try:
        provisioning = Provisioning.parse(provisioning_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the provisioning file {provisioning_path}: {exc}") from exc
    device = provisioning.device
    if not (keys_dir / f"{device}.key").exists():
        raise ConfigError(f"no key of {device} in {keys_dir}: run agritrace gateway-key there")
    key = read_key_file(keys_dir, device)
    if provisioning.fingerprint not in _own_fingerprints(keys_dir, device, key):
        raise ConfigError(
            f"the provisioning file is for the key {provisioning.fingerprint}, but this "
            f"gateway's key is {device_fingerprint(key.public_key)}: do not use it"
        )
    return provisioning, key


def _own_fingerprints(keys_dir: Path, device: str, key: SignerKey) -> set[str]:
    """The fingerprints of the device's key and of the keys it rotated out (docs/gateway.md).

    The provisioning file names the key the device was registered with; after the device
    rotated its own key, that key is kept as ``{device}.key.retired-{kid}`` (the service
    receipted the rotation, so the chain from it to today's key is in the log).
    """
    fingerprints = {device_fingerprint(key.public_key)}
    for retired in keys_dir.glob(f"{device}.key.retired-*"):
        kid = retired.name.rpartition("-")[2]
        if len(kid) == 16 and all(c in "0123456789abcdef" for c in kid):
            fingerprints.add(kid_fingerprint(bytes.fromhex(kid)))
    return fingerprints


@dataclass(slots=True)
class Gateway:
    """A configured gateway: its device in a fleet of one, the outbox, and the status."""

    config: GatewayConfig
    provisioning: Provisioning
    fleet: Fleet
    device: Device
    status: Status
    #: Set while no rotation is in flight; inputs wait for it before they are signed.
    inputs_open: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: RotationState = RotationState.NONE
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def open(
        cls, config: GatewayConfig, outbox: Outbox, *, clock: Callable[[], int] = wall_clock_ms
    ) -> Gateway:
        """Load the identity of ``config`` and prepare (not connect) the gateway."""
        provisioning, key = load_identity(config.provisioning, config.keys)
        broker = config.broker or BrokerAddress.parse(provisioning.broker)
        log_key = VerifierKey.parse(provisioning.log_vkey).public_key
        fleet = Fleet(
            broker, outbox, log_key, client_id=f"gateway-{provisioning.device}", clock=clock
        )
        device = fleet.add_device(provisioning.device, key)
        # Before anything is sent: a rotation left in flight by the last run is carried on.
        resumed = resume_rotation(fleet, device.id, config.keys)
        status = Status(provisioning.device)
        status.earlier((item.device_id, item.seq) for item in outbox.pending())
        for source in config.sources:
            status.add_source(source.name, source.kind)
        fleet.settle_listeners.append(
            lambda receipts: status.settled((r.device_id, r.seq) for r in receipts)
        )
        gateway = cls(config, provisioning, fleet, device, status, resumed=resumed)
        if resumed is not RotationState.IN_FLIGHT:
            gateway.inputs_open.set()
        return gateway

    # -- the sink of the sources ---------------------------------------------------------------

    async def reading(
        self,
        source: str,
        products: Sequence[ProductKey],
        sensors: Sequence[Sensor],
        *,
        time_ms: int | None = None,
        cursor: tuple[str, str] | None = None,
        when_full: WhenFull = "wait",
    ) -> bool:
        """Sign and store a reading of ``source``; False (recorded) if it cannot be made.

        When the outbox is at its bound, ``when_full`` says what happens: ``"wait"`` until
        receipts make room (an input that can wait: a file, a pipe), or ``"drop"`` the reading
        and count it as ``outbox_full`` (a sensor whose next message comes anyway).
        """
        return await self._store(
            source,
            lambda: self.device.send_reading(products, sensors, time_ms=time_ms, cursor=cursor),
            when_full,
        )

    async def event(
        self,
        source: str,
        products: Sequence[ProductKey],
        step: str,
        *,
        parents: Sequence[ProductKey] = (),
        location: str | None = None,
        data: Mapping[str, object] | None = None,
        time_ms: int | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> bool:
        """Sign and store an event of ``source``; False (recorded) if it cannot be made.

        A full outbox makes it wait for room: a batch file's events are never dropped.
        """
        return await self._store(
            source,
            lambda: self.device.send_event(
                products,
                step,
                parents=parents,
                location=location,
                data=data,
                time_ms=time_ms,
                cursor=cursor,
            ),
            "wait",
        )

    async def _store(
        self,
        source: str,
        send: Callable[[], Awaitable[tuple[int, bytes]]],
        when_full: WhenFull,
    ) -> bool:
        """Sign and store one input of ``source`` once inputs may be signed (see reading())."""
        while True:
            if not await self._inputs_ready():
                return False
            try:
                seq, _ = await send()
            except MessageRejected as exc:
                self.refuse(source, "malformed", str(exc))
                return False
            except OutboxFull as exc:
                if not await self._outbox_full(source, exc, when_full):
                    return False
                continue
            self.status.sent(source, self.device.id, seq)
            return True

    async def _inputs_ready(self) -> bool:
        """Wait until inputs may be signed; False once the gateway is stopping.

        Once stopping, nothing new is signed: an input not stored stays where it was (a line in
        its file, a batch file in the spool) for the next start, and a rotation left in flight
        is carried on then, not undercut by messages under the old key.
        """
        while not self.inputs_open.is_set() and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INPUT_WAIT_POLL_S):
                    await self.inputs_open.wait()
        return not self.stopping.is_set()

    async def _outbox_full(self, source: str, exc: OutboxFull, when_full: WhenFull) -> bool:
        """Drop (and count) the input, or wait a while for room; True to try again."""
        self.status.outbox_full = True
        if when_full == "drop":
            self.refuse(source, "outbox_full", f"the outbox is at its bound ({exc.limit})")
            return False
        if self.status.sources[source].waiting_for_room is False:
            _log.warning("source %s waits: the outbox is at its bound (%s)", source, exc.limit)
        self.status.sources[source].waiting_for_room = True
        await asyncio.sleep(OUTBOX_FULL_RETRY_S)
        self.status.sources[source].waiting_for_room = False
        return True

    def refuse(self, source: str, reason: str, detail: str) -> None:
        """Record and log an input of ``source`` that could not become a message."""
        self.status.rejected(source, reason, detail)
        _log.warning("source %s: rejected (%s): %s", source, reason, detail)

    # -- running -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Copy the runtime's state into the status (before it is shown)."""
        self.status.connected = self.fleet.connected.is_set()
        self.status.outbox_pending = self.fleet.pending_count()
        self.status.resent = self.fleet.stats.resent
        self.status.rotating = not self.inputs_open.is_set()
        self.status.outbox_full = self.fleet.outbox.size()[0] >= (
            self.config.outbox.max_messages or 2**63
        ) or any(s.waiting_for_room for s in self.status.sources.values())

    async def run(self, stop: asyncio.Event, *, out: TextIO | None = None) -> None:
        """Run the runtime, every source and the status until ``stop`` is set."""
        config = self.config
        outbox = self.fleet.outbox
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch_stop(stop), name="gateway-stop-watch")
            tasks.create_task(self.fleet.run(stop), name="gateway-runtime")
            for source in config.sources:
                tasks.create_task(self._source(source, stop, outbox), name=f"source-{source.name}")
            if out is not None and config.status_interval_s > 0:
                tasks.create_task(
                    self._print_status(stop, out, config.status_interval_s), name="gateway-status"
                )
            tasks.create_task(self._rotations(stop), name="gateway-rotation")
            if config.metrics is not None:
                tasks.create_task(
                    self._serve_metrics(stop, *config.metrics), name="gateway-metrics"
                )

    async def _source(
        self, source: MqttSource | LinesSource | EventsSource, stop: asyncio.Event, outbox: Outbox
    ) -> None:
        if isinstance(source, MqttSource):
            await run_mqtt_source(
                source, self, stop, client_id=f"agritrace-{self.device.id}-{source.name}"
            )
        elif isinstance(source, LinesSource):
            await run_lines_source(
                source,
                self,
                stop,
                timezone=self.config.timezone,
                cursor_of=outbox.cursor,
                set_cursor=outbox.set_cursor,
                now_ms=wall_clock_ms,
            )
        else:
            await run_events_source(
                source,
                self,
                stop,
                timezone=self.config.timezone,
                cursor_of=outbox.cursor,
                now_ms=wall_clock_ms,
            )

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopping.set()

    async def _rotations(self, stop: asyncio.Event) -> None:
        """Rotate the device key on request and on schedule, holding inputs while in flight."""
        if self.resumed is RotationState.IN_FLIGHT:
            await self._rotate(stop)  # finishes the one the last run left in flight
        while not stop.is_set():
            if self.fleet.connected.is_set() and (
                take_rotation_request(self.config.state) or self._rotation_due()
            ):
                await self._rotate(stop)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROTATION_POLL_S):
                    await stop.wait()

    def _rotation_due(self) -> bool:
        every = self.config.rotate_every_days
        if every <= 0:
            return False
        made = (self.config.keys / f"{self.device.id}.key").stat().st_mtime
        return time.time() - made >= every * 86_400

    async def _rotate(self, stop: asyncio.Event) -> None:
        self.inputs_open.clear()
        try:
            async with asyncio.TaskGroup() as tasks:
                rotation = tasks.create_task(
                    rotate_device_key(self.fleet, self.device.id, self.config.keys),
                    name="gateway-rotate-key",
                )
                watcher = tasks.create_task(stop.wait(), name="gateway-rotate-stop")
                done, _ = await asyncio.wait(
                    {rotation, watcher},
                    timeout=ROTATION_HOLD_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    # No receipt in that time: most likely the service refused the rotation
                    # (bad_rotation), so the old key is still the device's. Inputs go on under
                    # it; a late receipt still makes the switch.
                    _log.warning(
                        "gateway %s: the key rotation has no receipt after %.0f s; sending "
                        "with the old key meanwhile (the console's rejections say why)",
                        self.device.id,
                        ROTATION_HOLD_S,
                    )
                    self.inputs_open.set()
                    await asyncio.wait({rotation, watcher}, return_when=asyncio.FIRST_COMPLETED)
                # Stopping mid-rotation: it stays in flight, the next start carries it on.
                rotation.cancel()
                watcher.cancel()
            if not rotation.cancelled():
                result = rotation.result()
                self.status.rotations += 1
                _log.info(
                    "gateway %s: key rotated, %s -> %s (log entry %d)",
                    self.device.id,
                    result.old_kid.hex(),
                    result.new_kid.hex(),
                    result.receipt.log_index,
                )
        finally:
            self.inputs_open.set()

    async def _print_status(self, stop: asyncio.Event, out: TextIO, interval_s: float) -> None:
        shown = 0
        live = out.isatty()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await stop.wait()
            self.refresh()
            lines = status_lines(self.status)
            if live and shown:
                # ECMA-48 CPL (cursor previous line) and EL (erase line): redraw in place.
                out.write(f"\x1b[{shown}F")
                out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            else:
                out.write("".join(f"{line}\n" for line in lines))
            out.flush()
            shown = len(lines) if live else 0

    async def _serve_metrics(self, stop: asyncio.Event, host: str, port: int) -> None:
        server = await asyncio.start_server(self._metrics_request, host, port)
        _log.info("gateway metrics on http://%s:%d/metrics", host, port)
        async with server:
            await stop.wait()

    async def _metrics_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(_METRICS_READ_TIMEOUT_S):
                request = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        method, _, rest = request.partition(b" ")
        target = rest.partition(b" ")[0]
        if method == b"GET" and target.split(b"?")[0] == b"/metrics":
            self.refresh()
            body = prometheus_text(self.status).encode()
            head = "200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"
        else:
            body = b"only GET /metrics here\n"
            head = "404 Not Found\r\nContent-Type: text/plain; charset=utf-8"
        writer.write(
            f"HTTP/1.1 {head}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def outbox_path(config: GatewayConfig, device: str) -> Path:
    """Return where the gateway of ``config`` keeps the outbox of ``device``."""
    return config.state / f"{device}.outbox"


async def run_gateway(
    config: GatewayConfig,
    stop: asyncio.Event,
    *,
    out: TextIO | None = None,
    ready: Callable[[Gateway], None] | None = None,
) -> Status:
    """Run the gateway of ``config`` until ``stop`` is set; return its final status.

    ``out`` receives the status lines (the terminal); ``ready`` is called with the opened
    gateway before it connects (tests and the CLI use it to print what runs).
    """
    provisioning, _ = load_identity(config.provisioning, config.keys)
    config.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Outbox(outbox_path(config, provisioning.device), bound=config.outbox) as outbox:
        gateway = Gateway.open(config, outbox)
        if ready is not None:
            ready(gateway)
        await gateway.run(stop, out=out)
        gateway.refresh()
        return gateway.status
