"""Tests of tracecore.identifiers: GTINs, GS1 Digital Link product keys, device and party ids.

Expected values are written out by hand (check digits computed on paper with the GS1 weights
3, 1, 3, … from the right), never taken from the implementation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import string
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracecore.errors import AgritraceError, IdentifierError
from tracecore.identifiers import (
    AI82_CHARACTERS,
    ProductKey,
    gtin_check_digit,
    normalize_gtin,
    parse_device_id,
    parse_party_id,
)

G = "06901234567892"  # a valid GTIN-14: body 0690123456789, weighted sum 128, check digit 2
AI82_SPECIALS = "!\"%&'()*+,-./:;<=>?_"  # GS1 General Specifications Figure 7.11-1
# Look-alike digits and letters, built from code points so the source stays plain ASCII.
ARABIC_INDIC_GTIN = "".join(chr(0x0660 + int(d)) for d in "4006381333931")
FULLWIDTH_GTIN = "".join(chr(0xFF10 + int(d)) for d in "4006381333931")
FULLWIDTH_SENSOR = "".join(chr(ord(c) - ord("a") + 0xFF41) for c in "sensor")
AI82_REFERENCE = string.ascii_uppercase + string.ascii_lowercase + string.digits + AI82_SPECIALS

# Canonical percent-encoding of each AI 82 symbol: RFC 3986 unreserved ones ("-", ".", "_")
# stay as they are, every other one becomes %XX with uppercase hex of its ASCII code.
SPECIAL_ENCODINGS = [
    ("!", "%21"),
    ('"', "%22"),
    ("%", "%25"),
    ("&", "%26"),
    ("'", "%27"),
    ("(", "%28"),
    (")", "%29"),
    ("*", "%2A"),
    ("+", "%2B"),
    (",", "%2C"),
    ("-", "-"),
    (".", "."),
    ("/", "%2F"),
    (":", "%3A"),
    (";", "%3B"),
    ("<", "%3C"),
    ("=", "%3D"),
    (">", "%3E"),
    ("?", "%3F"),
    ("_", "_"),
]


def reference_is_valid_gtin14(gtin: str) -> bool:
    """Check a GTIN-14 independently: weights 3,1,3,… from the left incl. check digit ≡ 0 mod 10."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(gtin))
    return len(gtin) == 14 and total % 10 == 0


def test_reference_oracle_agrees_with_hand_computed_gtins() -> None:
    """The test oracle accepts known-good GTIN-14s and rejects a one-off digit."""
    assert reference_is_valid_gtin14("04006381333931")
    assert reference_is_valid_gtin14(G)
    assert not reference_is_valid_gtin14("06901234567893")


# --- AI 82 ------------------------------------------------------------------------------------


def test_ai82_characters_is_exactly_the_gs1_set() -> None:
    """AI82_CHARACTERS holds the 82 characters of Figure 7.11-1, each once."""
    assert len(AI82_CHARACTERS) == 82
    assert set(AI82_CHARACTERS) == set(AI82_REFERENCE)
    assert len(set(AI82_CHARACTERS)) == 82


# --- check digit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("400638133393", 1),  # Stabilo pen, EAN-13 4006381333931 (sum 89)
        ("978030640615", 7),  # ISBN-13 9780306406157 (sum 93)
        ("03600029145", 2),  # UPC-A 036000291452 (sum 58)
        ("9638507", 4),  # EAN-8 96385074 (sum 86)
        ("0690123456789", 2),  # GTIN-14 06901234567892 (sum 128)
        ("0952123454321", 3),  # GS1 example GTIN 09521234543213 (sum 77)
        ("629104150021", 3),  # GS1 example GTIN-13 6291041500213 (sum 57)
        ("10614141123456789", 7),  # GS1 example SSCC 106141411234567897 (sum 143)
        ("0000000", 0),
        ("1", 7),  # 1*3 = 3, 10 - 3 = 7
        ("5", 5),  # 5*3 = 15, 10 - 5 = 5
    ],
)
def test_gtin_check_digit_known_values(body: str, expected: int) -> None:
    """gtin_check_digit gives the hand-computed GS1 mod-10 digit."""
    assert gtin_check_digit(body) == expected


