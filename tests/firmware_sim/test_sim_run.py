"""`agritrace sim run` against `agritrace serve`: both scenarios end to end, briefly, fast.

The service runs as a subprocess (its own data dir, SQLite, the test mosquitto); the simulator
runs in-process through the CLI with a unique id prefix, so concurrent runs on the shared broker
never meet. Every message must be receipted and accepted, custody must end at the retailer and
transformations must have parents. With ``--fault`` the run still settles and the service
refuses exactly the injected copies.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mqtt_kit import free_port
from sqlalchemy import Engine, text

import firmware_sim.sim
from agritrace.cli import main
from firmware_sim.scenarios import BEEF_CARCASS_GTIN, BEEF_CUTS_GTIN, EGG_GTIN
from firmware_sim.sim import SimOptions, SimSummary
from gateway.outbox import Outbox
from tracecore.mqtt import BrokerAddress
from tracecore.storage import make_engine

ADMIN = "sim-admin-" + secrets.token_hex(8)


@pytest.fixture
def service(tmp_path: Path, mosquitto: BrokerAddress) -> Iterator[tuple[str, Path]]:
    """`agritrace serve` on a free port; yields its base URL and data dir."""
    data = tmp_path / "service"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
    env.update(
        {
            "AGRITRACE_DATA_DIR": str(data),
            "AGRITRACE_MQTT_URL": f"mqtt://{mosquitto.host}:{mosquitto.port}",
            "AGRITRACE_ADMIN_TOKEN": ADMIN,
            "AGRITRACE_INGEST_CLIENT_ID": "ingest-sim-" + secrets.token_hex(4),
            "AGRITRACE_LINGER_MS": "20",
        }
    )
    data.mkdir()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 (our own CLI)
        [str(Path(sys.executable).with_name("agritrace")), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "agritrace serve did not start"
            time.sleep(0.1)
        yield base, data
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.mark.mosquitto
def test_both_scenarios_run_receipted_and_accepted(
    service: tuple[str, Path], tmp_path: Path, mosquitto: BrokerAddress
) -> None:
    """Provision, run egg and beef at high speed; all receipted, nothing rejected."""
    base, service_data = service
    prefix = f"t{secrets.token_hex(3)}-"
    sim_data = tmp_path / "sim"
    common = ["--api", base, "--admin-token", ADMIN, "--prefix", prefix]
    broker = f"mqtt://{mosquitto.host}:{mosquitto.port}"
    assert (
        main(["--data-dir", str(sim_data), "sim", "provision", "--scenario", "egg", *common]) == 0
    )
    # Idempotent: a second provisioning finds everything (409) and changes nothing.
    assert (
        main(["--data-dir", str(sim_data), "sim", "provision", "--scenario", "egg", *common]) == 0
    )
    for scenario, speed, duration in (("egg", "7200", "10s"), ("beef", "36000", "7s")):
        args = ["--data-dir", str(sim_data), "sim", "run", "--scenario", scenario, *common]
        args += ["--speed", speed, "--duration", duration, "--broker", broker, "--settle", "20"]
        assert main(args) == 0, scenario

    engine = make_engine(f"sqlite:///{service_data / 'agritrace.sqlite3'}")
    try:
        with engine.connect() as db:
            rejected = db.execute(
                text("SELECT count(*) FROM rejections WHERE device_id LIKE :p"), {"p": prefix + "%"}
            ).scalar_one()
            assert rejected == 0
            retailer = prefix + "lanzhou-mart"
            held = dict(
                db.execute(
                    text(
                        "SELECT substr(key, 1, 17), count(*) FROM products "
                        "WHERE holder_party_id = :r GROUP BY substr(key, 1, 17)"
                    ),
                    {"r": retailer},
                ).all()
            )
            assert held, "custody of cases and cuts ended at the retailer"
            orphans = db.execute(
                text(
                    "SELECT count(*) FROM products p WHERE (p.key LIKE :carcass "
                    "OR p.key LIKE :cuts OR p.key LIKE :case)"
                    " AND NOT EXISTS (SELECT 1 FROM product_parents e WHERE e.product_key = p.key)"
                ),
                {
                    "carcass": f"01/{BEEF_CARCASS_GTIN}/%",
                    "cuts": f"01/{BEEF_CUTS_GTIN}/%",
                    "case": f"01/{EGG_GTIN}/10/%/21/%",
                },
            ).scalar_one()
            transformed = db.execute(
                text("SELECT count(*) FROM product_parents WHERE product_key LIKE :carcass"),
                {"carcass": f"01/{BEEF_CARCASS_GTIN}/%"},
            ).scalar_one()
            assert transformed > 0
            assert orphans == 0
            edges = db.execute(text("SELECT count(*) FROM product_parents")).scalar_one()
            assert edges > 0
            links = db.execute(text("SELECT count(*) FROM chain_links")).scalar_one()
            assert links > 100
    finally:
        engine.dispose()


def test_sim_run_refuses_bad_fault_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown, repeated or out-of-range faults stop `sim run` before it touches anything."""
    args = ["--data-dir", str(tmp_path), "sim", "run", "--scenario", "egg"]
    assert main([*args, "--fault", "nonsense"]) == 1
    assert main([*args, "--fault", "tamper", "--fault", "tamper:0.5"]) == 1
    assert main([*args, "--fault", "tamper:2"]) == 1
    err = capsys.readouterr().err
    assert "unknown fault 'nonsense'" in err
    assert "known faults: offline, tamper" in err
    assert "fault named more than once: tamper" in err
    assert "rate must be between 0 and 1" in err
    assert not (tmp_path / "sim").exists()


