"""The checkpointer's witness hook: each checkpoint cosigned by live witnesses, stored, served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from log_kit import append_entries
from sqlalchemy import Engine

from ingest.witnessing import CheckpointCosigner, WitnessConfig
from tracecore.checkpoint import make_checkpoint, served_note
from tracecore.keys import SignerKey
from tracecore.note import cosigner_verifier, parse_note, verify_cosignature
from tracecore.storage import Checkpoint, session_scope
from witness import create_app, open_witness

ORIGIN = "trace.test/log"
LOG = SignerKey(ORIGIN, bytes(range(32)))
NOW = 1_790_000_000_000


def _checkpoint(engine: Engine) -> Checkpoint:
    with session_scope(engine) as session:
        checkpoint = make_checkpoint(session, ORIGIN, LOG, NOW)
        assert checkpoint is not None
        return checkpoint


def _served(engine: Engine, checkpoint: Checkpoint) -> str:
    with session_scope(engine) as session:
        return served_note(session, checkpoint)


def test_checkpoints_are_cosigned_and_served(engine: Engine, tmp_path: Path) -> None:
    """Two successive checkpoints get the live witness's cosignature; a dead one is skipped."""
    witness = open_witness(
        tmp_path / "keys", "gansu-witness", [(ORIGIN, LOG.verifier)], tmp_path / "w.db"
    )
    vkey = cosigner_verifier(witness.key)
    dead = SignerKey("dead-witness", bytes([7]) * 32)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(witness))
        async with httpx.AsyncClient(transport=transport) as http:
            cosigner = CheckpointCosigner(
                engine,
                [
                    WitnessConfig("http://witness.test", vkey),
                    WitnessConfig("http://127.0.0.1:9", cosigner_verifier(dead)),
                ],
                http,
                lambda: NOW,
                deadline_s=2,
            )
            for count in (5, 9):
                append_entries(engine, count)
                checkpoint = _checkpoint(engine)
                await cosigner(checkpoint)
                note = _served(engine, checkpoint)
                signatures = parse_note(note).signatures
                assert [s.name for s in signatures] == [ORIGIN, "gansu-witness"]
                text = parse_note(note).text
                assert verify_cosignature(text, signatures[1].line, vkey) > 0

    asyncio.run(scenario())
