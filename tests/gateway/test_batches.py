"""Batch event files: a whole file becomes events, or one error lists every bad row."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.batches import (
    MAX_FILE_PRODUCTS,
    MAX_ROW_PRODUCTS,
    Batch,
    BatchEvent,
    event_from_args,
    parse_batch,
)
from tracecore.cose import MAX_MESSAGE_BYTES, sign_message
from tracecore.errors import BatchError, InputError, MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.keys import generate_signer
from tracecore.message import Event, decode_payload, encode_payload

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = 1_796_601_600_000  # 2026-12-07T00:00:00Z
GTIN = "06901234567892"
LOT = f"01/{GTIN}/10/L261206"
CARTON = f"01/{GTIN}/10/L261206/21/L261206-C"
GLN = "414/6901234000004"
LOT_STEP = "holding"


def key(text: str) -> ProductKey:
    """A canonical product key."""
    return ProductKey.parse_canonical(text)


def ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO time with offset."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def parse(text: str) -> Batch:
    """Parse a file at NOW in Asia/Shanghai."""
    return parse_batch(text, now_ms=NOW, tz=SHANGHAI)


def problems(text: str) -> list[tuple[int | None, str | None, str]]:
    """The (line, column, reason) of every problem of a bad file."""
    with pytest.raises(BatchError) as caught:
        parse(text)
    return [(p.line, p.column, p.reason) for p in caught.value.problems]


GRADING = f"""\
# egg grading line 2, shift of 2026-12-06
step,products,parents,location,time,count,laid,flock,grade
commissioning,{CARTON}{{001..120}},{LOT},{GLN},2026-12-06T08:00:00,30,2026-12-05,007,L
"""


def test_a_grading_file_commissions_120_cartons_in_two_events() -> None:
    """A range of 120 serials keeps its zero padding and is split into 64 + 56 products."""
    batch = parse(GRADING)
    assert [len(event.products) for event in batch.events] == [64, 56]
    every = [k.path for event in batch.events for k in event.products]
    assert every == [f"{CARTON}{n:03d}" for n in range(1, 121)]
    for event in batch.events:
        assert event.step == "commissioning"
        assert event.parents == (key(LOT),)
        assert event.location == GLN
        assert event.time_ms == ms("2026-12-06T08:00:00+08:00")
        assert event.data == {"count": 30, "laid": "2026-12-05", "flock": "007", "grade": "L"}
        assert event.line == 3
    assert batch.product_count == 120


def test_each_event_is_one_message_ingest_accepts() -> None:
    """Every batch event signs into a message that parses back to the same event."""
    signer = generate_signer("grading-2")
    for seq, event in enumerate(parse(GRADING).events, start=1):
        message = Event(
            "grading-2",
            seq,
            event.time_ms,
            event.products,
            event.step,
            event.parents,
            event.location,
            event.data,
        )
        raw = sign_message(message, signer.signing_key)
        assert len(raw) <= MAX_MESSAGE_BYTES
        assert decode_payload(message_payload(raw)) == message


def message_payload(raw: bytes) -> bytes:
    """The payload of a signed message."""
    from tracecore.cose import parse_cose  # noqa: PLC0415 - only this helper needs it

    return parse_cose(raw).payload


SHIPPING = f"""\
Time,Step,Products,Location,destination,vehicle.plate,vehicle.cooled,temp_max
1796560000000,shipping,{CARTON}001 {CARTON}002 {CARTON}{{003..010}},{GLN},farm-b,沪A12345,TRUE,4.5
2026-12-06T14:00:00+08:00,shipping,{CARTON}011,{GLN},farm-c,,false,
"""


def test_a_shipping_file_with_nested_data_and_any_column_order() -> None:
    """Header names ignore case and order; dotted columns nest; empty cells are left out."""
    first, second = parse(SHIPPING).events
    assert first.time_ms == 1_796_560_000_000
    assert [k.path for k in first.products] == [f"{CARTON}{n:03d}" for n in range(1, 11)]
    assert first.data == {
        "destination": "farm-b",
        "vehicle": {"plate": "沪A12345", "cooled": True},
        "temp_max": 4.5,
    }
    assert second.time_ms == ms("2026-12-06T14:00:00+08:00")
    assert second.data == {"destination": "farm-c", "vehicle": {"cooled": False}}
    assert second.parents == ()


@pytest.mark.parametrize(
    ("cell", "value"),
    [("30", 30), ("-2", -2), ("0", 0), ("2.5", 2.5), ("0.1", 0.1), ("true", True),
     ("False", False), ("007", "007"), ("-0", "-0"), ("-0.0", -0.0),
     ("1.50", 1.5), ("1e5", "1e5"), ("+3", "+3"), ("2026-01-01", "2026-01-01"),
     ("9223372036854775808", "9223372036854775808"), ("0.12345678901234567890",
     "0.12345678901234567890"), ("3.", "3."), ("yes", "yes"), ("  padded  ", "padded"),
     ('"a, b"', "a, b"), ("null", "null")],
)  # fmt: skip
def test_data_cells_become_numbers_booleans_or_exact_text(cell: str, value: object) -> None:
    """Only exact numbers and true/false change kind; everything else stays the text written."""
    (event,) = parse(f"step,products,note\nother,{LOT},{cell}\n").events
    assert event.data == {"note": value}
    assert type(event.data["note"]) is type(value)


def test_rows_without_time_take_now_and_rows_without_data_have_none() -> None:
    """An empty time is the reading time; a row of only empty data cells has no data map."""
    (event,) = parse(f"step,products,time,count\nholding,{LOT},,\n").events
    assert event.time_ms == NOW
    assert event.data is None
    assert event.location is None


def test_blank_comment_and_empty_rows_are_skipped_and_lines_counted() -> None:
    """Skipped rows still count for line numbers, and a quoted line break stays one row."""
    text = (
        "\ufeff# exported by the office PC\n\nstep,products,note\n"
        f'other,{LOT},"two\nlines"\n,,\n\n# end\nholding,{LOT},\n'
    )
    first, second = parse(text).events
    assert first.data == {"note": "two\nlines"}
    assert (first.line, second.line) == (4, 9)


def test_a_row_split_into_many_events_keeps_its_order_and_fields() -> None:
    """200 serials become events of 64, 64, 64 and 8 with the same step and parents."""
    batch = parse(f"step,products,parents\npacking,{CARTON}{{1..200}},{LOT}\n")
    assert [len(e.products) for e in batch.events] == [64, 64, 64, 8]
    assert batch.events[0].products[9].path == f"{CARTON}10"  # no padding: {1..200}
    assert {(e.step, e.parents) for e in batch.events} == {("packing", (key(LOT),))}


def test_one_error_lists_every_bad_row() -> None:
    """A file with several bad rows is refused as a whole, each problem with line and column."""
    text = f"""\
