"""The gateway's configuration file, ``gateway.toml``: read once, checked whole, with clear errors.

docs/gateway.md has the reference. In short::

    [gateway]
    provisioning = "provisioning-henhouse-1.json"   # from the console, or `agritrace gateway init`
    keys = "keys"                                   # the key directory (`agritrace gateway-key`)

    [[source]]
    name = "henhouse-probes"
    type = "tasmota"                                # or zigbee2mqtt, lines, events
    broker = "mqtt://127.0.0.1:1883"                # the farm's own broker
    products = ["01/06901234567892/10/L261206"]

Relative paths are relative to the file's own directory, so a gateway's directory can be moved
or copied whole. Every error names the file, the line, the key and what is expected
(:class:`GatewayConfigError`); nothing is guessed: an unknown key is an error, so that a typo
(``product = ...``) never silently leaves a sensor unsent.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from gateway.lines import unit_mismatch
from gateway.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, OutboxBound
from tracecore.errors import ConfigError, IdentifierError
from tracecore.identifiers import ProductKey
from tracecore.message import SENSOR_TYPES
from tracecore.mqtt import BrokerAddress

__all__ = [
    "EventsSource",
    "FieldMapping",
    "GatewayConfig",
    "GatewayConfigError",
    "LinesSource",
    "LocalSensor",
    "MqttSource",
    "Source",
    "load_config",
    "parse_config",
]

SourceKind = Literal["tasmota", "zigbee2mqtt", "lines", "events"]
_KINDS: Final = ("tasmota", "zigbee2mqtt", "lines", "events")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# The sensor names gateway.lines.LineFormat accepts.
_SENSOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# docs/protocol.md §5: UN/CEFACT Recommendation 20 codes are 2 or 3 characters A-Z 0-9.
_UNIT: Final = re.compile(r"[A-Z0-9]{2,3}")


class GatewayConfigError(ConfigError):
    """``gateway.toml`` breaks a rule: the message names the file, line, key and expectation."""


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """How a numeric field of a sensor's JSON becomes a measurement: its EPCIS type and unit."""

    type: str
    unit: str


@dataclass(frozen=True, slots=True)
class LocalSensor:
    """A sensor name of a ``lines`` source: its measurement type, unit and own products."""

    type: str
    unit: str | None = None
    products: tuple[ProductKey, ...] = ()


@dataclass(frozen=True, slots=True)
class MqttSource:
    """A bridge from the farm's own broker: Tasmota telemetry or Zigbee2MQTT device payloads."""

    name: str
    kind: Literal["tasmota", "zigbee2mqtt"]
    broker: BrokerAddress
    topics: tuple[str, ...]
    devices: tuple[str, ...]
    products: tuple[ProductKey, ...]
    fields: Mapping[str, FieldMapping]
    min_interval_s: float
    base_topic: str = ""


@dataclass(frozen=True, slots=True)
class LinesSource:
    """CSV lines ``time,sensor,value,unit`` from stdin, a growing file or a serial device."""

    name: str
    input: str
    path: Path | None
    baud: int
    products: tuple[ProductKey, ...]
    sensors: Mapping[str, LocalSensor]

    @property
    def kind(self) -> Literal["lines"]:
        """The source type, as written in the file."""
        return "lines"


@dataclass(frozen=True, slots=True)
class EventsSource:
    """Batch-event CSV files dropped into a spool directory (a packing line, an office PC)."""

    name: str
    spool: Path

    @property
    def kind(self) -> Literal["events"]:
        """The source type, as written in the file."""
        return "events"


