"""Sensor lines ``time,sensor,value,unit``: good lines become readings, bad ones name the column."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lines import (
    UNIT_CODES,
    UNIT_MEASURES,
    UNIT_SYMBOLS,
    LineFormat,
    LineReading,
    SensorSpec,
    unit_mismatch,
)
from gateway.timestamps import parse_time
from tracecore.errors import ConfigError, InputError
from tracecore.identifiers import ProductKey
from tracecore.message import Reading, Sensor, decode_payload, encode_payload

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = 1_796_601_600_000  # 2026-12-07T00:00:00Z
LOT = ProductKey.parse_canonical("01/06901234567892/10/L261206")
BARN = ProductKey.parse_canonical("01/06901234567892/10/BARN-1")


def ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO time with offset, computed independently."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.fixture
def fmt() -> LineFormat:
    """A cold room probe in °C, a humidity sensor, and a barn scale with its own product."""
    return LineFormat(
        {
            "coldroom-1": SensorSpec("Temperature", "CEL"),
            "rh-1": SensorSpec("RelativeHumidity"),
            "scale.barn": SensorSpec("Mass", "KGM", (BARN,)),
            "counter": SensorSpec("Count", "C62"),
        },
        (LOT,),
        SHANGHAI,
    )


def parse(fmt: LineFormat, text: str) -> LineReading | None:
    """Parse a line at NOW as line 17."""
    return fmt.parse_line(text, now_ms=NOW, line=17)


def error(fmt: LineFormat, text: str) -> InputError:
    """The error a bad line raises."""
    with pytest.raises(InputError) as caught:
        parse(fmt, text)
    return caught.value


def test_a_probe_line_becomes_a_reading_of_the_default_products(fmt: LineFormat) -> None:
    """A line with offset time, local name, decimal and symbol gives the reading to send."""
    reading = parse(fmt, "2026-12-06T08:00:00+08:00,coldroom-1,3.5,°C\n")
    assert reading == LineReading(
        time_ms=ms("2026-12-06T08:00:00+08:00"),
        products=(LOT,),
        sensors=(Sensor("Temperature", 3.5, "CEL"),),
    )


def test_the_reading_is_a_message_ingest_accepts(fmt: LineFormat) -> None:
    """The parsed reading builds a Reading that survives the payload round trip."""
    reading = parse(fmt, "1796601500000,scale.barn,1250,kg")
    assert reading is not None
    message = Reading("henhouse-1", 1, reading.time_ms, reading.products, reading.sensors)
    assert decode_payload(encode_payload(message)) == message
    assert message.products == (BARN,)
    assert message.sensors == (Sensor("Mass", 1250, "KGM"),)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n", "\r\n", "# probe restarted", "  # comment", "time,sensor,value,unit",
     "TIME, Sensor ,VALUE,unit\r\n", "\ufefftime,sensor,value,unit"],
)  # fmt: skip
def test_blank_comment_and_header_lines_are_skipped(fmt: LineFormat, text: str) -> None:
    """Blank lines, comments and the header give None, not an error."""
    assert parse(fmt, text) is None


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2026-12-06T08:00:00+08:00", ms("2026-12-06T08:00:00+08:00")),
        ("2026-12-06T00:00:00Z", ms("2026-12-06T00:00:00+00:00")),
        ("2026-12-06T08:00:00", ms("2026-12-06T08:00:00+08:00")),  # local: Asia/Shanghai
        ("2026-12-06 08:00", ms("2026-12-06T08:00:00+08:00")),
        ("2026-12-06T08:00:00.123+08:00", ms("2026-12-06T08:00:00+08:00") + 123),
        ("2026-12-06T08:00:00,5Z", ms("2026-12-06T08:00:00+00:00") + 500),
        ("2026-12-06T08:00:00.120000-0130", ms("2026-12-06T08:00:00-01:30") + 120),
        ("2026-12-06T08:00:00+05", ms("2026-12-06T08:00:00+05:00")),
        ("1796601500000", 1_796_601_500_000),
        ("", NOW),
    ],
)
def test_time_forms(fmt: LineFormat, cell: str, expected: int) -> None:
    """Each documented time form gives the right epoch milliseconds."""
    reading = parse(fmt, f'"{cell}",coldroom-1,3,CEL')
    assert reading is not None
    assert reading.time_ms == expected


def test_local_time_follows_the_configured_zone() -> None:
    """A time without offset is wall-clock time of the format's zone."""
    berlin = LineFormat({}, (LOT,), BERLIN)
    reading = berlin.parse_line("2026-07-01T08:00:00,Temperature,3,CEL", now_ms=NOW)
    assert reading is not None
    assert reading.time_ms == ms("2026-07-01T08:00:00+02:00")


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("yesterday", "is not a time"),
        ("2026-12-06", "date without a time of day"),
        ("1796601600", "look like seconds"),
        ("1796601600000000", "look like microseconds"),
        ("2026-13-01T08:00:00Z", "not a valid date"),
        ("2026-02-30T08:00:00Z", "not a valid date"),
        ("2026-12-06T24:00:00Z", "not a valid date"),
        ("2026-12-06T08:00:00.1234Z", "finer than a millisecond"),
        ("2026-12-06T08:00:00+25:00", "impossible offset"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("2026-12-07T00:05:01Z", "more than 5 minutes in the future"),
        ("2026-12-06T08:00:00 +08:00", "is not a time"),
        ("06/12/2026 08:00", "is not a time"),
    ],
)
def test_bad_times_name_the_time_column(fmt: LineFormat, cell: str, words: str) -> None:
    """A time in no documented form is refused, naming line, column and the cell."""
    problem = error(fmt, f"{cell},coldroom-1,3,CEL")
    assert (problem.line, problem.column) == (17, "time")
    assert words in problem.reason
    assert str(problem).startswith('line 17, column "time": ')