step,products,parents,time,note
Commissioning,{CARTON}001,,,
commissioning,{CARTON}002 {CARTON}002,,yesterday,
shipping,{CARTON}{{120..1}},,,
packing,{CARTON}003,{CARTON}003,,
packing,01/6901234567892/10/L1,,,
packing,{LOT},
receiving,,,,
"""
    assert problems(text) == [
        (2, "step", ("'Commissioning' is not a CBV 2.0 business step such as commissioning "
                    "(did you mean 'commissioning'?)")),
        (3, "products", f"{CARTON}002 appears twice"),
        (3, "time", ("'yesterday' is not a time; use an ISO 8601 time such as "
                    "2026-12-06T08:00:00+08:00 or 2026-12-06T08:00:00 (local time), or "
                    "milliseconds since 1970 (13 digits)")),
        (4, "products", "'{120..1}' counts down; write the smaller number first"),
        (5, "parents", f"{CARTON}003 is also one of the products"),
        (6, "products", ("'01/6901234567892/10/L1': product key is not in canonical form: got "
                        "'01/6901234567892/10/L1', canonical form is '01/06901234567892/10/L1'")),
        (7, None, "expected 5 cells as in the header, got 3"),
        (8, "products", "no product keys; name at least one"),
    ]  # fmt: skip


def test_the_error_message_lists_the_problems() -> None:
    """The BatchError text counts the problems and shows each with line and column."""
    with pytest.raises(BatchError) as caught:
        parse(f"step,products\npackin,{LOT}\nother,{LOT}\nholding,x\n")
    assert str(caught.value) == (
        "2 problems, nothing was accepted:\n"
        "line 2, column \"step\": 'packin' is not a CBV 2.0 business step such as "
        "commissioning (did you mean 'packing'?)\n"
        "line 4, column \"products\": 'x': product key must start with AI 01 (GTIN), got 'x' "
        "in 'x'"
    )


def test_many_problems_are_all_kept_but_the_message_is_bounded() -> None:
    """A file of 120 bad rows keeps 120 problems; the message shows 50 and counts the rest."""
    with pytest.raises(BatchError) as caught:
        parse("step,products\n" + f"bad,{LOT}\n" * 120)
    assert len(caught.value.problems) == 120
    assert str(caught.value).endswith("... and 70 more")
    assert str(caught.value).count("\n") == 51


def test_a_product_commissioned_twice_in_one_file_is_refused() -> None:
    """A carton commissioned on two rows, or under two lots with one serial, is an error."""
    text = f"""\
