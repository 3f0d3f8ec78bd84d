"""A gateway rotates a device's key through mosquitto and the real ingest (docs/protocol.md §8)."""

from __future__ import annotations

import asyncio
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mqtt_kit import count_rows, lot, make_fleet, now_ms, provision, unique, wait_for, wipe_session
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from gateway.outbox import Outbox
from gateway.rotation import (
    RotationState,
    pending_key_path,
    resume_rotation,
    retired_key_path,
    rotate_device_key,
)
from gateway.runtime import Fleet, load_or_create_device_key
from ingest import IngestConfig, Processor, ServiceOptions
from ingest.service import run_ingest
from tracecore.cose import parse_message, sign_message
from tracecore.keys import SignerKey, device_kid, generate_signer, read_key_file, write_key_file
from tracecore.message import KeyRotation, Sensor, sign_rotation_pop
from tracecore.mqtt import BrokerAddress
from tracecore.storage import device_keys, session_scope

TEMP = (Sensor("Temperature", 4.5, "CEL"),)
_LOG = SQLModel.metadata.tables["log_entries"]
_REJECTIONS = SQLModel.metadata.tables["rejections"]


@asynccontextmanager
async def _ingest(broker: BrokerAddress, engine: Engine, log_key: SignerKey) -> AsyncIterator[None]:
    """The real ingest core and service loop, in process, for the block."""
    client_id = unique("ingest")
    processor = Processor(engine, log_key, IngestConfig(batch_size=50))
    options = ServiceOptions(
        broker=broker,
        client_id=client_id,
        batch_size=50,
        linger_ms=20,
        reconnect_initial_s=0.1,
        reconnect_cap_s=1.0,
    )
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run_ingest(processor, options, stop), name="ingest")
            yield
            stop.set()
    finally:
        processor.close()
        await wipe_session(broker, client_id)


@asynccontextmanager
async def _running(fleet: Fleet) -> AsyncIterator[None]:
    """Run ``fleet`` for the block (connected when the block starts)."""
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(stop), name="fleet")
            async with asyncio.timeout(20):
                await fleet.connected.wait()
            yield
            stop.set()
    finally:
        fleet.outbox.close()


def _signer_kid(engine: Engine, device: str, seq: int) -> bytes:
    """The kid that signed the logged message ``seq`` of ``device``."""
    with engine.connect() as conn:
        raw = conn.execute(
            select(_LOG.c.raw).where(_LOG.c.device_id == device, _LOG.c.seq == seq)
        ).scalar_one()
    return parse_message(bytes(raw)).kid


def _rejections(engine: Engine, device: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(_REJECTIONS.c.reason, _REJECTIONS.c.detail).where(
                _REJECTIONS.c.device_id == device
            )
        ).all()
    return [(row.reason, row.detail) for row in rows]


@pytest.mark.mosquitto
def test_gateway_rotates_and_the_next_reading_is_receipted_under_the_new_key(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path
) -> None:
    """Rotate, read under the new key; a replay makes no second rotation, the old key none."""
    asyncio.run(_rotate_round_trip(mosquitto, engine, tmp_path))


async def _rotate_round_trip(broker: BrokerAddress, engine: Engine, tmp_path: Path) -> None:
    log_key = generate_signer("log")
    device = unique("barn")
    keys_dir = tmp_path / "keys"
    registered = provision(engine, unique("farm"), [device])[device]
    write_key_file(keys_dir, registered)
    old = load_or_create_device_key(keys_dir, device)
    fleet_id = unique("gw")
    fleet = make_fleet(
        broker, tmp_path / "outbox.sqlite3", log_key.public_key, {device: old}, client_id=fleet_id
    )
    egg = lot(unique("L"))
    try:
        async with _ingest(broker, engine, log_key), _running(fleet):
            assert resume_rotation(fleet, device, keys_dir) is RotationState.NONE
            gw = fleet.devices[device]
            await gw.send_event([egg], "commissioning")
            async with asyncio.timeout(30):
                await fleet.wait_settled()
                result = await rotate_device_key(fleet, device, keys_dir)
            new = read_key_file(keys_dir, device)
            assert result.old_kid == device_kid(old.public_key)
            assert result.new_kid == device_kid(new.public_key) != result.old_kid
            assert fleet.devices[device].key == new
            seq, _ = await gw.send_reading([egg], TEMP)
            async with asyncio.timeout(30):
                await fleet.wait_settled()
            assert _signer_kid(engine, device, seq) == result.new_kid
            # The same rotation bytes again: a duplicate, no second key_rotated entry.
            rotation_raw = _logged_raw(engine, device, result.seq)
            duplicates = fleet.stats.duplicate_receipts
            await fleet.publish_raw(device, rotation_raw)
            # The old key (kept retired) tries to rotate once more, with a new seq.
            attacker = generate_signer(device)
            seq_2 = fleet.outbox.last_seq(device) + 50
            pop = sign_rotation_pop(attacker.signing_key, device, seq_2, now_ms(), result.old_kid)
            fork = KeyRotation(device, seq_2, now_ms(), attacker.public_key, pop)
            await fleet.publish_raw(device, sign_message(fork, old.signing_key))
            await wait_for(
                lambda: bool(_rejections(engine, device)), 20, "the old key's rotation refused"
            )
            # The replay, published first, was answered with the stored receipt again.
            await wait_for(
                lambda: fleet.stats.duplicate_receipts > duplicates, 20, "the replay's receipt"
            )
    finally:
        await wipe_session(broker, fleet_id)
    [(reason, detail)] = _rejections(engine, device)
    assert reason == "bad_rotation"
    assert "rotated out" in detail
    assert count_rows(engine, "log_entries", device_id=device, kind="key_rotated") == 1
    with session_scope(engine) as session:
        history = [(bytes(k.public_key), k.valid_until_ms) for k in device_keys(session, device)]
    assert [key for key, _ in history] == [old.public_key, new.public_key]
    assert history[1][1] is None
    _check_key_files(keys_dir, device, old, result.old_kid)


