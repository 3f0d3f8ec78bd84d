"""Sensor lines: one reading per line of text, ``time,sensor,value,unit`` (docs/gateway-csv.md).

A sensor, a logger or a script writes lines such as::

    2026-12-06T08:00:00+08:00,coldroom-1,3.5,°C

to the gateway's standard input, to a file the gateway follows, or to a serial port. The gateway
reads them (the I/O is the caller's); :meth:`LineFormat.parse_line` turns one line of text into a
:class:`LineReading`, the arguments of ``Device.send_reading``. The rules:

* The line is one CSV record (RFC 4180 quoting, comma separated) of exactly four fields;
  spaces around a field are ignored. Blank lines, lines starting with ``#`` and the header line
  ``time,sensor,value,unit`` (any case) give ``None``.
* ``time``: see :mod:`gateway.timestamps` (empty: now; ISO 8601 with or without offset;
  13-digit epoch milliseconds).
* ``sensor``: a name configured in ``sensors`` (a :class:`SensorSpec`: its EPCIS measurement
  type, optionally its unit and its products), or an EPCIS 2.0 measurement type such as
  ``Temperature`` itself (docs/protocol.md §5). The reading is about the sensor's own products,
  else the format's default products.
* ``value``: a decimal number, ``21``, ``-3.5``, ``1.5e-3``; an integer stays an integer. No
  NaN or infinity, no thousands separators, no decimal comma, and no more digits than a float
  keeps exactly (nothing is rounded).
* ``unit``: a code of :data:`UNIT_CODES` (UN/CEFACT Recommendation 20), the configured unit of
  the sensor, or a symbol of :data:`UNIT_SYMBOLS`; empty means the sensor's configured unit. A
  unit that differs from the configured one is an error: units are never converted. A code of
  the table must suit the measurement type (:data:`UNIT_MEASURES`).

Every error is an :class:`~tracecore.errors.InputError` naming the line (when given) and the
column. Pure: the clock (``now_ms``) and the zone are arguments.
"""

from __future__ import annotations

import csv
import decimal
import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo

from gateway.timestamps import parse_time
from tracecore.errors import ConfigError, InputError, MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.message import MAX_PRODUCTS, SENSOR_TYPES, Sensor

__all__ = [
    "COLUMNS",
    "MAX_LINE_LENGTH",
    "UNIT_CODES",
    "UNIT_MEASURES",
    "UNIT_SYMBOLS",
    "LineFormat",
    "LineReading",
    "SensorSpec",
    "unit_mismatch",
]

COLUMNS: Final = ("time", "sensor", "value", "unit")
MAX_LINE_LENGTH: Final = 1024  # a line is four short fields; a longer one is a garbled stream

# UN/CEFACT Recommendation 20 (Codes for Units of Measure Used in International Trade), Annex
# II/III: the codes a farm's sensors need, with their names. A sensor with another unit gets it
# in its SensorSpec.
UNIT_CODES: Final = MappingProxyType(
    {
        "CEL": "degree Celsius", "FAH": "degree Fahrenheit", "KEL": "kelvin",
        "P1": "percent", "59": "part per million",
        "GRM": "gram", "KGM": "kilogram", "MGM": "milligram", "TNE": "tonne",
        "PAL": "pascal", "A97": "hectopascal", "KPA": "kilopascal", "BAR": "bar",
        "MBR": "millibar",
        "LUX": "lux", "VLT": "volt", "2Z": "millivolt", "AMP": "ampere",
        "4K": "milliampere", "WTT": "watt", "KWH": "kilowatt hour", "HTZ": "hertz",
        "MTR": "metre", "CMT": "centimetre", "MMT": "millimetre",
        "MTS": "metre per second", "KMH": "kilometre per hour",
        "LTR": "litre", "MLT": "millilitre", "A93": "gram per cubic metre",
        "SEC": "second", "MIN": "minute", "HUR": "hour",
        "C62": "one: a count or a pure number",
    }
)  # fmt: skip

