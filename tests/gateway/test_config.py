"""gateway.toml: a good file becomes the configuration; every mistake is named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    EventsSource,
    FieldMapping,
    GatewayConfigError,
    LinesSource,
    MqttSource,
    load_config,
    parse_config,
)
from tracecore.identifiers import ProductKey

LOT = "01/06901234567892/10/L261206"

GOOD = f"""\
[gateway]
provisioning = "provisioning-henhouse-1.json"
keys = "keys"
metrics = "127.0.0.1:9464"
rotate_every_days = 90

[[source]]
name = "henhouse-probes"
type = "tasmota"
broker = "mqtt://127.0.0.1:1883"
topics = ["tele/henhouse1/SENSOR"]
products = ["{LOT}"]

[source.fields]
"ENERGY.Power" = {{ type = "Power", unit = "WTT" }}

[[source]]
name = "coldroom"
type = "zigbee2mqtt"
broker = "mqtt://farm:secret@192.168.1.2:1883"
devices = ["coldroom_sensor"]
products = ["{LOT}"]
min_interval = 60

[[source]]
name = "egg-counter"
type = "lines"
input = "file:/var/log/eggs.csv"
products = ["{LOT}"]

[source.sensors]
belt-1 = {{ type = "Count", unit = "C62" }}

[[source]]
name = "packing"
type = "events"
spool = "spool/packing"
"""


def _error(text: str) -> str:
    with pytest.raises(GatewayConfigError) as caught:
        parse_config(text, Path("/etc/agritrace/gateway.toml"))
    return str(caught.value)


def test_a_good_file_becomes_the_configuration(tmp_path: Path) -> None:
    """Every source type is read with its settings; relative paths are the file's directory's."""
    path = tmp_path / "gateway.toml"
    path.write_text(GOOD, encoding="utf-8")
    config = load_config(path)
    assert config.provisioning == tmp_path / "provisioning-henhouse-1.json"
    assert config.keys == config.state == tmp_path / "keys"
    assert config.metrics == ("127.0.0.1", 9464)
    assert config.rotate_every_days == 90
    assert config.timezone == "Asia/Shanghai"
    tasmota, zigbee, lines, events = config.sources
    assert isinstance(tasmota, MqttSource)
    assert tasmota.kind == "tasmota"
    assert tasmota.topics == ("tele/henhouse1/SENSOR",)
    assert tasmota.products == (ProductKey.parse_canonical(LOT),)
    assert tasmota.fields == {"ENERGY.Power": FieldMapping("Power", "WTT")}
    assert isinstance(zigbee, MqttSource)
    assert zigbee.topics == ("zigbee2mqtt/coldroom_sensor",)
    assert zigbee.broker.password == "secret"
    assert zigbee.min_interval_s == 60
    assert isinstance(lines, LinesSource)
    assert lines.path == Path("/var/log/eggs.csv")
    assert lines.sensors["belt-1"].type == "Count"
    assert isinstance(events, EventsSource)
    assert events.spool == tmp_path / "spool" / "packing"
    assert config.source("packing") is events


def test_zigbee2mqtt_without_devices_listens_to_every_device() -> None:
    """No device list: the whole base topic, the bridge's own topics left out when reading."""
    text = GOOD.replace('devices = ["coldroom_sensor"]\n', 'base_topic = "z2m"\n')
    config = parse_config(text, Path("gateway.toml"))
    assert config.source("coldroom").topics == ("z2m/#",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('type = "tasmota"', 'type = "tasmot"'), "source[1].type: expected one of"),
        (
            (
                'products = ["01/06901234567892/10/L261206"]\n\n[source.fields]',
                "product = 1\n\n[source.fields]",
            ),
            "source[1].product: expected one of the known keys",
        ),
        (
            ('unit = "WTT"', 'unit = "watt"'),
            "source[1].fields.ENERGY.Power.unit: expected a UN/CEFACT unit code",
        ),
        (
            (
                'belt-1 = { type = "Count", unit = "C62" }',
                'belt-1 = { type = "Temperature", unit = "P1" }',
            ),
            "source[3].sensors.belt-1.unit: expected a unit of Temperature: P1 (percent) is not",
        ),
        (
            ("min_interval = 60", "min_interval = -1"),
            "source[2].min_interval: expected a number from 0 to 86400, got -1",
        ),
        (
            ('type = "Count"', 'type = "Eggs"'),
            "source[3].sensors.belt-1.type: expected an EPCIS measurement type",
        ),
        (
            ('input = "file:/var/log/eggs.csv"', 'input = "/var/log/eggs.csv"'),
            'source[3].input: expected "-" (stdin)',
        ),
        (
            ('broker = "mqtt://127.0.0.1:1883"', 'broker = "http://127.0.0.1"'),
            "source[1].broker: expected an MQTT URL",
        ),
        (('metrics = "127.0.0.1:9464"', 'metrics = "9464"'), "gateway.metrics: expected host:port"),
        (('keys = "keys"\n', ""), "gateway.keys: expected this key (it is required)"),
        (
            ('name = "coldroom"', 'name = "henhouse-probes"'),
            "source[2].name: expected a name no other source has",
        ),
        (
            (
                'L261206"]\n\n[source.fields]',
                'L261206", "01/6901234567892/10/X"]\n\n[source.fields]',
            ),
            "source[1].products[2]: expected a canonical product key",
        ),
    ],
)
def test_each_mistake_is_named_with_its_line_and_key(
    change: tuple[str, str], expected: str
) -> None:
    """The message names the file, the line, the key, and what is expected there."""
    old, new = change
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    # The line of the change (its last line, where the key or table is), or of [gateway].
    line = text[: text.rindex(new) + len(new)].count("\n") + 1 if new else 1
    if new.endswith("[source.fields]"):
        line -= 2
    message = _error(text)
    assert message.startswith(f"/etc/agritrace/gateway.toml: line {line}, {expected}")


def test_broken_toml_says_where() -> None:
    """A TOML syntax error keeps the parser's line and column."""
    assert "line 2" in _error("[gateway]\nkeys = \n")


def test_a_file_without_sources_is_refused() -> None:
    """A gateway with nothing to read would run and send nothing: refused."""
    assert "at least one [[source]]" in _error('[gateway]\nprovisioning = "p.json"\nkeys = "k"\n')