@pytest.mark.parametrize(
    "body",
    ["", "12a4567", " 9638507", "9638507 ", "-9638507", "٩٦٣٨٥٠٧", "²", "1" * 18],
)
def test_gtin_check_digit_rejects_non_digits_and_overlong(body: str) -> None:
    """gtin_check_digit refuses empty, non-ASCII-digit and over-17-digit bodies."""
    with pytest.raises(IdentifierError, match="check digit body must be 1-17 ASCII digits"):
        gtin_check_digit(body)


# --- normalize_gtin ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4006381333931", "04006381333931"),  # GTIN-13 (EAN-13), Stabilo pen
        ("9780306406157", "09780306406157"),  # GTIN-13 (ISBN-13)
        ("036000291452", "00036000291452"),  # GTIN-12 (UPC-A)
        ("96385074", "00000096385074"),  # GTIN-8 (EAN-8)
        ("6901234567892", G),  # GTIN-13
        (G, G),  # GTIN-14 unchanged
        ("09521234543213", "09521234543213"),
        ("00000096385074", "00000096385074"),  # GTIN-8 already padded
    ],
)
def test_normalize_gtin_valid(text: str, expected: str) -> None:
    """Valid GTIN-8/12/13/14 are zero-padded to GTIN-14."""
    assert normalize_gtin(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4006381333932", "GTIN check digit is 2, expected 1 (GTIN 4006381333932)"),
        ("06901234567893", "GTIN check digit is 3, expected 2 (GTIN 06901234567893)"),
        ("96385075", "GTIN check digit is 5, expected 4 (GTIN 96385075)"),
        ("036000291450", "GTIN check digit is 0, expected 2 (GTIN 036000291450)"),
        ("9780306406151", "GTIN check digit is 1, expected 7 (GTIN 9780306406151)"),
    ],
)
def test_normalize_gtin_rejects_wrong_check_digit(text: str, message: str) -> None:
    """A wrong check digit is named with the expected one."""
    with pytest.raises(IdentifierError, match=re.escape(message)):
        normalize_gtin(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 4006381333931",
        "4006381333931 ",
        "+4006381333931",
        "4006381-333931",
        "400638133393X",
        ARABIC_INDIC_GTIN,  # str.isdigit() is True, but not ASCII
        FULLWIDTH_GTIN,
    ],
)
def test_normalize_gtin_rejects_non_digits(text: str) -> None:
    """Anything but ASCII digits is refused."""
    with pytest.raises(IdentifierError, match="GTIN must be ASCII digits only"):
        normalize_gtin(text)


@pytest.mark.parametrize("length", [1, 7, 9, 10, 11, 15, 18])
def test_normalize_gtin_rejects_wrong_length(length: int) -> None:
    """Only 8, 12, 13 or 14 digits are a GTIN."""
    with pytest.raises(
        IdentifierError, match=f"GTIN must have 8, 12, 13 or 14 digits, got {length}"
    ):
        normalize_gtin("1" * length)


@pytest.mark.parametrize("text", ["00000000", "000000000000", "0000000000000", "00000000000000"])
def test_normalize_gtin_rejects_all_zeros(text: str) -> None:
    """An all-zero GTIN (whose check digit 0 is "valid") is not a trade item."""
    with pytest.raises(IdentifierError, match="GTIN must not be all zeros"):
        normalize_gtin(text)


# --- device and party ids ---------------------------------------------------------------------

ID_PARSERS = [pytest.param(parse_device_id, id="device"), pytest.param(parse_party_id, id="party")]


@pytest.mark.parametrize("parse", ID_PARSERS)
@pytest.mark.parametrize(
    "text", ["abc", "sensor-01", "farm-42-barn-3", "---", "0-9", "a" * 64, "z" * 3]
)
def test_ids_valid(parse: Callable[[str], str], text: str) -> None:
    """Ids of [a-z0-9-]{3,64} come back unchanged."""
    assert parse(text) == text


