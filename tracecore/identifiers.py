"""Identifiers: GS1 Digital Link product keys, GTINs, device and party ids.

A product key is a GS1 Digital Link path without host (design.md, "Identifiers"), in one of
exactly three forms::

    01/{gtin14}/10/{lot}
    01/{gtin14}/21/{serial}
    01/{gtin14}/10/{lot}/21/{serial}

* The GTIN (AI 01) is 14 digits with a valid GS1 mod-10 check digit; GTIN-8, -12 and -13 are
  accepted on input and zero-padded to 14 (GS1 General Specifications §3.3.2, §7.9.1).
* Lot (AI 10) and serial (AI 21) are 1-20 characters of the GS1 AI encodable character set 82
  (GS1 General Specifications Figure 7.11-1).
* In the path, every character of a lot or serial that is not an RFC 3986 *unreserved* character
  (RFC 3986 §2.3) is percent-encoded with uppercase hex (RFC 3986 §2.1; GS1 Digital Link URI
  Syntax 1.2). That spelling is the *canonical* one: :attr:`ProductKey.path` always produces it,
  :meth:`ProductKey.parse_canonical` accepts nothing else, and :meth:`ProductKey.parse` accepts
  the looser spellings a scanner or a hand-typed URL may carry.
* A key with a serial names one *item*, and GS1 identifies that item by GTIN + serial alone:
  "when combined with a GTIN, a serial number uniquely identifies an individual item" (GS1
  General Specifications §3.5.2, AI 21), while the lot "is not part of the unique
  identification of a trade item" (§3.4.1, AI 10); the EPC Tag Data Standard's SGTIN is GTIN +
  serial too (TDS §6.3.1). :attr:`ProductKey.item` is that identity, spelled as the short key
  ``01/{gtin14}/21/{serial}``: ``…/10/L1/21/C7`` and ``…/21/C7`` are one item.

Everything here is pure: no I/O, no state. Every rule that breaks raises
:class:`~tracecore.errors.IdentifierError` with a message that names the rule and the bad value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final

from tracecore.errors import IdentifierError

__all__ = [
    "AI82_CHARACTERS",
    "ProductKey",
    "gtin_check_digit",
    "normalize_gtin",
    "parse_device_id",
    "parse_party_id",
]

# GS1 General Specifications Figure 7.11-1, "GS1 AI encodable character set 82", in ASCII order:
# 20 symbols, the digits, the upper-case letters, "_" and the lower-case letters.
AI82_CHARACTERS: Final = (
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
_AI82: Final = frozenset(AI82_CHARACTERS)

# RFC 3986 §2.3: unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~". Canonical keys leave only
# these unencoded; every other character is percent-encoded with uppercase hex (RFC 3986 §2.1).
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@", with
# sub-delims = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "=" (§2.2).
# These may appear unencoded in a path segment; parse() accepts them, parse_canonical() does not.
_PCHAR_RAW: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@")
_HEX: Final = frozenset("0123456789abcdefABCDEF")

_GTIN_LENGTHS: Final = (8, 12, 13, 14)  # GS1 General Specifications §3.3.2: GTIN-8/12/13/14
_GTIN14_LENGTH: Final = 14
_DOT_SEGMENTS: Final = frozenset({".", ".."})  # RFC 3986 §3.3, §5.2.4
_VALUE_MAX_LENGTH: Final = 20  # GS1 General Specifications, AI (10) and AI (21): format X..20
_CHECK_BODY_MAX_LENGTH: Final = 17  # the longest GS1 key with a check digit (SSCC, 18 digits)

_AI_GTIN: Final = "01"
_AI_LOT: Final = "10"
_AI_SERIAL: Final = "21"
_AI_ORDER: Final = (_AI_GTIN, _AI_LOT, _AI_SERIAL)

_ID_PATTERN_TEXT: Final = "[a-z0-9-]{3,64}"
_ID_PATTERN: Final = re.compile(_ID_PATTERN_TEXT)

_SHOW_MAX: Final = 80


def _show(value: str) -> str:
    """Return ``repr(value)``, shortened so an error message stays readable."""
    if len(value) > _SHOW_MAX:
        return repr(value[:_SHOW_MAX]) + f"… ({len(value)} characters)"
    return repr(value)


def _is_ascii_digits(text: str) -> bool:
    """Return whether ``text`` is non-empty and only ASCII 0-9 (``str.isdigit`` allows "²", "٣")."""
    return text.isascii() and text.isdigit()


def gtin_check_digit(body: str) -> int:
    """Return the GS1 mod-10 check digit for ``body``, the digits before the check digit.

    Weights 3, 1, 3, 1, … are applied from the rightmost digit of ``body`` leftwards; the check
    digit is ``(10 - sum % 10) % 10`` (GS1 General Specifications §7.9.1). The same algorithm
    serves every GS1 key with a check digit, so ``body`` may be 1-17 ASCII digits (7 for a
    GTIN-8, 13 for a GTIN-14, 17 for an SSCC).

    >>> gtin_check_digit("400638133393")
    1

    Raises :class:`IdentifierError` when ``body`` is empty, longer than 17 characters or holds
    anything but ASCII digits.
    """
    if not _is_ascii_digits(body) or len(body) > _CHECK_BODY_MAX_LENGTH:
        raise IdentifierError(
            f"check digit body must be 1-{_CHECK_BODY_MAX_LENGTH} ASCII digits, got {_show(body)}"
        )
    total = sum(
        int(digit) * (3 if position % 2 == 0 else 1)
        for position, digit in enumerate(reversed(body))
    )
    return (10 - total % 10) % 10


def normalize_gtin(text: str) -> str:
    """Validate a GTIN-8, -12, -13 or -14 and return it as a zero-padded GTIN-14.

    ``text`` must be ASCII digits only (no spaces, signs or separators), of length 8, 12, 13 or
    14 (GS1 General Specifications §3.3.2), not all zeros (no trade item has that number), and
    end in the right mod-10 check digit (§7.9.1). Padding with leading zeros to 14 digits is the
    GTIN-14 format of GS1 General Specifications §3.3.2 and GS1 Digital Link URI Syntax 1.2.

    >>> normalize_gtin("4006381333931")
    '04006381333931'

    Raises :class:`IdentifierError` naming the broken rule, e.g.
    ``GTIN check digit is 3, expected 2 (GTIN 06901234567893)``.
    """
    if not _is_ascii_digits(text):
        raise IdentifierError(f"GTIN must be ASCII digits only, got {_show(text)}")
    if len(text) not in _GTIN_LENGTHS:
        raise IdentifierError(
            f"GTIN must have 8, 12, 13 or 14 digits, got {len(text)} digits ({_show(text)})"
        )
    if text.count("0") == len(text):
        raise IdentifierError(f"GTIN must not be all zeros, got {_show(text)}")
    expected = gtin_check_digit(text[:-1])
    actual = int(text[-1])
    if actual != expected:
        raise IdentifierError(f"GTIN check digit is {actual}, expected {expected} (GTIN {text})")
    return text.zfill(_GTIN14_LENGTH)


def _parse_id(kind: str, text: str) -> str:
    """Return ``text`` if it matches ``[a-z0-9-]{3,64}``; else raise, naming ``kind``."""
    if _ID_PATTERN.fullmatch(text) is None:
        raise IdentifierError(
            f"{kind} id must match {_ID_PATTERN_TEXT} (3-64 lowercase ASCII letters, digits or "
            f"'-'), got {_show(text)}"
        )
    return text


def parse_device_id(text: str) -> str:
    """Return ``text`` unchanged if it is a valid device id: ``[a-z0-9-]{3,64}``.

    design.md, "Identifiers". Nothing is normalized: "Sensor-1" is refused, not lowercased, so a
    device has exactly one spelling (it appears in MQTT topics and signed payloads).

    Raises :class:`IdentifierError` stating the allowed pattern.
    """
    return _parse_id("device", text)


def parse_party_id(text: str) -> str:
    """Return ``text`` unchanged if it is a valid party id: ``[a-z0-9-]{3,64}``.

    design.md, "Identifiers". Same rule as :func:`parse_device_id`.

    Raises :class:`IdentifierError` stating the allowed pattern.
    """
    return _parse_id("party", text)


def _check_value(name: str, value: str) -> None:
    """Check a decoded lot or serial: 1-20 characters of AI 82 (GS1 Gen Specs Figure 7.11-1),
    and not a dot segment ``.`` or ``..`` (RFC 3986 §5.2.4).
    """
    if not 1 <= len(value) <= _VALUE_MAX_LENGTH:
        raise IdentifierError(
            f"{name} must be 1-{_VALUE_MAX_LENGTH} characters, got {len(value)} ({_show(value)})"
        )
    for char in value:
        if char not in _AI82:
            raise IdentifierError(
                f"{name} may only hold characters of GS1 AI encodable character set 82 "
                f"(A-Z a-z 0-9 and !\"%&'()*+,-./:;<=>?_), got {char!r} in {_show(value)}"
            )
    if value in _DOT_SEGMENTS:
        # RFC 3986 §5.2.4 (remove_dot_segments): a client resolving the key's URI drops a "."
        # segment and a ".." with the segment before it, so "01/{gtin}/10/.." would reach
        # "/01/{gtin}", another resource. Browsers treat %2E like "." (WHATWG URL, "single-dot
        # / double-dot URL path segment"), so the decoded value is checked. docs/identifiers.md
        raise IdentifierError(
            f"{name} must not be {value!r}: a '.' or '..' path segment is removed or climbs "
            "one level when a browser resolves the URI (RFC 3986 §5.2.4)"
        )


def _encode(value: str) -> str:
    """Percent-encode every non-unreserved character, uppercase hex (RFC 3986 §2.1, §2.3)."""
    return "".join(
        char if char in _UNRESERVED else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in value
    )


def _decode(name: str, segment: str) -> str:
    """Percent-decode a lot or serial path segment and check the decoded value.

    Accepts uppercase or lowercase hex escapes and the characters RFC 3986 §3.3 allows raw in a
    path segment. Escapes are decoded as UTF-8 (RFC 3986 §2.5), though any non-ASCII result then
    fails the AI 82 rule.
    """
    decoded = bytearray()
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "%":
            escape = segment[index + 1 : index + 3]
            if len(escape) != 2 or not set(escape) <= _HEX:
                raise IdentifierError(
                    f"{name} has a malformed percent-escape {segment[index : index + 3]!r} in "
                    f"{_show(segment)}: '%' must be followed by two hex digits (RFC 3986 §2.1)"
                )
            decoded.append(int(escape, 16))
            index += 3
            continue
        if char not in _AI82:
            raise IdentifierError(
                f"{name} may only hold characters of GS1 AI encodable character set 82 "
                f"(A-Z a-z 0-9 and !\"%&'()*+,-./:;<=>?_), got {char!r} in {_show(segment)}"
            )
        if char not in _PCHAR_RAW:
            raise IdentifierError(
                f"{name} character {char!r} must be percent-encoded as {_encode(char)} in a "
                f"URI path (RFC 3986 §3.3), got {_show(segment)}"
            )
        decoded.extend(char.encode())
        index += 1
    try:
        value = decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdentifierError(
            f"{name} {_show(segment)} percent-decodes to bytes that are not UTF-8"
        ) from exc
    _check_value(name, value)
    return value


def _split_path(text: str) -> tuple[str, str | None, str | None]:
    """Split a product key path into GTIN, raw lot segment and raw serial segment.

    Checks the path structure only: no query or fragment, no scheme or host, no empty segment,
    AI 01 first, then optional AI 10 and AI 21 in that order, each once, each with a value.
    """
    if text == "":
        raise IdentifierError("product key must not be empty")
    if "?" in text or "#" in text:
        raise IdentifierError(
            f"product key must be a path without query string or fragment, got {_show(text)}"
        )
    if "://" in text:
        raise IdentifierError(
            "product key must be a path without scheme and host, e.g. "
            f"'01/06901234567892/10/L1', got {_show(text)}"
        )
    if text.endswith("/"):
        raise IdentifierError(f"product key must not end with '/', got {_show(text)}")
    segments = text.split("/")
    if "" in segments:
        raise IdentifierError(
            f"product key must not have empty path segments ('//'), got {_show(text)}"
        )
    if segments[0] != _AI_GTIN:
        raise IdentifierError(
            f"product key must start with AI 01 (GTIN), got {_show(segments[0])} in {_show(text)}"
        )
    values: dict[str, str] = {}
    last_rank = -1
    for position in range(0, len(segments), 2):
        ai = segments[position]
        if ai not in _AI_ORDER:
            raise IdentifierError(
                f"product key has unknown AI {_show(ai)}: only 01 (GTIN), 10 (lot) and "
                f"21 (serial) are allowed, in {_show(text)}"
            )
        if ai in values:
            raise IdentifierError(f"product key repeats AI {ai} in {_show(text)}")
        rank = _AI_ORDER.index(ai)
        if rank < last_rank:
            raise IdentifierError(
                f"product key AIs must be in the order 01, 10, 21; AI {ai} comes after "
                f"AI {_AI_ORDER[last_rank]} in {_show(text)}"
            )
        last_rank = rank
        if position + 1 >= len(segments):
            raise IdentifierError(f"product key AI {ai} has no value in {_show(text)}")
        values[ai] = segments[position + 1]
    if len(values) == 1:
        raise IdentifierError(
            f"product key needs a lot (AI 10) or a serial (AI 21) after the GTIN, got {_show(text)}"
        )
    return values[_AI_GTIN], values.get(_AI_LOT), values.get(_AI_SERIAL)


@dataclass(frozen=True, slots=True)
class ProductKey:
    """A traceable product: a GTIN with a lot, a serial, or both (design.md, "Identifiers").

    Fields hold *decoded* values; the constructor validates them, so every instance is
    well-formed: ``gtin`` must already be a GTIN-14 (use :meth:`from_parts` to pad shorter ones),
    ``lot`` and ``serial`` are 1-20 AI 82 characters or ``None``, and at least one is set.
    Equal keys have equal :attr:`path`, so instances can be compared and hashed freely.
    """

    gtin: str
    lot: str | None = None
    serial: str | None = None
    # The canonical path, computed once: keys are immutable and the path is their identity in
    # every entry, chain and query (a scan of a long chain asks for it thousands of times).
    _path: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`IdentifierError` on the first broken rule."""
        for name, value in (("gtin", self.gtin), ("lot", self.lot), ("serial", self.serial)):
            if not (isinstance(value, str) or (value is None and name != "gtin")):
                raise IdentifierError(
                    f"ProductKey.{name} must be a str, got {type(value).__name__}"
                )
        normalized = normalize_gtin(self.gtin)
        if normalized != self.gtin:
            raise IdentifierError(
                f"ProductKey.gtin must be a GTIN-14, got {_show(self.gtin)}; "
                f"use {normalized!r} or ProductKey.from_parts() to pad it"
            )
        if self.lot is None and self.serial is None:
            raise IdentifierError(
                f"product key needs a lot (AI 10) or a serial (AI 21), got GTIN {self.gtin} only"
            )
        if self.lot is not None:
            _check_value("lot", self.lot)
        if self.serial is not None:
            _check_value("serial", self.serial)
        parts = [_AI_GTIN, self.gtin]
        if self.lot is not None:
            parts += [_AI_LOT, _encode(self.lot)]
        if self.serial is not None:
            parts += [_AI_SERIAL, _encode(self.serial)]
        object.__setattr__(self, "_path", "/".join(parts))

    @classmethod
    def from_parts(cls, gtin: str, lot: str | None = None, serial: str | None = None) -> ProductKey:
        """Build a key from a GTIN (8, 12, 13 or 14 digits) and decoded lot and/or serial.

        The GTIN is checked and zero-padded by :func:`normalize_gtin`; lot and serial are the
        plain values (not percent-encoded) of 1-20 AI 82 characters each.

        Raises :class:`IdentifierError` when any part breaks its rule or both lot and serial
        are ``None``.
        """
        return cls(normalize_gtin(gtin), lot, serial)

    @classmethod
    def parse(cls, text: str) -> ProductKey:
        """Parse a GS1 Digital Link path without host, leniently.

        Accepts ``01/{gtin}/10/{lot}``, ``01/{gtin}/21/{serial}`` and
        ``01/{gtin}/10/{lot}/21/{serial}`` (design.md, "Identifiers"; GS1 Digital Link URI
        Syntax 1.2 orders the key qualifiers 10 before 21), with an optional leading ``/``,
        a GTIN-8, -12, -13 or -14, and lot and serial percent-encoded in upper or lower case
        hex or left raw where RFC 3986 §3.3 allows a character in a path segment. A ``/`` inside
        a lot or serial must arrive as ``%2F``.

        Returns the key with decoded lot and serial and a GTIN-14.

        Raises :class:`IdentifierError` naming the broken rule: query or fragment, empty or
        trailing segment, unknown, repeated or misordered AI, missing lot and serial, bad GTIN,
        malformed escape, character outside AI 82, a value longer than 20 characters, or a lot
        or serial that is a dot segment ``.`` or ``..`` (also when spelled ``%2E``).
        """
        path = text[1:] if text.startswith("/") else text
        gtin, lot, serial = _split_path(path)
        if not _is_ascii_digits(gtin):
            raise IdentifierError(
                f"GTIN must be ASCII digits only (not percent-encoded), got {_show(gtin)}"
            )
        return cls.from_parts(
            gtin,
            None if lot is None else _decode("lot", lot),
            None if serial is None else _decode("serial", serial),
        )

    @classmethod
    def parse_canonical(cls, text: str) -> ProductKey:
        """Parse a product key that must be spelled exactly in its canonical form.

        The canonical form is :attr:`path`: no leading ``/``, a GTIN-14, and lot and serial with
        every non-unreserved character percent-encoded in uppercase hex (RFC 3986 §2.1, §2.3).
        Signed device messages use it, so one product has exactly one spelling and byte-equal
        keys mean the same product.

        Raises :class:`IdentifierError` for every rule :meth:`parse` checks, and for a key
        that parses but is spelled differently, saying what the canonical form would be.
        """
        if cls is ProductKey and isinstance(text, str):
            return _parse_canonical_cached(text)
        return _parse_canonical(cls, text)

    @property
    def path(self) -> str:
        """The canonical Digital Link path without host or leading ``/``.

        ``01/{gtin14}``, then ``/10/{lot}`` and/or ``/21/{serial}`` with every character outside
        the RFC 3986 §2.3 unreserved set percent-encoded in uppercase hex.
        """
        return self._path

    @property
    def item(self) -> ProductKey | None:
        """The item this key names as GS1 identifies it: GTIN + serial, without the lot.

        ``01/{gtin}/10/{lot}/21/{serial}`` and ``01/{gtin}/21/{serial}`` name the same item
        (GS1 General Specifications §3.5.2: GTIN + serial uniquely identifies an individual
        item; §3.4.1: the lot is not part of the identification), so both have the item
        ``01/{gtin}/21/{serial}``. A key without a serial names a lot, not an item: ``None``.
        """
        if self.serial is None:
            return None
        if self.lot is None:
            return self
        return ProductKey(self.gtin, None, self.serial)

    def uri(self, base_url: str) -> str:
        """Return the GS1 Digital Link URI ``{base_url}/{path}``, e.g. for a QR code.

        Trailing slashes of ``base_url`` are dropped, so ``https://x.example/`` and
        ``https://x.example`` give the same URI.
        """
        return f"{base_url.rstrip('/')}/{self.path}"

    def __str__(self) -> str:
        """Return :attr:`path`."""
        return self.path


def _parse_canonical(cls: type[ProductKey], text: str) -> ProductKey:
    key = cls.parse(text)
    if key.path != text:
        raise IdentifierError(
            f"product key is not in canonical form: got {_show(text)}, "
            f"canonical form is {key.path!r}"
        )
    return key


# Keys are immutable and parsing is pure, so a product's key, which every entry and message of
# its chain repeats, is parsed once. (lru_cache does not keep failures: bad keys always raise.)
@functools.lru_cache(maxsize=65_536)
def _parse_canonical_cached(text: str) -> ProductKey:
    return _parse_canonical(ProductKey, text)
