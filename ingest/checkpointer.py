"""The checkpointer: the integrator half of the log, as an asyncio task of the ingest service.

The sequencer (the ingest batches) only appends ``log_entries`` rows. Every ``interval_s``
seconds (``AGRITRACE_CHECKPOINT_SECONDS``, default 2) this task integrates the new leaves into
the stored Merkle tree and, when the log grew, signs and stores a C2SP tlog-checkpoint
(:func:`tracecore.checkpoint.make_checkpoint`). So a checkpoint appears at most once per
interval while entries arrive, and none while the log is idle. The database work runs in a
worker thread so the event loop keeps serving MQTT.

Each new checkpoint is handed to ``on_checkpoint`` (the ingest service submits it to the
witnesses, see :mod:`ingest.witnessing`); the next round waits for it, so the callback should
bound its own time (witness submission has per-witness deadlines). Errors of a round (database
unavailable, a failing callback) are logged and the next round tries again: the checkpointer
never takes the ingest service down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from tracecore.checkpoint import latest_checkpoint, make_checkpoint
from tracecore.errors import AgritraceError
from tracecore.keys import SignerKey
from tracecore.storage.engine import session_scope
from tracecore.storage.index import plan_index
from tracecore.storage.logwriter import checkpoint_transaction
from tracecore.storage.models import Checkpoint
from tracecore.storage.tree import consistency_proof

__all__ = [
    "OnCheckpoint",
    "checkpoint_once",
    "consistency_proof_fn",
    "run_checkpointer",
    "wall_clock_ms",
]

#: Called with each new checkpoint; may be a coroutine function.
OnCheckpoint = Callable[[Checkpoint], Awaitable[None] | None]

_log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Return the wall-clock time in ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


def checkpoint_once(
    engine: Engine,
    log_key: SignerKey,
    origin: str,
    now_ms: int,
    *,
    index_interval_ms: int = 0,
    defer_ms: int = 0,
    own: Checkpoint | None = None,
) -> Checkpoint | None:
    """Integrate, update the product index and, if the log grew, sign and commit a checkpoint.

    Blocking; one transaction. When entries were appended since the last index root, the round
    appends a new ``index_root`` entry (:func:`tracecore.storage.index.update_index`) and the
    checkpoint covers it.

    ``defer_ms`` lets several workers share one log without each signing every round: when the
    latest checkpoint is not ``own`` (this worker's last one) and is younger than ``defer_ms``
    at ``now_ms``, another worker signed it just now, and this round does nothing. So one worker
    signs while it runs, and another takes over within ``defer_ms`` of its last checkpoint when
    it stops. Without it every worker signed a checkpoint every round, and each witness
    answered every other submission with 409 (it already knew a newer size).

    Returns None when the log has not grown, when another worker holds the integrator's lock
    (it checkpoints the same log this round), or when it has just signed one (``defer_ms``).
    """
    # On SQLite the round's transaction holds the database's one write lock, which ingest
    # waits for: the product index's fold is computed first, with reads only (docs/log.md).
    # PostgreSQL folds inside the round, which does not hold the log's write lock.
    plan = None
    if engine.dialect.name == "sqlite":
        with session_scope(engine) as reading:
            plan = plan_index(reading, now_ms, min_interval_ms=index_interval_ms)
    with checkpoint_transaction(engine) as session:
        if session is None:
            return None
        if defer_ms > 0:
            latest = latest_checkpoint(session)
            if (
                latest is not None
                and (own is None or (latest.size, latest.created_ms) != (own.size, own.created_ms))
                and now_ms - latest.created_ms < defer_ms
            ):
                return None
        return make_checkpoint(
            session,
            origin,
            log_key,
            now_ms,
            index_interval_ms=index_interval_ms,
            index_plan=plan,
        )


def consistency_proof_fn(engine: Engine) -> Callable[[int, int], Awaitable[list[bytes]]]:
    """Return an async ``proof(old, new)`` that reads an RFC 9162 consistency proof in a thread.

    The ``proof_fn`` that :func:`ingest.witnessing.collect_cosignatures` needs.
    """

    def read(old: int, new: int) -> list[bytes]:
        with session_scope(engine) as session:
            return consistency_proof(session, old, new)

    async def proof(old: int, new: int) -> list[bytes]:
        return await asyncio.to_thread(read, old, new)

    return proof


async def run_checkpointer(
    engine: Engine,
    log_key: SignerKey,
    origin: str,
    interval_s: float,
    stop: asyncio.Event,
    *,
    on_checkpoint: OnCheckpoint | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    index_seconds: float = 0.0,
) -> None:
    """Make a checkpoint every ``interval_s`` seconds while the log grows, until ``stop`` is set.

    ``origin`` is the checkpoint origin line (``AGRITRACE_LOG_ORIGIN``), ``log_key`` the log's
    signer key, ``clock`` the time source (ms since the Unix epoch) stored with each checkpoint,
    ``index_seconds`` the least time between two product-index roots (``AGRITRACE_INDEX_SECONDS``;
    0: a root in every round where the log grew).
    Returns when ``stop`` is set (checked between rounds; a round in progress completes).

    Several workers on one database take turns as :func:`checkpoint_once` says (``defer_ms``):
    a round that finds a checkpoint another worker signed less than one and a half intervals
    ago skips.
    """
    own: Checkpoint | None = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            checkpoint = await asyncio.to_thread(
                functools.partial(
                    checkpoint_once,
                    engine,
                    log_key,
                    origin,
                    clock(),
                    index_interval_ms=round(index_seconds * 1000),
                    # One and a half intervals: workers started together run their rounds
                    # milliseconds apart, and at exactly one interval the lead passed back and
                    # forth on the jitter (a 409 at each witness every time).
                    defer_ms=round(1.5 * interval_s * 1000),
                    own=own,
                )
            )
        except AgritraceError as exc:
            _log.warning("checkpoint round failed, retrying next round: %s", exc)
            checkpoint = None
        if checkpoint is not None:
            own = checkpoint
            _log.info("signed checkpoint of size %d", checkpoint.size)
            if on_checkpoint is not None:
                await _notify(on_checkpoint, checkpoint)
        remaining = interval_s - (time.monotonic() - started)
        # Sleep out the interval, but wake at once when asked to stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, remaining))


async def _notify(on_checkpoint: OnCheckpoint, checkpoint: Checkpoint) -> None:
    """Run the callback; log (never raise) its failure so the checkpointer keeps running."""
    try:
        result = on_checkpoint(checkpoint)
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 (logged with its traceback; see below)
        # A failing witness submission must not stop checkpointing (design.md: a witness that
        # is down never blocks ingestion), whatever the callback raised.
        _log.exception("on_checkpoint failed for the checkpoint of size %d", checkpoint.size)