@pytest.mark.parametrize(
    ("parse", "kind"),
    [
        pytest.param(parse_device_id, "device", id="device"),
        pytest.param(parse_party_id, "party", id="party"),
    ],
)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "ab",
        "a" * 65,
        "Sensor-1",
        "sensor_1",
        "sensor 1",
        "sensor.1",
        "sensor-1\n",
        " sensor-1",
        "séns",
        FULLWIDTH_SENSOR,
        "sensor/1",
    ],
)
def test_ids_invalid(parse: Callable[[str], str], kind: str, text: str) -> None:
    """Anything else is refused with a message stating the allowed pattern."""
    with pytest.raises(IdentifierError, match=re.escape(f"{kind} id must match [a-z0-9-]{{3,64}}")):
        parse(text)


# --- ProductKey.parse: valid ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gtin", "lot", "serial"),
    [
        ("01/06901234567892/10/L2611", G, "L2611", None),
        ("/01/06901234567892/21/S1", G, None, "S1"),
        ("01/06901234567892/10/L/21/S", G, "L", "S"),
        ("/01/06901234567892/10/L/21/S", G, "L", "S"),
        ("01/6901234567892/10/L", G, "L", None),  # GTIN-13
        ("01/4006381333931/10/A1", "04006381333931", "A1", None),  # EAN-13
        ("01/9780306406157/21/x", "09780306406157", None, "x"),  # ISBN-13
        ("01/036000291452/21/9", "00036000291452", None, "9"),  # GTIN-12
        ("01/96385074/10/x", "00000096385074", "x", None),  # GTIN-8
        ("01/06901234567892/10/ab%2Fcd", G, "ab/cd", None),
        ("01/06901234567892/10/ab%2fcd", G, "ab/cd", None),  # lowercase hex accepted
        ("01/06901234567892/10/a!b", G, "a!b", None),  # raw sub-delim accepted
        ("01/06901234567892/10/a:b;c=d", G, "a:b;c=d", None),
        ("01/06901234567892/10/%41", G, "A", None),  # needlessly encoded unreserved
        ("01/06901234567892/21/%25", G, None, "%"),
        ("01/06901234567892/21/%2525", G, None, "%25"),  # decoded once only
        ("01/06901234567892/10/" + "x" * 20, G, "x" * 20, None),
        ("01/06901234567892/10/" + "%2F" * 20, G, "/" * 20, None),  # length counts decoded
        ("01/06901234567892/10/1/21/1", G, "1", "1"),
    ],
)
def test_parse_valid(text: str, gtin: str, lot: str | None, serial: str | None) -> None:
    """parse accepts the three forms and lenient spellings and decodes lot and serial."""
    key = ProductKey.parse(text)
    assert (key.gtin, key.lot, key.serial) == (gtin, lot, serial)


# --- ProductKey.parse: invalid ----------------------------------------------------------------

