"""Scale-out: two ``agritrace ingest`` processes on the MQTT 5 shared subscription, one database.

The deployment of compose.yaml without Docker: mosquitto, PostgreSQL (or SQLite), two ingest
workers (``AGRITRACE_INGEST_SHARED=1``, each with its own client id, both with the same log
key), and devices with persistent outboxes sending more than 20,000 messages. At the end:

* every message is committed exactly once, with the bytes the device signed;
* every product chain is intact and the log has no gap;
* every device holds a verified receipt for every message;
* both workers really took part (each committed a share of the messages);
* the log is consistent across all its checkpoints: each is signed by the log key and each
  later one extends the earlier one (RFC 9162 consistency proofs from the stored tree).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from mqtt_kit import (
    IngestProcess,
    check_chains_and_log,
    check_exactly_once,
    check_receipts,
    lot,
    make_fleet,
    provision,
    unique,
    wait_for_log_key,
    wipe_session,
)
from sqlalchemy import Engine, select
from sqlmodel import col

from gateway.runtime import Fleet
from tracecore.keys import SignerKey, read_log_key
from tracecore.merkle import verify_consistency
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.note import CheckpointBody, parse_note, verify_note
from tracecore.settings import Settings
from tracecore.storage import make_engine, session_scope, upgrade
from tracecore.storage.models import Checkpoint
from tracecore.storage.tree import consistency_proof

DEVICES = 100
READINGS = 200  # per device, after its commissioning: 20,100 messages in all
_log = logging.getLogger(__name__)

# Hang guards, not performance targets. Devices now back off to 60 s between resends and ingest
# answers a resend with a look-up, so the backlog of duplicates that once took about 4.5 min to
# drain on a busy machine is far smaller; 5 min bounds the wait while the open fault (see the
# xfail) still makes some runs wait in vain.
SETTLE_S = 300
# method="thread": the default (a signal) raises inside whatever runs, and an aiomqtt callback
# swallowed it once, so the test ran on past its limit; the thread method cannot be swallowed
# (it dumps every stack and ends the run).
pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.slow,
    pytest.mark.timeout(SETTLE_S + 300, method="thread"),
]


@pytest.mark.postgres
@pytest.mark.xfail(
    strict=False,
    reason=(
        "known fault under investigation: in some runs the last reading of 32 devices is never "
        "settled (receipts stored for all 20,100 messages, the fleet's outbox keeps 32 after 36 "
        "resends); seen on the commit before the buyer-page work too"
    ),
)
def test_two_ingest_workers_share_the_stream(
    mosquitto: BrokerAddress, pg_database: str, tmp_path: Path
) -> None:
    """20,100 messages over two shared-subscription workers: once each, chains and log sound.

    On PostgreSQL, the database of a deployment with several workers (compose.yaml).
    """
    db_url = pg_database
    engine = make_engine(db_url)
    upgrade(engine)
    shared = {"AGRITRACE_INGEST_SHARED": "1", "AGRITRACE_CHECKPOINT_SECONDS": "1"}
    workers = [
        IngestProcess(
            tmp_path / f"worker{n}", db_url, mosquitto, unique(f"ingest{n}"), dict(shared)
        )
        for n in range(2)
    ]
    fleet_id = unique("fleet")
    keys = provision(engine, unique("farm"), [unique(f"d{n:03d}") for n in range(DEVICES)])
    sent: dict[tuple[str, int], bytes] = {}
    try:
        started = time.monotonic()
        fleet = asyncio.run(
            _scenario(
                mosquitto, workers, keys=keys, fleet_id=fleet_id, sent=sent, tmp_path=tmp_path
            )
        )
        _log.warning(
            "two workers: %d messages in %.1f s, %d resends",
            len(sent),
            time.monotonic() - started,
            fleet.stats.resent,
        )
        assert len(sent) == DEVICES * (READINGS + 1)
        log_key = read_log_key(workers[0].data_dir / "keys", Settings().log_origin)
        check_exactly_once(engine, sent, READINGS + 1)
        check_chains_and_log(engine)
        check_receipts([fleet], sent, log_key.public_key)
        _check_checkpoints(engine, log_key)
        shares = [_accepted(worker) for worker in workers]
        _log.warning("accepted per worker: %s", shares)
        assert all(share > 0 for share in shares), shares  # the broker shared the stream
        assert sum(shares) == len(sent)
        for worker in workers:  # one integrator at a time: no round fails on the other's rows
            assert "checkpoint round failed" not in worker.log_text()
    finally:
        for worker in workers:
            worker.kill()
        engine.dispose()
        for client_id in (fleet_id, *(w.client_id for w in workers)):
            asyncio.run(wipe_session(mosquitto, client_id))


async def _scenario(
    broker: BrokerAddress,
    workers: list[IngestProcess],
    *,
    keys: dict[str, SignerKey],
    fleet_id: str,
    sent: dict[tuple[str, int], bytes],
    tmp_path: Path,
) -> Fleet:
    # The first worker makes the log key; the second gets a copy (one log, one key).
    workers[0].start()
    log_key = await wait_for_log_key(workers[0].data_dir)
    (workers[1].data_dir / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(workers[0].data_dir / "keys" / "log.key", workers[1].data_dir / "keys" / "log.key")
    workers[1].start()
    await asyncio.sleep(2)  # both subscribed before the stream starts
    fleet = make_fleet(
        broker,
        tmp_path / "outbox.sqlite3",
        log_key,
        keys,
        client_id=fleet_id,
        resend_s=5.0,
        resend_max_s=60.0,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(fleet.run(stop), name="fleet")
        await _send(fleet, sent)
        try:
            async with asyncio.timeout(SETTLE_S):
                await fleet.wait_settled()
        except TimeoutError:
            raise AssertionError(_unsettled(fleet)) from None
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert await asyncio.to_thread(worker.wait, 60) == 0, worker.log_text()
        stop.set()
    return fleet


async def _send(fleet: Fleet, sent: dict[tuple[str, int], bytes]) -> None:
    devices = list(fleet.devices.values())
    for device in devices:
        seq, raw = await device.send_event([lot(device.id.upper())], "commissioning")
        sent[device.id, seq] = raw
    async with asyncio.timeout(SETTLE_S):
        await fleet.wait_settled()  # readings name lots that must exist first
    sensors = (Sensor("Temperature", 3.5, "CEL"),)
    for _ in range(READINGS):
        for device in devices:
            seq, raw = await device.send_reading([lot(device.id.upper())], sensors)
            sent[device.id, seq] = raw
        await asyncio.sleep(0)


def _unsettled(fleet: Fleet) -> str:
    """What the fleet holds unreceipted after the settle bound, for the failure message."""
    items = fleet.outbox.pending()
    now = int(time.time() * 1000)
    shown = ", ".join(
        f"{i.device_id}#{i.seq} (sent {i.attempts}x, due in {(i.next_send_ms - now) / 1000:.0f} s)"
        for i in items[:10]
    )
    return (
        f"{len(items)} messages unreceipted after {SETTLE_S} s: {shown}; fleet counters: "
        f"{fleet.stats}"
    )


def _check_checkpoints(engine: Engine, log_key: SignerKey) -> None:
    """Every checkpoint is signed by the log and extends the one before it."""
    with session_scope(engine) as session:
        notes = session.scalars(select(col(Checkpoint.note)).order_by(col(Checkpoint.size))).all()
        bodies = []
        for text in notes:
            note = parse_note(text)
            verify_note(note, [log_key.verifier])
            bodies.append(CheckpointBody.parse(note.text))
        assert len(bodies) >= 2
        for old, new in itertools.pairwise(bodies):
            proof = consistency_proof(session, old.size, new.size)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)


def _accepted(worker: IngestProcess) -> int:
    """Messages the worker accepted, from its 'ingest stopped' line (all its starts)."""
    found = re.findall(r"ingest stopped: \d+ received, (\d+) accepted", worker.log_text())
    assert found, worker.log_text()[-2000:]
    return sum(int(n) for n in found)
