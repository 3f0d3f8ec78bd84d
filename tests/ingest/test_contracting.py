"""The contract evaluator: queued by ingest, evaluated once a checkpoint covers the entries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import col
from trace_kit import CARTON, CLIMATE, FLOCK, LOG, LOT, World, make_world

from ingest.contracting import evaluate_pending, run_contract_evaluator
from tracecore.bundle import Policy
from tracecore.message import Reading, Sensor
from tracecore.storage import session_scope
from tracecore.storage.models import ContractQueue, ContractResult, Product

POLICY = Policy(LOG.verifier, {}, 0)


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit (ingested, one checkpoint signed)."""
    with make_world(engine, app_client) as built:
        yield built


def _queued(engine: Engine) -> set[str]:
    with session_scope(engine) as session:
        return set(session.scalars(select(col(ContractQueue.product_key))).all())


def _results(engine: Engine) -> dict[tuple[str, str], ContractResult]:
    with session_scope(engine) as session:
        rows = session.scalars(select(ContractResult)).all()
        session.expunge_all()
        return {(r.product_key, r.contract): r for r in rows}


def test_ingest_queues_and_the_evaluator_stores_results(world: World) -> None:
    """Every product with new entries is queued; a round stores 7 results each and dequeues."""
    assert _queued(world.engine) == {FLOCK.path, LOT.path, CARTON.path}
    done = evaluate_pending(world.engine, POLICY, world.now[0])
    assert (done.evaluated, done.waiting, done.results) == (3, 0, 21)
    assert _queued(world.engine) == set()
    results = _results(world.engine)
    cold = results[(CARTON.path, "egg-cold-chain")]
    assert cold.status == "pass"
    assert cold.log_size == 10 + 1  # the world's 10 entries and the index root over them
    decoded = cbor2.loads(cold.result)
    assert decoded["product"] == CARTON.path
    assert decoded["source"] == cold.source_sha256
    assert results[(FLOCK.path, "egg-cold-chain")].status == "not_applicable"


def test_a_change_to_the_lot_reevaluates_the_carton_after_the_checkpoint(world: World) -> None:
    """A late warm reading of the lot waits for its checkpoint, then fails the carton too."""
    evaluate_pending(world.engine, POLICY, world.now[0])
    world.now[0] += 2 * 86_400_000
    world.send(
        CLIMATE,
        lambda seq, time: Reading(
            CLIMATE.name, seq, time, (LOT,), (Sensor("Temperature", 9.0, "CEL"),)
        ),
    )
    assert _queued(world.engine) == {LOT.path}
    waiting = evaluate_pending(world.engine, POLICY, world.now[0])
    assert waiting.waiting >= 1  # the reading is not in a checkpoint yet
    assert _queued(world.engine) == {LOT.path}
    world.checkpoint()
    done = evaluate_pending(world.engine, POLICY, world.now[0])
    assert done.evaluated == 2  # the lot and the carton made from it
    assert _queued(world.engine) == set()
    results = _results(world.engine)
    for key in (LOT, CARTON):
        assert results[(key.path, "egg-cold-chain")].status == "fail"
        # The first checkpoint (11), the warm reading and the round's index root.
        assert results[(key.path, "egg-cold-chain")].log_size == 11 + 1 + 1


def test_the_evaluator_task_runs_until_stopped(world: World) -> None:
    """run_contract_evaluator works the queue on its interval and returns when stopped."""

    async def main() -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                run_contract_evaluator(world.engine, POLICY, 0.05, stop), name="evaluator"
            )
            for _ in range(200):
                if not _queued(world.engine):
                    break
                await asyncio.sleep(0.05)
            stop.set()

    asyncio.run(main())
    assert _queued(world.engine) == set()
    assert len(_results(world.engine)) == 21


def test_a_product_that_fails_verification_does_not_block_the_queue(world: World) -> None:
    """A tampered product is logged and sent to the back; the others are evaluated."""
    with session_scope(world.engine) as session:
        session.execute(
            update(Product)
            .where(col(Product.key) == CARTON.path)
            .values(owner_party_id="gansu-pack-01")
        )
        session.execute(
            update(ContractQueue)
            .where(col(ContractQueue.product_key) == CARTON.path)
            .values(queued_ms=0)
        )
    first = evaluate_pending(world.engine, POLICY, world.now[0], batch=1)
    assert (first.evaluated, first.waiting) == (0, 1)  # the carton: its owner check fails
    second = evaluate_pending(world.engine, POLICY, world.now[0], batch=1)
    assert second.evaluated >= 1  # the product queued after it went ahead
    assert CARTON.path in _queued(world.engine)
    assert FLOCK.path not in _queued(world.engine)