@pytest.mark.mosquitto
def test_sigterm_ends_a_run_at_once(
    service: tuple[str, Path], tmp_path: Path, mosquitto: BrokerAddress
) -> None:
    """SIGTERM (``docker stop``) ends a run within seconds: status 143, its outboxes closed.

    Without a handler of its own the simulator would die at once here, and in a container,
    whose first process ignores a signal it does not handle, run on until the SIGKILL.
    """
    base, _ = service
    sim_data = tmp_path / "sim"
    args = [str(Path(sys.executable).with_name("agritrace")), "--data-dir", str(sim_data)]
    args += ["sim", "run", "--scenario", "egg", "--duration", "10m"]
    args += ["--api", base, "--admin-token", ADMIN, "--prefix", f"s{secrets.token_hex(3)}-"]
    args += ["--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
    log_path = tmp_path / "sim.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 (our own CLI)
        try:
            # The first progress line: provisioned, the gateways connected, the run going.
            deadline = time.monotonic() + 60
            while "sent " not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "sim run did not start"
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            status = process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert status == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM before the end of the run" in output
    outboxes = sorted((sim_data / "sim").glob("*.outbox"))
    assert outboxes
    for path in outboxes:
        with Outbox(path) as outbox:
            outbox.pending()


def _rejections(engine: Engine, prefix: str, expected: int) -> dict[str, list[bytes]]:
    """The rejections of ``prefix``'s devices by reason, once there are ``expected`` (10 s max).

    The faulty copies are published after their genuine messages settle, so the service may
    still be refusing the last ones when the run returns.
    """
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as db:
            rows = db.execute(
                text("SELECT reason, raw FROM rejections WHERE device_id LIKE :p"),
                {"p": prefix + "%"},
            ).all()
        if len(rows) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by_reason: dict[str, list[bytes]] = {}
    for reason, raw in rows:
        by_reason.setdefault(reason, []).append(bytes(raw))
    return by_reason


@pytest.mark.mosquitto
def test_sim_run_with_faults_settles_and_refuses_exactly_the_copies(
    service: tuple[str, Path],
    tmp_path: Path,
    mosquitto: BrokerAddress,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """tamper, replay and clock_skew on a short egg run: exit 0, exact rejections, no extras."""
    base, service_data = service
    prefix = f"f{secrets.token_hex(3)}-"
    sim_data = tmp_path / "sim"
    summaries: list[SimSummary] = []
    real_run = firmware_sim.sim.run_simulation

    async def keep_summary(options: SimOptions) -> SimSummary:
        summary = await real_run(options)
        summaries.append(summary)
        return summary

    monkeypatch.setattr(firmware_sim.sim, "run_simulation", keep_summary)
    args = ["--data-dir", str(sim_data), "sim", "run", "--scenario", "egg"]
    args += ["--api", base, "--admin-token", ADMIN, "--prefix", prefix]
    args += ["--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}", "--settle", "20"]
    args += ["--speed", "7200", "--duration", "6s", "--seed", "7"]
    faults = ["--fault", "tamper:0.2", "--fault", "replay:0.2", "--fault", "clock_skew:0.1"]
    assert main([*args, *faults]) == 0
    (summary,) = summaries
    assert summary.ok
    assert summary.pending == 0
    assert summary.sent == summary.planned
    assert {name for name, n in summary.faults.items() if n} == {"tamper", "replay", "clock_skew"}
    err = capsys.readouterr().err
    for name in ("tamper", "replay", "clock_skew"):
        assert f"fault {name}: {summary.faults[name]} injected" in err
    injected = {
        name: sorted(i.raw for i in summary.injections if i.fault == name)
        for name in ("tamper", "replay", "clock_skew")
    }
    assert all(len(injected[name]) == summary.faults[name] for name in injected)

    # Every outbox message was receipted.
    outboxes = sorted((sim_data / "sim").glob("*.outbox"))
    assert outboxes
    for path in outboxes:
        with Outbox(path) as outbox:
            assert outbox.pending() == []

    engine = make_engine(f"sqlite:///{service_data / 'agritrace.sqlite3'}")
    try:
        by_reason = _rejections(engine, prefix, summary.expected_rejections)
        assert set(by_reason) == {"bad_signature", "clock_skew"}
        assert sorted(by_reason["bad_signature"]) == injected["tamper"]
        assert sorted(by_reason["clock_skew"]) == injected["clock_skew"]
        with engine.connect() as db:
            logged = {
                (device, seq): count
                for device, seq, count in db.execute(
                    text(
                        "SELECT device_id, seq, count(*) FROM log_entries WHERE kind = "
                        "'device_message' AND device_id LIKE :p GROUP BY device_id, seq"
                    ),
                    {"p": prefix + "%"},
                )
            }
        # Replays add no entries: one entry per genuine message (a clock_skew copy replaces its
        # message), and each replayed message has its one entry.
        assert sum(logged.values()) == summary.planned - summary.faults["clock_skew"]
        replays = [i for i in summary.injections if i.fault == "replay"]
        assert replays
        for replay in replays:
            assert logged[replay.device_id, replay.seq] == 1
    finally:
        engine.dispose()
