"""The access trail: every authenticated read or action is a log entry before it is answered.

docs/inspection.md, "The access trail". A request that was authenticated (an API token, or a
console session) and is answered with a status below 400 becomes an ``access`` log entry
(:class:`tracecore.logentry.Access`): who, in which role, the route, the path and query, and
the parties whose data the answer showed. Routes name those parties with :func:`note_parties`;
a party token only ever sees its own party's data, so its accesses name its party.

The answer is held back until its entry is committed (:class:`AccessTrailMiddleware`): an
answer whose access cannot be recorded is not sent (503 instead), so no read can escape the
trail. To keep a busy inspector from taking the log's write lock once per page (ingest needs
it too), :class:`AccessTrail` commits group-wise: while one batch is being written, the
accesses that arrive wait together and the next writer commits them all in one transaction.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import anyio.to_thread
from fastapi import Request
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracecore.errors import AgritraceError, IdentifierError
from tracecore.identifiers import parse_party_id
from tracecore.logentry import MAX_ACCESS_PARTIES, Access
from tracecore.storage.access import append_accesses
from tracecore.storage.logwriter import log_session

__all__ = [
    "AccessTrail",
    "AccessTrailMiddleware",
    "TrailCounters",
    "accesses_of",
    "note_parties",
    "note_principal",
    "noted_parties",
]

#: The request-state keys the trail reads: who was authenticated, whose data was shown.
PRINCIPAL_KEY: Final = "access_principal"
_PARTIES_KEY: Final = "access_parties"
_TARGET_LIMIT: Final = 1000
_RETRY_AFTER_S: Final = 5


def note_parties(request: Request, *parties: str | None) -> None:
    """Record that ``request`` shows data of ``parties``.

    ``None`` and text that is not a party id (a shipment's free-text destination, say) are
    skipped: only registered-style ids can name whose data it was.
    """
    noted: set[str] | None = getattr(request.state, _PARTIES_KEY, None)
    if noted is None:
        noted = set()
        setattr(request.state, _PARTIES_KEY, noted)
    noted.update(p for p in parties if p is not None and _is_party_id(p))


def _is_party_id(text: str) -> bool:
    try:
        parse_party_id(text)
    except IdentifierError:
        return False
    return True


def noted_parties(request: Request) -> frozenset[str]:
    """The parties whose data ``request`` showed, as noted so far."""
    return frozenset(getattr(request.state, _PARTIES_KEY, ()))


def note_principal(request: Request, who: str, role: str) -> None:
    """Record who made ``request``: ``"admin"`` or a party id, in ``role``."""
    setattr(request.state, PRINCIPAL_KEY, (who, role))


@dataclass(slots=True)
class _Waiting:
    access: Access
    index: int | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class TrailCounters:
    """What the trail has committed: entries and the transactions (batches) they took."""

    entries: int = 0
    batches: int = 0
    largest_batch: int = 0


@dataclass
class AccessTrail:
    """Commits accesses to the log, group-wise (thread-safe; one per API process).

    :meth:`record` blocks until its access is committed. The first caller to find no batch in
    progress becomes the writer: it commits every access waiting at that moment in one
    transaction. Callers arriving meanwhile wait and form the next batch. Writes start at least
    ``min_interval_s`` apart, so that a stream of reads leaves the log's lock free most of the
    time for ingest (a writer that took the lock again at once would starve SQLite's other
    writers, whose busy handler sleeps between tries). An idle process commits an access at
    once; a busy one commits at most ``1 / min_interval_s`` batches per second.
    """

    engine: Engine
    min_interval_s: float = 0.05
    counters: TrailCounters = field(default_factory=TrailCounters)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _pending: list[_Waiting] = field(default_factory=list)
    _writing: bool = False
    _next_write: float = 0.0

    def waiting(self) -> tuple[int, int]:
        """(writers now, 0 or 1; accesses waiting for the next batch)."""
        with self._cond:
            return int(self._writing), len(self._pending)

    def record(self, access: Access) -> int:
        """Commit ``access`` to the log (with others waiting); return its log index.

        Raises :class:`~tracecore.errors.StorageError` if its batch could not be committed.
        """
        mine = _Waiting(access)
        with self._cond:
            self._pending.append(mine)
            while mine.index is None and mine.error is None:
                if not self._writing:
                    self._writing = True
                    break
                self._cond.wait()
            else:
                return _outcome(mine)
        pause = self._next_write - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with self._cond:
            # Only the writer takes from the queue, so ``mine`` is still in it.
            batch, self._pending = self._pending, []
        try:
            with log_session(self.engine) as session:
                time_ms = max(w.access.time for w in batch)
                indexes = append_accesses(session, [w.access for w in batch], time_ms)
        except BaseException as exc:  # noqa: BLE001 (every waiter must wake, with the error)
            for waiting in batch:
                waiting.error = exc
        else:
            for waiting, index in zip(batch, indexes, strict=True):
                waiting.index = index
        with self._cond:
            self._writing = False
            self._next_write = time.monotonic() + self.min_interval_s
            if mine.error is None:
                self.counters.entries += len(batch)
                self.counters.batches += 1
                self.counters.largest_batch = max(self.counters.largest_batch, len(batch))
            self._cond.notify_all()
        return _outcome(mine)


def _outcome(waiting: _Waiting) -> int:
    if waiting.error is not None:
        raise waiting.error
    assert waiting.index is not None  # noqa: S101 (set with error None)
    return waiting.index


def accesses_of(scope: Scope, now_ms: int) -> list[Access]:
    """The access entries of an answered request (none if it was not authenticated).

    Several entries when the answer showed more than ``MAX_ACCESS_PARTIES`` parties.
    """
    state = scope.get("state") or {}
    principal = state.get(PRINCIPAL_KEY)
    if principal is None:
        return []
    who, role = principal
    parties = set(state.get(_PARTIES_KEY, ()))
    if role == "party":
        # A party token is held to its own data by every route (docs/registry-api.md).
        parties.add(who)
    route = scope.get("route")
    template = getattr(route, "path", None) or "(no route)"
    action = f"{scope['method']} {template}"[:200]
    target = scope.get("root_path", "") + scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        target = f"{target}?{query}"
    if len(target) > _TARGET_LIMIT:
        # Marked, not silently cut: the full request is not needed to know what was read.
        target = target[: _TARGET_LIMIT - 1] + "…"
    ordered = sorted(parties)
    chunks = [
        tuple(ordered[i : i + MAX_ACCESS_PARTIES])
        for i in range(0, len(ordered), MAX_ACCESS_PARTIES)
    ] or [()]
    return [Access(who, role, action, target, chunk, now_ms) for chunk in chunks]


class AccessTrailMiddleware:
    """ASGI middleware: commit each authenticated answer's access before the answer leaves."""

    def __init__(self, app: ASGIApp, trail: Callable[[], AccessTrail], clock: Callable[[], int]):
        """Wrap ``app``; ``trail`` gives the process's trail, ``clock`` the time in ms."""
        self.app = app
        self.trail = trail
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; hold its answer until the access is committed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        refused = False

        async def send_after_record(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and message["status"] < 400:
                accesses = accesses_of(scope, self.clock())
                trail = self.trail()
                try:
                    for access in accesses:
                        await anyio.to_thread.run_sync(trail.record, access)
                except AgritraceError:
                    refused = True
                    await _refuse(send)
                    return
            await send(message)

        await self.app(scope, receive, send_after_record)


async def _refuse(send: Send) -> None:
    body = json.dumps(
        {"detail": "the access could not be recorded, so nothing is shown; try again"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(_RETRY_AFTER_S).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