ERRORS_BY_RULE = [
    ("", "must not be empty"),
    ("/", "must not be empty"),
    ("01/06901234567892", "needs a lot (AI 10) or a serial (AI 21)"),
    ("/01/06901234567892", "needs a lot (AI 10) or a serial (AI 21)"),
    ("01/06901234567892/10/L?17=261231", "must be a path without query"),
    ("01/06901234567892/10/L?", "must be a path without query"),
    ("01/06901234567892/10/L#top", "must be a path without query"),
    ("https://id.gs1.org/01/09521234543213/10/L", "without scheme and host"),
    ("01/06901234567892/10/L/", "must not end with '/'"),
    ("01/06901234567892/10/L/21/S/", "must not end with '/'"),
    ("01//06901234567892/10/L", "must not have empty path segments"),
    ("//01/06901234567892/10/L", "must not have empty path segments"),
    ("01/06901234567892/10//21/S", "must not have empty path segments"),
    ("10/L/01/06901234567892", "must start with AI 01"),
    ("21/S", "must start with AI 01"),
    ("1/06901234567892/10/L", "must start with AI 01"),
    ("01/06901234567892/22/V1", "unknown AI '22'"),
    ("01/06901234567892/10/L/17/261231", "unknown AI '17'"),
    ("01/06901234567892/lot/L", "unknown AI 'lot'"),
    ("01/06901234567892/10/a/b", "unknown AI 'b'"),  # a raw "/" splits the lot
    ("01/06901234567892/10/A/10/B", "repeats AI 10"),
    ("01/06901234567892/21/A/21/B", "repeats AI 21"),
    ("01/06901234567892/01/06901234567892/10/L", "repeats AI 01"),
    ("01/06901234567892/21/S/10/L", "AIs must be in the order 01, 10, 21"),
    ("01/06901234567892/10", "AI 10 has no value"),
    ("01/06901234567892/10/L/21", "AI 21 has no value"),
    ("01/06901234567893/10/L", "GTIN check digit is 3, expected 2"),
    ("01/4006381333932/10/L", "GTIN check digit is 2, expected 1"),
    ("01/0690123456789X/10/L", "GTIN must be ASCII digits only"),
    ("01/%306901234567892/10/L", "GTIN must be ASCII digits only"),
    ("01/69012345678/10/L", "GTIN must have 8, 12, 13 or 14 digits, got 11"),
    ("01/006901234567892/10/L", "GTIN must have 8, 12, 13 or 14 digits, got 15"),
    ("01/00000000000000/10/L", "GTIN must not be all zeros"),
    ("01/06901234567892/10/a%2", "malformed percent-escape '%2'"),
    ("01/06901234567892/10/a%G1", "malformed percent-escape '%G1'"),
    ("01/06901234567892/10/%", "malformed percent-escape '%'"),
    ("01/06901234567892/21/%%41", "malformed percent-escape"),
    ("01/06901234567892/10/a b", "character set 82"),
    ("01/06901234567892/10/a%20b", "character set 82"),
    ("01/06901234567892/10/a~b", "character set 82"),
    ("01/06901234567892/10/a%7Eb", "character set 82"),
    ("01/06901234567892/10/a$b", "character set 82"),
    ("01/06901234567892/10/a@b", "character set 82"),
    ("01/06901234567892/21/批", "character set 82"),
    ("01/06901234567892/21/%E6%89%B9", "character set 82"),  # UTF-8 of 批
    ("01/06901234567892/21/%C3%A9", "character set 82"),  # UTF-8 of é
    ("01/06901234567892/10/%FF", "not UTF-8"),
    ("01/06901234567892/10/%00", "character set 82"),
    ('01/06901234567892/10/a"b', "must be percent-encoded as %22"),
    ("01/06901234567892/10/a<b", "must be percent-encoded as %3C"),
    ("01/06901234567892/10/a>b", "must be percent-encoded as %3E"),
    ("01/06901234567892/10/" + "x" * 21, "lot must be 1-20 characters, got 21"),
    ("01/06901234567892/21/" + "%21" * 21, "serial must be 1-20 characters, got 21"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS_BY_RULE)
def test_parse_invalid(text: str, message: str) -> None:
    """Each broken rule raises IdentifierError naming that rule."""
    with pytest.raises(IdentifierError, match=re.escape(message)):
        ProductKey.parse(text)


@pytest.mark.parametrize(("text", "message"), ERRORS_BY_RULE)
def test_parse_canonical_reports_the_same_rule(text: str, message: str) -> None:
    """parse_canonical names the broken rule too, not just 'not canonical'."""
    with pytest.raises(IdentifierError, match=re.escape(message)):
        ProductKey.parse_canonical(text)


def test_identifier_error_is_an_agritrace_value_error() -> None:
    """Callers may catch IdentifierError as AgritraceError or ValueError."""
    with pytest.raises(IdentifierError) as info:
        ProductKey.parse("01/06901234567893/10/L")
    assert isinstance(info.value, AgritraceError)
    assert isinstance(info.value, ValueError)


# --- canonical form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gtin", "lot", "serial", "path"),
    [
        ("4006381333931", "L2611", None, "01/04006381333931/10/L2611"),
        ("96385074", None, "S/1", "01/00000096385074/21/S%2F1"),
        ("036000291452", "A-1.b_2", "x:y", "01/00036000291452/10/A-1.b_2/21/x%3Ay"),
        (G, "100%", None, f"01/{G}/10/100%25"),
        (G, None, "a+b", f"01/{G}/21/a%2Bb"),
    ],
)
def test_path_is_canonical_and_round_trips(
    gtin: str, lot: str | None, serial: str | None, path: str
) -> None:
    """key.path is the hand-written canonical form, str() equals it, and both parsers invert it."""
    key = ProductKey.from_parts(gtin, lot, serial)
    assert key.path == path
    assert str(key) == path
    assert ProductKey.parse(path) == key
    assert ProductKey.parse("/" + path) == key
    assert ProductKey.parse_canonical(path) == key


