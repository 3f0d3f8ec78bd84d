"""Editing the database turns a scan into integrity_failure, naming the check that caught it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update
from sqlmodel import col
from trace_kit import CARTON, LOT, PACKER, World, make_world

from traceapi.i18n import text
from tracecore.storage import ChainLink, LogEntry, Product, Receipt, session_scope

JSON = {"Accept": "application/json"}


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit, served by the API."""
    with make_world(engine, app_client) as built:
        yield built


def _lot_reading_index(engine: Engine, value: bytes) -> int:
    """The log index of the lot's reading whose raw bytes contain ``value``."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(LogEntry.index), col(LogEntry.raw))
            .join(ChainLink, col(ChainLink.log_index) == col(LogEntry.index))
            .where(col(ChainLink.product_key) == LOT.path)
        ).all()
    return next(index for index, raw in rows if raw is not None and value in raw)


def _edit_raw(engine: Engine, index: int, old: bytes, new: bytes) -> None:
    with session_scope(engine) as session:
        raw = session.execute(
            select(col(LogEntry.raw)).where(col(LogEntry.index) == index)
        ).scalar()
        assert raw is not None
        assert old in raw
        session.execute(
            update(LogEntry)
            .where(col(LogEntry.index) == index)
            .values(raw=raw.replace(old, new, 1))
        )


def _flip_signature_byte(engine: Engine) -> str:
    index = _lot_reading_index(engine, bytes.fromhex("f94600"))
    with session_scope(engine) as session:
        raw = session.execute(
            select(col(LogEntry.raw)).where(col(LogEntry.index) == index)
        ).scalar()
        assert raw is not None
        forged = raw[:-1] + bytes([raw[-1] ^ 0x01])  # the last byte of the signature
        session.execute(update(LogEntry).where(col(LogEntry.index) == index).values(raw=forged))
    return "messages"


def _lower_the_excursion(engine: Engine) -> str:
    # 8.4 °C is CBOR float f9 4833 (half precision, 8.3984...) or a double; find what is stored.
    index = _lot_reading_index(engine, bytes.fromhex("fb4020cccccccccccd"))
    _edit_raw(
        engine, index, bytes.fromhex("fb4020cccccccccccd"), bytes.fromhex("fb4010000000000000")
    )
    return "messages"


def _rewrite_hash_too(engine: Engine) -> str:
    """Change the reading value and the stored hashes, as a careful forger would."""
    index = _lot_reading_index(engine, bytes.fromhex("fb4020cccccccccccd"))
    _edit_raw(
        engine, index, bytes.fromhex("fb4020cccccccccccd"), bytes.fromhex("fb4010000000000000")
    )
    with session_scope(engine) as session:
        raw = session.execute(
            select(col(LogEntry.raw)).where(col(LogEntry.index) == index)
        ).scalar()
        assert raw is not None
        session.execute(
            update(LogEntry)
            .where(col(LogEntry.index) == index)
            .values(raw_sha256=hashlib.sha256(raw).digest())
        )
    return "messages"


def _change_owner(engine: Engine) -> str:
    with session_scope(engine) as session:
        session.execute(
            update(Product).where(col(Product.key) == LOT.path).values(owner_party_id=PACKER)
        )
    return "owner"


def _delete_the_newest_lot_entry(engine: Engine) -> str:
    with session_scope(engine) as session:
        head = session.execute(
            select(col(ChainLink.log_index), col(ChainLink.pseq))
            .where(col(ChainLink.product_key) == LOT.path)
            .order_by(col(ChainLink.pseq).desc())
            .limit(1)
        ).one()
        _delete_entry(session, head.log_index)
    # The lot's shorter chain still proves, but the log has a hole (completeness); the carton's
    # proof needs the deleted leaf itself (evidence).
    return "completeness|evidence"


def _delete_a_middle_lot_entry(engine: Engine) -> str:
    index = _lot_reading_index(engine, bytes.fromhex("f94600"))
    with session_scope(engine) as session:
        _delete_entry(session, index)
    return "chains"


def _delete_entry(session: Any, index: int) -> None:
    """Delete a log entry and every row pointing at it, as the foreign keys demand."""
    session.execute(delete(Receipt).where(col(Receipt.log_index) == index))
    session.execute(delete(ChainLink).where(col(ChainLink.log_index) == index))
    session.execute(delete(LogEntry).where(col(LogEntry.index) == index))


#: Each forgery returns the check(s) that must catch it ("a|b": either).
TAMPERS: dict[str, Callable[[Engine], str]] = {
    "a raw message byte (the signature)": _flip_signature_byte,
    "a stored reading value": _lower_the_excursion,
    "a reading value and its stored hash": _rewrite_hash_too,
    "the product's owner": _change_owner,
    "the newest entry of the lot deleted": _delete_the_newest_lot_entry,
    "an entry in the middle of the lot's chain deleted": _delete_a_middle_lot_entry,
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_edited_database_gives_integrity_failure(world: World, tamper: str) -> None:
    """The lot and the carton made from it both fail, naming the check that caught the edit."""
    before = world.client.get(f"/{CARTON.path}", headers=JSON).json()
    assert before["verdict"] == "verified"
    checks = set(TAMPERS[tamper](world.engine).split("|"))
    for key in (LOT, CARTON):
        body = world.client.get(f"/{key.path}", headers=JSON).json()
        assert body["verdict"] == "integrity_failure", (key, body["checks"])
        failed = {c["name"] for c in body["checks"] if not c["ok"]} & checks
        assert failed, (key, body["checks"])
        assert all(name in body["detail"] for name in failed)
        assert body["contracts"] == [], "no contract result may vouch for data that failed"
    page = world.client.get(f"/{CARTON.path}?lang=en").text
    assert "Integrity check failed" in page
    # The failed check is named in words, in the advice and in the table of checks.
    named = [text("en", "check." + name) for name in checks]
    advice = page.split('id="advice"', 1)[1].split("</section>", 1)[0]
    assert any(name in advice for name in named)
    assert any(f"✖ </span>{name}</td>" in page for name in named)