def _check_key_files(keys_dir: Path, device: str, old: SignerKey, old_kid: bytes) -> None:
    """The new key is the device's key file, the old one is kept, nothing is pending."""
    retired = retired_key_path(keys_dir, device, old_kid)
    assert retired.read_text() == str(old) + "\n"
    assert stat.S_IMODE((keys_dir / f"{device}.key").stat().st_mode) == 0o600
    assert not pending_key_path(keys_dir, device).exists()
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted([f"{device}.key", retired.name])


def _logged_raw(engine: Engine, device: str, seq: int) -> bytes:
    with engine.connect() as conn:
        return bytes(
            conn.execute(
                select(_LOG.c.raw).where(_LOG.c.device_id == device, _LOG.c.seq == seq)
            ).scalar_one()
        )


@pytest.mark.mosquitto
def test_rotation_survives_restarts_in_flight_and_before_the_switch(
    mosquitto: BrokerAddress, engine: Engine, tmp_path: Path
) -> None:
    """Sent while ingest is down: old key signs meanwhile; a restart waits, then switches."""
    asyncio.run(_rotate_across_restarts(mosquitto, engine, tmp_path))


async def _rotate_across_restarts(broker: BrokerAddress, engine: Engine, tmp_path: Path) -> None:
    log_key = generate_signer("log")
    device = unique("barn")
    keys_dir = tmp_path / "keys"
    write_key_file(keys_dir, provision(engine, unique("farm"), [device])[device])
    old = read_key_file(keys_dir, device)
    outbox_path = tmp_path / "outbox.sqlite3"
    fleet_id = unique("gw")
    egg = lot(unique("L"))

    def fleet_now() -> Fleet:
        key = read_key_file(keys_dir, device)
        return make_fleet(
            broker, outbox_path, log_key.public_key, {device: key}, client_id=fleet_id
        )

    try:
        # 1. No ingest: the rotation stays in flight; a reading meanwhile is signed by the old key.
        first = fleet_now()
        async with _running(first):
            gw = first.devices[device]
            await gw.send_event([egg], "commissioning")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1):
                    await rotate_device_key(first, device, keys_dir)
            during, raw = await gw.send_reading([egg], TEMP)
            assert parse_message(raw).kid == device_kid(old.public_key)
        pending = read_key_file(keys_dir, device, pending_key_path(keys_dir, device).stem)
        assert read_key_file(keys_dir, device) == old
        before_switch = tmp_path / "keys-before-switch"
        shutil.copytree(keys_dir, before_switch)
        # 2. Restart with ingest up: the rotation is found in flight and finished on its receipt.
        second = fleet_now()
        assert resume_rotation(second, device, keys_dir) is RotationState.IN_FLIGHT
        async with _ingest(broker, engine, log_key), _running(second):
            await wait_for(lambda: second.devices[device].key == pending, 30, "the switch")
            async with asyncio.timeout(30):
                await second.wait_settled()
            seq, _ = await second.devices[device].send_reading([egg], TEMP)
            async with asyncio.timeout(30):
                await second.wait_settled()
        assert _signer_kid(engine, device, during) == device_kid(old.public_key)
        assert _signer_kid(engine, device, seq) == device_kid(pending.public_key)
        assert read_key_file(keys_dir, device) == pending
        # 3. A crash after the receipt was stored but before the key files were switched: the
        # restart finds the receipt in the outbox and makes the switch without the broker.
        shutil.rmtree(keys_dir)
        shutil.copytree(before_switch, keys_dir)
        third = fleet_now()
        assert third.devices[device].key == old
        assert resume_rotation(third, device, keys_dir) is RotationState.FINISHED
        assert third.devices[device].key == pending
        assert read_key_file(keys_dir, device) == pending
        assert not pending_key_path(keys_dir, device).exists()
        third.outbox.close()
    finally:
        await wipe_session(broker, fleet_id)
    assert count_rows(engine, "log_entries", device_id=device, kind="key_rotated") == 1


def test_a_pending_key_never_sent_is_reused_not_replaced(tmp_path: Path) -> None:
    """A crash between storing the new key and the outbox commit leaves an unsent key."""
    keys_dir = tmp_path / "keys"
    device = "barn-1"
    current = load_or_create_device_key(keys_dir, device)
    made = generate_signer(device)
    write_key_file(keys_dir, made, pending_key_path(keys_dir, device).stem)
    fleet = make_fleet(
        BrokerAddress("127.0.0.1", 1), tmp_path / "o.sqlite3", bytes(32), {device: current},
        client_id="unused",
    )  # fmt: skip
    try:
        assert resume_rotation(fleet, device, keys_dir) is RotationState.UNSENT
        # A record of a message that never reached the outbox is dropped; the key stays.
        (keys_dir / f"{device}.rotation.json").write_text(
            '{"seq": 1, "msg_sha256": "' + "00" * 32 + '", "new_kid": "'
            + device_kid(made.public_key).hex() + '"}'
        )  # fmt: skip
        assert resume_rotation(fleet, device, keys_dir) is RotationState.UNSENT
        assert not (keys_dir / f"{device}.rotation.json").exists()
        assert read_key_file(keys_dir, device, pending_key_path(keys_dir, device).stem) == made
        assert fleet.devices[device].key == current
        assert isinstance(fleet.outbox, Outbox)
        assert fleet.outbox.pending_count(device) == 0
    finally:
        fleet.outbox.close()