step,products
commissioning,{CARTON}{{001..010}}
shipping,{CARTON}005
commissioning,{CARTON}010
commissioning,01/{GTIN}/10/OTHER/21/L261206-C003
commissioning,{CARTON}{{011..012}}
"""
    assert problems(text) == [
        (4, "products", (f"{CARTON}010 is commissioned on line 2 already (each product is "
                        "commissioned once)")),
        (5, "products", (f"01/{GTIN}/10/OTHER/21/L261206-C003 is commissioned on line 2 already "
                        "(each product is commissioned once)")),
    ]  # fmt: skip


def test_commissioned_twice_is_reported_with_other_problems() -> None:
    """The file-wide rule is reported in the same pass as bad rows."""
    text = f"step,products\ncommissioning,{LOT}\nwrong,{LOT}\ncommissioning,{LOT}\n"
    assert [(line, column) for line, column, _ in problems(text)] == [
        (3, "step"),
        (4, "products"),
    ]


def test_one_item_under_two_keys_in_a_row_is_refused() -> None:
    """GTIN + serial names one item whatever the lot (docs/identifiers.md)."""
    text = f"step,products\npacking,{CARTON}001 01/{GTIN}/21/L261206-C001\n"
    assert problems(text) == [
        (2, "products", (f"{CARTON}001 and 01/{GTIN}/21/L261206-C001 name one item (GTIN + "
                        "serial; docs/identifiers.md)")),
    ]  # fmt: skip


def test_a_key_repeated_across_split_events_of_a_row_is_refused() -> None:
    """A row's keys are distinct even when they land in different events of the split."""
    text = f"step,products\npacking,{CARTON}{{001..070}} {CARTON}001\n"
    assert problems(text) == [(2, "products", f"{CARTON}001 appears twice")]


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        (f"{CARTON}{{1..10}}{{1..2}}", "more than one range"),
        (f"{CARTON}{{1-10}}", "has a brace that is not a range"),
        (f"{CARTON}{{a..c}}", "has a brace that is not a range"),
        (f"{CARTON}{{01..100}}", "different widths and one has leading zeros"),
        (f"{CARTON}{{00001..10001}}", (f"names 10001 keys, too many: a row names at most "
                                      f"{MAX_ROW_PRODUCTS} products")),
        (f"01/{GTIN}/10/L{{00000000000000000001..00000000000000000099}}",
         "lot must be 1-20 characters"),
        (f"{CARTON}{{1..99999999999999999999}}", f"more than {MAX_FILE_PRODUCTS} products"),
    ],
)  # fmt: skip
def test_bad_ranges_are_refused_before_expanding(cell: str, words: str) -> None:
    """Malformed or oversized ranges name the products column."""
    [(line, column, reason)] = problems(f"step,products\npacking,{cell}\n")
    assert (line, column) == (2, "products")
    assert words in reason


