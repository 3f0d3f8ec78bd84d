"""Database outages: the services stay up, answer 503 meanwhile, and lose nothing.

Each test runs a PostgreSQL cluster of its own (tests/outage_kit.py) and stops and starts it
while ``agritrace serve``, ``agritrace api`` or ``agritrace ingest`` run as subprocesses against
it. What docs/operations.md ("Outages") promises an operator is what is asserted here: the
process stays up, health checks and scans say 503 with Retry-After while the database is gone,
and after it returns everything recovers by itself with every message committed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mqtt_kit import (
    IngestProcess,
    check_chains_and_log,
    check_exactly_once,
    check_receipts,
    free_port,
    lot,
    make_fleet,
    provision,
    unique,
    wait_for,
    wipe_session,
)
from outage_kit import PgCluster

from gateway.runtime import Fleet
from tracecore.keys import load_or_create_log_key
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.settings import Settings
from tracecore.storage import make_engine, upgrade

_log = logging.getLogger(__name__)
_PRODUCT = "/01/06901234567892/10/OUTAGE1"

# method="thread": a timeout raised as a signal can be swallowed by an aiomqtt callback.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]


@pytest.fixture
def cluster(pg_ctl: Path) -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this test's own, created but not started."""
    pg = PgCluster(pg_ctl)
    try:
        yield pg
    finally:
        pg.close()


def _agritrace(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            [sys.executable, "-m", "agritrace", *args], env=env, stdout=out, stderr=out
        )


