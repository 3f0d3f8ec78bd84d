"""Tasmota and Zigbee2MQTT payloads as the devices publish them become exact measurements."""

from __future__ import annotations

import pytest

from gateway.config import FieldMapping
from gateway.payloads import PayloadRefused, read_tasmota, read_zigbee2mqtt, zigbee2mqtt_device
from tracecore.message import Sensor

# Shapes from Tasmota's sensor documentation (AM2301, DS18x20 with several probes, BME280).
TASMOTA_AM2301 = (
    b'{"Time":"2026-12-06T10:00:00","AM2301":{"Temperature":24.6,"Humidity":58.2},"TempUnit":"C"}'
)
TASMOTA_TWO_PROBES = (
    b'{"Time":"2026-12-06T10:00:00","DS18B20-1":{"Id":"01144A0CB2AA","Temperature":4.5},'
    b'"DS18B20-2":{"Id":"0114537F6DAA","Temperature":5.1},"TempUnit":"C"}'
)
TASMOTA_BME280_F = (
    b'{"Time":"2026-12-06T10:00:00","BME280":{"Temperature":39.9,"Humidity":71.0,'
    b'"DewPoint":31.2,"Pressure":1012.3},"PressureUnit":"hPa","TempUnit":"F",'
    b'"ENERGY":{"Total":1.2,"Power":57,"Voltage":229}}'
)
# Zigbee2MQTT's state of an Aqara WSDCGQ11LM temperature/humidity/pressure sensor.
Z2M_AQARA = (
    b'{"battery":97,"humidity":80.12,"linkquality":134,"pressure":1011.5,'
    b'"temperature":3.94,"voltage":2995}'
)


def test_tasmota_temperature_and_humidity() -> None:
    """An AM2301's temperature in °C and its relative humidity, nothing else."""
    assert read_tasmota(TASMOTA_AM2301, {}) == (
        Sensor("Temperature", 24.6, "CEL"),
        Sensor("RelativeHumidity", 58.2, "P1"),
    )


def test_tasmota_two_probes_are_two_measurements() -> None:
    """Each DS18B20 on the bus is its own temperature, in payload order."""
    assert read_tasmota(TASMOTA_TWO_PROBES, {}) == (
        Sensor("Temperature", 4.5, "CEL"),
        Sensor("Temperature", 5.1, "CEL"),
    )


def test_tasmota_units_are_the_devices_and_mapped_fields_join() -> None:
    """°F stays °F (FAH), hPa is A97; DewPoint is left out; a mapped ENERGY field is read."""
    fields = {"ENERGY.Power": FieldMapping("Power", "WTT")}
    assert read_tasmota(TASMOTA_BME280_F, fields) == (
        Sensor("Temperature", 39.9, "FAH"),
        Sensor("RelativeHumidity", 71.0, "P1"),
        Sensor("Pressure", 1012.3, "A97"),
        Sensor("Power", 57, "WTT"),
    )


def test_a_mapping_replaces_a_default() -> None:
    """Mapping BME280.Temperature changes its type or unit for that sensor only."""
    fields = {"DS18B20-2.Temperature": FieldMapping("Temperature", "KEL")}
    sensors = read_tasmota(TASMOTA_TWO_PROBES, fields)
    assert [s.uom for s in sensors] == ["CEL", "KEL"]


def test_zigbee2mqtt_defaults_and_mapped_battery() -> None:
    """Temperature, humidity, pressure by default; battery when mapped; never linkquality."""
    fields = {"battery": FieldMapping("Dimensionless", "P1")}
    assert read_zigbee2mqtt(Z2M_AQARA, fields) == (
        Sensor("Dimensionless", 97, "P1"),
        Sensor("RelativeHumidity", 80.12, "P1"),
        Sensor("Pressure", 1011.5, "A97"),
        Sensor("Temperature", 3.94, "CEL"),
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"ON", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_json"),
        (b'{"Time":"2026-12-06T10:00:00","Switch1":"OFF"}', "nothing_mapped"),
        (b'{"AM2301":{"Temperature":"24.6"}}', "not_a_number"),
        (b'{"AM2301":{"Temperature":true}}', "not_a_number"),
        (b'{"AM2301":{"Temperature":null}}', "not_a_number"),
        (b'{"AM2301":{"Temperature":1e400}}', "not_a_number"),
        (b"[" * 20_000 + b"]" * 20_000, "not_json"),
        (b'{"x":"' + b"a" * 70_000 + b'"}', "too_large"),
        (b'{"AM2301":{"Temperature":100000000000000000000000}}', "out_of_range"),
    ],
)
def test_tasmota_refusals_have_reasons(payload: bytes, reason: str) -> None:
    """What cannot be a reading is refused with a countable reason, never guessed."""
    with pytest.raises(PayloadRefused) as caught:
        read_tasmota(payload, {})
    assert caught.value.reason == reason


def test_zigbee2mqtt_text_for_a_number_is_refused() -> None:
    """A temperature sent as text is not silently converted."""
    with pytest.raises(PayloadRefused) as caught:
        read_zigbee2mqtt(b'{"temperature":"3.9"}', {})
    assert caught.value.reason == "not_a_number"
    assert "temperature" in caught.value.detail


def test_zigbee2mqtt_a_button_has_nothing_to_measure() -> None:
    """A device without measurements (a button's action) is refused, with its reason."""
    with pytest.raises(PayloadRefused) as caught:
        read_zigbee2mqtt(b'{"action":"single","battery":100,"linkquality":90}', {})
    assert caught.value.reason == "nothing_mapped"


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("zigbee2mqtt/coldroom", "coldroom"),
        ("zigbee2mqtt/barn/north", "barn/north"),
        ("zigbee2mqtt/bridge/state", None),
        ("zigbee2mqtt/bridge", None),
        ("zigbee2mqtt/coldroom/availability", None),
        ("zigbee2mqtt/coldroom/set", None),
        ("other/coldroom", None),
    ],
)
def test_zigbee2mqtt_topics(topic: str, device: str | None) -> None:
    """Device state topics name the device; the bridge's own and command topics are not state."""
    assert zigbee2mqtt_device(topic, "zigbee2mqtt") == device