def test_five_minutes_ahead_is_still_accepted(fmt: LineFormat) -> None:
    """The future check allows the 5 minutes of clock skew the service allows."""
    reading = parse(fmt, "2026-12-07T00:05:00Z,coldroom-1,3,CEL")
    assert reading is not None
    assert reading.time_ms == NOW + 300_000


def test_daylight_saving_gaps_and_repeats_are_never_guessed() -> None:
    """A skipped or repeated wall-clock time needs its offset; with it, it is accepted."""
    with pytest.raises(ValueError, match=r"happens twice in Europe/Berlin.*\+02:00 or \+01:00"):
        parse_time("2026-10-25T02:30:00", now_ms=NOW, tz=BERLIN)
    with pytest.raises(ValueError, match="does not exist in Europe/Berlin"):
        parse_time("2026-03-29T02:30:00", now_ms=NOW, tz=BERLIN)
    assert parse_time("2026-10-25T02:30:00+01:00", now_ms=NOW, tz=BERLIN) == ms(
        "2026-10-25T02:30:00+01:00"
    )


@pytest.mark.parametrize(
    ("cell", "value"),
    [("21", 21), ("-3", -3), ("+4", 4), ("3.5", 3.5), ("-0.25", -0.25), ("21.0", 21.0),
     ("1.5e-3", 0.0015), ("9223372036854775807", 2**63 - 1)],
)  # fmt: skip
def test_values_keep_their_kind(fmt: LineFormat, cell: str, value: float) -> None:
    """Integers stay integers, decimals become floats of the same value."""
    reading = parse(fmt, f",Temperature,{cell},CEL")
    assert reading is not None
    found = reading.sensors[0].value
    assert found == value
    assert type(found) is type(value)


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("", "(empty) is not a number"),
        ("NaN", "is not a number"),
        ("inf", "is not a number"),
        ('"1,5"', "is not a number"),
        ('"1,000"', "is not a number"),
        ("21.5°", "is not a number"),
        (".5", "is not a number"),
        ("0x10", "is not a number"),
        ("1e400", "too large"),
        ("0.12345678901234567890", "more digits than a number keeps"),
        ("9223372036854775808", "signed 64-bit"),
        ("99999999999999999999", "signed 64-bit"),
    ],
)
def test_bad_values_name_the_value_column(fmt: LineFormat, cell: str, words: str) -> None:
    """NaN, infinity, separators, units and unrepresentable numbers are refused, not rounded."""
    problem = error(fmt, f",Temperature,{cell},CEL")
    assert problem.column == "value"
    assert words in problem.reason


