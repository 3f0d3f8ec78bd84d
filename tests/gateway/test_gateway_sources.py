"""``agritrace gateway`` end to end with the real mosquitto and the real ingest: a farm's Tasmota
and Zigbee2MQTT sensors, CSV lines and a packing file become verified, receipted messages."""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_kit import Farm, logged_messages, publish, wait_until
from mqtt_kit import unique
from sqlalchemy import Engine

from gateway.spool import queue_batch
from gateway.status import prometheus_text, status_lines
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.storage import make_engine, upgrade

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


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