@pytest.mark.parametrize(("char", "encoded"), SPECIAL_ENCODINGS)
def test_every_ai82_symbol_round_trips(char: str, encoded: str) -> None:
    """Each AI 82 symbol is encoded canonically in lot and serial and decodes back."""
    key = ProductKey.from_parts(G, lot=f"a{char}", serial=f"{char}z")
    assert key.path == f"01/{G}/10/a{encoded}/21/{encoded}z"
    assert ProductKey.parse(key.path) == key
    assert ProductKey.parse_canonical(key.path) == key
    assert ProductKey.parse(f"01/{G}/10/a{encoded.lower()}/21/{encoded.lower()}z") == key


def test_special_encodings_cover_every_ai82_symbol() -> None:
    """The table above lists each of the 20 AI 82 symbols once."""
    assert sorted(c for c, _ in SPECIAL_ENCODINGS) == sorted(AI82_SPECIALS)


def test_all_82_characters_in_one_value_round_trip() -> None:
    """All 82 characters, in chunks of 20, survive encode and decode."""
    for start in range(0, 82, 20):
        chunk = AI82_REFERENCE[start : start + 20]
        key = ProductKey.from_parts(G, serial=chunk)
        assert ProductKey.parse_canonical(key.path).serial == chunk


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (f"01/{G}/10/a%2fb", f"01/{G}/10/a%2Fb"),  # lowercase hex
        (f"/01/{G}/10/L", f"01/{G}/10/L"),  # leading slash
        ("01/6901234567892/10/L", f"01/{G}/10/L"),  # GTIN-13
        ("01/96385074/21/S", "01/00000096385074/21/S"),  # GTIN-8
        ("01/036000291452/21/S", "01/00036000291452/21/S"),  # GTIN-12
        (f"01/{G}/10/a!b", f"01/{G}/10/a%21b"),  # raw sub-delim
        (f"01/{G}/10/%41", f"01/{G}/10/A"),  # encoded unreserved
        (f"01/{G}/21/a%2d", f"01/{G}/21/a-"),  # encoded unreserved, lowercase
    ],
)
def test_parse_canonical_rejects_other_spellings(text: str, canonical: str) -> None:
    """parse_canonical refuses non-canonical spellings and says what the canonical one is."""
    assert ProductKey.parse(text).path == canonical
    with pytest.raises(IdentifierError, match=re.escape(f"canonical form is {canonical!r}")):
        ProductKey.parse_canonical(text)


@pytest.mark.parametrize(
    "text",
    [
        f"01/{G}/10/..",
        f"01/{G}/10/.",
        f"01/{G}/21/..",
        f"01/{G}/10/L/21/.",
        f"01/{G}/10/%2E%2E",  # browsers decode %2E before removing dot segments
        f"01/{G}/10/.%2e",
        f"01/{G}/21/%2E",
    ],
)
def test_parse_refuses_dot_segments(text: str) -> None:
    """A lot or serial '.' or '..' is refused: a browser would resolve its URI elsewhere."""
    with pytest.raises(IdentifierError, match=re.escape("RFC 3986 §5.2.4")):
        ProductKey.parse(text)
    with pytest.raises(IdentifierError, match=r"must not be '\.\.?'"):
        ProductKey.parse_canonical(text)


@pytest.mark.parametrize("value", ["...", ".a", "a.", "..b", "a..b"])
def test_values_with_dots_that_are_not_dot_segments_stay_valid(value: str) -> None:
    """Only a value that is exactly '.' or '..' is a dot segment; other dots are fine."""
    key = ProductKey.from_parts(G, lot=value, serial=value)
    assert ProductKey.parse_canonical(key.path) == key


def test_uri_joins_base_and_path() -> None:
    """uri() puts exactly one slash between the base URL and the canonical path."""
    key = ProductKey.from_parts("4006381333931", "L/1", "S")
    expected = "https://trace.example/01/04006381333931/10/L%2F1/21/S"
    assert key.uri("https://trace.example") == expected
    assert key.uri("https://trace.example/") == expected
    assert key.uri("https://trace.example//") == expected
    assert key.uri("https://x.example/p") == "https://x.example/p/01/04006381333931/10/L%2F1/21/S"


