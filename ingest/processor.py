"""The processing core of ingest: verify, sequence and commit a batch of device messages.

:class:`Processor` turns a batch of MQTT messages (:class:`Inbound`) into log entries, per-product
chain links, product rows and signed receipts in ONE database transaction (design.md, "Ingest
rules" and "The log and the per-product chains"; issue 3). It does no MQTT: the service loop
calls :meth:`Processor.process` from a worker thread and publishes the returned receipts after
it returns (the commit has happened by then).

Checks, in the order of design.md / issue 3, each failure stored in ``rejections`` with the raw
bytes, the topic, the reason, a detail and the receive time:

1. malformed (topic not an up topic, or :func:`tracecore.cose.parse_message` refuses the bytes)
2. unknown_device  3. topic_mismatch  4. unknown_key / revoked_key (at the message time)
5. bad_signature (checked in a thread pool: PyNaCl releases the GIL)  6. clock_skew
7. duplicate (same device+seq and bytes: receipt re-sent) / equivocation (other bytes: alert)
8. unauthorized_product, then serial_conflict (:mod:`ingest.rights`: one GTIN + serial is one
   product, whatever its lot)  9. unknown product: parked, then applied when the commissioning
   arrives or rejected as unknown_product by :meth:`Processor.expire_parked`.

A key rotation (docs/protocol.md §5, "Key rotations") names no product: after rule 7 it is
checked by :meth:`_Run.rotate` (bad_rotation) and, if accepted, becomes a device_message entry
followed by a key_rotated entry, and the device's keys change, all in the batch's transaction.

Single writer: the transaction starts with a write lock (PostgreSQL: a transaction-scoped
advisory lock; SQLite: ``BEGIN IMMEDIATE``), so several ingest processes on one database never
assign the same log index and the log has no gaps. Rules 1-5 only read (devices and keys, in one
short read transaction) and run before the lock, overlapped with the signature checks; rules 6-9,
sequencing and all writes run under it. Under the lock the batch's device keys are read again
and rule 4 is applied again, so that a key rotated or revoked by another writer (another worker,
the registry API) since the first read holds for this batch, and a rotation sees every earlier
one: every change of a device's keys is serialized by the same lock.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import SQLModel

from ingest.rights import COMMISSIONING, Decision, Outcome, ProductState, decide
from ingest.signatures import SignaturePool, Verdict, VerifyTask
from tracecore.cose import MAX_MESSAGE_BYTES, SignedMessage, parse_message
from tracecore.errors import (
    BadRotation,
    MalformedMessage,
    MessageRejected,
    RejectReason,
    RevokedKey,
    StorageError,
    UnknownKey,
)
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, device_kid, key_window_refusal
from tracecore.logentry import GENESIS_PREV, ChainPosition, DeviceMessageEntry, KeyRotated
from tracecore.merkle import leaf_hash
from tracecore.message import Event, KeyRotation, verify_rotation_pop
from tracecore.receipt import Receipt
from tracecore.storage import models as _models  # noqa: F401  (registers the tables)
from tracecore.storage.engine import storage_errors
from tracecore.storage.logwriter import write_transaction
from tracecore.storage.models import REJECTION_PREFIX_BYTES
from tracecore.topics import device_from_up_topic

__all__ = [
    "BatchResult",
    "Inbound",
    "IngestConfig",
    "PreparedBatch",
    "Processor",
]

log = logging.getLogger(__name__)

_TABLES = SQLModel.metadata.tables
_LOG: Final[Table] = _TABLES["log_entries"]
_LINKS: Final[Table] = _TABLES["chain_links"]
_PRODUCTS: Final[Table] = _TABLES["products"]
_PARENTS: Final[Table] = _TABLES["product_parents"]
_PARKED: Final[Table] = _TABLES["parked_messages"]
_PARKED_PRODUCTS: Final[Table] = _TABLES["parked_products"]
_REJECTIONS: Final[Table] = _TABLES["rejections"]
_RECEIPTS: Final[Table] = _TABLES["receipts"]
_KEYS: Final[Table] = _TABLES["device_keys"]

#: Messages per signature-check (and receipt-signing) task: small, so that the pool's work on
#: one chunk overlaps this thread's work on the next.
_CHUNK: Final = 32


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as received: topic, exact payload bytes, server receive time (ms)."""

    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Tuning of the ingest core (batch size and linger are used by the service loop)."""

    batch_size: int = 500
    linger_ms: int = 50
    park_ms: int = 24 * 3_600_000  # AGRITRACE_PARK_HOURS (design.md: up to 24 h)
    max_clock_skew_ms: int = 5 * 60_000  # design.md: 5 min ahead of the server
    verify_threads: int = 2
    #: Worker processes for signature checks and receipt signatures (ingest.signatures);
    #: 0 = ``verify_threads`` threads in this process.
    signature_processes: int = 0
    # AGRITRACE_MAX_MESSAGE_BYTES: a larger payload is refused as too_large unread, whatever
    # the broker lets through (docs/protocol.md §6; at least the 16 KiB limit of §4).
    max_message_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        """Refuse a message limit below the protocol's, which would refuse valid messages."""
        if self.max_message_bytes < MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes must be at least {MAX_MESSAGE_BYTES} (docs/protocol.md)"
            )


@dataclass
class BatchResult:
    """What a committed batch did; ``receipts`` are to be published now (after the commit).

    ``receipts`` holds ``(device_id, signed receipt bytes)`` for every new entry and for every
    duplicate of a logged message (the stored receipt again), in processing order.
    """

    receipts: list[tuple[str, bytes]] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    parked: int = 0
    unparked: int = 0
    rejected: collections.Counter[RejectReason] = field(default_factory=collections.Counter)
    alerts: list[str] = field(default_factory=list)


