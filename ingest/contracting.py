"""The contract evaluator: an asyncio task of the ingest service (design.md, "contracts
evaluated on changed products").

Ingest queues, in each batch's transaction, every product whose chain grew
(``contract_queue``). Every ``interval_s`` seconds this task takes up to ``batch`` queued
products, adds their descendants (a lot's readings matter to every carton packed from it), and
for each one whose entries a signed checkpoint covers: verifies its evidence exactly as a scan
does (:func:`tracecore.storage.trace.assess_product`), runs the contracts, stores the results
(``contract_results``, one row per product and contract, with the log size they saw) and takes it
off the queue. A product not yet in a checkpoint stays queued for a later round, as does one
whose evidence does not verify (logged: its results would be meaningless); either goes to the
back of the queue, so it never holds up the products queued after it.

The work runs in a worker thread, in its own transactions, so ingestion never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select, text, update
from sqlmodel import col

from contracts import evaluate_story
from tracecore.bundle import Policy
from tracecore.errors import AgritraceError
from tracecore.identifiers import ProductKey
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import descendants
from tracecore.storage.models import ChainLink, ContractQueue
from tracecore.storage.trace import assess_product

__all__ = ["EvaluationRound", "evaluate_pending", "run_contract_evaluator"]

_log = logging.getLogger(__name__)

_UPSERT = text(
    # The same text on SQLite (>= 3.24) and PostgreSQL.
    "INSERT INTO contract_results (product_key, contract, version, source_sha256, log_size, "
    "status, result, evaluated_ms) VALUES (:product, :contract, :version, :source, :size, "
    ":status, :result, :now) ON CONFLICT (product_key, contract) DO UPDATE SET "
    "version = excluded.version, source_sha256 = excluded.source_sha256, "
    "log_size = excluded.log_size, status = excluded.status, result = excluded.result, "
    "evaluated_ms = excluded.evaluated_ms"
)


@dataclass(frozen=True, slots=True)
class EvaluationRound:
    """What one round did: products evaluated up to their newest entry, products left queued
    (not wholly in a checkpoint yet, or not verifying), and results written."""

    evaluated: int
    waiting: int
    results: int


def evaluate_pending(
    engine: Engine, policy: Policy, now_ms: int, batch: int = 200
) -> EvaluationRound:
    """Evaluate up to ``batch`` queued products and their descendants (blocking)."""
    with session_scope(engine) as session:
        queued = list(
            session.scalars(
                select(col(ContractQueue.product_key))
                .order_by(col(ContractQueue.queued_ms), col(ContractQueue.product_key))
                .limit(batch)
            ).all()
        )
        if not queued:
            return EvaluationRound(0, 0, 0)
        products = sorted({*queued, *descendants(session, queued)})
    evaluated: list[str] = []
    waiting = written = 0
    for key in products:
        with session_scope(engine) as session:
            assessment = assess_product(session, ProductKey.parse_canonical(key), policy)
            if (
                assessment is None
                or assessment.story is None
                or assessment.inspection is None
                or not assessment.ok
            ):
                waiting += 1
                if assessment is not None and assessment.pending is None:
                    failed = ", ".join(c.name for c in assessment.checks if not c.ok)
                    _log.error("contracts of %s not evaluated: evidence fails %s", key, failed)
                continue
            size = assessment.inspection.report.size
            for result in evaluate_story(assessment.story, size):
                session.execute(
                    _UPSERT,
                    {
                        "product": key,
                        "contract": result.contract,
                        "version": result.version,
                        "source": result.source_sha256,
                        "size": size,
                        "status": result.status.value,
                        "result": result.to_bytes(),
                        "now": now_ms,
                    },
                )
                written += 1
            newest = session.execute(
                select(func.max(col(ChainLink.log_index))).where(col(ChainLink.product_key) == key)
            ).scalar()
            # Off the queue only when the checkpoint covers the product's newest entry.
            if newest is not None and newest < size:
                evaluated.append(key)
            else:
                waiting += 1
    done = [key for key in queued if key in set(evaluated)]
    later = [key for key in queued if key not in set(evaluated)]
    with session_scope(engine) as session:
        if done:
            session.execute(delete(ContractQueue).where(col(ContractQueue.product_key).in_(done)))
        if later:
            # To the back of the queue: a product that cannot be evaluated yet (or whose
            # evidence fails) must not hold up the products queued after it.
            session.execute(
                update(ContractQueue)
                .where(col(ContractQueue.product_key).in_(later))
                .values(queued_ms=now_ms)
            )
    return EvaluationRound(len(evaluated), waiting, written)


async def run_contract_evaluator(
    engine: Engine,
    policy: Policy,
    interval_s: float,
    stop: asyncio.Event,
    *,
    clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> None:
    """Evaluate queued products every ``interval_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            done = await asyncio.to_thread(evaluate_pending, engine, policy, clock())
        except AgritraceError as exc:
            _log.warning("contract round failed, retrying next round: %s", exc)
        else:
            if done.evaluated:
                _log.info(
                    "contracts evaluated for %d product(s), %d result(s); %d waiting",
                    done.evaluated,
                    done.results,
                    done.waiting,
                )
        remaining = interval_s - (time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, remaining))