def test_a_range_of_exactly_the_row_limit_is_accepted() -> None:
    """10,000 keys in one row are allowed and split into 157 events."""
    batch = parse(f"step,products\ncommissioning,{CARTON}{{00001..10000}}\n")
    assert batch.product_count == MAX_ROW_PRODUCTS
    assert len(batch.events) == 157
    assert batch.events[-1].products[-1].path == f"{CARTON}10000"


def test_the_file_limit_is_named() -> None:
    """More than MAX_FILE_PRODUCTS products in one file is refused before any is expanded."""
    rows = [f"packing,01/{GTIN}/10/R{row}/21/S{{00001..10000}}" for row in range(11)]
    found = problems("step,products\n" + "\n".join(rows) + "\n" + "bad,row\n")
    assert found == [
        (
            12,
            "products",
            (
                f"the file names more than {MAX_FILE_PRODUCTS} products by this row; split it into "
                "several files"
            ),
        )
    ]


def test_parents_are_limited_to_64() -> None:
    """An event names at most 64 parents; they are never split."""
    [(line, column, reason)] = problems(f"step,products,parents\npacking,{LOT},{CARTON}{{1..65}}\n")
    assert (line, column) == (2, "parents")
    assert "an event has at most 64 parents" in reason


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("products,location", "the header has no 'step' column"),
        ("step,parents", "the header has no 'products' column"),
        ("step;products;count", "the header has no 'step' column (columns must be separated"),
        ("step,products,Count", "column 'Count' is not a data field name"),
        ("step,products,lay date", "column 'lay date' is not a data field name"),
        ("step,products,", "column 3 has no name"),
        ("step,products,STEP", "column 'STEP' appears twice"),
        ("step,products,a.b.c.d.e", "nests 5 names deep, at most 4"),
        ("step,products,vehicle,vehicle.plate", "columns 'vehicle' and 'vehicle.plate' clash"),
        ("step,products,x..y", "is not a data field name"),
    ],
)
def test_bad_headers_are_refused_before_any_row(header: str, words: str) -> None:
    """A header that cannot be used is the error of line 1 (after skipped lines)."""
    found = problems(f"{header}\nother,{LOT},1,2\n")
    assert all(line == 1 for line, _, _ in found)
    assert any(words in reason for _, _, reason in found), found


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "the file has no header row"),
        ("# only a comment\n\n", "the file has no header row"),
        ("step,products\n", "the file has no events"),
        (f'step,products\nother,"{LOT}\n', "not valid CSV"),
    ],
)
def test_empty_and_broken_files(text: str, words: str) -> None:
    """Nothing to send, or text that is not CSV, is an error too."""
    assert any(words in reason for _, _, reason in problems(text))


def test_location_and_data_rules_of_the_protocol_apply() -> None:
    """Location length and control characters are the message rules, named by column."""
    long = "x" * 201
    text = f'step,products,location\nother,{LOT},{long}\nother,{LOT},"barn\x07"\n'
    assert problems(text) == [
        (2, "location", "location must be 1 to 200 characters, got 201"),
        (3, "location", "location must not contain control characters"),
    ]


def test_an_event_too_large_to_send_is_refused() -> None:
    """64 long product keys, 64 long parents and big data do not fit in one message."""
    serial = "S" * 17
    products = f"01/{GTIN}/10/{'L' * 20}/21/{serial}{{001..064}}"
    parents = f"01/{GTIN}/10/{'P' * 20}/21/{'Q' * 17}{{001..064}}"
    note = "n" * 8000
    found = problems(f"step,products,parents,note\npacking,{products},{parents},{note}\n")
    assert len(found) == 1
    line, column, reason = found[0]
    assert (line, column) == (2, None)
    assert f"more than the {MAX_MESSAGE_BYTES}-byte limit" in reason