# Common symbols, each mapped explicitly to one code (UN/CEFACT Rec 20 gives the symbol of each
# code). Case matters: "mV" is millivolt, "MV" would be megavolt and is not here. "C" is taken
# as degree Celsius (a farm has thermometers, not coulomb meters); "F" (farad) is not mapped.
UNIT_SYMBOLS: Final = MappingProxyType(
    {
        "°C": "CEL", "℃": "CEL", "C": "CEL", "°F": "FAH", "℉": "FAH", "K": "KEL",
        "%": "P1", "%RH": "P1", "ppm": "59",
        "g": "GRM", "kg": "KGM", "mg": "MGM", "t": "TNE",
        "Pa": "PAL", "hPa": "A97", "kPa": "KPA", "bar": "BAR", "mbar": "MBR",
        "lx": "LUX", "V": "VLT", "mV": "2Z", "A": "AMP", "mA": "4K", "W": "WTT",
        "kWh": "KWH", "Hz": "HTZ",
        "m": "MTR", "cm": "CMT", "mm": "MMT", "m/s": "MTS", "km/h": "KMH",
        "l": "LTR", "L": "LTR", "ml": "MLT", "mL": "MLT", "g/m³": "A93", "g/m3": "A93",
        "s": "SEC", "min": "MIN", "h": "HUR", "pcs": "C62",
    }
)  # fmt: skip

# What each code of UNIT_CODES can measure: the EPCIS 2.0 measurement types of its quantity
# (docs/protocol.md §5), so that "3,%" is not accepted as a temperature. Codes configured in a
# SensorSpec that are not in UNIT_CODES are the operator's choice and are not checked.
_TEMPERATURE: Final = frozenset({"Temperature"})
_FRACTION: Final = frozenset({"RelativeHumidity", "VolumeFraction", "Dimensionless"})
UNIT_MEASURES: Final = MappingProxyType(
    {
        "CEL": _TEMPERATURE, "FAH": _TEMPERATURE, "KEL": _TEMPERATURE,
        "P1": _FRACTION, "59": frozenset({"VolumeFraction", "Dimensionless"}),
        **dict.fromkeys(("GRM", "KGM", "MGM", "TNE"), frozenset({"Mass"})),
        **dict.fromkeys(("PAL", "A97", "KPA", "BAR", "MBR"), frozenset({"Pressure"})),
        "LUX": frozenset({"Illuminance"}),
        "VLT": frozenset({"Voltage"}), "2Z": frozenset({"Voltage"}),
        "AMP": frozenset({"ElectricCurrent"}), "4K": frozenset({"ElectricCurrent"}),
        "WTT": frozenset({"Power"}), "KWH": frozenset({"Energy"}), "HTZ": frozenset({"Frequency"}),
        **dict.fromkeys(("MTR", "CMT", "MMT"), frozenset({"Length", "Altitude"})),
        "MTS": frozenset({"Speed"}), "KMH": frozenset({"Speed"}),
        "LTR": frozenset({"Volume"}), "MLT": frozenset({"Volume"}),
        "A93": frozenset({"AbsoluteHumidity", "MassConcentration"}),
        **dict.fromkeys(("SEC", "MIN", "HUR"), frozenset({"Time"})),
        "C62": frozenset({"Count", "Dimensionless"}),
    }
)  # fmt: skip

_CODE: Final = re.compile(r"[A-Z0-9]{2,3}", re.ASCII)  # UN/CEFACT Rec 20 common code form
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", re.ASCII)
# A decimal number: optional sign, digits, optional fraction, optional exponent (no "1,000",
# no "1,5", no ".5", no "inf"/"nan" that float() would take).
_NUMBER: Final = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_INTEGER: Final = re.compile(r"[+-]?\d+", re.ASCII)
_SYMBOL_LIST: Final = ", ".join(UNIT_SYMBOLS)

