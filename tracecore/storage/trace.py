"""What a scan reads from the database: the product's evidence, checked at scan time.

:func:`assess_product` builds the product's evidence bundle from the stored raw bytes (exactly
as ``GET /v1/bundle`` serves it), inspects it against the log key (:mod:`tracecore.bundle`) and
adds two checks only the database side can make:

``owner``
    the owner the products table names is the party of the device that signed the product's
    ``commissioning`` event (its registration is a log entry in the bundle);
``completeness``
    no log entry is missing from the database between the oldest chain head of the lineage and
    the checkpoint: deleting a product's newest entry leaves a chain that is intact but short,
    which only the gap in the log's indexes reveals.

Nothing here is cached between scans except pure functions of bytes (see tracecore.bundle):
editing a row changes the answer at the next scan.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from tracecore.bundle import Check, Inspection, Policy, inspect_bundle_memo
from tracecore.checkpoint import latest_checkpoint
from tracecore.errors import AgritraceError
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall, parse_any_entry
from tracecore.storage.evidence import bundle_at
from tracecore.storage.models import REGISTRY_WHERE, Feedback, Product
from tracecore.storage.rawsql import execute, fetch_all, fetch_one, marks
from tracecore.verdict import Story, tell_story_memo

__all__ = [
    "CreditFacts",
    "PartyInfo",
    "ProductAssessment",
    "ScanStats",
    "assess_product",
    "children_of",
    "client_hash",
    "credit_facts",
    "device_places",
    "feedback_count_since",
    "party_profiles",
    "recent_products",
    "record_scan",
    "scan_stats",
]


# The scan's queries, run on the driver's cursor (tracecore.storage.rawsql: the ORM's own cost
# was most of a scan's time).
_PRODUCT_COLUMNS = (
    "key",
    "kind",
    "owner_party_id",
    "created_ms",
    "commissioned_index",
    "holder_party_id",
    "pending_party_id",
)
_PRODUCT = (
    'SELECT "key", kind, owner_party_id, created_ms, commissioned_index, holder_party_id, '
    'pending_party_id FROM products WHERE "key" = ?'
)
_FIRST_LINK = "SELECT MIN(log_index) FROM chain_links WHERE product_key = ?"
_OWNERS = 'SELECT "key", owner_party_id FROM products WHERE "key" IN ({})'
_COUNT_ENTRIES = 'SELECT COUNT(*) FROM log_entries WHERE "index" >= ? AND "index" < ?'
_CHILDREN = "SELECT product_key FROM product_parents WHERE parent_key = ?"
_PROFILES = "SELECT id, name, kind, name_en, place, place_en, licence FROM parties WHERE id IN ({})"
_DEVICE_PLACES = "SELECT id, place, place_en FROM devices WHERE id IN ({})"
_PARTY_DEVICES = "SELECT id FROM devices WHERE party_id = ?"
# Through the unique (device_id, seq) index: a device's newest entries, never all of them.
_DEVICE_NEWEST = 'SELECT "index" FROM log_entries WHERE device_id = ? ORDER BY seq DESC LIMIT ?'
_LINKED = "SELECT product_key, log_index FROM chain_links WHERE log_index IN ({})"


@dataclass(frozen=True, slots=True)
class ProductAssessment:
    """A product's evidence as checked at scan time.

    ``pending`` is set (and ``inspection`` is None) while the product has no entry in a signed
    checkpoint yet; ``checks`` then holds nothing. When the stored evidence cannot even be
    assembled (rows deleted), ``inspection`` is None and ``checks`` holds the failed
    ``evidence`` check.
    """

    product: ProductKey
    row: Product
    inspection: Inspection | None
    story: Story | None
    checks: tuple[Check, ...]
    checkpoint: str | None
    pending: str | None = None

    @property
    def ok(self) -> bool:
        """True when there is evidence and every check passed."""
        return self.inspection is not None and all(check.ok for check in self.checks)


def assess_product(
    session: Session, product: ProductKey, policy: Policy
) -> ProductAssessment | None:
    """Check ``product``'s stored evidence now; None for a product the database does not know."""
    found = fetch_one(session, _PRODUCT, [product.path])
    if found is None:
        return None
    row = Product(**dict(zip(_PRODUCT_COLUMNS, found, strict=True)))
    checkpoint = latest_checkpoint(session)
    (first,) = fetch_one(session, _FIRST_LINK, [product.path]) or (None,)
    if checkpoint is None or first is None or first >= checkpoint.size:
        pending = "recorded, waiting for the next signed checkpoint; retry in a few seconds"
        return ProductAssessment(product, row, None, None, (), None, pending=pending)
    try:
        bundle = bundle_at(session, product, checkpoint)
    except AgritraceError as exc:
        # The product is in a checkpoint, so its evidence must be assemblable: a missing leaf
        # or subtree hash means rows were deleted or edited.
        failed = Check("evidence", ok=False, detail=f"the stored evidence is incomplete: {exc}")
        return ProductAssessment(product, row, None, None, (failed,), None)
    if bundle.index is None:
        # A log checkpointed before its first index root (an upgrade): the next checkpoint
        # round builds the index (docs/log.md, "The product index").
        pending = "the log's product index is being built; retry in a few seconds"
        return ProductAssessment(product, row, None, None, (), None, pending=pending)
    inspection = inspect_bundle_memo(bundle, policy)
    story = tell_story_memo(product.path, inspection)
    checks = [*inspection.report.checks]
    checks.append(_owner_check(session, story, inspection))
    checks.append(_completeness_check(session, inspection, story))
    return ProductAssessment(
        product, row, inspection, story, tuple(checks), bundle.checkpoint, pending=None
    )


