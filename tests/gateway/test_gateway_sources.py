"""``agritrace gateway`` end to end with the real mosquitto and the real ingest: a farm's Tasmota
and Zigbee2MQTT sensors, CSV lines and a packing file become verified, receipted messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_kit import ORIGIN, Farm, logged_messages, publish, wait_until
from mqtt_kit import unique
from pydantic import SecretStr
from sqlalchemy import Engine

from gateway.config import parse_config
from gateway.outbox import Outbox
from gateway.spool import queue_batch
from gateway.status import prometheus_text, status_lines
from ingest.checkpointer import checkpoint_once
from traceapi.app import create_app
from tracecore.errors import BatchError
from tracecore.message import Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.settings import Settings
from tracecore.storage import make_engine, upgrade

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]
GATEWAY_DOC = Path(__file__).parents[2] / "docs" / "gateway.md"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """The service's database (SQLite: the gateway's behaviour does not depend on it)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'agritrace.sqlite3'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def farm(sqlite_engine: Engine, mosquitto: BrokerAddress, tmp_path: Path) -> Iterator[Farm]:
    """A registered gateway in ``tmp_path/gateway``; its broker sessions wiped afterwards."""
    made = Farm.make(sqlite_engine, mosquitto, tmp_path / "gateway")
    yield made
    made.wipe()


def _commission(farm: Farm, lot: str) -> str:
    """The events source's spool gets the lot's commissioning (a product exists once it is)."""
    text = f"step,products,count\ncommissioning,{lot},21600\n"
    return queue_batch(
        farm.directory / "spool", text, "lot", tz=zoneinfo.ZoneInfo("Asia/Shanghai")
    ).name


def _readings(farm: Farm) -> list[Reading]:
    return [
        m for m in logged_messages(farm.engine, farm.device, farm.key) if isinstance(m, Reading)
    ]