class _Sql:
    """Driver-level SQL for the hot path (executemany without SQLAlchemy's per-row work).

    The statements are fixed texts (S608 is silenced: only constant table and column names and
    placeholders are interpolated); only the placeholders differ: ``?`` for sqlite3 (qmark),
    ``%s`` for psycopg (format). Values always travel as parameters.
    """

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        p = "?" if self.sqlite else "%s"
        self.p = p
        # PostgreSQL types the VALUES columns from the parameters: say what they are.
        self.pair = f"({p}, {p})" if self.sqlite else f"(CAST({p} AS VARCHAR), CAST({p} AS BIGINT))"
        self.insert_log = (
            'INSERT INTO log_entries ("index", kind, raw, raw_sha256, entry, leaf_hash, '  # noqa: S608
            f"device_id, seq, received_ms, step, time_ms) VALUES ({', '.join([p] * 11)})"
        )
        self.insert_link = (
            "INSERT INTO chain_links (product_key, pseq, log_index, prev_hash) "  # noqa: S608
            f"VALUES ({p}, {p}, {p}, {p})"
        )
        self.queue_contracts = (
            "INSERT INTO contract_queue (product_key, queued_ms) "  # noqa: S608
            f"VALUES ({p}, {p}) ON CONFLICT (product_key) DO NOTHING"
        )
        self.insert_receipt = (
            "INSERT INTO receipts (device_id, seq, log_index, raw) "  # noqa: S608
            f"VALUES ({p}, {p}, {p}, {p})"
        )
        # The reads of every batch ({in} is the placeholder list of select_in).
        self.devices = "SELECT id, party_id FROM devices WHERE id IN ({in})"
        self.keys = (
            "SELECT id, device_id, kid, public_key, valid_from_ms, valid_until_ms, revoked_ms "
            "FROM device_keys WHERE device_id IN ({in})"
        )
        self.closed_keys = (
            "SELECT device_id, kid, valid_until_ms, revoked_ms FROM device_keys "
            "WHERE device_id IN ({in}) AND (valid_until_ms IS NOT NULL OR revoked_ms IS NOT NULL)"
        )
        # Each product row with the head of its chain (the link with the highest pseq, found
        # through the (product_key, pseq) primary key, not by scanning the chain) and the leaf
        # hash of the head's entry.
        self.products = (
            'SELECT p."key", p.owner_party_id, p.holder_party_id, p.pending_party_id, '
            "p.commissioned_index, l.pseq, e.leaf_hash FROM products p "
            'LEFT OUTER JOIN chain_links l ON l.product_key = p."key" AND l.pseq = '
            '(SELECT max(i.pseq) FROM chain_links i WHERE i.product_key = p."key") '
            'LEFT OUTER JOIN log_entries e ON e."index" = l.log_index WHERE p."key" IN ({in})'
        )
        self.items = 'SELECT item_key, "key" FROM products WHERE item_key IN ({in})'
        self.parties = "SELECT id FROM parties WHERE id IN ({in})"
        self.top_index = 'SELECT max("index") FROM log_entries'
        self.any_parked = "SELECT 1 FROM parked_messages LIMIT 1"

    def select_in(self, conn: Connection, template: str, values: Iterable[Any]) -> Iterator[Any]:
        """The rows of ``template`` for ``values``, its ``{in}`` filled with their placeholders.

        At most 500 values a statement (well under SQLite's and psycopg's parameter limits).
        """
        ordered = list(values)
        for start in range(0, len(ordered), 500):
            chunk = tuple(ordered[start : start + 500])
            sql = template.replace("{in}", ", ".join([self.p] * len(chunk)))
            yield from conn.exec_driver_sql(sql, chunk)

    def by_pairs(self, columns: str, table: str, count: int) -> str:
        """``SELECT columns FROM table`` for ``count`` (device_id, seq) pairs.

        A ``WITH wanted(device_id, seq) AS (VALUES ...)`` joined to the table's unique
        (device_id, seq) index: one index probe per pair on both engines (SQLite would scan
        the whole index for ``(device_id, seq) IN (VALUES ...)``).
        """
        rows = ", ".join([self.pair] * count)
        return (
            f"WITH wanted(device_id, seq) AS (VALUES {rows}) SELECT {columns} FROM wanted "  # noqa: S608
            f"JOIN {table} t ON t.device_id = wanted.device_id AND t.seq = wanted.seq"
        )


@functools.cache
def _sql(dialect: str) -> _Sql:
    """The statements of ``dialect`` (built once per process)."""
    return _Sql(dialect)


def _flat(pairs: Iterable[tuple[str, int]]) -> tuple[str | int, ...]:
    return tuple(value for pair in sorted(set(pairs)) for value in pair)


def _check_key(row: Any, device: str, kid: bytes, at_ms: int, *, rotation: bool = False) -> bytes:
    """Return the public key for ``kid`` at device time ``at_ms`` (rule 4).

    Same rule and details as :func:`tracecore.storage.registry.key_for`, on a preloaded row.
    A key rotation signed by a key rotated out already (and not revoked at its time) passes:
    the rotation rules refuse it as bad_rotation, whatever its time (docs/protocol.md §5).
    """
    if row is None:
        raise UnknownKey(f"device {device!r} has no key with kid {kid.hex()}")
    if (
        rotation
        and row.valid_until_ms is not None
        and (row.revoked_ms is None or at_ms < row.revoked_ms)
    ):
        return bytes(row.public_key)
    refusal = key_window_refusal(row.valid_from_ms, row.valid_until_ms, row.revoked_ms, at_ms)
    if refusal is not None:
        raise RevokedKey(f"key {kid.hex()} of {device!r} {refusal}")
    return bytes(row.public_key)


@dataclass(slots=True)
class _KeyRow:
    """A device key as read under the write lock, updated in memory by accepted rotations."""

    id: int | None  # None: added by a rotation of this batch
    device_id: str
    kid: bytes
    public_key: bytes
    valid_from_ms: int
    valid_until_ms: int | None
    revoked_ms: int | None

    @classmethod
    def of(cls, row: Any) -> _KeyRow:
        """The key of a row of :attr:`_Sql.keys` (id, device_id, kid, public_key, windows)."""
        key_id, device_id, kid, public_key, valid_from_ms, valid_until_ms, revoked_ms = row
        return cls(
            key_id,
            device_id,
            bytes(kid),
            bytes(public_key),
            valid_from_ms,
            valid_until_ms,
            revoked_ms,
        )


def _topic_device(topic: str) -> str | None:
    """The device an up topic names, or None (for the device column of a rejection only)."""
    try:
        return device_from_up_topic(topic)
    except MalformedMessage:
        return None


class _Rejections:
    """The refusals of one transaction, stored bounded (docs/storage.md, "rejections").

    Rows are keyed by (topic, reason, SHA-256 of the whole payload): the same bytes refused
    again for the same reason on the same topic count on the existing row (``received_count``,
    ``last_received_ms``) instead of adding a copy, so a device resending a refused message
    cannot grow the table. A different reason gets its own row: each refusal keeps its reason.
    A ``too_large`` payload keeps only its first :data:`REJECTION_PREFIX_BYTES` bytes; every
    other refused payload was within the message limit and is kept whole.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, bytes], dict[str, Any]] = {}

    def add(
        self,
        *,
        raw: bytes,
        topic: str,
        received_ms: int,
        reason: RejectReason,
        detail: str,
        device: str | None,
        seq: int | None,
    ) -> None:
        """Count one refusal of ``raw``: a new row, or one more on this batch's row."""
        sha = hashlib.sha256(raw).digest()
        key = (topic, reason.value, sha)
        row = self.rows.get(key)
        if row is not None:
            row["received_count"] += 1
            row["received_ms"] = min(row["received_ms"], received_ms)
            row["last_received_ms"] = max(row["last_received_ms"], received_ms)
            return
        self.rows[key] = {
            "raw": raw[:REJECTION_PREFIX_BYTES] if reason is RejectReason.TOO_LARGE else raw,
            "raw_length": len(raw),
            "raw_sha256": sha,
            "topic": topic,
            "reason": reason.value,
            "detail": detail,
            "device_id": device,
            "seq": seq,
            "received_ms": received_ms,
            "received_count": 1,
            "last_received_ms": received_ms,
        }

    def write(self, conn: Connection) -> None:
        """Store the rows: add to the stored row of the same key, else insert.

        Runs under the ingest write lock (every writer of ``rejections`` holds it), so no
        other transaction adds a row of the same key between the look-up and the write.
        """
        if not self.rows:
            return
        stored: dict[tuple[str, str, bytes], int] = {}
        shas = sorted({key[2] for key in self.rows})
        for start in range(0, len(shas), 500):
            for row_id, topic, reason, sha in conn.execute(
                select(
                    _REJECTIONS.c.id,
                    _REJECTIONS.c.topic,
                    _REJECTIONS.c.reason,
                    _REJECTIONS.c.raw_sha256,
                )
                .where(_REJECTIONS.c.raw_sha256.in_(shas[start : start + 500]))
                .order_by(_REJECTIONS.c.id)
            ):
                stored.setdefault((topic, reason, bytes(sha)), row_id)
        updates = [
            {
                "b_id": stored[key],
                "b_count": row["received_count"],
                "b_last": row["last_received_ms"],
            }
            for key, row in self.rows.items()
            if key in stored
        ]
        inserts = [row for key, row in self.rows.items() if key not in stored]
        if updates:
            last = _REJECTIONS.c.last_received_ms
            conn.execute(
                _REJECTIONS.update()
                .where(_REJECTIONS.c.id == bindparam("b_id"))
                .values(
                    received_count=_REJECTIONS.c.received_count + bindparam("b_count"),
                    last_received_ms=case(
                        (last < bindparam("b_last"), bindparam("b_last")), else_=last
                    ),
                ),
                updates,
            )
        if inserts:
            conn.execute(_REJECTIONS.insert(), inserts)