# --- items: GTIN + serial ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "item"),
    [
        (f"01/{G}/10/L261127/21/C0001", f"01/{G}/21/C0001"),
        (f"01/{G}/21/C0001", f"01/{G}/21/C0001"),
        (f"01/{G}/10/A%2FB/21/x%2F1", f"01/{G}/21/x%2F1"),
        # A lot spelled "21" must not be taken for the serial's AI.
        (f"01/{G}/10/21/21/S", f"01/{G}/21/S"),
    ],
)
def test_item_is_gtin_and_serial_without_the_lot(text: str, item: str) -> None:
    """GS1 GenSpecs §3.5.2: GTIN + serial names the item; the lot is not part of it."""
    key = ProductKey.parse_canonical(text)
    assert key.item is not None
    assert key.item.path == item
    assert key.item.lot is None
    assert key.item.item == key.item


def test_keys_of_one_item_in_two_lots_share_the_item() -> None:
    """The same serial under two lots (or none) is one item: equal item keys."""
    a = ProductKey.from_parts(G, lot="L1", serial="C7")
    b = ProductKey.from_parts(G, lot="L2", serial="C7")
    short = ProductKey.from_parts(G, serial="C7")
    assert a != b
    assert a.item == b.item == short.item == short
    assert ProductKey.from_parts(G, lot="L1", serial="C8").item != a.item


def test_a_lot_key_names_no_item() -> None:
    """A key without a serial is a lot: it has no item."""
    assert ProductKey.from_parts(G, lot="L1").item is None


# --- construction -----------------------------------------------------------------------------


def test_from_parts_normalizes_and_equal_keys_hash_equal() -> None:
    """from_parts pads the GTIN, so differently written GTINs give one equal, hashable key."""
    a = ProductKey.from_parts("4006381333931", lot="L")
    b = ProductKey.from_parts("04006381333931", lot="L")
    assert a == b
    assert hash(a) == hash(b)
    assert a.gtin == "04006381333931"
    assert len({a, b}) == 1


def test_product_key_is_frozen() -> None:
    """A key cannot be mutated into an invalid one after validation."""
    key = ProductKey(G, lot="L")
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.lot = "~"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ProductKey(G), "needs a lot (AI 10) or a serial (AI 21)"),
        (lambda: ProductKey.from_parts(G), "needs a lot (AI 10) or a serial (AI 21)"),
        (lambda: ProductKey("6901234567892", lot="L"), "must be a GTIN-14"),
        (lambda: ProductKey("06901234567893", lot="L"), "GTIN check digit is 3, expected 2"),
        (lambda: ProductKey.from_parts("96385075", lot="L"), "GTIN check digit is 5, expected 4"),
        (lambda: ProductKey.from_parts("00000000", lot="L"), "must not be all zeros"),
        (lambda: ProductKey(G, lot=""), "lot must be 1-20 characters, got 0"),
        (lambda: ProductKey(G, serial=""), "serial must be 1-20 characters, got 0"),
        (lambda: ProductKey(G, lot="x" * 21), "lot must be 1-20 characters, got 21"),
        (lambda: ProductKey.from_parts(G, serial="s" * 21), "serial must be 1-20 characters"),
        (lambda: ProductKey(G, lot="a~"), "character set 82"),
        (lambda: ProductKey(G, serial="a b"), "character set 82"),
        (lambda: ProductKey(G, serial="批"), "character set 82"),
        (lambda: ProductKey(G, lot="L", serial="\n"), "character set 82"),
        (lambda: ProductKey(6901234567892, lot="L"), "gtin must be a str"),  # type: ignore[arg-type]
        (lambda: ProductKey(G, lot=7), "lot must be a str"),  # type: ignore[arg-type]
        (lambda: ProductKey(G, lot=".."), "lot must not be '..'"),
        (lambda: ProductKey.from_parts(G, serial="."), "serial must not be '.'"),
    ],
)
def test_construction_validates(build: Callable[[], ProductKey], message: str) -> None:
    """The constructor and from_parts refuse every invalid part."""
    with pytest.raises(IdentifierError, match=re.escape(message)):
        build()


