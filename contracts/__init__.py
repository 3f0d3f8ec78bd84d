"""Deterministic compliance programs ("smart contracts") over a product's verified history.

Each contract (:class:`contracts.base.Contract`) has an id, a version, the kinds of product it
applies to, and ``evaluate(history)``; :func:`evaluate` runs every contract of
:data:`CONTRACTS` and returns one :class:`Result` each, recording the contract's id, version,
the SHA-256 of its source and the log size the history was verified at. The same history gives
byte-identical results (:meth:`Result.to_bytes`) from the database or from an evidence bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from contracts.animal_health import Brucellosis, DrugWithdrawal
from contracts.base import Contract, Reason, Result, Status, source_sha256
from contracts.cold_chain import ChilledMeat, ColdChainContinuity, EggColdChain
from contracts.history import KINDS, History
from contracts.trade import Custody, EggFreshness
from tracecore.verdict import Story

__all__ = [
    "CONTRACTS",
    "KINDS",
    "Brucellosis",
    "ChilledMeat",
    "ColdChainContinuity",
    "Contract",
    "Custody",
    "DrugWithdrawal",
    "EggColdChain",
    "EggFreshness",
    "History",
    "Reason",
    "Result",
    "Status",
    "evaluate",
    "evaluate_story",
]

#: The contracts in force, with their default thresholds.
CONTRACTS: Final[tuple[Contract, ...]] = (
    EggColdChain(),
    ChilledMeat(),
    DrugWithdrawal(),
    Brucellosis(),
    EggFreshness(),
    ColdChainContinuity(),
    Custody(),
)


def evaluate(
    history: History, log_size: int, contracts: Iterable[Contract] = CONTRACTS
) -> list[Result]:
    """Run ``contracts`` on ``history``; a contract not for this kind of product is
    ``not_applicable``. Results come in the order of ``contracts``."""
    results = []
    for contract in contracts:
        status: Status
        reasons: Sequence[Reason]
        measures: Mapping[str, int]
        if history.kind not in contract.kinds:
            status, measures = Status.NOT_APPLICABLE, {}
            reasons = (Reason(f"applies to {', '.join(sorted(contract.kinds))}"),)
        else:
            status, reasons, measures = contract.evaluate(history)
        results.append(
            Result(
                contract=contract.id,
                version=contract.version,
                source_sha256=source_sha256(contract),
                product=history.product,
                log_size=log_size,
                status=status,
                reasons=tuple(reasons),
                measures=dict(measures),
            )
        )
    return results


def evaluate_story(story: Story, log_size: int) -> list[Result]:
    """:func:`evaluate` on the history of a verified story."""
    return evaluate(History.from_story(story), log_size)