_Fail: TypeAlias = Callable[[str, str], InputError]  # fail(column, reason) within one line


def _check_products(what: str, keys: object, low: int) -> tuple[ProductKey, ...]:
    """Return ``keys`` if it is a tuple of ``low``-64 distinct ProductKey; else ConfigError."""
    if not isinstance(keys, tuple) or not all(isinstance(k, ProductKey) for k in keys):
        raise ConfigError(f"{what} must be a tuple of ProductKey, got {keys!r}")
    if not low <= len(keys) <= MAX_PRODUCTS:  # docs/protocol.md §5: 1 to 64 products
        raise ConfigError(f"{what} must hold {low} to {MAX_PRODUCTS} product keys, got {len(keys)}")
    items = [key.item or key for key in keys]
    if len(set(items)) != len(items):
        # docs/protocol.md §6, serial_conflict: one message must not name an item twice.
        raise ConfigError(f"{what} names a product (or a GTIN + serial) twice")
    return keys


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """What the gateway knows about one local sensor name.

    ``type`` is its EPCIS 2.0 measurement type (docs/protocol.md §5); ``unit``, if set, the
    UN/CEFACT Rec 20 code its lines must carry (or leave empty); ``products``, if set, the 1-64
    products its readings are about (else the format's default products).
    """

    type: str
    unit: str | None = None
    products: tuple[ProductKey, ...] | None = None

    def __post_init__(self) -> None:
        """Check the fields; raise :class:`~tracecore.errors.ConfigError` naming the rule."""
        if not isinstance(self.type, str) or self.type not in SENSOR_TYPES:
            raise ConfigError(
                f"sensor type must be an EPCIS 2.0 measurement type such as 'Temperature' "
                f"(docs/protocol.md §5), got {self.type!r}"
            )
        if self.unit is not None and (
            not isinstance(self.unit, str) or _CODE.fullmatch(self.unit) is None
        ):
            code = UNIT_SYMBOLS.get(self.unit) if isinstance(self.unit, str) else None
            hint = f" (for {self.unit} write {code})" if code else ""
            raise ConfigError(
                "sensor unit must be a UN/CEFACT Rec 20 code of 2-3 characters A-Z/0-9 such as "
                f"CEL{hint}, got {self.unit!r}"
            )
        if self.unit is not None:
            unsuited = unit_mismatch(self.unit, self.type)
            if unsuited is not None:
                raise ConfigError(f"sensor unit: {unsuited}")
        if self.products is not None:
            _check_products("sensor products", self.products, 1)


@dataclass(frozen=True, slots=True)
class LineReading:
    """One parsed line: the arguments of ``Device.send_reading``."""

    time_ms: int
    products: tuple[ProductKey, ...]
    sensors: tuple[Sensor, ...]