# --- properties -------------------------------------------------------------------------------

# "." and ".." are dot segments, refused (test_parse_refuses_dot_segments).
ai82_values = st.text(alphabet=AI82_REFERENCE, min_size=1, max_size=20).filter(
    lambda value: value not in (".", "..")
)


@st.composite
def gtins(draw: st.DrawFn, length: int = 14) -> str:
    """A valid GTIN of ``length`` digits, its check digit chosen by the independent oracle."""
    body = str(draw(st.integers(min_value=1, max_value=10 ** (length - 1) - 1))).zfill(length - 1)
    padded = body.zfill(13)
    (check,) = [c for c in "0123456789" if reference_is_valid_gtin14(padded + c)]
    return body + check


def gtin14s() -> st.SearchStrategy[str]:
    """A valid GTIN-14."""
    return gtins(14)


@given(gtin=gtin14s(), lot=st.none() | ai82_values, serial=st.none() | ai82_values)
def test_property_path_round_trips(gtin: str, lot: str | None, serial: str | None) -> None:
    """For random valid parts, parse and parse_canonical invert key.path."""
    if lot is None and serial is None:
        with pytest.raises(IdentifierError):
            ProductKey.from_parts(gtin, lot, serial)
        return
    key = ProductKey.from_parts(gtin, lot, serial)
    assert (key.gtin, key.lot, key.serial) == (gtin, lot, serial)
    assert re.fullmatch(
        r"01/\d{14}(/10/([A-Za-z0-9._-]|%[0-9A-F]{2})+)?(/21/([A-Za-z0-9._-]|%[0-9A-F]{2})+)?",
        key.path,
    )
    assert ProductKey.parse(key.path) == key
    assert ProductKey.parse_canonical(key.path) == key


@given(gtin=st.sampled_from([8, 12, 13, 14]).flatmap(gtins))
def test_property_gtins_of_every_length_pad_to_14(gtin: str) -> None:
    """Every valid GTIN-8/12/13/14 normalizes to itself left-padded with zeros to 14 digits."""
    assert normalize_gtin(gtin) == "0" * (14 - len(gtin)) + gtin


@given(gtin=gtin14s(), wrong=st.integers(min_value=1, max_value=9))
def test_property_any_wrong_check_digit_is_rejected(gtin: str, wrong: int) -> None:
    """Changing the check digit of a valid GTIN-14 always makes it invalid."""
    bad = gtin[:-1] + str((int(gtin[-1]) + wrong) % 10)
    with pytest.raises(IdentifierError, match="GTIN check digit is"):
        normalize_gtin(bad)


path_pieces = st.sampled_from(
    [
        "01",
        "10",
        "21",
        "22",
        "/",
        "//",
        G,
        "6901234567892",
        "06901234567893",
        "96385074",
        "L",
        "%",
        "%2F",
        "%2f",
        "%2",
        "%G1",
        "%E6%89%B9",
        "%FF",
        "~",
        "批",
        "?",
        "#",
        "!",
        '"',
        " ",
        "x" * 21,
    ]
)


@given(text=st.text() | st.lists(path_pieces, max_size=12).map("".join))
def test_property_parse_never_raises_anything_else(text: str) -> None:
    """Random text either parses to a key that round-trips or raises IdentifierError."""
    with contextlib.suppress(IdentifierError):
        key = ProductKey.parse(text)
        assert ProductKey.parse_canonical(key.path) == key
    with contextlib.suppress(IdentifierError):
        key = ProductKey.parse_canonical(text)
        assert key.path == text


@given(text=st.text())
def test_property_other_parsers_raise_only_identifier_error(text: str) -> None:
    """normalize_gtin, the id parsers and from_parts raise nothing but IdentifierError."""
    for call in (
        lambda: normalize_gtin(text),
        lambda: parse_device_id(text),
        lambda: parse_party_id(text),
        lambda: ProductKey.from_parts(G, lot=text),
        lambda: ProductKey.from_parts(text, serial="S"),
    ):
        with contextlib.suppress(IdentifierError):
            call()
