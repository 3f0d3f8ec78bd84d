"""Producer credit scores: 0-100 per party, explained deduction by deduction.

Pure: the caller gathers a party's contract failures, recalls and buyer complaints within a
window (tracecore.storage.trace does it from the database) and :func:`credit_score` turns them
into a score. Every deduction names what caused it, so a party can see exactly why its score is
what it is, and anyone with the same inputs gets the same score.

Default weights (:class:`Weights`): a failed contract costs 5 points per product, at most 30
per contract; a recall 20 points; a complaint 2 points, at most 20 in all. The score is
100 minus the deductions, never below 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Complaint",
    "CreditScore",
    "Deduction",
    "Failure",
    "RecallFact",
    "Weights",
    "credit_score",
]


@dataclass(frozen=True, slots=True)
class Failure:
    """A contract that failed for one of the party's products."""

    product: str
    contract: str
    log_size: int


@dataclass(frozen=True, slots=True)
class RecallFact:
    """A recall (log entry ``index``) naming one of the party's products."""

    index: int
    product: str
    reason: str


@dataclass(frozen=True, slots=True)
class Complaint:
    """A buyer's complaint (feedback ``id``) about one of the party's products."""

    id: int
    product: str


@dataclass(frozen=True, slots=True)
class Weights:
    """Points each kind of fact costs, and the caps."""

    failure: int = 5
    failure_cap_per_contract: int = 30
    recall: int = 20
    complaint: int = 2
    complaint_cap: int = 20


@dataclass(frozen=True, slots=True)
class Deduction:
    """Points taken off, and why: ``reason`` in words, and the facts for a page to show.

    ``kind`` is ``failure`` (``contract`` failed for ``products``), ``recall`` (the recall at
    log ``entry`` of ``products``) or ``complaints`` (``count`` complaints).
    """

    points: int
    reason: str
    kind: str = ""
    contract: str = ""
    products: tuple[str, ...] = ()
    entry: int | None = None
    count: int = 0


@dataclass(frozen=True, slots=True)
class CreditScore:
    """A party's score and the deductions that explain it."""

    party: str
    score: int
    deductions: tuple[Deduction, ...]


def credit_score(
    party: str,
    *,
    failures: Iterable[Failure],
    recalls: Iterable[RecallFact],
    complaints: Iterable[Complaint],
    weights: Weights = Weights(),
) -> CreditScore:
    """Score ``party`` from its facts (order of the inputs does not matter)."""
    deductions: list[Deduction] = []
    by_contract: dict[str, list[Failure]] = {}
    for failure in sorted(set(failures), key=lambda f: (f.contract, f.product)):
        by_contract.setdefault(failure.contract, []).append(failure)
    for contract, items in sorted(by_contract.items()):
        points = min(weights.failure * len(items), weights.failure_cap_per_contract)
        products = ", ".join(f.product for f in items[:5]) + (" ..." if len(items) > 5 else "")
        deductions.append(
            Deduction(
                points,
                f"{contract} failed for {len(items)} product(s): {products}",
                kind="failure",
                contract=contract,
                products=tuple(f.product for f in items),
                count=len(items),
            )
        )
    deductions.extend(
        Deduction(
            weights.recall,
            f"recall (entry {r.index}) of {r.product}: {r.reason}",
            kind="recall",
            products=(r.product,),
            entry=r.index,
            count=1,
        )
        for r in sorted(set(recalls), key=lambda r: (r.index, r.product))
    )
    complaint_list = sorted(set(complaints), key=lambda c: c.id)
    if complaint_list:
        points = min(weights.complaint * len(complaint_list), weights.complaint_cap)
        deductions.append(
            Deduction(
                points,
                f"{len(complaint_list)} buyer complaint(s)",
                kind="complaints",
                count=len(complaint_list),
            )
        )
    total = sum(d.points for d in deductions)
    return CreditScore(party, max(0, 100 - total), tuple(deductions))