_Checked: TypeAlias = tuple[Inbound, SignedMessage, str]  # message, parsed, device's party


@dataclass(slots=True, eq=False)
class _Msg:
    """A message that passed rules 1-7 (or was parked after passing them)."""

    topic: str
    raw: bytes
    received_ms: int
    signed: SignedMessage
    sha: bytes
    party: str
    parked_id: int | None = None  # its parked_messages row, if it was parked earlier
    expires_ms: int = 0
    waiting: set[str] = field(default_factory=set)  # products it is parked for
    parked: bool = False  # parked, in the table or earlier in this batch
    done: bool = False  # parked, then applied or refused in this batch
    shrunk: bool = False  # parked in the table, and some products it waited for exist now

    @property
    def device(self) -> str:
        return self.signed.message.device

    @property
    def seq(self) -> int:
        return self.signed.message.seq


@dataclass(slots=True)
class PreparedBatch:
    """A batch after :meth:`Processor.prepare`: checked as far as reads allow, signatures under
    way; :meth:`Processor.commit` finishes it."""

    _run: _Run
    _checked: list[_Checked]
    size: int
    used: bool = False


class Processor:
    """Verify, sequence and commit batches of device messages (design.md, "Ingest rules").

    Thread-safe for one caller at a time per instance; several instances (or processes) may
    share a database: the write lock serializes their transactions.
    """

    def __init__(
        self, engine: Engine, log_key: SignerKey, config: IngestConfig = IngestConfig()
    ) -> None:
        """Bind to a migrated database and the log's signing key; start the verify pool."""
        self._engine = engine
        self._log_key = log_key
        self.config = config
        self._pool = SignaturePool(
            log_key.signing_key,
            processes=config.signature_processes,
            threads=max(1, config.verify_threads),
        )

    def close(self) -> None:
        """Shut down the signature pool (waits for running checks)."""
        self._pool.close()

    def _before_commit(self, conn: Connection) -> None:
        """Hook run inside the transaction right before the commit (tests inject failures)."""

    def process(self, batch: Sequence[Inbound], now_ms: int) -> BatchResult:
        """Verify, sequence and commit ``batch`` in one transaction; return after the commit.

        Every message ends up exactly one way: a new log entry with a receipt, a duplicate
        (the stored receipt again, or nothing for a parked duplicate), parked, or a stored
        rejection. Parked messages that a commissioning in this batch unblocks are applied in
        the same transaction, right after that commissioning. If anything fails, the
        transaction rolls back, nothing of the batch is stored and the error propagates (no
        receipts are returned). The same as :meth:`commit` of :meth:`prepare`.
        """
        return self.commit(self.prepare(batch, now_ms))

    def prepare(self, batch: Sequence[Inbound], now_ms: int) -> PreparedBatch:
        """Apply rules 0-5 to ``batch`` (reads only) and start its signature checks.

        Needs no lock and writes nothing, so the service prepares the next batch while the
        previous one commits (docs/ingest.md, "Where the work runs"). Everything that depends
        on what is committed (keys again, duplicates, rights, sequencing) is decided by
        :meth:`commit` under the write lock, so a batch prepared before its predecessor
        committed ends up exactly as if it had been processed after it.
        """
        result = BatchResult()
        run = _Run(self._pool, self.config, result, now_ms)
        topics: list[tuple[Inbound, str]] = []
        limit = self.config.max_message_bytes
        for inbound in batch:
            if len(inbound.payload) > limit:  # rule 0: never parsed, only a prefix is kept
                run.reject_raw(
                    inbound,
                    RejectReason.TOO_LARGE,
                    f"message is {len(inbound.payload)} bytes, more than this service's "
                    f"{limit}-byte limit (not read)",
                    _topic_device(inbound.topic),
                    None,
                )
                continue
            try:  # rule 1 for the topic
                topics.append((inbound, device_from_up_topic(inbound.topic)))
            except MalformedMessage as exc:
                run.reject_raw(inbound, RejectReason.MALFORMED, exc.detail, None, None)
        # Rules 1-5 before the write lock (only reads): the lock is held for sequencing only,
        # which keeps several ingest workers on one database from waiting on each other.
        checked = run.check(self._engine, topics)
        return PreparedBatch(_run=run, _checked=checked, size=len(batch))

    def commit(self, prepared: PreparedBatch) -> BatchResult:
        """Apply rules 4-9 to a prepared batch and commit it in one transaction (see process).

        A prepared batch commits at most once: after a failure (nothing was stored), prepare
        the batch again.
        """
        if prepared.used:
            raise ValueError("a prepared batch commits once; prepare the batch again")
        prepared.used = True
        run = prepared._run  # noqa: SLF001  (the processor's own object)
        if prepared.size == 0:
            return run.result
        with write_transaction(self._engine) as conn:
            run.execute(conn, prepared._checked)  # noqa: SLF001
            self._before_commit(conn)
        return run.result

    def expire_parked(self, now_ms: int) -> BatchResult:
        """Reject parked messages whose ``expires_ms`` has passed as ``unknown_product``.

        design.md: a message naming a product not yet commissioned waits up to
        ``park_ms`` (24 h by default) for the commissioning, then is rejected; the raw bytes
        move to ``rejections``. One transaction. A message that waited for a serialized key
        whose GTIN + serial was meanwhile commissioned under another key (another lot, or none)
        could never have been applied: it is rejected as ``serial_conflict``, naming that key.
        """
        result = BatchResult()
        with write_transaction(self._engine) as conn:
            rows = conn.execute(
                select(_PARKED).where(_PARKED.c.expires_ms <= now_ms).order_by(_PARKED.c.id)
            ).all()
            if not rows:
                return result
            ids = [row.id for row in rows]
            waiting: dict[int, list[str]] = collections.defaultdict(list)
            for parked_id, key in conn.execute(
                select(_PARKED_PRODUCTS.c.parked_id, _PARKED_PRODUCTS.c.product_key)
                .where(_PARKED_PRODUCTS.c.parked_id.in_(ids))
                .order_by(_PARKED_PRODUCTS.c.product_key)
            ):
                waiting[parked_id].append(key)
            taken = _taken_items(conn, {key for keys in waiting.values() for key in keys})
            rejections = _Rejections()
            for row in rows:
                keys = ", ".join(repr(key) for key in waiting[row.id]) or "(none recorded)"
                conflicts = [
                    f"{key!r}: GTIN + serial {taken[key][0]!r} is registered as {taken[key][1]!r}"
                    for key in waiting[row.id]
                    if key in taken
                ]
                reason = RejectReason.SERIAL_CONFLICT if conflicts else RejectReason.UNKNOWN_PRODUCT
                rejections.add(
                    raw=bytes(row.raw),
                    topic=row.topic,
                    received_ms=row.received_ms,
                    reason=reason,
                    detail=(
                        f"no commissioning of {keys} arrived within "
                        f"{(row.expires_ms - row.received_ms) / 3_600_000:g} h "
                        f"(parked at {row.received_ms}, expired at {row.expires_ms})"
                        + (f", and none can: {'; '.join(conflicts)}" if conflicts else "")
                    ),
                    device=row.device_id,
                    seq=row.seq,
                )
                result.rejected[reason] += 1
            rejections.write(conn)
            conn.execute(_PARKED_PRODUCTS.delete().where(_PARKED_PRODUCTS.c.parked_id.in_(ids)))
            conn.execute(_PARKED.delete().where(_PARKED.c.id.in_(ids)))
            self._before_commit(conn)
        return result


