"""``agritrace gateway`` rotates its device key on request and on schedule, through the real
mosquitto and ingest: inputs wait during the rotation, nothing is refused, later messages are
signed by the new key, and the gateway starts again from its provisioning file."""

from __future__ import annotations

import os
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_kit import Farm, wait_until
from sqlalchemy import Engine
from sqlmodel import select

from agritrace.cli import main
from gateway.spool import queue_batch
from tracecore.cose import parse_message
from tracecore.keys import device_kid, read_key_file
from tracecore.mqtt import BrokerAddress
from tracecore.storage import LogEntry, Rejection, make_engine, session_scope, upgrade

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


@pytest.fixture
def farm(tmp_path: Path, mosquitto: BrokerAddress) -> Iterator[Farm]:
    """A registered gateway over a SQLite service database."""
    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'agritrace.sqlite3'}")
    upgrade(engine)
    made = Farm.make(engine, mosquitto, tmp_path / "gateway")
    yield made
    made.wipe()
    engine.dispose()


def _sources(lot: str) -> str:
    return f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "probe"
type = "lines"
input = "file:probe.csv"
products = ["{lot}"]
"""


def _kids_of_messages(engine: Engine, device: str) -> list[tuple[int, str, bytes]]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(LogEntry)
            .where(LogEntry.device_id == device, LogEntry.kind == "device_message")
            .order_by(LogEntry.seq)  # type: ignore[arg-type]
        ).all()
        raws = [(row.seq, row.raw) for row in rows]
    out = []
    for seq, raw in raws:
        assert raw is not None
        signed = parse_message(raw)
        out.append((int(seq or 0), type(signed.message).__name__, signed.kid))
    return out


def test_a_requested_rotation_holds_inputs_and_then_signs_with_the_new_key(farm: Farm) -> None:
    """Lines written while the rotation waits for its receipt are signed after it, by the new
    key, also across a restart mid-rotation; nothing is refused; the gateway starts again from
    its provisioning file."""
    lot = farm.lot("L").path
    config = farm.config(_sources(lot))
    queue_batch(farm.directory / "spool", f"step,products\ncommissioning,{lot}\n", "lot", tz=_tz())
    probe = farm.directory / "probe.csv"
    probe.write_text(",Temperature,4.1,CEL\n", encoding="utf-8")
    old_kid = device_kid(farm.key.public_key)
    with farm.run(config) as running:
        status = running.gateway.status
        wait_until(lambda: status.sources["probe"].sent == 1, "the first reading signed")
        # Ingest is not running yet: the rotation cannot be receipted, so it stays in flight.
        assert main(["gateway", "rotate", "--config", str(config.path)]) == 0
        wait_until(lambda: not running.gateway.inputs_open.is_set(), "the rotation to start")
        with probe.open("a", encoding="utf-8") as handle:
            handle.write(",Temperature,4.2,CEL\n,Temperature,4.3,CEL\n")
        time.sleep(1.5)  # the file is looked at every 0.5 s: the lines are read, not signed
        assert status.sources["probe"].sent == 1
    # Stopped mid-rotation. The next start carries it on (and resends all it holds at once).
    with farm.ingest(), farm.run(config) as running:
        status = running.gateway.status
        wait_until(lambda: status.rotations == 1, "the rotation's receipt")
        wait_until(lambda: status.sources["probe"].receipted == 2, "the readings after it")
    # The next start: the provisioning file names the first key, now retired.
    with farm.ingest(), farm.run(config) as running:
        with probe.open("a", encoding="utf-8") as handle:
            handle.write(",Temperature,4.4,CEL\n")
        status = running.gateway.status
        wait_until(lambda: status.sources["probe"].receipted == 1, "a reading after restart")
    new_kid = device_kid(read_key_file(farm.directory / "keys", farm.device).public_key)
    assert new_kid != old_kid
    assert (farm.directory / "keys" / f"{farm.device}.key.retired-{old_kid.hex()}").exists()
    messages = _kids_of_messages(farm.engine, farm.device)
    assert [(kind, kid) for _, kind, kid in messages] == [
        ("Event", old_kid),
        ("Reading", old_kid),
        ("KeyRotation", old_kid),
        ("Reading", new_kid),
        ("Reading", new_kid),
        ("Reading", new_kid),
    ]
    with session_scope(farm.engine) as session:
        assert session.exec(select(LogEntry).where(LogEntry.kind == "key_rotated")).one()
        assert not session.exec(select(Rejection).where(Rejection.device_id == farm.device)).all()


def test_a_key_older_than_the_schedule_is_rotated_once(farm: Farm) -> None:
    """rotate_every_days: a key file 100 days old is rotated at start, and only once."""
    lot = farm.lot("L").path
    config = farm.config(_sources(lot), gateway="rotate_every_days = 90")
    key_file = farm.directory / "keys" / f"{farm.device}.key"
    long_ago = time.time() - 100 * 86_400
    os.utime(key_file, (long_ago, long_ago))
    with farm.ingest(), farm.run(config) as running:
        status = running.gateway.status
        wait_until(lambda: status.rotations == 1, "the scheduled rotation")
        time.sleep(3)  # the schedule is looked at every second: no second rotation
        assert status.rotations == 1


def _tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo("Asia/Shanghai")