Source = MqttSource | LinesSource | EventsSource


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A checked ``gateway.toml``; build it with :func:`load_config` or :func:`parse_config`."""

    path: Path
    provisioning: Path
    keys: Path
    state: Path
    broker: BrokerAddress | None
    timezone: str
    status_interval_s: float
    metrics: tuple[str, int] | None
    rotate_every_days: float
    outbox: OutboxBound
    sources: tuple[Source, ...] = field(default=())

    def source(self, name: str) -> Source:
        """Return the source called ``name``; raises :class:`GatewayConfigError` if none is."""
        for source in self.sources:
            if source.name == name:
                return source
        names = ", ".join(s.name for s in self.sources) or "none"
        raise GatewayConfigError(f"{self.path}: no source called {name!r} (sources: {names})")


def load_config(path: Path) -> GatewayConfig:
    """Read and check ``path``; raises :class:`GatewayConfigError` saying what is wrong where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayConfigError(f"cannot read the gateway configuration {path}: {exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> GatewayConfig:
    """Check the TOML ``text`` of the file at ``path`` (for its name and relative paths)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _Reader(text, path).config(document)


class _Reader:
    """Checks a parsed document, finding the line of a key for each error message."""

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self._lines = text.splitlines()

    # -- errors --------------------------------------------------------------------------------

    def error(self, where: Sequence[str | int], expected: str, got: object = None) -> Exception:
        shown = ".".join(f"[{p + 1}]" if isinstance(p, int) else p for p in where).replace(
            ".[", "["
        )
        line = self._line_of(where)
        at = f"line {line}, " if line else ""
        tail = "" if got is None else f", got {got!r}"
        return GatewayConfigError(f"{self.path}: {at}{shown}: expected {expected}{tail}")

    def _line_of(self, where: Sequence[str | int]) -> int | None:
        """Find the line that sets ``where`` (tables, array indexes, a key), else its parent's."""
        if not where:
            return None
        target_table = list(where[:-1]) if isinstance(where[-1], str) else list(where)
        key = where[-1] if isinstance(where[-1], str) else None
        table: list[str | int] = []
        counts: dict[str, int] = {}
        for number, raw in enumerate(self._lines, start=1):
            line = raw.strip()
            if line.startswith("[[") and line.endswith("]]"):
                name = line[2:-2].strip()
                counts[name] = counts.get(name, -1) + 1
                table = [name, counts[name]]
            elif line.startswith("[") and line.endswith("]"):
                head, _, rest = line[1:-1].strip().partition(".")
                table = [head, counts[head]] if head in counts else [head]
                table += [part for part in rest.split(".") if part]
            elif key is not None and table == target_table and "=" in line:
                if line.split("=", 1)[0].strip().strip('"') == key:
                    return number
                continue
            else:
                continue
            if table == list(where):
                return number  # the table itself (a [table] or the n-th [[array]] header)
        return self._line_of(where[:-1])

    # -- values --------------------------------------------------------------------------------

    def table(
        self, value: object, where: Sequence[str | int], allowed: set[str] | None
    ) -> dict[str, object]:
        """Check ``value`` is a table with only ``allowed`` keys (None: any key, a free map)."""
        if not isinstance(value, dict):
            raise self.error(where, "a table", value)
        for key in value:
            if allowed is not None and key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error([*where, key], f"one of the known keys ({known})", key)
        return value

    def text(self, value: object, where: Sequence[str | int]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, "a non-empty string", value)
        return value

    def number(self, value: object, where: Sequence[str | int], low: float, high: float) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.error(where, f"a number from {low:g} to {high:g}", value)
        return float(value)

    def integer(self, value: object, where: Sequence[str | int], low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(where, f"an integer from {low} to {high}", value)
        return value

    def file_path(self, value: object, where: Sequence[str | int]) -> Path:
        path = Path(self.text(value, where)).expanduser()
        return path if path.is_absolute() else self.base / path

    def broker(self, value: object, where: Sequence[str | int]) -> BrokerAddress:
        try:
            return BrokerAddress.parse(self.text(value, where))
        except ConfigError:
            raise self.error(where, "an MQTT URL mqtt://[user:password@]host[:port]") from None

    def products(self, value: object, where: Sequence[str | int]) -> tuple[ProductKey, ...]:
        if not isinstance(value, list) or not 1 <= len(value) <= 64:
            raise self.error(where, "a list of 1 to 64 product keys (docs/protocol.md §5)", value)
        keys = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error([*where, index], "a product key", item)
            try:
                keys.append(ProductKey.parse_canonical(item))
            except IdentifierError as exc:
                raise self.error(
                    [*where, index],
                    f"a canonical product key like 01/{{gtin14}}/10/{{lot}} ({exc})",
                ) from None
        if len(set(keys)) != len(keys):
            raise self.error(where, "distinct product keys", value)
        return tuple(keys)

    def measurement(self, value: object, where: Sequence[str | int]) -> str:
        if value not in SENSOR_TYPES:
            raise self.error(
                where, "an EPCIS measurement type such as Temperature (docs/protocol.md §5)", value
            )
        return str(value)

    def unit(self, value: object, where: Sequence[str | int], measurement: str) -> str:
        if not isinstance(value, str) or not _UNIT.fullmatch(value):
            raise self.error(where, "a UN/CEFACT unit code such as CEL or P1", value)
        mismatch = unit_mismatch(value, measurement)
        if mismatch is not None:
            raise self.error(where, f"a unit of {measurement}: {mismatch}")
        return value

    # -- the document --------------------------------------------------------------------------

    def config(self, document: dict[str, object]) -> GatewayConfig:
        self.table(document, [], {"gateway", "source"})
        if "gateway" not in document:
            raise self.error(["gateway"], "a [gateway] table with provisioning and keys")
        gateway = self.table(
            document["gateway"],
            ["gateway"],
            {
                "provisioning",
                "keys",
                "state",
                "broker",
                "timezone",
                "status_interval",
                "metrics",
                "rotate_every_days",
                "outbox_max_messages",
                "outbox_max_mib",
            },
        )
        for required in ("provisioning", "keys"):
            if required not in gateway:
                raise self.error(["gateway", required], "this key (it is required)")
        keys = self.file_path(gateway["keys"], ["gateway", "keys"])
        timezone = self.text(gateway.get("timezone", "Asia/Shanghai"), ["gateway", "timezone"])
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise self.error(["gateway", "timezone"], "an IANA time zone", timezone) from None
        raw_sources = document.get("source", [])
        if not isinstance(raw_sources, list) or not raw_sources:
            raise self.error(["source"], "at least one [[source]] table")
        sources = tuple(self.source(raw, index) for index, raw in enumerate(raw_sources))
        names = [s.name for s in sources]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise self.error(["source", index, "name"], "a name no other source has", name)
        return GatewayConfig(
            path=self.path,
            provisioning=self.file_path(gateway["provisioning"], ["gateway", "provisioning"]),
            keys=keys,
            state=self.file_path(gateway["state"], ["gateway", "state"])
            if "state" in gateway
            else keys,
            broker=self.broker(gateway["broker"], ["gateway", "broker"])
            if "broker" in gateway
            else None,
            timezone=timezone,
            status_interval_s=self.number(
                gateway.get("status_interval", 5), ["gateway", "status_interval"], 0, 3600
            ),
            metrics=self.listen(gateway["metrics"], ["gateway", "metrics"])
            if "metrics" in gateway
            else None,
            rotate_every_days=self.number(
                gateway.get("rotate_every_days", 0), ["gateway", "rotate_every_days"], 0, 3650
            ),
            outbox=OutboxBound(
                max_messages=self.integer(
                    gateway.get("outbox_max_messages", DEFAULT_MAX_MESSAGES),
                    ["gateway", "outbox_max_messages"],
                    100,
                    100_000_000,
                ),
                max_bytes=self.integer(
                    gateway.get("outbox_max_mib", DEFAULT_MAX_BYTES // 2**20),
                    ["gateway", "outbox_max_mib"],
                    1,
                    1_000_000,
                )
                * 2**20,
            ),
            sources=sources,
        )

    def listen(self, value: object, where: Sequence[str | int]) -> tuple[str, int]:
        text = self.text(value, where)
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise self.error(where, "host:port, such as 127.0.0.1:9464", text)
        return host.strip("[]"), int(port)

    def source(self, raw: object, index: int) -> Source:
        where: list[str | int] = ["source", index]
        if not isinstance(raw, dict):
            raise self.error(where, "a table", raw)
        for required in ("name", "type"):
            if required not in raw:
                raise self.error([*where, required], "this key (every source has a name and type)")
        name = self.text(raw["name"], [*where, "name"])
        if not _NAME.fullmatch(name):
            raise self.error([*where, "name"], "1-64 lowercase letters, digits, '-' or '_'", name)
        kind = raw["type"]
        if kind not in _KINDS:
            raise self.error([*where, "type"], f"one of {', '.join(_KINDS)}", kind)
        if kind in ("tasmota", "zigbee2mqtt"):
            return self.mqtt_source(raw, where, name, kind)
        if kind == "lines":
            return self.lines_source(raw, where, name)
        self.table(raw, where, {"name", "type", "spool"})
        if "spool" not in raw:
            raise self.error([*where, "spool"], "the directory where event CSV files are dropped")
        return EventsSource(name=name, spool=self.file_path(raw["spool"], [*where, "spool"]))

    def mqtt_source(
        self,
        raw: dict[str, object],
        where: list[str | int],
        name: str,
        kind: Literal["tasmota", "zigbee2mqtt"],
    ) -> MqttSource:
        allowed = {"name", "type", "broker", "products", "fields", "min_interval"}
        allowed |= {"topics"} if kind == "tasmota" else {"base_topic", "devices"}
        self.table(raw, where, allowed)
        for required in ("broker", "products"):
            if required not in raw:
                raise self.error([*where, required], "this key (it is required)")
        if kind == "tasmota":
            topics = self.topics(raw.get("topics", ["tele/+/SENSOR"]), [*where, "topics"])
            devices: tuple[str, ...] = ()
            base = ""
        else:
            base = self.text(raw.get("base_topic", "zigbee2mqtt"), [*where, "base_topic"])
            if any(c in base for c in "+#") or base.endswith("/"):
                raise self.error([*where, "base_topic"], "a topic without wildcards", base)
            devices = self.names(raw.get("devices", []), [*where, "devices"])
            topics = tuple(f"{base}/{d}" for d in devices) if devices else (f"{base}/#",)
        fields: dict[str, FieldMapping] = {}
        raw_fields = self.table(raw.get("fields", {}), [*where, "fields"], None)
        for key, mapping in raw_fields.items():
            at = [*where, "fields", key]
            spec = self.table(mapping, at, {"type", "unit"})
            if "type" not in spec or "unit" not in spec:
                raise self.error(at, '{ type = "Temperature", unit = "CEL" }', mapping)
            measure = self.measurement(spec["type"], [*at, "type"])
            fields[key] = FieldMapping(measure, self.unit(spec["unit"], [*at, "unit"], measure))
        return MqttSource(
            name=name,
            kind=kind,
            broker=self.broker(raw["broker"], [*where, "broker"]),
            topics=topics,
            devices=devices,
            products=self.products(raw["products"], [*where, "products"]),
            fields=fields,
            min_interval_s=self.number(
                raw.get("min_interval", 0), [*where, "min_interval"], 0, 86400
            ),
            base_topic=base,
        )

    def topics(self, value: object, where: Sequence[str | int]) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(where, "a list of MQTT topic filters", value)
        return tuple(self.text(item, [*where, i]) for i, item in enumerate(value))

    def names(self, value: object, where: Sequence[str | int]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.error(where, "a list of device names", value)
        names = tuple(self.text(item, [*where, i]) for i, item in enumerate(value))
        for i, item in enumerate(names):
            if any(c in item for c in "+#"):
                raise self.error([*where, i], "a Zigbee2MQTT friendly name without + or #", item)
        return names

    def lines_source(
        self, raw: dict[str, object], where: list[str | int], name: str
    ) -> LinesSource:
        self.table(raw, where, {"name", "type", "input", "baud", "products", "sensors"})
        text = self.text(raw.get("input", "-"), [*where, "input"])
        path: Path | None = None
        if text != "-":
            kind, sep, rest = text.partition(":")
            if not sep or kind not in ("file", "serial") or not rest:
                raise self.error(
                    [*where, "input"], '"-" (stdin), "file:PATH" or "serial:/dev/ttyUSB0"', text
                )
            path = Path(rest).expanduser()
            path = path if path.is_absolute() else self.base / path
        products: tuple[ProductKey, ...] = ()
        if "products" in raw:
            products = self.products(raw["products"], [*where, "products"])
        sensors: dict[str, LocalSensor] = {}
        for key, spec in self.table(raw.get("sensors", {}), [*where, "sensors"], None).items():
            at = [*where, "sensors", key]
            entry = self.table(spec, at, {"type", "unit", "products"})
            if "type" not in entry:
                raise self.error([*at, "type"], "the sensor's measurement type")
            own = self.products(entry["products"], [*at, "products"]) if "products" in entry else ()
            measure = self.measurement(entry["type"], [*at, "type"])
            sensors[key] = LocalSensor(
                type=measure,
                unit=self.unit(entry["unit"], [*at, "unit"], measure) if "unit" in entry else None,
                products=own,
            )
            if not own and not products:
                raise self.error([*at, "products"], "products here or in the source")
        if not products and not sensors:
            raise self.error([*where, "products"], "the products the lines are about")
        for key in sensors:
            if key in SENSOR_TYPES:
                raise self.error(
                    [*where, "sensors", key],
                    "a sensor name that is not a measurement type (lines naming it would be "
                    "ambiguous)",
                )
            if not _SENSOR_NAME.fullmatch(key):
                raise self.error(
                    [*where, "sensors", key],
                    "a sensor name of 1-64 characters A-Z a-z 0-9 . _ : -, a letter or digit first",
                )
        return LinesSource(
            name=name,
            input=text,
            path=path,
            baud=self.integer(raw.get("baud", 9600), [*where, "baud"], 50, 4_000_000),
            products=products,
            sensors=sensors,
        )