@pytest.mark.parametrize(("symbol", "code"), sorted(UNIT_SYMBOLS.items()))
def test_every_documented_symbol_maps_to_its_code(symbol: str, code: str) -> None:
    """Each symbol of the table gives its UN/CEFACT code, and each code is itself accepted."""
    plain = LineFormat({}, (LOT,), SHANGHAI)
    measured = min(UNIT_MEASURES[code])
    by_symbol = plain.parse_line(f',{measured},1,"{symbol}"', now_ms=NOW)
    by_code = plain.parse_line(f",{measured},1,{code}", now_ms=NOW)
    assert by_symbol is not None
    assert by_code is not None
    assert by_symbol.sensors[0].uom == by_code.sensors[0].uom == code
    assert code in UNIT_CODES


@pytest.mark.parametrize(
    ("line", "uom"),
    [(",coldroom-1,3,℃", "CEL"), (",coldroom-1,3,C", "CEL"), (",coldroom-1,3,", "CEL"),
     (",rh-1,55,%RH", "P1"), (",counter,12,pcs", "C62"), (",counter,12,", "C62")],
)  # fmt: skip
def test_units_agree_with_the_sensor(fmt: LineFormat, line: str, uom: str) -> None:
    """A symbol of the configured unit, or no unit, gives the configured code."""
    reading = parse(fmt, line)
    assert reading is not None
    assert reading.sensors[0].uom == uom


def test_a_configured_unit_outside_the_table_is_accepted_for_its_sensor() -> None:
    """A SensorSpec may carry any Rec 20 code; its lines may name it."""
    fmt = LineFormat({"flow": SensorSpec("VolumeFlowRate", "G51")}, (LOT,), SHANGHAI)
    reading = fmt.parse_line(",flow,2.5,G51", now_ms=NOW)
    assert reading is not None
    assert reading.sensors == (Sensor("VolumeFlowRate", 2.5, "G51"),)
    with pytest.raises(InputError, match="not a unit we know"):
        fmt.parse_line(",VolumeFlowRate,2.5,G51", now_ms=NOW)


def test_every_code_says_what_it_measures() -> None:
    """The table of codes and the table of what they measure cover the same codes."""
    assert set(UNIT_CODES) == set(UNIT_MEASURES)
    assert set(UNIT_SYMBOLS.values()) <= set(UNIT_CODES)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (",Temperature,3,%", ("P1 (percent) is not a unit of Temperature; use CEL (degree "
                             "Celsius), FAH (degree Fahrenheit), KEL (kelvin)")),
        (",RelativeHumidity,55,CEL", "CEL (degree Celsius) is not a unit of RelativeHumidity"),
        (",Mass,3,pcs", "C62 (one: a count or a pure number) is not a unit of Mass; use GRM"),
        (",Count,3,kg", "KGM (kilogram) is not a unit of Count; use C62"),
        (",Voltage,3,mA", "4K (milliampere) is not a unit of Voltage; use VLT (volt), 2Z"),
    ],
)  # fmt: skip
def test_a_unit_must_suit_the_measurement_type(fmt: LineFormat, line: str, words: str) -> None:
    """A known unit of another quantity than the sensor's type is refused."""
    problem = error(fmt, line)
    assert problem.column == "unit"
    assert words in problem.reason


def test_unit_mismatch_judges_only_the_codes_of_the_table() -> None:
    """A checker gets the reason for a known pair, None for a fit or a foreign code."""
    assert unit_mismatch("CEL", "Temperature") is None
    assert unit_mismatch("G51", "Temperature") is None
    assert unit_mismatch("KGM", "Temperature") == (
        "KGM (kilogram) is not a unit of Temperature; use CEL (degree Celsius), "
        "FAH (degree Fahrenheit), KEL (kelvin)"
    )
    assert unit_mismatch("CEL", "Wavenumber") == "CEL (degree Celsius) is not a unit of Wavenumber"


