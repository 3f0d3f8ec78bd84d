"""The gateway's inputs: sensors on the farm's own MQTT broker, and sensor lines.

Each source is a coroutine that runs until ``stop`` is set and hands what it reads to a
:class:`Sink`, which signs it as the gateway's device and stores it in the outbox, or records
why it could not (docs/gateway.md). Batch events (the ``events`` source) are in
:mod:`gateway.spool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import termios
import time
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal, Protocol

import aiomqtt

from gateway.config import LinesSource, MqttSource
from gateway.lines import LineFormat, SensorSpec
from gateway.payloads import PayloadRefused, read_tasmota, read_zigbee2mqtt, zigbee2mqtt_device
from gateway.status import Status
from tracecore.backoff import Backoff
from tracecore.errors import InputError
from tracecore.identifiers import ProductKey
from tracecore.message import Sensor

__all__ = ["Sink", "run_lines_source", "run_mqtt_source"]

_log = logging.getLogger(__name__)
#: How often a followed file is looked at again once its end is reached.
FOLLOW_INTERVAL_S: Final = 0.5
#: Longest line read from any input; a longer one is refused, not split.
MAX_LINE: Final = 4096
_BAUDS: Final = {
    rate: getattr(termios, f"B{rate}")
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
    if hasattr(termios, f"B{rate}")
}


class Sink(Protocol):
    """Where sources put what they read (implemented by the running gateway)."""

    status: Status

    async def reading(
        self,
        source: str,
        products: Sequence[ProductKey],
        sensors: Sequence[Sensor],
        *,
        time_ms: int | None = None,
        cursor: tuple[str, str] | None = None,
        when_full: Literal["wait", "drop"] = "wait",
    ) -> bool:
        """Sign and store a reading; return False (recorded with its reason) if it cannot."""
        ...

    def refuse(self, source: str, reason: str, detail: str) -> None:
        """Record an input that could not become a message, and log it."""
        ...


# -- MQTT bridge ------------------------------------------------------------------------------


async def run_mqtt_source(
    source: MqttSource,
    sink: Sink,
    stop: asyncio.Event,
    *,
    client_id: str,
    reconnect: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Subscribe to the source's topics on the farm's broker and send what the sensors report.

    The subscription is QoS 1 in a persistent session (``client_id`` must be stable), so
    readings a sensor publishes at QoS 1 while the gateway restarts wait on the broker.
    Reconnects back off with jitter. Each message becomes one reading of the source's
    products, timed by the gateway's clock (docs/gateway.md).
    """
    backoff = reconnect or Backoff(initial=0.5, cap=30.0)
    last_seen: dict[str, float] = {}
    counters = sink.status.sources[source.name]
    counters.connected = False
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                source.broker.host,
                source.broker.port,
                username=source.broker.username,
                password=source.broker.password,
                identifier=client_id,
                clean_session=False,
            ) as client:
                for topic in source.topics:
                    await client.subscribe(topic, qos=1)
                backoff.reset()
                counters.connected = True
                _log.info("source %s: subscribed to %s", source.name, ", ".join(source.topics))
                async with asyncio.TaskGroup() as tasks:
                    reader = tasks.create_task(
                        _bridge(client, source, sink, last_seen, clock),
                        name=f"source-{source.name}-read",
                    )
                    watcher = tasks.create_task(stop.wait(), name=f"source-{source.name}-stop")
                    await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
                    reader.cancel()
                    watcher.cancel()
        except* aiomqtt.MqttError as group:
            counters.connected = False
            _log.warning(
                "source %s: the farm broker %s is unreachable: %s",
                source.name,
                source.broker,
                group.exceptions[0],
            )
        counters.connected = False
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.next_delay()):
                    await stop.wait()