def test_tasmota_and_zigbee2mqtt_sensors_become_verified_readings(farm: Farm) -> None:
    """A Tasmota probe and a Zigbee2MQTT sensor on the farm broker end up as receipted readings."""
    lot = farm.lot("L").path
    tasmota_topic = unique("henhouse")
    z2m_base = unique("z2m")
    config = farm.config(
        f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "henhouse-probes"
type = "tasmota"
broker = "{farm.broker}"
topics = ["tele/{tasmota_topic}/SENSOR"]
products = ["{lot}"]

[[source]]
name = "coldroom"
type = "zigbee2mqtt"
broker = "{farm.broker}"
base_topic = "{z2m_base}"
products = ["{lot}"]

[source.fields]
battery = {{ type = "Dimensionless", unit = "P1" }}
"""
    )
    _commission(farm, lot)
    with farm.ingest(), farm.run(config) as running:
        status = running.gateway.status
        wait_until(lambda: status.sources["events"].receipted == 1, "the commissioning")
        wait_until(
            lambda: (
                bool(status.sources["henhouse-probes"].connected)
                and bool(status.sources["coldroom"].connected)
            ),
            "the bridges to subscribe on the farm broker",
        )
        tasmota = {
            "Time": "2026-12-06T10:00:00",
            "AM2301": {"Temperature": 4.6, "Humidity": 71.3},
            "TempUnit": "C",
        }
        publish(farm.broker, f"tele/{tasmota_topic}/SENSOR", json.dumps(tasmota).encode())
        wait_until(lambda: status.sources["henhouse-probes"].sent == 1, "the Tasmota reading")
        publish(farm.broker, f"{z2m_base}/bridge/state", b'{"state":"online"}')
        publish(farm.broker, f"{z2m_base}/coldroom_sensor/availability", b"online")
        zigbee = {"battery": 97, "humidity": 80.12, "linkquality": 134, "temperature": 3.94}
        publish(farm.broker, f"{z2m_base}/coldroom_sensor", json.dumps(zigbee).encode())
        wait_until(lambda: status.sources["coldroom"].sent == 1, "the Zigbee2MQTT reading")
        publish(farm.broker, f"tele/{tasmota_topic}/SENSOR", b'{"AM2301":{"Temperature":"hot"}}')
        wait_until(
            lambda: sum(status.sources["henhouse-probes"].rejected.values()) == 1,
            "the bad payload to be rejected",
        )
        wait_until(
            lambda: (
                status.sources["henhouse-probes"].waiting == 0
                and status.sources["coldroom"].waiting == 0
            ),
            "both readings to be receipted",
        )
        lines = status_lines(status)
        metrics = prometheus_text(status)
    readings = _readings(farm)
    assert [r.sensors for r in readings] == [
        (Sensor("Temperature", 4.6, "CEL"), Sensor("RelativeHumidity", 71.3, "P1")),
        (
            Sensor("Dimensionless", 97, "P1"),
            Sensor("RelativeHumidity", 80.12, "P1"),
            Sensor("Temperature", 3.94, "CEL"),
        ),
    ]
    assert all(r.products[0].path == lot for r in readings)
    # The bridge's own topics and availability are not sensor state: nothing was made of them.
    assert status.sources["coldroom"].received == 1
    probes = next(line for line in lines if line.startswith("henhouse-probes"))
    assert "receipted 1" in probes
    assert "rejected 1" in probes
    assert "not_a_number: tele/" in probes
    assert (
        'agritrace_gateway_rejected_total{source="henhouse-probes",reason="not_a_number"} 1'
        in metrics
    )
    assert 'agritrace_gateway_receipted_total{source="coldroom"} 1' in metrics


def test_sensor_lines_from_a_followed_file_are_sent_once_across_restarts(farm: Farm) -> None:
    """Lines appended to a file become readings; a bad line is rejected with its reason; a
    restarted gateway goes on after the last line it stored, never sending one twice."""
    lot = farm.lot("L").path
    log = farm.directory / "probes.csv"
    config = farm.config(
        f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "coldstore-probe"
type = "lines"
input = "file:probes.csv"
products = ["{lot}"]

[source.sensors]
probe-1 = {{ type = "Temperature", unit = "CEL" }}
"""
    )
    _commission(farm, lot)
    log.write_text(
        "time,sensor,value,unit\n"
        "2026-12-06T08:00:00+08:00,probe-1,4.5,°C\n"
        "2026-12-06T08:01:00,probe-1,4.7,CEL\n"
        "2026-12-06T08:02:00,probe-1,warm,CEL\n",
        encoding="utf-8",
    )
    with farm.ingest():
        with farm.run(config) as running:
            counters = running.gateway.status.sources["coldstore-probe"]
            wait_until(lambda: counters.receipted == 2, "two readings receipted")
            assert sum(counters.rejected.values()) == 1
            assert counters.last_rejection.startswith("bad_line: line 4")
            with log.open("a", encoding="utf-8") as handle:
                handle.write("2026-12-06T08:03:00,probe-1,4.9,CEL\n2026-12-06T08:04")
            wait_until(lambda: counters.receipted == 3, "the appended line receipted")
        # Stopped half-way through a line: the next run reads its end, and nothing twice.
        with log.open("a", encoding="utf-8") as handle:
            handle.write(":00,probe-1,5.1,CEL\n")
        with farm.run(config) as running:
            counters = running.gateway.status.sources["coldstore-probe"]
            wait_until(lambda: counters.receipted == 1, "the line finished after the restart")
            assert counters.sent == 1
    readings = _readings(farm)
    assert [r.sensors[0].value for r in readings] == [4.5, 4.7, 4.9, 5.1]
    # 08:01 has no offset: China Standard Time (the gateway's time zone), 2026-12-06T00:01Z.
    assert readings[1].time == 1796515260000