def test_unknown_unit_message(fmt: LineFormat) -> None:
    """An unknown unit gets the message that lists codes and symbols."""
    problem = error(fmt, "2026-12-06T08:00:00+08:00,coldroom-1,3.5,degC")
    assert str(problem).startswith(
        "line 17, column \"unit\": 'degC' is not a unit we know; use a UN/CEFACT code such as "
        "CEL, or one of °C, ℃, C, °F,"
    )


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (",coldroom-1,38,°F", "measures in CEL (degree Celsius), this line says FAH"),
        (",coldroom-1,3,K", "this line says KEL"),
        (",scale.barn,1250,g", "measures in KGM (kilogram), this line says GRM"),
        (",rh-1,55,", "the unit is empty and sensor 'rh-1' has no configured unit"),
        (",Temperature,3,", "has no configured unit"),
        (",coldroom-1,3,cel", "not a unit we know"),
        (",coldroom-1,3,KG", "not a unit we know"),
        (",counter,3,MV", "not a unit we know"),
    ],
)
def test_units_are_never_converted_or_guessed(fmt: LineFormat, line: str, words: str) -> None:
    """A unit that contradicts the sensor, or that we do not know, is refused."""
    problem = error(fmt, line)
    assert problem.column == "unit"
    assert words in problem.reason


def test_sensor_names_and_measurement_types(fmt: LineFormat) -> None:
    """Local names map to their type; a measurement type may be named directly."""
    named = parse(fmt, ",rh-1,55.5,%")
    direct = parse(fmt, ",Illuminance,300,lx")
    assert named is not None
    assert direct is not None
    assert named.sensors == (Sensor("RelativeHumidity", 55.5, "P1"),)
    assert direct.sensors == (Sensor("Illuminance", 300, "LUX"),)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("temperature", "did you mean 'Temperature'?"),
        ("coldroom-2", "did you mean 'coldroom-1'?"),
        ("pH", "neither a configured sensor (coldroom-1, counter, rh-1, scale.barn)"),
        ("", "(empty) is neither"),
    ],
)
def test_unknown_sensors_list_the_configured_names(fmt: LineFormat, name: str, words: str) -> None:
    """An unknown sensor is refused with the configured names and a near match."""
    problem = error(fmt, f",{name},3,CEL")
    assert problem.column == "sensor"
    assert words in problem.reason


def test_a_type_named_directly_needs_default_products() -> None:
    """Without default products only sensors with their own products can be read."""
    fmt = LineFormat({"scale": SensorSpec("Mass", "KGM", (BARN,))}, (), SHANGHAI)
    assert fmt.parse_line(",scale,3,kg", now_ms=NOW) is not None
    with pytest.raises(InputError, match="has no products"):
        fmt.parse_line(",Mass,3,kg", now_ms=NOW)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("2026-12-06T08:00:00Z,coldroom-1,3.5", "expected 4 fields time,sensor,value,unit, got 3"),
        (",coldroom-1,3.5,CEL,extra", "got 5"),
        (",coldroom-1,3,5,CEL", "got 5"),
        ('"2026-12-06,coldroom-1,3,CEL', "not valid CSV"),
        ("a\nb", "line break"),
        ("," * 2000, "more than 1024"),
    ],
)
def test_malformed_records_name_the_line(fmt: LineFormat, line: str, words: str) -> None:
    """A record of the wrong shape is refused with what was expected."""
    problem = error(fmt, line)
    assert problem.line == 17
    assert problem.column is None
    assert words in problem.reason


def test_rfc4180_quoting_is_honoured(fmt: LineFormat) -> None:
    """Quoted fields, with spaces before them, are read as one field each."""
    reading = parse(fmt, ' "2026-12-06T08:00:00Z", "coldroom-1","3.5", "°C" ')
    assert reading is not None
    assert reading.sensors == (Sensor("Temperature", 3.5, "CEL"),)


