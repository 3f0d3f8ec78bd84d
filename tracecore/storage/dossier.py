"""What the inspection console's product dossier and recall form read beside the evidence.

The dossier (docs/inspection.md, "The product dossier") shows a product's checked evidence as
the public scan computes it (:func:`tracecore.storage.trace.assess_product`); this module reads
the rest, all of it registry or statistics data, never evidence:

* the lineage graph's edges, one query per level and direction (:func:`neighbours`), and the
  owners of the products drawn (:func:`owners`);
* the recalls in the log (:func:`logged_recalls`), the ones that reach a product through its
  ancestors (:func:`recalls_reaching`) and which of many products a recall reaches
  (:func:`reached_by_recalls`), counted as soon as the recall is logged, before a checkpoint
  makes scans answer ``recalled``;
* the scans of products since a time (:func:`scans_since`) and how many of them were ever
  scanned (:func:`scanned`);
* the buyers' feedback on a product (:func:`feedback_on`);
* the stored contract results (:func:`stored_results`), with the log entries each finding cites.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.orm import Session

from tracecore.cbor import decode_strict
from tracecore.errors import AgritraceError
from tracecore.logentry import Recall, parse_any_entry
from tracecore.storage.evidence import MAX_LINEAGE, lineage
from tracecore.storage.models import REGISTRY_WHERE
from tracecore.storage.rawsql import fetch_all, fetch_one, marks

__all__ = [
    "FeedbackItem",
    "FeedbackSummary",
    "LoggedRecall",
    "ScanWindow",
    "StoredFinding",
    "StoredResult",
    "feedback_on",
    "logged_recalls",
    "neighbours",
    "owners",
    "reached_by_recalls",
    "recalls_reaching",
    "scanned",
    "scans_since",
    "stored_results",
]

# IN lists are cut into pieces of this many keys (well under every driver's parameter limit).
_CHUNK: Final = 500

_PARENT_EDGES: Final = (
    "SELECT product_key, parent_key FROM product_parents WHERE product_key IN ({})"
)
_CHILD_EDGES: Final = "SELECT parent_key, product_key FROM product_parents WHERE parent_key IN ({})"
_OWNERS: Final = 'SELECT "key", owner_party_id FROM products WHERE "key" IN ({})'
# Through the partial index of registry entries (tracecore.storage.models.REGISTRY_WHERE).
_RECALLS: Final = (
    'SELECT "index", entry FROM log_entries '  # noqa: S608 (constant text, ? marks)
    f"WHERE {REGISTRY_WHERE} AND kind = 'recall' ORDER BY \"index\""
)
_SCANS_SINCE: Final = (
    "SELECT COUNT(*), COUNT(DISTINCT client), MIN(at_ms), MAX(at_ms) FROM scans "
    "WHERE at_ms >= ? AND product_key IN ({})"
)
_SCANNED: Final = (
    "SELECT COUNT(DISTINCT product_key), COALESCE(SUM(scans), 0) FROM scan_clients "
    "WHERE product_key IN ({})"
)
_FEEDBACK_COUNTS: Final = (
    "SELECT COUNT(*), COALESCE(SUM(rating), 0), "
    "COALESCE(SUM(CASE WHEN complaint IS NOT NULL THEN 1 ELSE 0 END), 0) "
    "FROM feedback WHERE product_key = ?"
)
_FEEDBACK: Final = (
    "SELECT id, rating, complaint, at_ms FROM feedback WHERE product_key = ? "
    "ORDER BY at_ms DESC, id DESC LIMIT ?"
)
_RESULTS: Final = (
    "SELECT contract, status, log_size, evaluated_ms, result FROM contract_results "
    "WHERE product_key = ? ORDER BY contract"
)


def _chunks(keys: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


def neighbours(
    session: Session, keys: Iterable[str], direction: Literal["parents", "children"]
) -> dict[str, list[str]]:
    """Every parent (or child) of each of ``keys`` that has any, sorted: one step of lineage."""
    query = _PARENT_EDGES if direction == "parents" else _CHILD_EDGES
    found: dict[str, list[str]] = {}
    for chunk in _chunks(sorted(set(keys))):
        for key, other in fetch_all(session, query.format(marks(len(chunk))), list(chunk)):
            found.setdefault(str(key), []).append(str(other))
    return {key: sorted(others) for key, others in found.items()}


def owners(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """The owning party of each of ``keys`` that is a registered product."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(keys))):
        rows = fetch_all(session, _OWNERS.format(marks(len(chunk))), list(chunk))
        found.update((str(key), str(owner)) for key, owner in rows)
    return found


@dataclass(frozen=True, slots=True)
class LoggedRecall:
    """A recall entry of the log: its index, time, who recalled, why, the products it names."""

    index: int
    time_ms: int
    by: str
    reason: str
    products: tuple[str, ...]


def logged_recalls(session: Session) -> list[LoggedRecall]:
    """Every recall in the log, oldest first (checkpointed or not yet)."""
    found = []
    for index, entry in fetch_all(session, _RECALLS):
        recall = parse_any_entry(bytes(entry))
        if isinstance(recall, Recall):
            named = tuple(p.path for p in recall.products)
            found.append(LoggedRecall(int(index), recall.time, recall.by, recall.reason, named))
    return found


def recalls_reaching(session: Session, product: str) -> list[LoggedRecall]:
    """The recalls in the log that name ``product`` or one of its ancestors, oldest first.

    Raises :class:`~tracecore.errors.NotFound` for a product with more than
    :data:`~tracecore.storage.evidence.MAX_LINEAGE` ancestors, as bundles do.
    """
    recalls = logged_recalls(session)
    if not recalls:
        return []
    reach = set(lineage(session, product))
    return [r for r in recalls if reach.intersection(r.products)]


