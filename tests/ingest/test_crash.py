"""Crash test: ``agritrace ingest`` is SIGKILLed mid-stream, repeatedly; nothing is lost or doubled.

Fifty devices in two fleets, each with a persistent outbox, send 101 messages each (a
commissioning, then readings, every fifth naming two lots: multi-product entries) through
mosquitto while an ``agritrace ingest`` subprocess is killed with SIGKILL three times and
restarted. SIGKILL loses whatever the dead process had received (and PUBACKed) but not yet
committed; the devices' resends and the persistent session carry it over the restarts. At the
end:

* every message is committed exactly once: the count, each device's set of sequence numbers
  (1..101) and the stored bytes (equal to the bytes the device signed);
* every product chain is intact, recomputed from the stored entry bytes (pseq 1..n, each
  ``prev`` the leaf hash of the product's previous entry, zeros first);
* the log has no index gaps (0..size-1) and each stored leaf hash is the hash of its entry;
* every device holds a receipt, verified against the pinned log key, for every message: the
  outboxes are empty.
"""

from __future__ import annotations

import asyncio
import logging
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
    wait_for,
    wait_for_log_key,
    wipe_session,
)

from gateway.runtime import Fleet
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, read_log_key
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.settings import Settings
from tracecore.storage import make_engine, upgrade

DEVICES = 50
READINGS = 100  # per device, after its commissioning event
FLEETS = 2
KILL_AT = (0.2, 0.45, 0.7)  # fractions of all messages receipted when ingest gets SIGKILL
_log = logging.getLogger(__name__)

# method="thread": a timeout raised as a signal can be swallowed by an aiomqtt callback.
pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]


def test_sigkill_mid_stream_loses_and_doubles_nothing(
    mosquitto: BrokerAddress, db_url: str, tmp_path: Path
) -> None:
    """Three SIGKILLs of ingest mid-stream: exactly-once commit, intact chains, all receipted."""
    engine = make_engine(db_url)
    upgrade(engine)
    ingest_id = unique("ingest-crash")
    fleet_ids = [unique(f"fleet{n}") for n in range(FLEETS)]
    process = IngestProcess(tmp_path / "data", db_url, mosquitto, ingest_id)
    keys = provision(engine, unique("farm"), [unique(f"d{n:02d}") for n in range(DEVICES)])
    sent: dict[tuple[str, int], bytes] = {}
    total = DEVICES * (READINGS + 1)
    try:
        started = time.monotonic()
        fleets, kills = asyncio.run(
            _scenario(
                mosquitto,
                process=process,
                keys=keys,
                fleet_ids=fleet_ids,
                sent=sent,
                tmp_path=tmp_path,
            )
        )
        elapsed = time.monotonic() - started
        _log.warning("crash test: %d messages, %d kills, %.1f s", total, kills, elapsed)
        assert kills >= 2
        assert len(sent) == total
        log_key = read_log_key(tmp_path / "data" / "keys", Settings().log_origin).public_key
        check_exactly_once(engine, sent, READINGS + 1)
        check_chains_and_log(engine)
        check_receipts(fleets, sent, log_key)
    finally:
        process.kill()
        engine.dispose()
        for client_id in (ingest_id, *fleet_ids):
            asyncio.run(wipe_session(mosquitto, client_id))


async def _scenario(
    broker: BrokerAddress,
    *,
    process: IngestProcess,
    keys: dict[str, SignerKey],
    fleet_ids: list[str],
    sent: dict[tuple[str, int], bytes],
    tmp_path: Path,
) -> tuple[list[Fleet], int]:
    process.start()
    log_key = await wait_for_log_key(process.data_dir)
    device_ids = list(keys)
    fleets = [
        make_fleet(
            broker,
            tmp_path / f"outbox-{n}.sqlite3",
            log_key,
            {d: keys[d] for d in device_ids[n::FLEETS]},
            client_id=client_id,
            resend_s=2.0,
            resend_max_s=8.0,
        )
        for n, client_id in enumerate(fleet_ids)
    ]
    total = DEVICES * (READINGS + 1)
    stop = asyncio.Event()
    kills = 0

    def receipted() -> int:
        return sum(f.stats.receipted for f in fleets)

    async with asyncio.TaskGroup() as tasks:
        for n, fleet in enumerate(fleets):
            tasks.create_task(fleet.run(stop), name=f"fleet-{n}")
        sender = tasks.create_task(_send(fleets, sent), name="send")
        for fraction in KILL_AT:
            await wait_for(lambda f=fraction: receipted() >= f * total, 90, f"{fraction:.0%}")
            process.kill()  # SIGKILL: no shutdown at all
            kills += 1
            _log.warning("SIGKILL %d at %d receipted, %d sent", kills, receipted(), len(sent))
            await asyncio.sleep(0.3)  # messages published now wait in the persistent session
            process.start()
        await sender
        async with asyncio.timeout(120):
            for fleet in fleets:
                await fleet.wait_settled()
        # Ingest may have committed and published everything before the last kill (the fleet
        # reads its receipts later): the clean stop below needs the restarted process up.
        async with asyncio.timeout(60):
            await process.wait_connected()
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, process.log_text()
        stop.set()
    return fleets, kills


async def _send(fleets: list[Fleet], sent: dict[tuple[str, int], bytes]) -> None:
    """Commission a lot per device, then readings; every fifth about a neighbour's lot too."""
    devices = [device for fleet in fleets for device in fleet.devices.values()]
    lots = {device.id: lot(device.id.upper()) for device in devices}
    for device in devices:
        seq, raw = await device.send_event([lots[device.id]], "commissioning", data={"count": 360})
        sent[device.id, seq] = raw
    # Readings may name a lot only once its commissioning is logged (else they are parked):
    # let the commissionings through first, as a farm would.
    async with asyncio.timeout(60):
        for fleet in fleets:
            await fleet.wait_settled()
    sensors = (Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 70, "P1"))
    for n in range(READINGS):
        for i, device in enumerate(devices):
            products: list[ProductKey] = [lots[device.id]]
            if n % 5 == 0:
                products.append(lots[devices[(i + FLEETS) % len(devices)].id])  # same party
            seq, raw = await device.send_reading(products, sensors)
            sent[device.id, seq] = raw
        await asyncio.sleep(0.08)  # spread the stream over ~10 s, so the kills hit mid-stream