async def _bridge(
    client: aiomqtt.Client,
    source: MqttSource,
    sink: Sink,
    last_seen: dict[str, float],
    clock: Callable[[], float],
) -> None:
    counters = sink.status.sources[source.name]
    async for message in client.messages:
        topic = message.topic.value
        if source.kind == "zigbee2mqtt" and zigbee2mqtt_device(topic, source.base_topic) is None:
            continue  # the bridge's own topics, availability, set/get: not sensor state
        counters.received += 1
        payload = message.payload if isinstance(message.payload, bytes) else b""
        now = clock()
        if source.min_interval_s and now - last_seen.get(topic, -1e18) < source.min_interval_s:
            counters.throttled += 1
            continue
        try:
            if source.kind == "tasmota":
                sensors = read_tasmota(payload, source.fields)
            else:
                sensors = read_zigbee2mqtt(payload, source.fields)
        except PayloadRefused as exc:
            sink.refuse(source.name, exc.reason, f"{topic}: {exc.detail}")
            continue
        if await sink.reading(source.name, source.products, sensors, when_full="drop"):
            last_seen[topic] = now


# -- lines ------------------------------------------------------------------------------------


def line_format(source: LinesSource, timezone: str) -> LineFormat:
    """Return the parser of the source's lines (its sensor names, products and time zone)."""
    sensors: Mapping[str, SensorSpec] = {
        name: SensorSpec(type=spec.type, unit=spec.unit, products=spec.products or None)
        for name, spec in source.sensors.items()
    }
    return LineFormat(
        sensors=sensors, default_products=source.products, tz=zoneinfo.ZoneInfo(timezone)
    )


async def run_lines_source(
    source: LinesSource,
    sink: Sink,
    stop: asyncio.Event,
    *,
    timezone: str,
    cursor_of: Callable[[str], str | None],
    set_cursor: Callable[[str, str], None],
    now_ms: Callable[[], int],
) -> None:
    """Read ``time,sensor,value,unit`` lines from stdin, a followed file or a serial device.

    A file is followed like ``tail -F`` (a replaced or truncated file is read from its start)
    and its position is committed with each message made from it (``cursor_of`` and
    ``set_cursor`` for lines that make none), so a restarted gateway goes on where it stopped.
    stdin ends the source at its end; a serial device is read as it comes.
    """
    parse = line_format(source, timezone)

    async def handle(line: bytes | None, number: int, cursor: tuple[str, str] | None) -> None:
        counters = sink.status.sources[source.name]
        reading = None
        if line is None:
            counters.received += 1
            sink.refuse(source.name, "line_too_long", f"line {number}: over {MAX_LINE} bytes")
        else:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                counters.received += 1
                sink.refuse(source.name, "not_utf8", f"line {number} is not UTF-8 text")
            else:
                try:
                    reading = parse.parse_line(text.rstrip("\r\n"), now_ms=now_ms(), line=number)
                except InputError as exc:
                    counters.received += 1
                    sink.refuse(source.name, "bad_line", str(exc))
        if reading is None:
            if cursor is not None:
                set_cursor(*cursor)
            return
        counters.received += 1
        await sink.reading(
            source.name, reading.products, reading.sensors, time_ms=reading.time_ms, cursor=cursor
        )

    if source.path is None:
        async with _pipe_reader(sys.stdin.fileno()) as reader:
            await _read_stream(reader, stop, lambda line, n: handle(line, n, None))
    elif source.input.startswith("serial:"):
        fd = _open_serial(source.path, source.baud)
        try:
            async with _pipe_reader(fd) as reader:
                await _read_stream(reader, stop, lambda line, n: handle(line, n, None))
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    else:
        await _follow_file(source.path, f"lines:{source.name}", stop, handle, cursor_of)