@dataclass(frozen=True, slots=True)
class LineFormat:
    """How a gateway reads sensor lines: its named sensors, default products and time zone.

    ``sensors`` maps local names (1-64 characters ``A-Z a-z 0-9 . _ : -``, starting with a
    letter or digit, not an EPCIS measurement type name) to their :class:`SensorSpec`.
    ``default_products`` (0-64 distinct keys) are the products of readings whose sensor has
    none of its own; they may be empty only if every sensor has its own and lines never name a
    measurement type directly. ``tz`` is the zone of times written without an offset.
    Raises :class:`~tracecore.errors.ConfigError` for a configuration that breaks these rules.
    """

    sensors: Mapping[str, SensorSpec]
    default_products: tuple[ProductKey, ...]
    tz: ZoneInfo
    _names: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        """Check and freeze the configuration."""
        if not isinstance(self.tz, ZoneInfo):
            raise ConfigError(f"tz must be a zoneinfo.ZoneInfo, got {self.tz!r}")
        _check_products("default products", self.default_products, 0)
        frozen: dict[str, SensorSpec] = {}
        for name, spec in self.sensors.items():
            if not isinstance(name, str) or _NAME.fullmatch(name) is None:
                raise ConfigError(
                    "sensor name must be 1-64 characters A-Z a-z 0-9 . _ : - starting with a "
                    f"letter or digit, got {name!r}"
                )
            if name in SENSOR_TYPES:
                raise ConfigError(
                    f"sensor name {name!r} is an EPCIS measurement type; lines naming it would "
                    "be ambiguous, choose another name"
                )
            if not isinstance(spec, SensorSpec):
                raise ConfigError(f"sensor {name!r} must have a SensorSpec, got {spec!r}")
            if spec.products is None and not self.default_products:
                raise ConfigError(
                    f"sensor {name!r} has no products and there are no default products"
                )
            frozen[name] = spec
        object.__setattr__(self, "sensors", MappingProxyType(frozen))
        object.__setattr__(self, "_names", ", ".join(sorted(frozen)) or "(none configured)")

    def parse_line(self, text: str, *, now_ms: int, line: int | None = None) -> LineReading | None:
        """Parse one line of sensor text into a reading, or ``None`` for a line to skip.

        ``text`` may end in ``\\n`` or ``\\r\\n`` and may start with a UTF-8 byte order mark.
        ``now_ms`` is the time of an empty ``time`` field and the clock for the future-time
        check; ``line`` (1-based), if given, is named in errors.

        Returns ``None`` for a blank line, a ``#`` comment or the header line.
        Raises :class:`~tracecore.errors.InputError` naming the line, the column and what is
        expected, e.g. ``line 17, column "unit": "degC" is not a unit we know; …``.
        """
        fields = self._split(text, line)
        if fields is None:
            return None
        time_text, sensor_text, value_text, unit_text = fields

        def fail(column: str, reason: str) -> InputError:
            return InputError(reason, line=line, column=column)

        try:
            time_ms = parse_time(time_text, now_ms=now_ms, tz=self.tz)
        except ValueError as exc:
            raise fail("time", str(exc)) from exc
        measurement, spec = self._sensor(sensor_text, fail)
        value = _parse_value(value_text, fail)
        unit = self._unit(unit_text, sensor_text, measurement, spec, fail)
        products = (spec.products if spec else None) or self.default_products
        if not products:
            raise fail(
                "sensor",
                f"{sensor_text!r} has no products: name a configured sensor, or configure the "
                "gateway's default products",
            )
        try:
            sensor = Sensor(type=measurement, value=value, uom=unit)
        except MalformedMessage as exc:  # e.g. an integer outside the signed 64-bit range
            raise fail("value", exc.detail) from exc
        return LineReading(time_ms=time_ms, products=products, sensors=(sensor,))

    def _split(self, text: str, line: int | None) -> list[str] | None:
        body = text.removeprefix("\ufeff")  # a UTF-8 byte order mark, as some editors write
        body = body.removesuffix("\n").removesuffix("\r").strip(" \t")
        if body.strip() == "" or body.lstrip().startswith("#"):
            return None
        if len(body) > MAX_LINE_LENGTH:
            raise InputError(
                f"the line is {len(body)} characters long, more than {MAX_LINE_LENGTH}",
                line=line,
            )
        if "\n" in body or "\r" in body:
            raise InputError("a sensor line must not contain a line break", line=line)
        try:
            # RFC 4180 quoting, on this one record; strict: a stray quote is an error.
            records = list(csv.reader([body], strict=True, skipinitialspace=True))
        except csv.Error as exc:
            raise InputError(f"the line is not valid CSV ({exc})", line=line) from exc
        fields = [cell.strip() for cell in records[0]] if records else []
        if [cell.lower() for cell in fields] == list(COLUMNS):
            return None
        if len(fields) != len(COLUMNS):
            raise InputError(
                f"expected 4 fields time,sensor,value,unit, got {len(fields)}: {_shorten(body)}",
                line=line,
            )
        return fields

    def _sensor(self, name: str, fail: _Fail) -> tuple[str, SensorSpec | None]:
        spec = self.sensors.get(name)
        if spec is not None:
            return spec.type, spec
        if name in SENSOR_TYPES:
            return name, None
        close = difflib.get_close_matches(name, [*self.sensors, *sorted(SENSOR_TYPES)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = "(empty)" if name == "" else repr(name)
        raise fail(
            "sensor",
            f"{shown} is neither a configured sensor ({self._names}) nor an EPCIS measurement "
            f"type such as Temperature{hint}",
        )

    def _unit(
        self, text: str, sensor: str, measurement: str, spec: SensorSpec | None, fail: _Fail
    ) -> str:
        expected = spec.unit if spec else None
        if text == "":
            if expected is None:
                raise fail(
                    "unit",
                    f"the unit is empty and sensor {sensor!r} has no configured unit; write one, "
                    "e.g. CEL or °C",
                )
            return expected
        if text in UNIT_CODES or text == expected:
            code = text
        elif text in UNIT_SYMBOLS:
            code = UNIT_SYMBOLS[text]
        else:
            raise fail(
                "unit",
                f"{text!r} is not a unit we know; use a UN/CEFACT code such as CEL, or one of "
                f"{_SYMBOL_LIST}",
            )
        if expected is not None and code != expected:
            raise fail(
                "unit",
                f"sensor {sensor!r} measures in {_describe(expected)}, this line says "
                f"{_describe(code)}; units are never converted: fix the sensor or its "
                "configured unit",
            )
        unsuited = unit_mismatch(code, measurement)
        if unsuited is not None:
            raise fail("unit", unsuited)
        return code


def unit_mismatch(code: str, measurement: str) -> str | None:
    """Say why unit ``code`` cannot measure ``measurement``, or return ``None`` if it can.

    ``code`` is a UN/CEFACT Rec 20 code and ``measurement`` an EPCIS 2.0 measurement type. Only
    codes of :data:`UNIT_CODES` are judged (by :data:`UNIT_MEASURES`); any other code is the
    operator's choice and gives ``None``. The reason names the codes that would fit, e.g.
    ``P1 (percent) is not a unit of Temperature; use CEL (degree Celsius), …``; a configuration
    checker can report it at the key where the pair is configured.
    """
    suits = UNIT_MEASURES.get(code)
    if suits is None or measurement in suits:
        return None
    fitting = [c for c, types in UNIT_MEASURES.items() if measurement in types]
    hint = f"; use {', '.join(_describe(c) for c in fitting)}" if fitting else ""
    return f"{_describe(code)} is not a unit of {measurement}{hint}"


def _shorten(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _describe(code: str) -> str:
    name = UNIT_CODES.get(code)
    return f"{code} ({name})" if name else code


def _parse_value(text: str, fail: _Fail) -> int | float:
    if _NUMBER.fullmatch(text) is None:
        shown = "(empty)" if text == "" else repr(text)
        raise fail(
            "value",
            f"{shown} is not a number; write digits with '.' for decimals, e.g. 21 or -3.5 "
            "(no thousands separators, no unit)",
        )
    if _INTEGER.fullmatch(text):
        # docs/protocol.md §5: integers in the signed 64-bit range (length first: int() of a
        # thousand digits is slow, and refused anyway).
        if len(text.lstrip("+-0")) > 19 or not -(2**63) <= int(text) < 2**63:
            raise fail("value", f"{text!r} is outside the signed 64-bit integer range")
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise fail("value", f"{text!r} is too large for a number")
    # The shortest text of the float must have the value written: else it was rounded.
    if decimal.Decimal(repr(number)) != decimal.Decimal(text):
        raise fail(
            "value",
            f"{text!r} has more digits than a number keeps (about 15 significant digits), or "
            "is too small; nothing is rounded, so shorten it",
        )
    return number