def _owner_check(session: Session, story: Story, inspection: Inspection) -> Check:
    """The products table names, for the product and each ancestor, the verified owner."""
    if not inspection.report.ok:
        return Check("owner", ok=False, detail="not checked: the evidence did not verify")
    lineage = [story.product, *story.ancestors()]
    rows = fetch_all(session, _OWNERS.format(marks(len(lineage))), lineage)
    stored = {str(key): str(owner) for key, owner in rows}
    for key in lineage:
        signed = story.owners.get(key)
        if signed is None:
            return Check("owner", ok=False, detail=f"no signed commissioning event of {key}")
        if stored.get(key) != signed:
            return Check(
                "owner",
                ok=False,
                detail=f"the database names {stored.get(key)!r} as owner of {key}, but its "
                f"signed commissioning event comes from a device of {signed!r}",
            )
    return Check(
        "owner", ok=True, detail=f"{len(lineage)} product(s), each commissioned by its owner"
    )


def _completeness_check(session: Session, inspection: Inspection, story: Story) -> Check:
    if inspection.checkpoint is None:
        return Check("completeness", ok=False, detail="not checked: no verified checkpoint")
    size = inspection.checkpoint.size
    heads = story.heads
    if not heads:
        return Check("completeness", ok=False, detail="no chain in the evidence")
    low = min(heads.values())
    (stored,) = fetch_one(session, _COUNT_ENTRIES, [low, size]) or (0,)
    if stored != size - low:
        return Check(
            "completeness",
            ok=False,
            detail=f"{size - low - stored} log entries between index {low} and the checkpoint "
            f"size {size} are missing from the database",
        )
    return Check("completeness", ok=True, detail=f"log entries {low}..{size - 1} all present")


def children_of(session: Session, product: str) -> list[str]:
    """The products made from ``product`` (one step forward), sorted."""
    return sorted(str(key) for (key,) in fetch_all(session, _CHILDREN, [product]))


@dataclass(frozen=True, slots=True)
class PartyInfo:
    """A party's registered public profile (registry data: shown beside the verified id)."""

    id: str
    name: str
    kind: str
    name_en: str | None = None
    place: str | None = None
    place_en: str | None = None
    licence: str | None = None


def party_profiles(session: Session, ids: set[str]) -> dict[str, PartyInfo]:
    """The registered profiles of the parties ``ids`` that exist."""
    if not ids:
        return {}
    rows = fetch_all(session, _PROFILES.format(marks(len(ids))), sorted(ids))
    return {
        str(row[0]): PartyInfo(*(None if v is None else str(v) for v in row))  # type: ignore[arg-type]
        for row in rows
    }