@contextlib.asynccontextmanager
async def _pipe_reader(fd: int) -> AsyncIterator[asyncio.StreamReader]:
    """A stream of the pipe, terminal or serial device ``fd``, closed at the end of the block."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    protocol = asyncio.StreamReaderProtocol(reader)
    # A duplicate of the descriptor: the transport closes its own copy, never stdin itself.
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
    except BaseException:
        pipe.close()
        raise
    try:
        yield reader
    finally:
        transport.close()


async def _read_stream(
    reader: asyncio.StreamReader,
    stop: asyncio.Event,
    handle: Callable[[bytes | None, int], Awaitable[None]],
) -> None:
    number = 0
    while not stop.is_set():
        line: bytes | None
        try:
            async with asyncio.timeout(0.5):
                line = await reader.readline()
        except TimeoutError:
            continue
        except ValueError:  # LimitOverrunError: the stream dropped the over-long line
            line = None
        if line == b"":
            return  # end of input
        number += 1
        await handle(line, number)


def _open_serial(path: Path, baud: int) -> int:
    """Open a serial device raw at ``baud`` (8N1, no flow control); return its descriptor."""
    if baud not in _BAUDS:
        raise OSError(f"{path}: unsupported baud rate {baud} (use one of {sorted(_BAUDS)})")
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    if not stat.S_ISCHR(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a serial (character) device")
    try:
        attrs = termios.tcgetattr(fd)
        # termios(3): raw input, 8 data bits, no parity, receiver on, modem lines ignored.
        attrs[0] = termios.IGNPAR  # iflag
        attrs[1] = 0  # oflag
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL  # cflag
        attrs[3] = 0  # lflag: no echo, no canonical line editing
        attrs[4] = attrs[5] = _BAUDS[baud]
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def _follow_file(
    path: Path,
    name: str,
    stop: asyncio.Event,
    handle: Callable[[bytes | None, int, tuple[str, str] | None], Awaitable[None]],
    cursor_of: Callable[[str], str | None],
) -> None:
    """Read ``path`` from the committed position on, following appends, replacements, cuts.

    ``handle`` gets each complete line (None for one longer than :data:`MAX_LINE`, whose rest
    is skipped) with the cursor to commit with what is made of it.
    """
    inode, offset, number = _parse_cursor(cursor_of(name))
    while not stop.is_set():
        try:
            opened = path.open("rb")
        except FileNotFoundError:
            await _pause(stop)
            continue
        with opened:
            current = os.fstat(opened.fileno()).st_ino
            if current != inode:
                inode, offset, number = current, 0, 0  # another file: read it from its start
            opened.seek(offset)
            pending = b""
            skipping = False  # inside a line that was too long
            while not stop.is_set():
                chunk = opened.readline(MAX_LINE + 1)
                complete = chunk.endswith(b"\n")
                if skipping:
                    offset += len(chunk)
                    skipping = not complete
                elif complete:
                    line, pending = pending + chunk, b""
                    offset += len(line)
                    number += 1
                    await handle(line, number, (name, f"{inode}:{offset}:{number}"))
                elif len(pending) + len(chunk) > MAX_LINE:
                    offset += len(pending) + len(chunk)
                    number += 1
                    pending, skipping = b"", True
                    await handle(None, number, (name, f"{inode}:{offset}:{number}"))
                else:
                    pending += chunk  # a line still being written, or the end: wait for more
                if chunk:
                    continue
                await _pause(stop)
                change = _changed(path, inode, offset + len(pending))
                if change == "replaced":
                    # Replaced (logrotate): its unfinished last line is all it will ever be.
                    if pending:
                        offset += len(pending)
                        number += 1
                        await handle(pending, number, (name, f"{inode}:{offset}:{number}"))
                    break
                if change == "truncated":
                    # Truncated in place (copytruncate): start again from its beginning.
                    inode, offset, number = -1, 0, 0
                    break


def _changed(path: Path, inode: int, read: int) -> str | None:
    """Say whether the file at ``path`` was "replaced" or "truncated" below ``read`` bytes."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return "replaced"
    if now.st_ino != inode:
        return "replaced"
    return "truncated" if now.st_size < read else None


def _parse_cursor(value: str | None) -> tuple[int, int, int]:
    if value is None:
        return -1, 0, 0
    inode, offset, number = (int(part) for part in value.split(":"))
    return inode, offset, number


async def _pause(stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(FOLLOW_INTERVAL_S):
            await stop.wait()