def test_a_packing_file_commissions_cartons_that_scan_as_verified(
    farm: Farm, tmp_path: Path, app_client: Any
) -> None:
    """120 cartons packed from a lot, from one CSV file: all in the log, and they scan verified."""
    lot = farm.lot("L")
    config = farm.config('[[source]]\nname = "packing"\ntype = "events"\nspool = "spool"\n')
    cartons = f"{lot.path}/21/{lot.lot}-C{{001..120}}"
    packing = (
        "time,step,products,parents,location,grade,eggs_per_case\n"
        f"2026-12-06T07:00:00,commissioning,{lot.path},,farm/house-1,,\n"
        f"2026-12-06T07:30:00,commissioning,{cartons},{lot.path},farm/packing,AA,360\n"
    )
    bad = packing + "2026-12-06T07:40:00,shipping,01/06901234567892/10/X,,,\n"
    tz = zoneinfo.ZoneInfo("Asia/Shanghai")
    with pytest.raises(BatchError) as caught:
        queue_batch(farm.directory / "spool", bad, "bad", tz=tz)
    assert "line 4" in str(caught.value)
    (farm.directory / "spool").mkdir()
    (farm.directory / "spool" / "hand-made.csv").write_text(bad, encoding="utf-8")
    queue_batch(farm.directory / "spool", packing, "packing", tz=tz)
    with farm.ingest(), farm.run(config) as running:
        counters = running.gateway.status.sources["packing"]
        # 1 lot + 120 cartons in events of at most 64 products: 3 events.
        wait_until(lambda: counters.receipted == 3, "the packing events receipted", 120)
        assert counters.rejected == {"bad_file": 1}
    assert (farm.directory / "spool" / "rejected" / "hand-made.csv").exists()
    errors = farm.directory / "spool" / "rejected" / "hand-made.csv.errors.txt"
    assert "line 4" in errors.read_text(encoding="utf-8")
    events = [
        m for m in logged_messages(farm.engine, farm.device, farm.key) if isinstance(m, Event)
    ]
    assert [len(e.products) for e in events] == [1, 64, 56]
    assert all(e.parents == (lot,) for e in events[1:])
    checkpoint_once(farm.engine, farm.log_key, ORIGIN, time.time_ns() // 1_000_000)
    settings = Settings(
        admin_token=SecretStr("admin-" + "x" * 24), log_origin=ORIGIN, data_dir=tmp_path / "api"
    )
    app = create_app(settings, farm.engine, log_vkey=farm.log_key.verifier)
    with app_client(app) as client:
        for serial in ("001", "064", "065", "120"):
            carton = f"/{lot.path}/21/{lot.lot}-C{serial}"
            answer = client.get(carton, headers={"accept": "application/json"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["verdict"] == "verified", (carton, answer.json())


def test_lines_from_a_serial_device(farm: Farm) -> None:
    """A serial line (here a pseudo-terminal) is read raw, line by line, as it comes."""
    lot = farm.lot("L").path
    controller, terminal = os.openpty()
    try:
        config = farm.config(
            f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "scale"
type = "lines"
input = "serial:{os.ttyname(terminal)}"
baud = 9600
products = ["{lot}"]

[source.sensors]
scale-1 = {{ type = "Mass", unit = "KGM" }}
"""
        )
        _commission(farm, lot)
        with farm.ingest(), farm.run(config) as running:
            counters = running.gateway.status.sources["scale"]
            wait_until(lambda: running.gateway.status.sources["events"].receipted == 1, "lot")
            os.write(controller, b",scale-1,412.5,kg\r\n,scale-1,398,kg\r\n")
            wait_until(lambda: counters.receipted == 2, "two weights receipted")
    finally:
        os.close(controller)
        os.close(terminal)
    assert [r.sensors for r in _readings(farm)] == [
        (Sensor("Mass", 412.5, "KGM"),),
        (Sensor("Mass", 398, "KGM"),),
    ]


def test_the_command_reads_stdin_shows_status_and_stops_on_sigterm(farm: Farm) -> None:
    """``agritrace gateway --config`` with lines on stdin: receipted, status lines, exit 0."""
    lot = farm.lot("L").path
    farm.config(
        f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "counter"
type = "lines"
input = "-"
products = ["{lot}"]
""",
        gateway="status_interval = 0.2",
    )
    _commission(farm, lot)
    command = [sys.executable, "-m", "agritrace", "gateway", "--config", "gateway.toml"]
    with farm.ingest():
        process = subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            command,
            cwd=farm.directory,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdin is not None
            process.stdin.write(",Count,120,C62\n,Count,121,C62\n")
            process.stdin.close()
            wait_until(lambda: len(_readings(farm)) == 2, "the two counts in the log")
            # The receipts are what the status counts; give them time to come back.
            wait_until(lambda: _outbox_empty(farm), "the outbox to empty")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert process.stderr is not None
        with process.stderr:
            err = process.stderr.read()
    assert process.returncode == 0, err
    last = err[err.rindex("counter ") :]
    assert re.match(r"counter +sent 2  receipted 2  waiting 0  rejected 0\n", last), err
    assert "gateway stopped; 0 messages wait in the outbox" in err


def _outbox_empty(farm: Farm) -> bool:
    with Outbox(farm.directory / "keys" / f"{farm.device}.outbox") as outbox:
        return outbox.pending_count() == 0 and outbox.receipt_count() == 3


def _documented(kind: str, name: str) -> str:
    """The fenced block after ``<!-- {kind}: {name} -->`` in docs/gateway.md."""
    text = GATEWAY_DOC.read_text(encoding="utf-8")
    after = text.split(f"<!-- {kind}: {name} -->\n", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_documented_tasmota_and_zigbee2mqtt_configurations_work_as_written(
    farm: Farm, tmp_path: Path
) -> None:
    """docs/gateway.md's two configurations read as written and, pointed at this broker and
    lot, turn the documented payloads into the readings the page says."""
    lot = farm.lot("L").path
    sources = []
    for name in ("tasmota", "zigbee2mqtt"):
        written = _documented("example", name)
        assert parse_config(written, tmp_path / f"{name}.toml").sources[0].kind == name
        # The same [[source]] table, on the test's broker, topics and lot.
        table = written[written.index("[[source]]") :]
        table = table.replace("mqtt://127.0.0.1:1883", str(farm.broker))
        table = table.replace("01/06901234567892/10/L261206", lot)
        table = table.replace("tele/henhouse1/SENSOR", f"tele/{farm.device}/SENSOR")
        table = table.replace(
            'type = "zigbee2mqtt"\n', f'type = "zigbee2mqtt"\nbase_topic = "{farm.device}"\n'
        )
        sources.append(table)
    config = farm.config(
        '[[source]]\nname = "events"\ntype = "events"\nspool = "spool"\n\n' + "\n".join(sources)
    )
    _commission(farm, lot)
    with farm.ingest(), farm.run(config) as running:
        status = running.gateway.status
        wait_until(
            lambda: (
                bool(status.sources["henhouse-probes"].connected)
                and bool(status.sources["coldroom"].connected)
            ),
            "the bridges to subscribe",
        )
        publish(
            farm.broker, f"tele/{farm.device}/SENSOR", _documented("payload", "tasmota").encode()
        )
        publish(
            farm.broker,
            f"{farm.device}/coldroom_sensor",
            _documented("payload", "zigbee2mqtt").encode(),
        )
        wait_until(
            lambda: (
                status.sources["henhouse-probes"].receipted == 1
                and status.sources["coldroom"].receipted == 1
            ),
            "both documented readings receipted",
        )
    by_first = sorted((r.sensors for r in _readings(farm)), key=lambda s: s[0].type)
    assert by_first == [
        # "The reading has Dimensionless 97 P1, RelativeHumidity 80.12 P1 and Temperature 3.94 CEL"
        (
            Sensor("Dimensionless", 97, "P1"),
            Sensor("RelativeHumidity", 80.12, "P1"),
            Sensor("Temperature", 3.94, "CEL"),
        ),
        # "The reading has Temperature 4.6 CEL and RelativeHumidity 71.3 P1."
        (Sensor("Temperature", 4.6, "CEL"), Sensor("RelativeHumidity", 71.3, "P1")),
    ]


def test_a_full_outbox_holds_file_lines_and_drops_sensor_messages(farm: Farm) -> None:
    """At the bound, lines of a file wait in the file and sensor messages are dropped and
    counted; once receipts make room the waiting lines go out, none lost, none twice."""
    lot = farm.lot("L").path
    topic = f"tele/{farm.device}/SENSOR"
    config = farm.config(
        f"""
[[source]]
name = "events"
type = "events"
spool = "spool"

[[source]]
name = "probe"
type = "lines"
input = "file:probe.csv"
products = ["{lot}"]

[[source]]
name = "henhouse"
type = "tasmota"
broker = "{farm.broker}"
topics = ["{topic}"]
products = ["{lot}"]
""",
        gateway="outbox_max_messages = 100",
    )
    _commission(farm, lot)
    (farm.directory / "probe.csv").write_text(
        "".join(f",Temperature,{n / 10},CEL\n" for n in range(1, 106)), encoding="utf-8"
    )
    with farm.run(config) as running:  # no ingest yet: nothing is receipted
        status = running.gateway.status
        probe = status.sources["probe"]
        wait_until(lambda: probe.waiting_for_room, "the file's lines to wait for room")
        assert probe.sent + status.sources["events"].sent == 100  # the bound
        wait_until(lambda: bool(status.sources["henhouse"].connected), "the bridge")
        publish(farm.broker, topic, b'{"AM2301":{"Temperature":4.6},"TempUnit":"C"}')
        wait_until(
            lambda: status.sources["henhouse"].rejected["outbox_full"] == 1, "the drop counted"
        )
        assert any("OUTBOX FULL" in line for line in status_lines(status))
        with farm.ingest():
            wait_until(lambda: probe.receipted == 105, "every line receipted", 120)
    values = [r.sensors[0].value for r in _readings(farm)]
    assert sorted(values) == [n / 10 for n in range(1, 106)]
