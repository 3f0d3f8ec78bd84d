"""The checkpointer task (ingest.checkpointer): periodic, only on growth, robust, stoppable."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from log_kit import NOW, append_entries, index_roots, log_leaves
from sqlalchemy import Engine

from ingest import run_checkpointer
from ingest.checkpointer import checkpoint_once, consistency_proof_fn
from tracecore import merkle
from tracecore.checkpoint import make_checkpoint
from tracecore.keys import SignerKey
from tracecore.settings import Settings
from tracecore.storage.logwriter import checkpoint_transaction
from tracecore.storage.models import Checkpoint

LOG_KEY = SignerKey("agritrace.test/log", bytes(range(32)))
ORIGIN = "agritrace.test/log"


def test_checkpoint_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """AGRITRACE_CHECKPOINT_SECONDS defaults to 2 and is read from the environment."""
    assert Settings().checkpoint_seconds == 2.0
    monkeypatch.setenv("AGRITRACE_CHECKPOINT_SECONDS", "0.5")
    assert Settings().checkpoint_seconds == 0.5


def test_checkpointer_signs_while_entries_arrive(engine: Engine) -> None:
    """New entries get a checkpoint within an interval; an idle log gets none; stop ends it."""
    seen: list[Checkpoint] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        grown = asyncio.Event()

        async def on_checkpoint(checkpoint: Checkpoint) -> None:
            seen.append(checkpoint)
            grown.set()

        task = asyncio.create_task(
            run_checkpointer(
                engine, LOG_KEY, ORIGIN, 0.05, stop, on_checkpoint=on_checkpoint, clock=lambda: NOW
            )
        )
        for count in (3, 10):
            grown.clear()
            await asyncio.to_thread(append_entries, engine, count)
            await asyncio.wait_for(grown.wait(), timeout=10)
        await asyncio.sleep(0.2)  # idle: several rounds, no new checkpoint
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(scenario())
    # Each round appends an index root after the new entries; its checkpoint covers it.
    assert [c.size for c in seen] == [3 + 1, 4 + 10 + 1]
    assert all(c.created_ms == NOW for c in seen)
    assert list(index_roots(engine)) == [3, 14]  # idle rounds appended no root


def test_failing_callback_does_not_stop_the_checkpointer(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged; the next checkpoint is still made."""
    sizes: list[int] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        first = asyncio.Event()

        def on_checkpoint(checkpoint: Checkpoint) -> None:
            sizes.append(checkpoint.size)
            first.set()
            if len(sizes) == 2:
                stop.set()
            raise RuntimeError("witness exploded")

        task = asyncio.create_task(
            run_checkpointer(engine, LOG_KEY, ORIGIN, 0.02, stop, on_checkpoint=on_checkpoint)
        )
        await asyncio.to_thread(append_entries, engine, 2)
        await asyncio.wait_for(first.wait(), timeout=10)
        await asyncio.to_thread(append_entries, engine, 2)
        await asyncio.wait_for(task, timeout=10)

    with caplog.at_level(logging.ERROR, logger="ingest.checkpointer"):
        asyncio.run(scenario())
    assert sizes == [2 + 1, 3 + 2 + 1]  # entries and an index root each round
    assert "witness exploded" in caplog.text


def test_consistency_proof_fn_reads_in_a_thread(engine: Engine) -> None:
    """The proof function handed to the witness submitter gives RFC 9162 consistency proofs."""
    append_entries(engine, 9)
    checkpoint = checkpoint_once(engine, LOG_KEY, ORIGIN, NOW)
    assert checkpoint is not None
    assert checkpoint.size == 10  # 9 entries and the index root
    leaves = log_leaves(engine)
    assert checkpoint.root == merkle.root_of(leaves)
    proof = asyncio.run(consistency_proof_fn(engine)(5, 10))
    merkle.verify_consistency(5, 10, merkle.root_of(leaves[:5]), checkpoint.root, proof)


def test_one_integrator_at_a_time(engine: Engine) -> None:
    """A second checkpointer while one is mid-round skips (PostgreSQL) or waits (SQLite); no
    round fails on the other's subtree rows."""
    append_entries(engine, 5)
    with ThreadPoolExecutor(1) as pool:
        with checkpoint_transaction(engine) as holder:
            assert holder is not None
            first = make_checkpoint(holder, ORIGIN, LOG_KEY, NOW)
            # The holder has written subtree rows, uncommitted: a second integrator must not
            # write the same ones (it used to, and failed on merkle_nodes_pkey every round).
            other = pool.submit(checkpoint_once, engine, LOG_KEY, ORIGIN, NOW)
            if engine.dialect.name != "sqlite":
                assert other.result(timeout=30) is None  # skipped at once, lock not taken
        # SQLite has one writer: the other round waited for the database lock, then found the
        # log checkpointed and did nothing.
        assert other.result(timeout=30) is None
    assert first is not None
    assert first.size == 5 + 1  # and one index root: the skipped round appended none
    assert list(index_roots(engine)) == [5]
    append_entries(engine, 2)
    after = checkpoint_once(engine, LOG_KEY, ORIGIN, NOW)
    assert after is not None
    assert after.size == 6 + 2 + 1
    assert list(index_roots(engine)) == [5, 8]


def test_workers_take_turns_signing_checkpoints(engine: Engine) -> None:
    """A worker skips a round when another signed a checkpoint less than an interval ago; the
    signer goes on signing; the other takes over once the last checkpoint is an interval old."""
    append_entries(engine, 3)
    first = checkpoint_once(engine, LOG_KEY, ORIGIN, NOW, defer_ms=2000)  # worker A
    assert first is not None
    append_entries(engine, 2)
    # Worker B, half an interval later: A signed just now, so B leaves the round to A.
    assert checkpoint_once(engine, LOG_KEY, ORIGIN, NOW + 1000, defer_ms=2000) is None
    # A itself is not held back by its own checkpoint.
    second = checkpoint_once(engine, LOG_KEY, ORIGIN, NOW + 1000, defer_ms=2000, own=first)
    assert second is not None
    assert second.size == first.size + 2 + 1
    append_entries(engine, 1)
    # A has stopped: a whole interval after its last checkpoint, B signs.
    assert checkpoint_once(engine, LOG_KEY, ORIGIN, NOW + 2999, defer_ms=2000) is None
    third = checkpoint_once(engine, LOG_KEY, ORIGIN, NOW + 3000, defer_ms=2000)
    assert third is not None
    assert third.size == second.size + 1 + 1


def test_without_defer_every_round_signs(engine: Engine) -> None:
    """A lone checkpointer (or a test) without ``defer_ms`` signs whenever the log grew."""
    append_entries(engine, 2)
    assert checkpoint_once(engine, LOG_KEY, ORIGIN, NOW) is not None
    append_entries(engine, 2)
    assert checkpoint_once(engine, LOG_KEY, ORIGIN, NOW) is not None