def reached_by_recalls(session: Session, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` a recall in the log reaches: it names them or one of their ancestors.

    Reads the recalls, then the ancestors of all ``keys`` together, one query per generation,
    at most :data:`~tracecore.storage.evidence.MAX_LINEAGE` products (further ancestors are not
    read: a product reached only through them is not counted).
    """
    named = {path for recall in logged_recalls(session) for path in recall.products}
    wanted = sorted(set(keys))
    if not named or not wanted:
        return set()
    parents: dict[str, list[str]] = {}
    seen = set(wanted)
    frontier = wanted
    while frontier and len(seen) <= MAX_LINEAGE:
        step = neighbours(session, frontier, "parents")
        parents.update(step)
        frontier = sorted({p for found in step.values() for p in found} - seen)
        seen.update(frontier)
    memo: dict[str, bool] = {}

    def reached(key: str) -> bool:
        # Iterative: lineages can be deeper than Python's recursion limit.
        stack = [key]
        while stack:
            top = stack[-1]
            if top in memo:
                stack.pop()
                continue
            if top in named:
                memo[top] = True
                stack.pop()
                continue
            pending = [p for p in parents.get(top, ()) if p not in memo]
            if pending:
                memo.setdefault(top, False)  # a cycle (never written by ingest) ends here
                stack.extend(pending)
                continue
            memo[top] = any(memo.get(p, False) for p in parents.get(top, ()))
            stack.pop()
        return memo[key]

    return {key for key in wanted if reached(key)}


@dataclass(frozen=True, slots=True)
class ScanWindow:
    """Scans of some products since a time: how many, by how many distinct clients, when."""

    scans: int
    clients: int
    first_ms: int | None
    last_ms: int | None


def scans_since(session: Session, products: Sequence[str], since_ms: int) -> ScanWindow:
    """The scans of any of ``products`` at or after ``since_ms`` (the scans log)."""
    if not products:
        return ScanWindow(0, 0, None, None)
    query = _SCANS_SINCE.format(marks(len(products)))
    count, clients, first, last = fetch_one(session, query, [since_ms, *products]) or (0, 0, 0, 0)
    return ScanWindow(
        int(count),
        int(clients),
        None if first is None else int(first),
        None if last is None else int(last),
    )


def scanned(session: Session, products: Sequence[str]) -> tuple[int, int]:
    """How many of ``products`` were ever scanned, and how many scans they had in all."""
    products_scanned, scans = 0, 0
    for chunk in _chunks(list(products)):
        row = fetch_one(session, _SCANNED.format(marks(len(chunk))), list(chunk)) or (0, 0)
        products_scanned += int(row[0])
        scans += int(row[1])
    return products_scanned, scans


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One buyer's rating, 1-5, and complaint if any."""

    id: int
    rating: int
    complaint: str | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """The feedback on a product: counts, the mean rating, the newest items."""

    count: int
    complaints: int
    mean: float | None
    newest: tuple[FeedbackItem, ...]


def feedback_on(session: Session, product: str, limit: int) -> FeedbackSummary:
    """The feedback on ``product``: every item counted, the ``limit`` newest listed."""
    count, total, complaints = fetch_one(session, _FEEDBACK_COUNTS, [product]) or (0, 0, 0)
    rows = fetch_all(session, _FEEDBACK, [product, limit])
    return FeedbackSummary(
        int(count),
        int(complaints),
        None if not count else int(total) / int(count),
        tuple(
            FeedbackItem(int(i), int(r), None if c is None else str(c), int(t))
            for i, r, c, t in rows
        ),
    )


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """One finding of a stored contract result, with the log indexes it cites."""

    text: str
    entries: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A contract result as the evaluator stored it (docs/contracts.md).

    ``findings`` is empty and ``unreadable`` set when the stored bytes do not decode as a
    result: the row is shown, not trusted.
    """

    contract: str
    status: str
    log_size: int
    evaluated_ms: int
    version: int | None
    findings: tuple[StoredFinding, ...]
    measures: Mapping[str, int]
    unreadable: str | None = None


def _findings(value: object) -> tuple[StoredFinding, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError("reasons are not a list")
    found = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:  # [text, entries]
            raise TypeError("a reason is not [text, entries]")
        text, entries = item
        if not isinstance(text, str) or not isinstance(entries, list | tuple):
            raise TypeError("a reason is not [text, entries]")
        if not all(type(e) is int and e >= 0 for e in entries):
            raise ValueError("a reason cites something other than log indexes")
        found.append(StoredFinding(text, tuple(entries)))
    return tuple(found)


def stored_results(session: Session, product: str) -> list[StoredResult]:
    """The contract results stored for ``product``, by contract id."""
    results = []
    for contract, status, log_size, evaluated, raw in fetch_all(session, _RESULTS, [product]):
        common = (str(contract), str(status), int(log_size), int(evaluated))
        try:
            decoded = decode_strict(bytes(raw), what="contract result")
            if not isinstance(decoded, dict):
                raise TypeError("not a map")  # noqa: TRY301 (one handler for every shape error)
            version = decoded.get("version")
            measures = decoded.get("measures") or {}
            if type(version) is not int or not isinstance(measures, dict):
                raise TypeError("no version or measures")  # noqa: TRY301
            results.append(
                StoredResult(
                    *common,
                    version=version,
                    findings=_findings(decoded.get("reasons", [])),
                    measures={str(k): int(v) for k, v in measures.items()},
                )
            )
        except (AgritraceError, ValueError, TypeError) as exc:
            results.append(StoredResult(*common, None, (), {}, unreadable=str(exc)))
    return results