def device_places(session: Session, ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
    """Where the devices ``ids`` are, as ``(Chinese, English)`` names (registry data)."""
    if not ids:
        return {}
    rows = fetch_all(session, _DEVICE_PLACES.format(marks(len(ids))), sorted(ids))
    return {
        str(device): (None if zh is None else str(zh), None if en is None else str(en))
        for device, zh, en in rows
    }


def recent_products(session: Session, party: str, limit: int, depth: int = 200) -> list[str]:
    """The products ``party``'s devices signed records of most recently, newest first.

    Only each device's ``depth`` newest log entries are read (the unique index on device and
    sequence number), so the cost does not grow with the party's history.
    """
    indexes: list[int] = []
    for (device,) in fetch_all(session, _PARTY_DEVICES, [party]):
        indexes.extend(int(i) for (i,) in fetch_all(session, _DEVICE_NEWEST, [device, depth]))
    newest: dict[str, int] = {}
    for start in range(0, len(indexes), 500):
        chunk = indexes[start : start + 500]
        for key, index in fetch_all(session, _LINKED.format(marks(len(chunk))), chunk):
            newest[str(key)] = max(newest.get(str(key), -1), int(index))
    ordered = sorted(newest.items(), key=lambda item: (-item[1], item[0]))
    return [key for key, _ in ordered[:limit]]


def client_hash(salt: bytes, client: str) -> bytes:
    """The 16-byte keyed hash that stands for a client (an address) in scans and feedback."""
    return hmac.new(salt, client.encode("utf-8"), hashlib.sha256).digest()[:16]


@dataclass(frozen=True, slots=True)
class ScanStats:
    """Scans of one product: all ``scans`` ever, the distinct ``clients`` within the copy
    window, and when and where (if the client said) the code was first scanned."""

    scans: int
    clients: int
    first_ms: int | None
    first_place: str | None


_INSERT_SCAN = "INSERT INTO scans (product_key, client, place, at_ms) VALUES (?, ?, ?, ?)"
_UPSERT_CLIENT = (
    # ON CONFLICT ... DO UPDATE: the same text on SQLite (>= 3.24) and PostgreSQL.
    "INSERT INTO scan_clients (product_key, client, first_ms, last_ms, scans, first_place) "
    "VALUES (?, ?, ?, ?, 1, ?) "
    "ON CONFLICT (product_key, client) DO UPDATE SET "
    "last_ms = excluded.last_ms, scans = scan_clients.scans + 1"
)
_SCAN_COUNTS = (
    "SELECT COALESCE(SUM(scans), 0), COALESCE(SUM(CASE WHEN last_ms >= ? THEN 1 ELSE 0 END), 0) "
    "FROM scan_clients WHERE product_key = ?"
)
_FIRST_SCAN = (
    "SELECT first_ms, first_place FROM scan_clients WHERE product_key = ? "
    "ORDER BY first_ms, client LIMIT 1"
)


def record_scan(
    session: Session, product: str, client: bytes, place: str | None, now_ms: int
) -> None:
    """Log one scan of ``product`` and count it for its client (durable at the commit)."""
    execute(session, _INSERT_SCAN, [product, client, place, now_ms])
    execute(session, _UPSERT_CLIENT, [product, client, now_ms, now_ms, place])


def scan_stats(session: Session, product: str, since_ms: int) -> ScanStats:
    """The scans of ``product``: all of them, the distinct clients since ``since_ms``, the first.

    Reads a few rows per client (scan_clients), never the whole scan log.
    """
    total, clients = fetch_one(session, _SCAN_COUNTS, [since_ms, product]) or (0, 0)
    first = fetch_one(session, _FIRST_SCAN, [product])
    return ScanStats(
        int(total),
        int(clients),
        None if first is None else int(first[0]),
        None if first is None else first[1],
    )


@dataclass(frozen=True, slots=True)
class CreditFacts:
    """A party's facts within a window, as stored: what credit scores are computed from.

    ``failures`` are (product, contract, log size) of failed contract results evaluated in the
    window; ``recalls`` (log index, product, reason) of recalls logged in the window naming one
    of the party's products; ``complaints`` (feedback id, product).
    """

    failures: list[tuple[str, str, int]]
    recalls: list[tuple[int, str, str]]
    complaints: list[tuple[int, str]]


# CROSS JOIN keeps SQLite's join order (PostgreSQL plans it freely): from the window's few
# failures and complaints to their products, never from every product of the party.
_FAILURES = (
    "SELECT r.product_key, r.contract, r.log_size FROM contract_results r CROSS JOIN products p "
    "WHERE r.status = 'fail' AND r.evaluated_ms >= ? AND r.evaluated_ms <= ? "
    'AND p."key" = r.product_key AND p.owner_party_id = ?'
)
_RECALLS = (
    'SELECT "index", entry FROM log_entries '  # noqa: S608 (constant text, ? marks)
    f"WHERE {REGISTRY_WHERE} AND kind = 'recall' AND received_ms >= ? AND received_ms <= ?"
)
_OWNED = 'SELECT "key" FROM products WHERE owner_party_id = ? AND "key" IN ({})'
_COMPLAINTS = (
    "SELECT f.id, f.product_key FROM feedback f CROSS JOIN products p "
    "WHERE f.complaint IS NOT NULL AND f.at_ms >= ? AND f.at_ms <= ? "
    'AND p."key" = f.product_key AND p.owner_party_id = ?'
)


def credit_facts(session: Session, party: str, start_ms: int, end_ms: int) -> CreditFacts:
    """Gather ``party``'s contract failures, recalls and complaints in ``[start_ms, end_ms]``."""
    failures = fetch_all(session, _FAILURES, [start_ms, end_ms, party])
    named: list[tuple[int, str, str]] = []
    for index, entry in fetch_all(session, _RECALLS, [start_ms, end_ms]):
        recall = parse_any_entry(bytes(entry))
        if isinstance(recall, Recall):
            named.extend((int(index), p.path, recall.reason) for p in recall.products)
    paths = sorted({path for _, path, _ in named})
    owned = fetch_all(session, _OWNED.format(marks(len(paths))), [party, *paths]) if paths else []
    mine = {str(key) for (key,) in owned}
    complaints = fetch_all(session, _COMPLAINTS, [start_ms, end_ms, party])
    return CreditFacts(
        sorted((str(p), str(c), int(n)) for p, c, n in failures),
        [fact for fact in named if fact[1] in mine],
        sorted((int(i), str(p)) for i, p in complaints),
    )


def feedback_count_since(session: Session, client: bytes, since_ms: int) -> int:
    """How many feedback submissions ``client`` made since ``since_ms`` (rate limiting)."""
    return int(
        session.execute(
            select(func.count()).where(
                col(Feedback.client) == client, col(Feedback.at_ms) >= since_ms
            )
        ).scalar_one()
    )