def test_the_digest_is_stable_and_content_based() -> None:
    """Column order, case, spacing and range notation do not change the digest; content does."""
    a = parse(f"step,products,count\npacking,{CARTON}{{001..003}},30\n")
    b = parse(f"count , PRODUCTS,Step\n30, {CARTON}001  {CARTON}002 {CARTON}003 ,packing\n")
    c = parse(f"step,products,count\npacking,{CARTON}{{001..003}},31\n")
    assert a.digest == b.digest
    assert a.digest != c.digest
    assert len(a.digest) == 64
    assert int(a.digest, 16) >= 0
    later = parse_batch(f"step,products,count\npacking,{CARTON}{{001..003}},30\n",
                        now_ms=NOW + 1, tz=SHANGHAI)  # fmt: skip
    assert later.digest != a.digest  # rows without time take the time of reading


def test_batch_events_check_what_they_are_built_from() -> None:
    """BatchEvent and Batch refuse what a file could not produce either."""
    with pytest.raises(MalformedMessage, match="step must be a CBV"):
        BatchEvent(NOW, (key(LOT),), "Packing")
    with pytest.raises(MalformedMessage, match="1 to 64"):
        BatchEvent(NOW, (), "packing")
    with pytest.raises(MalformedMessage, match="name one item"):
        BatchEvent(NOW, (key(f"{CARTON}1"),), "packing", (key(f"01/{GTIN}/21/L261206-C1"),))
    with pytest.raises(BatchError, match="no events"):
        Batch(())
    event = BatchEvent(NOW, (key(LOT),), "commissioning", data={"a": [1, {"b": 2}]})
    with pytest.raises(BatchError, match="commissioned earlier already"):
        Batch((event, event))
    with pytest.raises(TypeError):
        event.data["a"] = 1  # type: ignore[index]


def test_event_from_args_uses_the_file_rules() -> None:
    """The command-line event: keys and ranges, name=value data, time and location."""
    batch = event_from_args(
        "commissioning",
        [f"{CARTON}{{001..100}}", f"{CARTON}101 {CARTON}102"],
        parents=[LOT],
        location=GLN,
        data=["count=30", "laid=2026-12-05", "treatment.drug=none", "checked=true"],
        time="2026-12-06T08:00:00+08:00",
        now_ms=NOW,
        tz=SHANGHAI,
    )
    assert [len(e.products) for e in batch.events] == [64, 38]
    first = batch.events[0]
    assert first.data == {
        "count": 30,
        "laid": "2026-12-05",
        "treatment": {"drug": "none"},
        "checked": True,
    }
    assert (first.time_ms, first.location, first.parents, first.line) == (
        ms("2026-12-06T08:00:00+08:00"),
        GLN,
        (key(LOT),),
        None,
    )
    text = (
        "step,products,parents,location,time,count,laid,treatment.drug,checked\n"
        f"commissioning,{CARTON}{{001..102}},{LOT},{GLN},2026-12-06T08:00:00+08:00,30,"
        "2026-12-05,none,true\n"
    )
    assert parse(text).digest == batch.digest


def test_event_from_args_lists_every_problem() -> None:
    """Bad arguments are reported together, each naming its argument."""
    with pytest.raises(BatchError) as caught:
        event_from_args(
            "ship", ["x"], data=["Count=3", "novalue"], time="soon", now_ms=NOW, tz=SHANGHAI
        )
    found = [(p.line, p.column) for p in caught.value.problems]
    assert found == [(None, "data"), (None, "data")]
    with pytest.raises(BatchError, match="'Time' is not a data field: give it as its own"):
        event_from_args(LOT_STEP, [LOT], data=["Time=1796601600000"], now_ms=NOW, tz=SHANGHAI)
    with pytest.raises(BatchError) as caught:
        event_from_args("ship", ["x"], time="soon", now_ms=NOW, tz=SHANGHAI)
    assert [p.column for p in caught.value.problems] == ["step", "products", "time"]


