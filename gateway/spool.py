"""Batch events through a spool directory: a packing line's CSV files, sent whole or not at all.

An ``events`` source watches its spool directory (docs/gateway.md, "Batch events"). A CSV file
(:mod:`gateway.batches` has the format) dropped there is read whole and checked before anything
is sent:

* a file with a bad row is moved to ``rejected/`` with ``{name}.errors.txt`` beside it, listing
  every bad row; nothing of it is sent;
* a good file's events are signed and stored in the outbox one by one, each with the file's
  position committed in the same transaction (the cursor ``events:{source}:{file}``), so a
  restarted gateway goes on after the last event it stored, never twice; then the file is moved
  to ``sent/``.

Rows without a time are timed by the file's modification time (when the packing line wrote it),
so that reading the file again after a restart gives the same events. Files whose names start
with ``.`` are being written (``agritrace gateway events`` writes ``.name.tmp`` and renames it)
and are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from gateway.batches import Batch, parse_batch
from gateway.config import EventsSource
from gateway.status import Status
from tracecore.errors import BatchError, InputError
from tracecore.identifiers import ProductKey

__all__ = ["queue_batch", "run_events_source"]

_log = logging.getLogger(__name__)
#: How often the spool directory is looked at.
SCAN_INTERVAL_S: Final = 1.0
#: The largest batch file read (a day of a packing line is far smaller).
MAX_FILE_BYTES: Final = 16 * 1024 * 1024


class EventSink(Protocol):
    """Where the events go (implemented by the running gateway)."""

    status: Status

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
        """Sign and store an event; False (recorded with its reason) if it cannot be made."""
        ...

    def refuse(self, source: str, reason: str, detail: str) -> None:
        """Record an input that could not become a message, and log it."""
        ...


def _read_batch(path: Path, tz: zoneinfo.ZoneInfo) -> Batch:
    """Parse the file at ``path``; rows without a time get its modification time."""
    stat = path.stat()
    size = stat.st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path.name}: {size} bytes, larger than {MAX_FILE_BYTES}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a BOM before UTF-8 CSV
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text (byte {exc.start})") from None
    return parse_batch(text, now_ms=stat.st_mtime_ns // 1_000_000, tz=tz)


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` without replacing a file of the same name there."""
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / path.name
    counter = 1
    while target.exists():
        counter += 1
        target = folder / f"{path.stem}.{counter}{path.suffix}"
    path.rename(target)
    return target


async def run_events_source(
    source: EventsSource,
    sink: EventSink,
    stop: asyncio.Event,
    *,
    timezone: str,
    cursor_of: Callable[[str], str | None],
    now_ms: Callable[[], int],
) -> None:
    """Send the spool directory's batch files, oldest first, until ``stop`` is set."""
    del now_ms  # rows without a time take their file's time, so a re-read gives the same events
    tz = zoneinfo.ZoneInfo(timezone)
    source.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    while not stop.is_set():
        files = sorted(
            (p for p in source.spool.glob("*.csv") if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        for path in files:
            if stop.is_set():
                return
            await _send_file(path, source, sink, tz, cursor_of)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SCAN_INTERVAL_S):
                await stop.wait()


async def _send_file(
    path: Path,
    source: EventsSource,
    sink: EventSink,
    tz: zoneinfo.ZoneInfo,
    cursor_of: Callable[[str], str | None],
) -> None:
    counters = sink.status.sources[source.name]
    try:
        batch = _read_batch(path, tz)
    except (BatchError, InputError, OSError) as exc:
        counters.received += 1
        moved = _move(path, source.spool / "rejected")
        moved.with_name(moved.name + ".errors.txt").write_text(f"{exc}\n", encoding="utf-8")
        sink.refuse(source.name, "bad_file", f"{path.name}: {exc}")
        return
    name = f"events:{source.name}:{path.name}"
    done = 0
    committed = cursor_of(name)
    if committed is not None:
        digest, _, stored = committed.rpartition(":")
        if digest == batch.digest:
            done = int(stored)
        else:
            # The file changed after some of its events were sent: sending the rest would mix
            # two versions, so stop and say so (the sent part is in the log already).
            moved = _move(path, source.spool / "rejected")
            note = (
                f"{path.name} changed after {stored} of its events were sent; the rest were not "
                "sent. Put the remaining rows in a new file.\n"
            )
            moved.with_name(moved.name + ".errors.txt").write_text(note, encoding="utf-8")
            sink.refuse(source.name, "file_changed", note.strip())
            return
    events = batch.events
    counters.received += len(events) - done
    for index in range(done, len(events)):
        event = events[index]
        ok = await sink.event(
            source.name,
            event.products,
            event.step,
            parents=event.parents,
            location=event.location,
            data=event.data,
            time_ms=event.time_ms,
            cursor=(name, f"{batch.digest}:{index + 1}"),
        )
        if not ok:
            # Checked like ingest checks it, so this is a gateway fault (the outbox is full):
            # keep the file, the next scan goes on from the last stored event.
            return
    _move(path, source.spool / "sent")
    _log.info("source %s: %s sent (%d events)", source.name, path.name, len(events))


def queue_batch(spool: Path, text: str, label: str, *, tz: zoneinfo.ZoneInfo) -> Path:
    """Check the batch ``text`` and put it into ``spool`` for the running gateway; return its path.

    Raises :class:`~tracecore.errors.BatchError` listing every bad row: nothing is queued then.
    """
    now = time.time_ns() // 1_000_000
    batch = parse_batch(text, now_ms=now, tz=tz)
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(now / 1000, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:40] or "batch"
    final = spool / f"{stamp}-{safe}-{batch.digest[:8]}.csv"
    temporary = spool / f".{final.name}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(final)  # atomic: the gateway sees the whole file or none of it
    return final