def test_errors_without_a_line_number_name_only_the_column(fmt: LineFormat) -> None:
    """A caller that does not count lines gets the column and reason only."""
    with pytest.raises(InputError) as caught:
        fmt.parse_line(",coldroom-1,warm,CEL", now_ms=NOW)
    assert caught.value.line is None
    assert str(caught.value).startswith("column \"value\": 'warm' is not a number")


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: SensorSpec("temperature"), "EPCIS 2.0 measurement type"),
        (lambda: SensorSpec("Temperature", "°C"), "for °C write CEL"),
        (lambda: SensorSpec("Temperature", "P1"), "P1 \\(percent\\) is not a unit of Temperature"),
        (lambda: SensorSpec("Temperature", "CEL", ()), "1 to 64 product keys"),
        (lambda: SensorSpec("Temperature", "CEL", (LOT, LOT)), "twice"),
        (lambda: LineFormat({"Temperature": SensorSpec("Temperature")}, (LOT,), SHANGHAI),
         "is an EPCIS measurement type"),
        (lambda: LineFormat({"probe 1": SensorSpec("Temperature")}, (LOT,), SHANGHAI),
         "sensor name must be"),
        (lambda: LineFormat({"probe": SensorSpec("Temperature")}, (), SHANGHAI),
         "no default products"),
        (lambda: LineFormat({}, (LOT,) * 65, SHANGHAI), "0 to 64 product keys"),
    ],
)  # fmt: skip
def test_bad_configuration_is_a_config_error(build: object, words: str) -> None:
    """A sensor table that breaks a rule is refused when the format is built."""
    assert callable(build)
    with pytest.raises(ConfigError, match=words):
        build()


def test_the_configuration_cannot_change_after_checking() -> None:
    """The format keeps a read-only copy of the sensor table it checked."""
    table = {"probe": SensorSpec("Temperature", "CEL")}
    fmt = LineFormat(table, (LOT,), SHANGHAI)
    table["Temperature"] = SensorSpec("Mass")
    assert list(fmt.sensors) == ["probe"]
    with pytest.raises(TypeError):
        fmt.sensors["x"] = SensorSpec("Mass")  # type: ignore[index]


def test_utc_helper_agrees_with_datetime() -> None:
    """The test's own clock helper is right about NOW (guards the other expectations)."""
    assert datetime.fromtimestamp(NOW / 1000, UTC).isoformat() == "2026-12-07T00:00:00+00:00"


def test_the_documented_unit_table_is_the_one_in_force() -> None:
    """docs/gateway-csv.md lists exactly the codes, symbols and types the parser uses."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway-csv.md").read_text("utf-8")
    rows = re.findall(r"^\| `([A-Z0-9]+)` \| [^|]+ \| ([^|]*) \| ([^|]+) \|$", doc, re.MULTILINE)
    assert {code for code, _, _ in rows} == set(UNIT_CODES)
    for code, symbols, types in rows:
        assert {s for s, c in UNIT_SYMBOLS.items() if c == code} == set(
            re.findall(r"`([^`]+)`", symbols)
        ), code
        assert {t.strip() for t in types.split(",")} == UNIT_MEASURES[code], code


_PIECES = st.sampled_from(
    ["", " ", "2026-12-06T08:00:00+08:00", "2026-12-06T08:00:00", "1796515200000", "17965152",
     "2026-10-25T02:30", "coldroom-1", "rh-1", "Temperature", "Mass", "3.5", "-0", "1e308",
     "1e309", "9" * 25, "°C", "C", "%", "pcs", "kg", "KGM", '"', '""', "#", "\ufeff", "é"]
)  # fmt: skip


@given(
    pieces=st.lists(_PIECES | st.text(max_size=8), max_size=6),
    glue=st.sampled_from([",", ", ", ";"]),
)
def test_property_a_line_gives_a_valid_reading_none_or_input_error(
    pieces: list[str], glue: str
) -> None:
    """Any line parses to a reading ingest would accept, to None, or raises InputError only."""
    fmt = LineFormat(
        {"coldroom-1": SensorSpec("Temperature", "CEL"), "rh-1": SensorSpec("RelativeHumidity")},
        (LOT,),
        SHANGHAI,
    )
    reading: LineReading | InputError | None
    try:
        reading = fmt.parse_line(glue.join(pieces), now_ms=NOW, line=1)
    except InputError as problem:
        reading = problem
    if isinstance(reading, InputError):
        assert reading.line == 1
    elif reading is not None:
        message = Reading("probe-gw", 1, reading.time_ms, reading.products, reading.sensors)
        assert decode_payload(encode_payload(message)) == message