def _taken_items(conn: Connection, keys: set[str]) -> dict[str, tuple[str, str]]:
    """For each of ``keys`` whose GTIN + serial a product of another key holds: (item, that key).

    The holder is the product of rank 0 (the one commissioned first, for items that had
    several products before migration 0008).
    """
    items: dict[str, list[str]] = collections.defaultdict(list)
    for key in keys:
        item = ProductKey.parse_canonical(key).item
        if item is not None:
            items[item.path].append(key)
    holders: dict[str, str] = {}
    ordered = sorted(items)
    for start in range(0, len(ordered), 500):
        rows = conn.execute(
            select(_PRODUCTS.c.item_key, _PRODUCTS.c.key).where(
                _PRODUCTS.c.item_key.in_(ordered[start : start + 500]),
                _PRODUCTS.c.item_rank == 0,
            )
        )
        holders.update({str(item_path): str(key) for item_path, key in rows})
    return {
        key: (item_path, holders[item_path])
        for item_path, waiting in items.items()
        if item_path in holders
        for key in waiting
        if key != holders[item_path]
    }


class _VerifyQueue:
    """Signature checks in pool chunks, and known-good results in between, in arrival order."""

    def __init__(self, pool: SignaturePool, futures: list[Future[list[Verdict]]]) -> None:
        self.pool = pool
        self.futures = futures
        self.tasks: list[VerifyTask] = []
        self.skipped = 0

    def add(self, signed: SignedMessage, public_key: bytes) -> None:
        """Queue one signature check (submitted with its chunk)."""
        self._flush_skipped()
        self.tasks.append(
            (signed.kid, signed.protected, signed.payload, signed.signature, public_key)
        )
        if len(self.tasks) == _CHUNK:
            self._flush_tasks()

    def known_good(self) -> None:
        """Record one message that needs no check (its bytes are logged already)."""
        self._flush_tasks()
        self.skipped += 1

    def flush(self) -> None:
        """Submit what is queued."""
        self._flush_tasks()
        self._flush_skipped()

    def _flush_tasks(self) -> None:
        if self.tasks:
            self.futures.append(self.pool.verify(self.tasks))
            self.tasks = []

    def _flush_skipped(self) -> None:
        if self.skipped:
            done: Future[list[Verdict]] = Future()
            done.set_result([None] * self.skipped)
            self.futures.append(done)
            self.skipped = 0