def test_input_error_reads_well_in_all_forms() -> None:
    """Line and column are named when known."""
    assert str(InputError("bad", line=3, column="time")) == 'line 3, column "time": bad'
    assert str(InputError("bad", line=3)) == "line 3: bad"
    assert str(InputError("bad", column="data")) == 'column "data": bad'
    assert str(InputError("bad")) == "bad"


def outcome_of(text: str) -> Batch | BatchError:
    """The batch of a file, or the error it raises."""
    try:
        return parse(text)
    except BatchError as problem:
        return problem


def _quote(cell: str) -> str:
    """The cell as an RFC 4180 quoted field."""
    return '"' + cell.replace('"', '""') + '"'


@given(cell=st.text(min_size=1).filter(lambda t: t == t.strip() and t[0] != "#"))
def test_property_data_cells_are_kept_exactly_or_typed_without_loss(cell: str) -> None:
    """A data cell is its own text, or a number or boolean that writes back to the same value."""
    outcome = outcome_of(f"step,products,note\nother,{LOT},{_quote(cell)}\n")
    if isinstance(outcome, BatchError):  # only the message rules may refuse a cell (surrogates)
        assert [p.column for p in outcome.problems] == [None]
        return
    (event,) = outcome.events
    assert event.data is not None
    value = event.data["note"]
    if isinstance(value, bool):
        assert cell.lower() == str(value).lower()
    elif isinstance(value, int):
        assert str(value) == cell
    elif isinstance(value, float):
        assert Decimal(repr(value)) == Decimal(cell)
    else:
        assert value == cell


_ROW_PIECES = st.sampled_from(
    ["commissioning", "shipping", "Packing", LOT, f"{CARTON}{{001..070}}", f"{CARTON}001",
     f"01/{GTIN}/21/L261206-C001", "{1..3}", GLN, "2026-12-06T08:00:00", "1796515200000", "30",
     "true", "", " ", '"', "\ufeff", "x" * 201, "a.b"]
)  # fmt: skip


@given(
    rows=st.lists(st.lists(_ROW_PIECES | st.text(max_size=6), min_size=1, max_size=7), max_size=5),
    header=st.permutations(["step", "products", "parents", "location", "time", "n"]),
)
def test_property_a_file_is_all_good_events_or_one_batch_error(
    rows: list[list[str]], header: list[str]
) -> None:
    """Any file gives events that each sign into a valid message, or raises BatchError only."""
    text = ",".join(header) + "\n" + "".join(",".join(row) + "\n" for row in rows)
    outcome = outcome_of(text)
    if isinstance(outcome, BatchError):
        assert outcome.problems
        return
    for event in outcome.events:
        message = Event("packer-1", 1, event.time_ms, event.products, event.step,
                        event.parents, event.location, event.data)  # fmt: skip
        assert decode_payload(encode_payload(message)) == message


def test_huge_cells_give_short_messages() -> None:
    """A 100,000-character cell is named, shortened, not copied whole into the error."""
    huge = "x" * 100_000
    found = problems(f"step,products,time,{huge}\n")
    assert [len(reason) < 500 for _, _, reason in found] == [True]
    found = problems(f"step,products,time\n{huge},{huge},{huge}\n")
    assert [column for _, column, _ in found] == ["step", "products", "time"]
    assert all(len(reason) < 500 for _, _, reason in found), found


def test_an_excel_export_with_bom_and_crlf_reads_like_plain_text() -> None:
    """A UTF-8 BOM and CRLF line ends (as Excel writes) give the same events and digest."""
    plain = parse(SHIPPING)
    excel = parse("\ufeff" + SHIPPING.replace("\n", "\r\n"))
    assert excel.events == plain.events
    assert excel.digest == plain.digest
    assert [event.line for event in excel.events] == [2, 3]
