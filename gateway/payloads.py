"""What common farm sensor stacks publish, turned into measurements (pure).

Two JSON shapes are read (docs/gateway.md, "Sensors already on an MQTT broker"):

* **Tasmota** telemetry on ``tele/{topic}/SENSOR``: one object per attached sensor, named by its
  driver (``DS18B20``, ``AM2301``, ``BME280``, ``DS18B20-2`` for a second probe), plus the units
  of the whole message (``TempUnit`` ``C`` or ``F``, ``PressureUnit`` ``hPa`` or ``mmHg``)::

      {"Time": "2026-12-06T10:00:00", "AM2301": {"Temperature": 4.6, "Humidity": 71.3,
       "DewPoint": -0.2}, "TempUnit": "C"}

* **Zigbee2MQTT** device state on ``zigbee2mqtt/{friendly_name}``: one flat object, always in
  °C, %, hPa (Zigbee2MQTT's exposes)::

      {"temperature": 4.6, "humidity": 71.3, "battery": 97, "linkquality": 134}

By default temperature, relative humidity and pressure become measurements; any other numeric
field is read only when the configuration maps it (``fields``: ``"ENERGY.Power"`` for a Tasmota
field of a sensor object, ``"battery"`` for a Zigbee2MQTT field) to an EPCIS measurement type
and a UN/CEFACT unit. A mapping of a default field replaces the default. Nothing is converted:
a value is sent in the unit the sensor reports it in, with that unit's code. The sensor's own
``Time`` is not used: Tasmota writes local time without a zone, so the gateway's clock (kept by
NTP) times the reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.config import FieldMapping
from tracecore.errors import AgritraceError, MessageRejected
from tracecore.message import MAX_SENSORS, Sensor

__all__ = ["PayloadRefused", "read_tasmota", "read_zigbee2mqtt", "zigbee2mqtt_device"]

# UN/CEFACT Recommendation 20: CEL degree Celsius, FAH degree Fahrenheit, P1 percent,
# A97 hectopascal, HN millimetre of mercury.
_TASMOTA_TEMP_UNITS: Final = {"C": "CEL", "F": "FAH"}
_TASMOTA_PRESSURE_UNITS: Final = {"hPa": "A97", "mmHg": "HN"}
_Z2M_DEFAULTS: Final = {
    "temperature": FieldMapping("Temperature", "CEL"),
    "humidity": FieldMapping("RelativeHumidity", "P1"),
    "pressure": FieldMapping("Pressure", "A97"),
}
#: The largest sensor message read (Tasmota's and Zigbee2MQTT's are a few hundred bytes).
MAX_PAYLOAD: Final = 64 * 1024
#: Topics below a Zigbee2MQTT base topic that are not device state.
_Z2M_NOT_STATE: Final = ("availability", "set", "get")


class PayloadRefused(AgritraceError):
    """A sensor's message cannot become a reading; ``reason`` is a short, countable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Found:
    field: str
    value: object
    mapping: FieldMapping


def _json_object(raw: bytes) -> dict[str, object]:
    if len(raw) > MAX_PAYLOAD:
        raise PayloadRefused("too_large", f"{len(raw)} bytes, more than {MAX_PAYLOAD}")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise PayloadRefused("not_json", "the payload nests too deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadRefused("not_json", f"the payload is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PayloadRefused("not_json", "the payload is not a JSON object")
    return value


def _measure(found: list[_Found]) -> tuple[Sensor, ...]:
    sensors = []
    for item in found:
        value = item.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadRefused(
                "not_a_number", f"{item.field} is {json.dumps(value)}, not a number"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadRefused("not_a_number", f"{item.field} is not finite")
        try:
            sensors.append(Sensor(item.mapping.type, value, item.mapping.unit))
        except MessageRejected as exc:  # e.g. an integer beyond 64 bits (docs/protocol.md §5)
            raise PayloadRefused("out_of_range", f"{item.field}: {exc}") from None
    if not sensors:
        raise PayloadRefused("nothing_mapped", "no temperature, humidity, pressure or mapped field")
    if len(sensors) > MAX_SENSORS:
        raise PayloadRefused("too_many", f"{len(sensors)} measurements, at most {MAX_SENSORS}")
    return tuple(sensors)


def read_tasmota(raw: bytes, fields: Mapping[str, FieldMapping]) -> tuple[Sensor, ...]:
    """Return the measurements of one Tasmota ``SENSOR`` message, in payload order.

    ``fields`` maps ``"{sensor object}.{field}"`` (``"ENERGY.Power"``) to a measurement.

    Raises:
        PayloadRefused: not a JSON object, a mapped field that is not a number, no measurement.
    """
    payload = _json_object(raw)
    temp_unit = _TASMOTA_TEMP_UNITS.get(str(payload.get("TempUnit", "C")))
    pressure_unit = _TASMOTA_PRESSURE_UNITS.get(str(payload.get("PressureUnit", "hPa")))
    defaults: dict[str, FieldMapping] = {}
    if temp_unit is not None:
        defaults["Temperature"] = FieldMapping("Temperature", temp_unit)
    if pressure_unit is not None:
        defaults["Pressure"] = FieldMapping("Pressure", pressure_unit)
    defaults["Humidity"] = FieldMapping("RelativeHumidity", "P1")
    found = []
    for name, sensor in payload.items():
        if not isinstance(sensor, dict):
            continue  # "Time", "TempUnit", ...: properties of the message, not sensors
        for key, value in sensor.items():
            mapping = fields.get(f"{name}.{key}") or defaults.get(key)
            if mapping is not None:
                found.append(_Found(f"{name}.{key}", value, mapping))
    if "TempUnit" in payload and temp_unit is None and not found:
        raise PayloadRefused("unknown_unit", f"TempUnit {payload['TempUnit']!r} is not C or F")
    return _measure(found)


def read_zigbee2mqtt(raw: bytes, fields: Mapping[str, FieldMapping]) -> tuple[Sensor, ...]:
    """Return the measurements of one Zigbee2MQTT device state message, in payload order.

    ``fields`` maps a field name (``"battery"``) to a measurement.

    Raises:
        PayloadRefused: not a JSON object, a mapped field that is not a number, no measurement.
    """
    payload = _json_object(raw)
    found = []
    for key, value in payload.items():
        mapping = fields.get(key) or _Z2M_DEFAULTS.get(key)
        if mapping is not None and value is not None:
            found.append(_Found(key, value, mapping))
    return _measure(found)


def zigbee2mqtt_device(topic: str, base_topic: str) -> str | None:
    """Return the friendly name a Zigbee2MQTT topic is the state of, or None if it is not one.

    ``zigbee2mqtt/bridge/...`` is the bridge's own, ``.../availability``, ``.../set`` and
    ``.../get`` are not state.
    """
    prefix = base_topic + "/"
    if not topic.startswith(prefix):
        return None
    name = topic[len(prefix) :]
    if not name or name == "bridge" or name.startswith("bridge/"):
        return None
    if name.rpartition("/")[2] in _Z2M_NOT_STATE:
        return None
    return name