def _env(data_dir: Path, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
    env.update(AGRITRACE_DATA_DIR=str(data_dir), AGRITRACE_DB_URL=db_url, **extra)
    return env


def _until(check: object, within_s: float, what: str) -> None:
    """Poll ``check()`` until it is true; fail naming ``what`` after ``within_s`` seconds."""
    assert callable(check)
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        time.sleep(0.2)


def _get(base: str, path: str, **headers: str) -> httpx.Response | None:
    try:
        return httpx.get(base + path, headers=headers, timeout=10)
    except httpx.TransportError:
        return None


def _status(base: str, path: str) -> int | None:
    response = _get(base, path)
    return None if response is None else response.status_code


def _assert_unavailable(base: str) -> None:
    """Health, scans (page and JSON) and metrics during an outage, as docs/operations.md says."""
    health = httpx.get(base + "/healthz", timeout=10)
    assert health.status_code == 503
    assert health.headers["retry-after"]
    assert health.json()["status"] == "unavailable"
    assert any("database" in problem for problem in health.json()["problems"])
    page = httpx.get(base + _PRODUCT, headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 503
    assert page.headers["retry-after"]
    assert 'data-verdict="unavailable"' in page.text
    assert "暂时无法查询" in page.text
    answer = httpx.get(base + _PRODUCT, headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 503
    assert answer.headers["retry-after"]
    assert "database" in answer.json()["detail"]


def test_serve_starts_without_its_database_and_rides_out_an_outage(
    cluster: PgCluster, mosquitto: BrokerAddress, tmp_path: Path
) -> None:
    """serve: up with the database down, 503s meanwhile, recovers twice by itself, exits 0."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client_id = unique("serve-outage")
    env = _env(
        tmp_path / "data",
        cluster.url,
        AGRITRACE_MQTT_URL=f"mqtt://{mosquitto.host}:{mosquitto.port}",
        AGRITRACE_INGEST_CLIENT_ID=client_id,
    )
    process = _agritrace("serve", "--port", str(port), env=env, log=tmp_path / "serve.log")
    try:
        _until(lambda: _status(base, "/healthz") is not None, 60, "the API to accept connections")
        _assert_unavailable(base)
        assert process.poll() is None

        cluster.start()
        _until(lambda: _status(base, "/healthz") == 200, 120, "recovery after the first start")
        assert _status(base, _PRODUCT) == 404  # the schema exists: an unknown code is a 404

        cluster.stop()
        _until(lambda: _status(base, "/healthz") == 503, 60, "the outage to be noticed")
        _assert_unavailable(base)
        metrics = httpx.get(base + "/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "agritrace_database_up 0" in metrics.text
        # Longer than the ~8 s after which ingest used to give up and take the API with it.
        time.sleep(12)
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        _assert_unavailable(base)

        cluster.start()
        _until(lambda: _status(base, "/healthz") == 200, 120, "recovery after the outage")
        assert _status(base, _PRODUCT) == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        asyncio.run(wipe_session(mosquitto, client_id))


def test_api_starts_without_its_database_and_migrates_when_it_comes(
    cluster: PgCluster, tmp_path: Path
) -> None:
    """api: starts with the database down, answers 503, migrates and serves once it is up."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(tmp_path / "data", cluster.url)
    process = _agritrace("api", "--port", str(port), env=env, log=tmp_path / "api.log")
    try:
        _until(lambda: _status(base, "/healthz") is not None, 60, "the API to accept connections")
        _assert_unavailable(base)
        cluster.start()
        _until(lambda: _status(base, "/healthz") == 200, 120, "the API to migrate and serve")
        assert _status(base, _PRODUCT) == 404
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


DEVICES = 20
PER_PHASE = 10  # readings per device before, during and after the outage
OUTAGE_S = 15.0


@pytest.mark.mosquitto
def test_ingest_rides_out_a_database_outage_without_losing_a_message(
    cluster: PgCluster, mosquitto: BrokerAddress, tmp_path: Path
) -> None:
    """ingest: a 15 s outage mid-stream; it stays up, resumes, commits each message once."""
    cluster.start()
    engine = make_engine(cluster.url)
    upgrade(engine)
    data_dir = tmp_path / "data"
    log_key = load_or_create_log_key(data_dir / "keys", Settings().log_origin)[0]
    ingest_id = unique("ingest-outage")
    fleet_id = unique("fleet-outage")
    health_port = free_port()
    health = f"http://127.0.0.1:{health_port}"
    process = IngestProcess(
        data_dir,
        cluster.url,
        mosquitto,
        ingest_id,
        {"AGRITRACE_INGEST_HEALTH_PORT": str(health_port)},
    )
    keys = provision(engine, unique("farm"), [unique(f"d{n:02d}") for n in range(DEVICES)])
    fleet = make_fleet(
        mosquitto,
        tmp_path / "outbox.sqlite3",
        log_key.verifier.public_key,
        keys,
        client_id=fleet_id,
        resend_s=2.0,
        resend_max_s=8.0,
    )
    sent: dict[tuple[str, int], bytes] = {}
    try:
        process.start()
        figures = asyncio.run(_outage_scenario(fleet, process, cluster, sent, health))
        metrics = str(figures.pop("metrics_during_outage"))
        _log.warning("database outage: %s", figures)
        assert figures["alive_during_outage"]
        assert figures["health_during_outage"] == 503
        assert "agritrace_ingest_database_up 0" in metrics
        assert _status(health, "/healthz") == 200
        assert "agritrace_ingest_database_outages_total 1" in httpx.get(health + "/metrics").text
        assert len(sent) == DEVICES * (1 + 3 * PER_PHASE)
        check_exactly_once(engine, sent, 1 + 3 * PER_PHASE)
        check_chains_and_log(engine)
        check_receipts([fleet], sent, log_key.verifier.public_key)
        log = process.log_text()
        assert "database unavailable" in log
        assert "database back after" in log
        process.signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.log_text()
    finally:
        process.kill()
        engine.dispose()
        for client_id in (ingest_id, fleet_id):
            asyncio.run(wipe_session(mosquitto, client_id))


async def _outage_scenario(
    fleet: Fleet,
    process: IngestProcess,
    cluster: PgCluster,
    sent: dict[tuple[str, int], bytes],
    health: str,
) -> dict[str, object]:
    stop = asyncio.Event()
    devices = list(fleet.devices.values())
    sensors = (Sensor("Temperature", 4.5, "CEL"),)
    lots = {device.id: lot(device.id.upper()) for device in devices}

    async def phase() -> None:
        for _ in range(PER_PHASE):
            for device in devices:
                seq, raw = await device.send_reading([lots[device.id]], sensors)
                sent[device.id, seq] = raw
            await asyncio.sleep(0.1)

    figures: dict[str, object] = {}
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(fleet.run(stop), name="fleet")
        for device in devices:
            seq, raw = await device.send_event([lots[device.id]], "commissioning")
            sent[device.id, seq] = raw
        async with asyncio.timeout(120):
            await fleet.wait_settled()
        await phase()
        await asyncio.to_thread(cluster.stop)
        down = time.monotonic()
        await phase()  # sent into the outage
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        figures["alive_during_outage"] = process.process is not None and (
            process.process.poll() is None
        )
        async with httpx.AsyncClient(base_url=health, timeout=10) as client:
            figures["health_during_outage"] = (await client.get("/healthz")).status_code
            figures["metrics_during_outage"] = (await client.get("/metrics")).text
        await asyncio.to_thread(cluster.start)
        back = time.monotonic()
        await phase()
        await wait_for(lambda: fleet.stats.receipted >= len(sent), 180, "every receipt")
        figures.update(
            outage_s=round(back - down, 1),
            recovery_s=round(time.monotonic() - back, 1),
            sent=len(sent),
            receipted=fleet.stats.receipted,
            resent=fleet.stats.resent,
        )
        stop.set()
    return figures


@pytest.mark.mosquitto
def test_ingest_refuses_a_database_that_does_not_flush_commits(
    mosquitto: BrokerAddress, pg_ctl: Path, tmp_path: Path
) -> None:
    """PostgreSQL with fsync=off: ingest says why and exits 1 before taking any message."""
    pg = PgCluster(pg_ctl, options="-c fsync=off")
    try:
        pg.start()
        process = IngestProcess(tmp_path / "data", pg.url, mosquitto, unique("ingest-fsync"))
        process.start()
        assert process.wait(120) == 1
        assert "fsync=off" in process.log_text()
        assert "power loss" in process.log_text()
    finally:
        pg.close()
