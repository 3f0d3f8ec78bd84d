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

from sqlalchemy import func, select, text
from sqlmodel import Session, col

from tracecore.bundle import Check, Inspection, Policy, inspect_bundle_memo
from tracecore.checkpoint import latest_checkpoint
from tracecore.errors import AgritraceError
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall, parse_any_entry
from tracecore.storage.evidence import build_bundle
from tracecore.storage.models import (
    ChainLink,
    ContractResult,
    Feedback,
    LogEntry,
    Party,
    Product,
    ProductParent,
    Scan,
    ScanClient,
)
from tracecore.verdict import Story, tell_story_memo

__all__ = [
    "CreditFacts",
    "ProductAssessment",
    "ScanStats",
    "assess_product",
    "children_of",
    "client_hash",
    "credit_facts",
    "feedback_count_since",
    "party_names",
    "record_scan",
    "scan_stats",
]


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
    row = session.get(Product, product.path)
    if row is None:
        return None
    checkpoint = latest_checkpoint(session)
    first = session.execute(
        select(func.min(col(ChainLink.log_index))).where(col(ChainLink.product_key) == product.path)
    ).scalar()
    if checkpoint is None or first is None or first >= checkpoint.size:
        pending = "recorded, waiting for the next signed checkpoint; retry in a few seconds"
        return ProductAssessment(product, row, None, None, (), None, pending=pending)
    try:
        bundle = build_bundle(session, product)
    except AgritraceError as exc:
        # The product is in a checkpoint, so its evidence must be assemblable: a missing leaf
        # or subtree hash means rows were deleted or edited.
        failed = Check("evidence", ok=False, detail=f"the stored evidence is incomplete: {exc}")
        return ProductAssessment(product, row, None, None, (failed,), None)
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
    rows = session.execute(
        select(col(Product.key), col(Product.owner_party_id)).where(col(Product.key).in_(lineage))
    ).all()
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
    stored = session.execute(
        select(func.count())
        .select_from(LogEntry)
        .where(col(LogEntry.index) >= low, col(LogEntry.index) < size)
    ).scalar_one()
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
    return sorted(
        session.scalars(
            select(col(ProductParent.product_key)).where(col(ProductParent.parent_key) == product)
        ).all()
    )


def party_names(session: Session, ids: set[str]) -> dict[str, str]:
    """Display names of the parties ``ids`` (registry data: shown next to the verified id)."""
    if not ids:
        return {}
    rows = session.execute(
        select(col(Party.id), col(Party.name)).where(col(Party.id).in_(sorted(ids)))
    ).all()
    return {str(party_id): str(name) for party_id, name in rows}


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


_UPSERT_CLIENT = text(
    # ON CONFLICT ... DO UPDATE: the same text on SQLite (>= 3.24) and PostgreSQL.
    "INSERT INTO scan_clients (product_key, client, first_ms, last_ms, scans, first_place) "
    "VALUES (:product, :client, :now, :now, 1, :place) "
    "ON CONFLICT (product_key, client) DO UPDATE SET "
    "last_ms = excluded.last_ms, scans = scan_clients.scans + 1"
)


def record_scan(
    session: Session, product: str, client: bytes, place: str | None, now_ms: int
) -> None:
    """Log one scan of ``product`` and count it for its client (durable at the commit)."""
    session.add(Scan(product_key=product, client=client, place=place, at_ms=now_ms))
    session.execute(
        _UPSERT_CLIENT, {"product": product, "client": client, "now": now_ms, "place": place}
    )


def scan_stats(session: Session, product: str, since_ms: int) -> ScanStats:
    """The scans of ``product``: all of them, the distinct clients since ``since_ms``, the first.

    Reads a few rows per client (scan_clients), never the whole scan log.
    """
    total = session.execute(
        select(func.coalesce(func.sum(col(ScanClient.scans)), 0)).where(
            col(ScanClient.product_key) == product
        )
    ).scalar_one()
    clients = session.execute(
        select(func.count()).where(
            col(ScanClient.product_key) == product, col(ScanClient.last_ms) >= since_ms
        )
    ).scalar_one()
    first = session.execute(
        select(col(ScanClient.first_ms), col(ScanClient.first_place))
        .where(col(ScanClient.product_key) == product)
        .order_by(col(ScanClient.first_ms), col(ScanClient.client))
        .limit(1)
    ).first()
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


def credit_facts(session: Session, party: str, start_ms: int, end_ms: int) -> CreditFacts:
    """Gather ``party``'s contract failures, recalls and complaints in ``[start_ms, end_ms]``."""
    owned = select(col(Product.key)).where(col(Product.owner_party_id) == party)
    failures = session.execute(
        select(
            col(ContractResult.product_key),
            col(ContractResult.contract),
            col(ContractResult.log_size),
        ).where(
            col(ContractResult.status) == "fail",
            col(ContractResult.product_key).in_(owned),
            col(ContractResult.evaluated_ms) >= start_ms,
            col(ContractResult.evaluated_ms) <= end_ms,
        )
    ).all()
    mine = set(session.scalars(owned).all())
    recalls: list[tuple[int, str, str]] = []
    rows = session.execute(
        select(col(LogEntry.index), col(LogEntry.entry)).where(
            col(LogEntry.kind) == "recall",
            col(LogEntry.received_ms) >= start_ms,
            col(LogEntry.received_ms) <= end_ms,
        )
    ).all()
    for index, entry in rows:
        recall = parse_any_entry(bytes(entry))
        if isinstance(recall, Recall):
            recalls.extend(
                (int(index), p.path, recall.reason) for p in recall.products if p.path in mine
            )
    complaints = session.execute(
        select(col(Feedback.id), col(Feedback.product_key)).where(
            col(Feedback.complaint).is_not(None),
            col(Feedback.product_key).in_(owned),
            col(Feedback.at_ms) >= start_ms,
            col(Feedback.at_ms) <= end_ms,
        )
    ).all()
    return CreditFacts(
        [(str(p), str(c), int(n)) for p, c, n in failures],
        recalls,
        [(int(i), str(p)) for i, p in complaints],
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