class _Run:
    """The state of one process() call: preloaded rows, in-memory updates, rows to write."""

    def __init__(
        self,
        pool: SignaturePool,
        config: IngestConfig,
        result: BatchResult,
        now_ms: int,
    ) -> None:
        self.pool = pool
        self.config = config
        self.result = result
        self.now_ms = now_ms
        self.conn: Connection
        self.sql: _Sql
        self.rejections = _Rejections()
        # State, loaded once per batch and updated in memory as messages are accepted.
        self.device_party: dict[str, str | None] = {}
        self.products: dict[str, ProductState | None] = {}
        # GTIN + serial (01/{gtin}/21/{serial}) -> keys of the products registered with it, for
        # every serialized key loaded: one product per item (ingest.rights, "one item, one key").
        self.items: dict[str, set[str]] = {}
        self.heads: dict[str, tuple[int, bytes]] = {}  # product -> (pseq, leaf hash)
        self.parties: set[str] = set()
        self.next_index = 0
        # Dedupe (rule 7): what the log, the parked table and this batch hold per device+seq.
        self.logged: dict[tuple[str, int], tuple[bytes, int]] = {}
        self.parked_db: dict[tuple[str, int], bytes] = {}
        self.seen: dict[tuple[str, int], _Msg] = {}  # accepted or parked in this batch
        # Parking: messages parked (earlier or now) by the product keys they wait for.
        self.waiting_on: dict[str, list[_Msg]] = collections.defaultdict(list)
        self.parked_loaded: set[str] = set()
        self.parked_by_id: dict[int, _Msg] = {}
        self.new_parked: list[_Msg] = []
        # Rows to write.
        self.log_rows: list[tuple[Any, ...]] = []
        self.link_rows: list[tuple[Any, ...]] = []
        self.new_products: dict[str, dict[str, Any]] = {}
        self.changed_products: set[str] = set()
        self.commissioned_later: dict[str, int] = {}  # pre-registered product -> index
        self.edges: dict[tuple[str, str], None] = {}
        self.receipts: list[Receipt] = []
        self.signing_submitted = 0
        self.sign_futures: list[Future[list[bytes]]] = []
        self.verify_futures: list[Future[list[Verdict]]] = []
        self.receipt_slots: list[tuple[str, int]] = []  # (device, seq) in result order
        self.stored_receipts: dict[tuple[str, int], bytes] = {}
        # Device keys by (device, kid): read before the lock, brought up to date under it
        # (rule 4 again, rotations), and changed in memory by the rotations of this batch.
        self.keys: dict[tuple[str, bytes], _KeyRow] = {}
        self.key_ends: list[tuple[int, int]] = []  # (device_keys id, valid_until_ms)
        self.new_keys: list[_KeyRow] = []
        # Latest device time of the messages of each device accepted or parked in this batch.
        self.latest_ms: dict[str, int] = {}

    # -- rejections -------------------------------------------------------------------------

    def reject_raw(
        self,
        inbound: Inbound,
        reason: RejectReason,
        detail: str,
        device: str | None,
        seq: int | None,
    ) -> None:
        """Record a rejection of an inbound message (stored with the batch)."""
        self._reject(
            raw=inbound.payload,
            topic=inbound.topic,
            received_ms=inbound.received_ms,
            reason=reason,
            detail=detail,
            device=device,
            seq=seq,
        )

    def _reject(
        self,
        *,
        raw: bytes,
        topic: str,
        received_ms: int,
        reason: RejectReason,
        detail: str,
        device: str | None,
        seq: int | None,
    ) -> None:
        self.rejections.add(
            raw=raw,
            topic=topic,
            received_ms=received_ms,
            reason=reason,
            detail=detail,
            device=device,
            seq=seq,
        )
        self.result.rejected[reason] += 1

    def reject_msg(self, msg: _Msg, reason: RejectReason, detail: str) -> None:
        """Record a rejection of a verified (possibly parked) message."""
        self._reject(
            raw=msg.raw,
            topic=msg.topic,
            received_ms=msg.received_ms,
            reason=reason,
            detail=detail,
            device=msg.device,
            seq=msg.seq,
        )

    def _known(self, key: str) -> ProductState:
        """The state of a product known to exist (accepted messages only touch those)."""
        state = self.products.get(key)
        if state is None:
            raise StorageError(f"internal error: product {key!r} has no state")
        return state

    # -- loading ----------------------------------------------------------------------------

    def load_devices(self, conn: Connection, device_ids: Iterable[str]) -> None:
        """Load the party of every device not loaded yet (``None``: not registered)."""
        todo = {d for d in device_ids if d not in self.device_party}
        if not todo:
            return
        self.device_party.update(dict.fromkeys(todo))
        sql = _sql(conn.dialect.name)
        rows = sql.select_in(conn, sql.devices, todo)
        for device_id, party_id in rows:
            self.device_party[device_id] = party_id

    def load_products(self, keys: Iterable[str]) -> None:
        """Load state and chain head of every product key not loaded yet."""
        todo = {k for k in keys if k not in self.products}
        if not todo:
            return
        self.products.update(dict.fromkeys(todo))
        # One query: each product row with the head of its chain (_Sql.products).
        products, heads = self.products, self.heads
        for key, owner, holder, pending, commissioned, pseq, leaf in self.sql.select_in(
            self.conn, self.sql.products, todo
        ):
            products[key] = ProductState(owner, holder, pending, commissioned is not None)
            if pseq is not None:
                heads[key] = (pseq, bytes(leaf))
        self._load_items(todo)

    def _load_items(self, keys: Iterable[str]) -> None:
        """Load the products registered with the item (GTIN + serial) of each serialized key.

        Through the unique index on (item_key, item_rank); run under the write lock, so no
        other writer adds a product of these items before this transaction commits.
        """
        wanted = set()
        for key in keys:
            item = ProductKey.parse_canonical(key).item
            if item is not None and item.path not in self.items:
                wanted.add(item.path)
        if not wanted:
            return
        for item_path in wanted:
            self.items[item_path] = set()
        for item_path, key in self.sql.select_in(self.conn, self.sql.items, sorted(wanted)):
            self.items[item_path].add(key)

    def load_parties(self, party_ids: set[str]) -> None:
        """Load which of ``party_ids`` are registered parties."""
        if party_ids:
            rows = self.sql.select_in(self.conn, self.sql.parties, party_ids)
            self.parties.update(party_id for (party_id,) in rows)

    def load_parked(self, keys: Iterable[str]) -> None:
        """Load the parked messages waiting for any of ``keys`` (not loaded yet)."""
        todo = {k for k in keys if k not in self.parked_loaded}
        if not todo:
            return
        self.parked_loaded |= todo
        waiting_for = select(_PARKED_PRODUCTS.c.parked_id).where(
            _PARKED_PRODUCTS.c.product_key.in_(todo)
        )
        rows = self.conn.execute(
            select(_PARKED, _PARKED_PRODUCTS.c.product_key)
            .join(_PARKED_PRODUCTS, _PARKED_PRODUCTS.c.parked_id == _PARKED.c.id)
            .where(_PARKED.c.id.in_(waiting_for))
            .order_by(_PARKED.c.received_ms, _PARKED.c.id)
        ).all()
        self.load_devices(self.conn, {row.device_id for row in rows})
        fresh: dict[int, _Msg] = {}
        for row in rows:
            if row.id in self.parked_by_id and row.id not in fresh:
                continue  # loaded before, with all the products it waits for
            msg = fresh.get(row.id)
            if msg is None:
                raw = bytes(row.raw)
                msg = _Msg(
                    topic=row.topic,
                    raw=raw,
                    received_ms=row.received_ms,
                    signed=parse_message(raw),  # it parsed when it was parked
                    sha=bytes(row.raw_sha256),
                    party=self.device_party[row.device_id] or "",
                    parked_id=row.id,
                    expires_ms=row.expires_ms,
                    parked=True,
                )
                fresh[row.id] = self.parked_by_id[row.id] = msg
            msg.waiting.add(row.product_key)
            self.waiting_on[row.product_key].append(msg)

    # -- the transaction --------------------------------------------------------------------

    def check(self, engine: Engine, topics: list[tuple[Inbound, str]]) -> list[_Checked]:
        """Rules 1-5: parse, device, topic, key; start the signature checks in the pool.

        Reads devices, keys and the log's hashes of the batch's (device, seq) pairs in one
        short read transaction (before the write lock; a key revoked in the same instant counts
        as revoked just after this batch). A resend of bytes already logged skips the signature
        check (rule 7 answers it with the stored receipt). Signature checks
        run in chunks in the pool while this thread parses the next messages; their results
        are collected by :meth:`execute` in arrival order.
        """
        parsed: list[tuple[Inbound, SignedMessage, str]] = []
        for inbound, topic_device in topics:
            try:  # rule 1
                parsed.append((inbound, parse_message(inbound.payload), topic_device))
            except MalformedMessage as exc:
                self.reject_raw(inbound, RejectReason.MALFORMED, exc.detail, topic_device, None)
        devices = {device for _, device in topics}
        pairs = {(s.message.device, s.message.seq) for _, s, _ in parsed}
        logged: dict[tuple[str, int], bytes] = {}
        with storage_errors(), engine.connect() as conn:
            sql = _sql(conn.dialect.name)
            self.load_devices(conn, devices)
            key_rows = self.keys = {}
            for row in sql.select_in(conn, sql.keys, devices):
                key = _KeyRow.of(row)
                key_rows[(key.device_id, key.kid)] = key
            if pairs:
                text = sql.by_pairs("t.device_id, t.seq, t.raw_sha256", "log_entries", len(pairs))
                for device, seq, sha in conn.exec_driver_sql(text, _flat(pairs)):
                    logged[(device, seq)] = bytes(sha)
        checked: list[_Checked] = []
        other_device: list[tuple[Inbound, SignedMessage, str]] = []
        verify = _VerifyQueue(self.pool, self.verify_futures)
        for inbound, signed, topic_device in parsed:
            message = signed.message
            if message.device != topic_device:  # rule 2 or 3, decided below
                other_device.append((inbound, signed, topic_device))
                continue
            party = self.device_party.get(message.device)
            if party is None:  # rule 2
                self.reject_raw(
                    inbound,
                    RejectReason.UNKNOWN_DEVICE,
                    f"device {message.device!r} is not registered",
                    message.device,
                    message.seq,
                )
                continue
            try:  # rule 4, at the message time
                public_key = _check_key(
                    key_rows.get((message.device, signed.kid)),
                    message.device,
                    signed.kid,
                    message.time,
                    rotation=isinstance(message, KeyRotation),
                )
            except MessageRejected as exc:
                self.reject_raw(inbound, exc.reason, exc.detail, message.device, message.seq)
                continue
            checked.append((inbound, signed, party))
            if logged.get((message.device, message.seq)) == signed.sha256:
                # A resend of bytes already in the log: their signature was verified when they
                # were logged, and the same bytes under the same key verify the same way. Rule
                # 7 answers it with the stored receipt; skipping rule 5 makes a resend storm
                # cost a look-up per message instead of an Ed25519 check.
                verify.known_good()
            else:
                verify.add(signed, public_key)  # rule 5, in the pool
        verify.flush()
        if other_device:
            self._reject_other_device(engine, other_device)
        return checked

    def _reject_other_device(
        self, engine: Engine, items: list[tuple[Inbound, SignedMessage, str]]
    ) -> None:
        """Rules 2 and 3 for messages whose payload names another device than their topic."""
        with storage_errors(), engine.connect() as conn:
            self.load_devices(conn, {signed.message.device for _, signed, _ in items})
        for inbound, signed, topic_device in items:
            message = signed.message
            if self.device_party.get(message.device) is None:  # rule 2
                self.reject_raw(
                    inbound,
                    RejectReason.UNKNOWN_DEVICE,
                    f"device {message.device!r} is not registered",
                    message.device,
                    message.seq,
                )
            else:  # rule 3
                self.reject_raw(
                    inbound,
                    RejectReason.TOPIC_MISMATCH,
                    f"payload device {message.device!r} arrived on the topic of device "
                    f"{topic_device!r}",
                    message.device,
                    message.seq,
                )

    def _verdicts(self) -> Iterator[Verdict]:
        """The signature check results in arrival order, waiting for each chunk as needed."""
        for future in self.verify_futures:
            yield from future.result()

    def execute(self, conn: Connection, checked: list[_Checked]) -> None:
        """Rules 5-9 and sequencing, inside the write transaction; then write everything."""
        self.conn = conn
        self.sql = _sql(conn.dialect.name)
        self._preload(checked)
        rotating = {s.message.device for _, s, _ in checked if isinstance(s.message, KeyRotation)}
        self._reload_keys({s.message.device for _, s, _ in checked}, rotating)
        limit = self.now_ms + self.config.max_clock_skew_ms
        for (inbound, signed, party), error in zip(checked, self._verdicts(), strict=True):
            message = signed.message
            try:  # rule 4 again, on the keys as they are now (module docstring)
                _check_key(
                    self.keys.get((message.device, signed.kid)),
                    message.device,
                    signed.kid,
                    message.time,
                    rotation=isinstance(message, KeyRotation),
                )
            except MessageRejected as exc:
                self.reject_raw(inbound, exc.reason, exc.detail, message.device, message.seq)
                continue
            if error is not None:  # rule 5
                reason, detail = error
                self.reject_raw(inbound, reason, detail, message.device, message.seq)
                continue
            if message.time > limit:  # rule 6
                self.reject_raw(
                    inbound,
                    RejectReason.CLOCK_SKEW,
                    f"message time {message.time} is {message.time - self.now_ms} ms ahead of "
                    f"the server time {self.now_ms} (at most {self.config.max_clock_skew_ms} "
                    f"ms allowed)",
                    message.device,
                    message.seq,
                )
                continue
            msg = _Msg(
                topic=inbound.topic,
                raw=inbound.payload,
                received_ms=inbound.received_ms,
                signed=signed,
                sha=signed.sha256,
                party=party,
                expires_ms=inbound.received_ms + self.config.park_ms,
            )
            if self._is_repeat(msg):  # rule 7
                continue
            if isinstance(message, KeyRotation):
                self.rotate(msg, message)
                continue
            self._apply(msg)  # rules 8 and 9
        self._write()

    def _reload_keys(self, devices: set[str], rotating: set[str]) -> None:
        """Bring the keys read before the lock up to date, under the write lock.

        A key's window only ever closes (rotated out, revoked), so for most devices it is
        enough to read the windows that are closed; the devices that rotate in this batch get
        their whole key history (new keys included), which the rotation rules look at.
        """
        closed = self.sql.select_in(self.conn, self.sql.closed_keys, sorted(devices - rotating))
        for device_id, kid, valid_until_ms, revoked_ms in closed:
            row = self.keys.get((device_id, bytes(kid)))
            if row is not None:  # a key added since is unknown to this batch's messages
                row.valid_until_ms, row.revoked_ms = valid_until_ms, revoked_ms
        for full in self.sql.select_in(self.conn, self.sql.keys, sorted(rotating)):
            key = _KeyRow.of(full)
            self.keys[(key.device_id, key.kid)] = key

    def rotate(self, msg: _Msg, rotation: KeyRotation) -> None:
        """Accept a device's key rotation or refuse it as bad_rotation (docs/protocol.md §5).

        Accepted: the message gets its device_message entry and receipt, a key_rotated entry
        follows it, the signing key ends and the new key starts at the rotation time.
        """
        try:
            old, until = self._check_rotation(msg, rotation)
        except BadRotation as exc:
            self.reject_msg(msg, exc.reason, exc.detail)
            return
        self._sequence(msg, Decision(Outcome.ACCEPT))
        entry = KeyRotated(rotation.device, rotation.new_key, until, self.now_ms).to_bytes()
        self.log_rows.append(
            (
                self.next_index,
                "key_rotated",
                None,
                hashlib.sha256(entry).digest(),  # no device bytes: the entry's own hash
                entry,
                leaf_hash(entry),
                rotation.device,
                None,
                self.now_ms,
                None,
                None,
            )
        )
        self.next_index += 1
        old.valid_until_ms = until  # a key added earlier in this batch is inserted with it
        if old.id is not None:
            self.key_ends.append((old.id, until))
        new = _KeyRow(
            id=None,
            device_id=rotation.device,
            kid=device_kid(rotation.new_key),
            public_key=rotation.new_key,
            valid_from_ms=until,
            valid_until_ms=None,
            revoked_ms=None,
        )
        self.new_keys.append(new)
        self.keys[(new.device_id, new.kid)] = new

    def _check_rotation(self, msg: _Msg, rotation: KeyRotation) -> tuple[_KeyRow, int]:
        """The rotation rules; return the signing key and the rotation time, or raise."""
        device, kid = rotation.device, msg.signed.kid
        signer = self.keys[(device, kid)]  # rule 4 found it under the lock
        rows = [row for (owner, _), row in self.keys.items() if owner == device]
        current = [row for row in rows if row.valid_until_ms is None]
        if signer.valid_until_ms is not None:
            now = ", ".join(row.kid.hex() for row in current) or "none"
            raise BadRotation(
                f"signed by key {kid.hex()} of {device!r}, which was rotated out at "
                f"{signer.valid_until_ms} (the current key is {now}): only the current key "
                f"may rotate, so this is a second or forked rotation by an old key"
            )
        if signer.revoked_ms is not None:
            raise BadRotation(
                f"key {kid.hex()} of {device!r} is revoked since {signer.revoked_ms}: a revoked "
                f"key cannot hand over to a new one (the device's party registers a new key)"
            )
        verify_rotation_pop(rotation, kid)
        new_key = rotation.new_key
        if new_key == signer.public_key:
            raise BadRotation(f"new_key is the key {kid.hex()} that signs the rotation")
        if any(row.kid == device_kid(new_key) for row in rows):
            raise BadRotation(f"{device!r} has a key with kid {device_kid(new_key).hex()} already")
        taken = [row.device_id for row in self.new_keys if row.public_key == new_key]
        taken += self.conn.execute(
            select(_KEYS.c.device_id).where(_KEYS.c.public_key == new_key)
        ).scalars()
        if taken:
            raise BadRotation(
                f"new_key {device_kid(new_key).hex()} is registered already (device "
                f"{taken[0]!r}): a key belongs to one device, once"
            )
        return signer, self._rotation_time(device, rotation, signer)

    def _rotation_time(self, device: str, rotation: KeyRotation, signer: _KeyRow) -> int:
        """When the old key ends and the new one starts (docs/protocol.md §8, "Key rotation").

        The server's time, but never at or before the device time of the rotation itself or of
        any message of the device already accepted or parked: each of those stays signed by a
        key valid at its time, so a resent duplicate still gets its receipt and every bundle of
        accepted messages verifies (docs/keys.md).
        """
        latest = self.conn.execute(
            select(func.max(_LOG.c.time_ms)).where(
                _LOG.c.device_id == device, _LOG.c.kind == "device_message"
            )
        ).scalar()
        times = [rotation.time, self.latest_ms.get(device, 0)]
        if latest is not None:
            times.append(int(latest))
        for (raw,) in self.conn.execute(select(_PARKED.c.raw).where(_PARKED.c.device_id == device)):
            times.append(parse_message(bytes(raw)).message.time)  # it parsed when parked
        return max(self.now_ms, signer.valid_from_ms, max(times) + 1)

    def _preload(self, checked: list[_Checked]) -> None:
        """Load in a few queries the state the batch names (rule 7 dedupe, products, log)."""
        pairs = {(s.message.device, s.message.seq) for _, s, _ in checked}
        flat = _flat(pairs)
        if pairs:
            sql = self.sql.by_pairs(
                't.device_id, t.seq, t.raw_sha256, t."index"', "log_entries", len(pairs)
            )
            for device, seq, sha, index in self.conn.exec_driver_sql(sql, flat):
                self.logged[(device, seq)] = (bytes(sha), index)
        # Parked messages are rare: one probe of the table before a look-up of every pair.
        if pairs and self.conn.exec_driver_sql(self.sql.any_parked).first() is not None:
            sql = self.sql.by_pairs(
                "t.device_id, t.seq, t.raw_sha256", "parked_messages", len(pairs)
            )
            for device, seq, sha in self.conn.exec_driver_sql(sql, flat):
                self.parked_db[(device, seq)] = bytes(sha)
        keys: set[str] = set()
        commissioned: set[str] = set()
        destinations: set[str] = set()
        for _, signed, _ in checked:
            message = signed.message
            keys.update(key.path for key in message.products)
            if isinstance(message, Event):
                keys.update(key.path for key in message.parents)
                if message.step == COMMISSIONING:
                    commissioned.update(key.path for key in message.products)
                destination = None if message.data is None else message.data.get("destination")
                if isinstance(destination, str):
                    destinations.add(destination)
        self.load_products(keys)
        self.load_parties(destinations)
        self.load_parked(commissioned)
        top = self.conn.exec_driver_sql(self.sql.top_index).scalar()
        self.next_index = 0 if top is None else top + 1

    def _is_repeat(self, msg: _Msg) -> bool:
        """Rule 7: handle a duplicate or an equivocation; return True if it was one."""
        pair = (msg.device, msg.seq)
        earlier = self.seen.get(pair)
        if earlier is not None:
            old_sha, where = earlier.sha, "an earlier message of this batch"
            receipted = not earlier.parked
        elif pair in self.logged:
            old_sha, index = self.logged[pair]
            where, receipted = f"the log entry at index {index}", True
        elif pair in self.parked_db:
            old_sha, where, receipted = self.parked_db[pair], "a parked message", False
        else:
            return False
        if old_sha == msg.sha:
            # design.md: same device+seq and bytes is a duplicate: no new entry, the receipt
            # is sent again. A parked duplicate has no receipt yet: nothing to do.
            self.result.duplicates += 1
            if receipted:
                self.receipt_slots.append(pair)
            return True
        detail = (
            f"device {msg.device!r} seq {msg.seq}: received bytes with SHA-256 "
            f"{msg.sha.hex()}, but {where} holds SHA-256 {old_sha.hex()}"
        )
        self.reject_msg(msg, RejectReason.EQUIVOCATION, detail)
        alert = f"EQUIVOCATION {detail}"
        self.result.alerts.append(alert)
        log.error(
            "equivocation: device=%s seq=%d new_sha256=%s stored_sha256=%s (%s)",
            msg.device,
            msg.seq,
            msg.sha.hex(),
            old_sha.hex(),
            where,
        )
        return True

    def _apply(self, msg: _Msg) -> None:
        """Rules 8 and 9 for one message: accept and sequence it, refuse it, or park it."""
        message = msg.signed.message
        if isinstance(message, KeyRotation):  # never parked: rotations go to rotate()
            raise StorageError(f"internal error: rotation {msg.device}/{msg.seq} has no products")
        keys = [key.path for key in message.products]
        if isinstance(message, Event):
            keys += [key.path for key in message.parents]
            destination = None if message.data is None else message.data.get("destination")
            if isinstance(destination, str) and destination not in self.parties:
                self.load_parties({destination})
        self.load_products(keys)
        decision = decide(message, msg.party, self.products, self.parties, self.items)
        if decision.outcome is Outcome.UNAUTHORIZED:
            self._unpark_done(msg, accepted=False)
            self.reject_msg(msg, RejectReason.UNAUTHORIZED_PRODUCT, decision.detail)
        elif decision.outcome is Outcome.SERIAL_CONFLICT:
            self._unpark_done(msg, accepted=False)
            self.reject_msg(msg, RejectReason.SERIAL_CONFLICT, decision.detail)
        elif decision.outcome is Outcome.PARK:
            self._park(msg, decision.missing)
        else:
            self._unpark_done(msg, accepted=True)
            self._sequence(msg, decision)
            if decision.created:
                self._release(decision.created)

    def _park(self, msg: _Msg, missing: tuple[str, ...]) -> None:
        """Rule 9: keep ``msg`` until every product in ``missing`` is commissioned."""
        if not msg.parked:  # newly parked
            msg.parked = True
            self.new_parked.append(msg)
            self._note_time(msg.device, msg.signed.message.time)
            self.seen[(msg.device, msg.seq)] = msg
            self.result.parked += 1
        elif msg.parked_id is not None and set(missing) != msg.waiting:
            msg.shrunk = True
        msg.waiting = set(missing)
        for key in missing:
            if msg not in self.waiting_on[key]:
                self.waiting_on[key].append(msg)

    def _unpark_done(self, msg: _Msg, *, accepted: bool) -> None:
        """Mark a parked message resolved: applied (``accepted``) or refused."""
        if not msg.parked:
            return
        msg.parked = False
        msg.done = True
        msg.waiting = set()
        if msg.parked_id is not None:
            self.result.unparked += 1
            self.parked_db.pop((msg.device, msg.seq), None)
        else:  # parked earlier in this same batch: never stored
            self.result.parked -= 1
            self.new_parked.remove(msg)
        if not accepted:
            self.seen.pop((msg.device, msg.seq), None)

    def _release(self, created: tuple[str, ...]) -> None:
        """Apply the parked messages that waited for the just-commissioned ``created``.

        They run right after the commissioning entry, in the order they were received, in
        this transaction (issue 3 §5): they get their entries and receipts now.
        """
        self.load_parked(created)
        candidates: dict[int, _Msg] = {}
        for key in created:
            for msg in self.waiting_on.pop(key, []):
                candidates.setdefault(id(msg), msg)
        for msg in sorted(candidates.values(), key=lambda m: m.received_ms):
            if not msg.parked:
                continue  # resolved meanwhile
            if msg.parked_id is not None and msg.expires_ms <= self.now_ms:
                continue  # expired: expire_parked() rejects it as unknown_product
            self._apply(msg)

    def _sequence(self, msg: _Msg, decision: Decision) -> None:
        """Assign the log index and chain positions; build the entry and the receipt."""
        message = msg.signed.message
        index = self.next_index
        self.next_index += 1
        chains = []
        for product in message.products:
            head = self.heads.get(product.path)
            if head is None:
                chains.append(ChainPosition(product, 1, GENESIS_PREV))
            else:
                chains.append(ChainPosition(product, head[0] + 1, head[1]))
        entry = DeviceMessageEntry(
            msg=msg.sha,
            device=message.device,
            seq=message.seq,
            received=msg.received_ms,
            chains=tuple(chains),
        )
        entry_bytes = entry.to_bytes()
        leaf = leaf_hash(entry_bytes)
        self.log_rows.append(
            (
                index,
                "device_message",
                msg.raw,
                msg.sha,
                entry_bytes,
                leaf,
                message.device,
                message.seq,
                msg.received_ms,
                message.step if isinstance(message, Event) else None,
                message.time,
            )
        )
        for chain in chains:
            path = chain.product.path
            self.heads[path] = (chain.pseq, leaf)
            self.link_rows.append((path, chain.pseq, index, chain.prev))
        for key in decision.created:
            state = self.products.get(key)
            if state is None:
                self.new_products[key] = {
                    "key": key,
                    "kind": None,
                    "owner_party_id": msg.party,
                    "created_ms": msg.received_ms,
                    "commissioned_index": index,
                    "holder_party_id": msg.party,
                    "pending_party_id": None,
                }
            else:  # registered through the API, commissioned now by its owner
                self.commissioned_later[key] = index
                self.changed_products.add(key)
            self.products[key] = ProductState(owner=msg.party, holder=msg.party, pending=None)
            self._take_item(key)
        for key, holder, pending in decision.custody:
            state = self._known(key)
            self.products[key] = ProductState(state.owner, holder, pending, state.commissioned)
            if key in self.new_products:
                self.new_products[key]["holder_party_id"] = holder
                self.new_products[key]["pending_party_id"] = pending
            else:
                self.changed_products.add(key)
        for edge in decision.edges:
            self.edges[edge] = None
        self.receipts.append(
            Receipt(
                device=message.device,
                seq=message.seq,
                index=index,
                entry=leaf,
                msg=msg.sha,
                time=msg.received_ms,
            )
        )
        if len(self.receipts) - self.signing_submitted >= _CHUNK:
            self._submit_signing()
        pair = (message.device, message.seq)
        self.receipt_slots.append(pair)
        self.seen[pair] = msg
        self.result.accepted += 1
        self._note_time(message.device, message.time)

    def _note_time(self, device: str, time: int) -> None:
        """Remember the latest device time of the device's messages kept by this batch."""
        if time > self.latest_ms.get(device, -1):
            self.latest_ms[device] = time

    def _take_item(self, key: str) -> None:
        """Note that the product ``key`` now holds its item: later messages see it taken."""
        item = ProductKey.parse_canonical(key).item
        if item is not None:
            self.items.setdefault(item.path, set()).add(key)

    def _submit_signing(self) -> None:
        """Sign the receipts built since the last call, in the pool."""
        chunk = self.receipts[self.signing_submitted :]
        self.signing_submitted = len(self.receipts)
        if chunk:
            self.sign_futures.append(self.pool.sign(chunk))

    # -- writing ----------------------------------------------------------------------------

    def _write(self) -> None:
        """Write every row of the batch with executemany, in foreign-key order."""
        conn = self.conn
        self._submit_signing()  # the pool signs while the rows are written
        if self.log_rows:
            conn.exec_driver_sql(self.sql.insert_log, self.log_rows)
        if self.new_products:
            conn.execute(_PRODUCTS.insert(), list(self.new_products.values()))
        self._update_products()
        if self.edges:
            self._insert_edges()
        if self.link_rows:
            conn.exec_driver_sql(self.sql.insert_link, self.link_rows)
            # The contracts of every product whose chain grew are evaluated again, by the
            # contract evaluator, once a checkpoint covers these entries (ingest.contracting).
            queued = sorted({row[0] for row in self.link_rows})
            conn.exec_driver_sql(self.sql.queue_contracts, [(key, self.now_ms) for key in queued])
        self._write_parked()
        self._write_keys()
        self.rejections.write(conn)
        receipt_bytes = [raw for future in self.sign_futures for raw in future.result()]
        if receipt_bytes:
            conn.exec_driver_sql(
                self.sql.insert_receipt,
                [
                    (r.device, r.seq, r.index, raw)
                    for r, raw in zip(self.receipts, receipt_bytes, strict=True)
                ],
            )
        new = {(r.device, r.seq): raw for r, raw in zip(self.receipts, receipt_bytes, strict=True)}
        missing = {pair for pair in self.receipt_slots if pair not in new}
        if missing:
            sql = self.sql.by_pairs("t.device_id, t.seq, t.raw", "receipts", len(missing))
            for device, seq, raw in conn.exec_driver_sql(sql, _flat(missing)):
                new[(device, seq)] = bytes(raw)
        for device, seq in self.receipt_slots:
            raw = new.get((device, seq))
            if raw is None:  # a logged entry without a stored receipt: cannot re-send
                log.warning("no stored receipt for device=%s seq=%d", device, seq)
                continue
            self.result.receipts.append((device, raw))

    def _write_keys(self) -> None:
        """Store what accepted rotations did to the device keys (after their log entries)."""
        if self.key_ends:
            self.conn.execute(
                _KEYS.update()
                .where(_KEYS.c.id == bindparam("b_id"))
                .values(valid_until_ms=bindparam("b_until")),
                [{"b_id": key_id, "b_until": until} for key_id, until in self.key_ends],
            )
        if self.new_keys:
            self.conn.execute(
                _KEYS.insert(),
                [
                    {
                        "device_id": row.device_id,
                        "kid": row.kid,
                        "public_key": row.public_key,
                        "valid_from_ms": row.valid_from_ms,
                        "valid_until_ms": row.valid_until_ms,
                        "revoked_ms": None,
                    }
                    for row in self.new_keys
                ],
            )

    def _update_products(self) -> None:
        changed = [key for key in self.changed_products if key not in self.new_products]
        if not changed:
            return
        rows = []
        for key in sorted(changed):
            state = self._known(key)
            rows.append(
                {
                    "b_key": key,
                    "holder_party_id": state.holder,
                    "pending_party_id": state.pending,
                }
            )
        self.conn.execute(
            _PRODUCTS.update()
            .where(_PRODUCTS.c.key == bindparam("b_key"))
            .values(
                holder_party_id=bindparam("holder_party_id"),
                pending_party_id=bindparam("pending_party_id"),
            ),
            rows,
        )
        commissioned = [
            {"b_key": key, "commissioned_index": index}
            for key, index in sorted(self.commissioned_later.items())
        ]
        if commissioned:
            self.conn.execute(
                _PRODUCTS.update()
                .where(_PRODUCTS.c.key == bindparam("b_key"))
                .values(commissioned_index=bindparam("commissioned_index")),
                commissioned,
            )

    def _insert_edges(self) -> None:
        rows = [{"product_key": p, "parent_key": q} for p, q in self.edges]
        if self.conn.dialect.name == "postgresql":
            statement: Any = pg_insert(_PARENTS).on_conflict_do_nothing()
        else:
            statement = sqlite_insert(_PARENTS).on_conflict_do_nothing()
        self.conn.execute(statement, rows)

    def _write_parked(self) -> None:
        """Remove resolved parked rows, shrink waiting sets, insert newly parked messages."""
        conn = self.conn
        resolved = [msg.parked_id for msg in self.parked_by_id.values() if msg.done]
        if resolved:
            conn.execute(
                _PARKED_PRODUCTS.delete().where(_PARKED_PRODUCTS.c.parked_id.in_(resolved))
            )
            conn.execute(_PARKED.delete().where(_PARKED.c.id.in_(resolved)))
        for msg in self.parked_by_id.values():  # still parked: forget products that exist now
            if not msg.parked or not msg.shrunk:
                continue
            conn.execute(
                _PARKED_PRODUCTS.delete().where(
                    _PARKED_PRODUCTS.c.parked_id == msg.parked_id,
                    _PARKED_PRODUCTS.c.product_key.not_in(msg.waiting),
                )
            )
        for msg in self.new_parked:
            parked_id = conn.execute(
                _PARKED.insert().returning(_PARKED.c.id),
                {
                    "device_id": msg.device,
                    "seq": msg.seq,
                    "raw": msg.raw,
                    "raw_sha256": msg.sha,
                    "topic": msg.topic,
                    "received_ms": msg.received_ms,
                    "expires_ms": msg.expires_ms,
                },
            ).scalar_one()
            conn.execute(
                _PARKED_PRODUCTS.insert(),
                [{"parked_id": parked_id, "product_key": key} for key in sorted(msg.waiting)],
            )
