"""Deterministic CBOR: one encoder we control, and a strict decoder for untrusted bytes.

Everything agritrace signs or hashes is CBOR in the *core deterministic encoding* of RFC 8949
§4.2.1:

* integers, lengths and tag numbers in their shortest form (preferred serialization, §4.1);
* definite lengths only, no indefinite-length strings, arrays or maps;
* map keys sorted by the bytewise lexicographic order of their own deterministic encodings,
  no duplicate keys;
* floating-point values in the shortest of half, single or double precision that represents
  the value exactly (§4.1, §4.2.1); NaN is always ``0xf97e00`` (§4.2.2).

We do not use ``cbor2.dumps(canonical=True)`` to encode: cbor2 (6.x, checked in
tests/tracecore/test_message.py) sorts map keys *length-first*, the RFC 7049 §3.9 "canonical"
order kept in RFC 8949 §4.2.3, not the bytewise order §4.2.1 requires. The two orders agree for
keys of one major type and length class (all our text keys) but differ in general, e.g. keys
``-1`` (``0x20``) and ``100`` (``0x1864``). So :func:`encode_deterministic` is our own and small.
It does hand the work to cbor2's compiled encoder when the two provably agree (see
:func:`_fast_path_ok`): same bytes, about twice as fast for our payloads.

:func:`decode_strict` uses cbor2 (a compiled decoder) to parse, with indefinite lengths,
duplicate keys and deep nesting switched off and every tag not explicitly allowed refused, then
re-encodes the result with :func:`encode_deterministic` and demands the same bytes: whatever is
not in deterministic form (long integers, unsorted keys, a double that fits a half, …) is
refused. Every failure is a :class:`~tracecore.errors.MalformedMessage`.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import cbor2

from tracecore.errors import MalformedMessage

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "UNDECIDED",
    "decode_fast",
    "decode_strict",
    "encode_bytes",
    "encode_deterministic",
    "kind_name",
]

MAX_DEPTH: Final = 16
"""Deepest nesting of arrays and maps that :func:`decode_strict` accepts."""

DEFAULT_MAX_BYTES: Final = 16384
"""Largest input :func:`decode_strict` accepts by default (the device message limit, 16 KiB)."""

_UINT64_MAX: Final = 2**64 - 1
_NINT64_MIN: Final = -(2**64)

# RFC 8949 §3: major types.
_MT_UINT: Final = 0
_MT_NINT: Final = 1
_MT_BYTES: Final = 2
_MT_TEXT: Final = 3
_MT_ARRAY: Final = 4
_MT_MAP: Final = 5
_MT_TAG: Final = 6

# RFC 8949 §3.3: simple values and floats in major type 7.
_FALSE: Final = b"\xf4"
_TRUE: Final = b"\xf5"
_NULL: Final = b"\xf6"
_CANONICAL_NAN: Final = b"\xf9\x7e\x00"  # RFC 8949 §4.2.2


def _head(major: int, argument: int) -> bytes:
    """Return the initial byte plus argument of a data item, shortest form (RFC 8949 §4.2.1)."""
    initial = major << 5
    if argument < 24:
        return bytes((initial | argument,))
    if argument <= 0xFF:
        return bytes((initial | 24, argument))
    if argument <= 0xFFFF:
        return bytes((initial | 25,)) + argument.to_bytes(2, "big")
    if argument <= 0xFFFFFFFF:
        return bytes((initial | 26,)) + argument.to_bytes(4, "big")
    return bytes((initial | 27,)) + argument.to_bytes(8, "big")


def encode_bytes(data: bytes) -> bytes:
    """Return a byte string as deterministic CBOR: the shortest head, then the bytes."""
    return _head(2, len(data)) + data


def _encode_float(value: float) -> bytes:
    """Encode a float in the shortest IEEE 754 form that keeps its value (RFC 8949 §4.2.1)."""
    if math.isnan(value):
        return _CANONICAL_NAN
    for initial, fmt in ((0xF9, ">e"), (0xFA, ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            # ±0.0 and ±inf survive every width; the sign survives the pack as well.
            return bytes((initial,)) + packed
    return b"\xfb" + struct.pack(">d", value)


_SIMPLE: Final = {False: _FALSE, True: _TRUE, None: _NULL}


def _encode_int(obj: int) -> bytes:
    """Encode an integer in major type 0 or 1, shortest form (RFC 8949 §3.1, §4.2.1)."""
    if 0 <= obj <= _UINT64_MAX:
        return _head(_MT_UINT, obj)
    if _NINT64_MIN <= obj < 0:
        return _head(_MT_NINT, -1 - obj)
    raise ValueError(f"integer {obj} does not fit a CBOR major type 0 or 1 (64 bits)")


def _encode_scalar(obj: object) -> bytes | None:
    """Return the encoding of a scalar (not array, map or tag), or ``None`` if not a scalar."""
    result: bytes | None = None
    # Identity checks first: bool is a subclass of int in Python, and True == 1.
    if obj is None or obj is True or obj is False:
        result = _SIMPLE[obj]
    elif isinstance(obj, int):
        result = _encode_int(obj)
    elif isinstance(obj, float):
        result = _encode_float(obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on surrogates
        result = _head(_MT_TEXT, len(data)) + data
    elif isinstance(obj, bytes | bytearray | memoryview):
        data = bytes(obj)
        result = _head(_MT_BYTES, len(data)) + data
    return result


def _encode(obj: object, out: list[bytes]) -> None:
    """Append the deterministic encoding of ``obj`` to ``out``."""
    scalar = _encode_scalar(obj)
    if scalar is not None:
        out.append(scalar)
    elif isinstance(obj, list | tuple):
        out.append(_head(_MT_ARRAY, len(obj)))
        for item in obj:
            _encode(item, out)
    elif isinstance(obj, Mapping):
        out.append(_head(_MT_MAP, len(obj)))
        out.extend(_encode_map_items(obj.items()))
    elif isinstance(obj, cbor2.CBORTag):
        tag = obj.tag
        if not 0 <= tag <= _UINT64_MAX:
            raise ValueError(f"tag number {tag} does not fit 64 bits")
        out.append(_head(_MT_TAG, tag))
        _encode(obj.value, out)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as deterministic CBOR")


def _encode_map_items(items: Iterable[tuple[object, object]]) -> list[bytes]:
    """Encode map entries sorted bytewise by encoded key (RFC 8949 §4.2.1), refusing dupes."""
    pairs = []
    for key, value in items:
        pairs.append((_encode_python(key), _encode_python(value)))
    pairs.sort(key=lambda pair: pair[0])
    chunks: list[bytes] = []
    previous: bytes | None = None
    for key_bytes, value_bytes in pairs:
        if key_bytes == previous:
            raise ValueError(f"duplicate map key {key_bytes.hex()} (RFC 8949 §5.6)")
        previous = key_bytes
        chunks += (key_bytes, value_bytes)
    return chunks


def _encode_python(obj: object) -> bytes:
    """Encode ``obj`` with the pure-Python encoder (the reference :func:`encode_deterministic`).

    Always correct, never uses cbor2; :func:`encode_deterministic` falls back to it whenever the
    fast path does not apply, and tests/tracecore/test_cbor_fast_path.py checks the fast path
    against it.
    """
    out: list[bytes] = []
    _encode(obj, out)
    return b"".join(out)


# --- fast path: cbor2's compiled encoder where it provably gives our bytes -------------------
#
# ``cbor2.dumps(obj, canonical=True)`` differs from RFC 8949 §4.2.1 only in the order of map
# keys: it sorts them by the length of their encoding first, then bytewise (RFC 7049 §3.9, kept
# as RFC 8949 §4.2.3), where §4.2.1 sorts bytewise only. The two orders agree whenever all keys
# of a map have the same major type and are text strings, byte strings, or integers of one sign:
#
# * text or byte string with n bytes: head(n) + n bytes, and head(n) is the shortest head for
#   n, so a longer string has a longer-or-equal head whose initial byte (major << 5 | 0..27) is
#   greater-or-equal, with a greater argument if the heads have the same length; hence a longer
#   encoding also compares bytewise greater, and equal lengths mean equal heads, then both orders
#   compare the content bytewise;
# * unsigned (major 0) or negative (major 1, argument -1 - n) integers: the encoding is just
#   head(argument); a greater argument gives a longer-or-equal head, bytewise greater in either
#   case (a longer head has a greater initial byte, 24..27 vs the argument itself; a head of the
#   same length compares its big-endian argument). So length-first and bytewise orders agree.
#
# They disagree as soon as major types mix: -1 (0x20) sorts before 100 (0x1864) length-first but
# after it bytewise; "a" (0x6161) vs h'0102' (0x420102) likewise. Such maps take the Python
# encoder. Everything else cbor2's canonical mode does matches ours for the types admitted here
# (checked by tests/tracecore/test_cbor_fast_path.py and the Appendix A vectors):
#
# * exact ``int`` within 64 bits: shortest head (§4.2.1); beyond 64 bits cbor2 would write a
#   bignum tag where we refuse, so those take the Python path (which raises ValueError);
# * exact ``float``: shortest of half/single/double that keeps the value, NaN as f97e00 (§4.2.1,
#   §4.2.2); checked against :func:`_encode_float` over all 65,536 halves and their neighbours,
#   single neighbours, subnormals and a million random bit patterns (cbor2 6.3): no difference;
# * exact ``str``, ``bytes``, ``bool``, ``None``, ``list``/``tuple``, ``dict``,
#   :class:`cbor2.CBORTag` (whose constructor already limits the tag number to 64 bits).
#   Exact types only: a subclass might be encoded differently by cbor2 (it dispatches on type).
#
# No duplicate keys can reach cbor2: the keys of one dict are distinct Python objects of one
# admitted type, and distinct str/bytes/int values have distinct encodings. A str with lone
# surrogates passes the check, makes cbor2 raise, and then the Python encoder raises its own
# error, so errors are exactly the Python encoder's. Nesting deeper than _FAST_MAX_DEPTH (and any
# self-referencing container) takes the Python path too, so recursion behaves as before.

_FAST_LEAVES: Final = frozenset({str, bytes, float, bool, type(None)})
_FAST_MAX_DEPTH: Final = 32
_CBOR2_DUMPS: Final = cbor2.dumps


def _fast_keys_ok(mapping: dict[Any, Any]) -> bool:
    """Whether all keys of ``mapping`` are ``str``, all ``bytes`` or all 64-bit ``int`` of one sign.

    Then length-first and bytewise key order agree (block comment above; RFC 8949 §4.2.1).
    """
    if not mapping:
        return True
    key_types = set(map(type, mapping))
    if len(key_types) != 1:
        return False
    key_type = key_types.pop()
    if key_type is int:
        low: int = min(mapping)
        high: int = max(mapping)
        return (low >= 0 and high <= _UINT64_MAX) or (low >= _NINT64_MIN and high < 0)
    return key_type is str or key_type is bytes


def _fast_items_ok(items: Iterable[object], depth: int) -> bool:
    """:func:`_fast_path_ok` for every item; leaves inline, as most items are leaves."""
    for item in items:
        kind = type(item)
        if kind in _FAST_LEAVES:
            continue
        if kind is int:
            if _NINT64_MIN <= item <= _UINT64_MAX:  # type: ignore[operator]
                continue
            return False
        if not _fast_path_ok(item, depth):
            return False
    return True


def _fast_path_ok(obj: object, depth: int) -> bool:
    """Whether ``cbor2.dumps(obj, canonical=True)`` is certain to equal our encoding of ``obj``.

    True only for exact types with the same canonical encoding in cbor2 and here, and maps whose
    keys are all ``str``, all ``bytes``, all unsigned or all negative 64-bit ``int`` (the block
    comment above gives the reasoning, RFC 8949 §4.2.1 vs §4.2.3).
    """
    kind = type(obj)
    result = False
    if kind in _FAST_LEAVES:
        result = True
    elif kind is int:
        result = _NINT64_MIN <= obj <= _UINT64_MAX  # type: ignore[operator]
    elif depth >= _FAST_MAX_DEPTH:
        result = False
    elif kind is dict:
        mapping: dict[Any, Any] = obj  # type: ignore[assignment]
        result = _fast_keys_ok(mapping) and _fast_items_ok(mapping.values(), depth + 1)
    elif kind is list or kind is tuple:
        result = _fast_items_ok(obj, depth + 1)  # type: ignore[arg-type]
    elif kind is cbor2.CBORTag:
        tag: cbor2.CBORTag = obj  # type: ignore[assignment]
        result = 0 <= tag.tag <= _UINT64_MAX and _fast_path_ok(tag.value, depth + 1)
    return result


def encode_deterministic(obj: object) -> bytes:
    """Encode ``obj`` in CBOR core deterministic encoding (RFC 8949 §4.2.1).

    Supported values: ``None``, ``bool``, ``int`` (-2**64 … 2**64-1, major types 0 and 1),
    ``float`` (shortest exact form; NaN as ``f97e00``), ``str`` (UTF-8 text), ``bytes``-like
    (byte string), ``list``/``tuple`` (array), any ``Mapping`` (map, keys sorted bytewise by
    their encodings) and :class:`cbor2.CBORTag` (tag).

    Raises :class:`TypeError` for any other type and :class:`ValueError` for an integer outside
    64 bits, a string with lone surrogates or two keys with the same encoding. These are
    programming errors of the caller, not properties of untrusted input.
    """
    if _fast_path_ok(obj, 0):
        try:
            return _CBOR2_DUMPS(obj, canonical=True)
        except Exception:  # noqa: BLE001, S110 (the Python encoder below gives the exact error)
            pass
    return _encode_python(obj)


_KINDS: Final = (
    (bool, "bool"),
    (int, "integer"),
    (float, "float"),
    (str, "text string"),
    (bytes, "byte string"),
    (list, "array"),
    (tuple, "array"),
    (Mapping, "map"),
    (cbor2.CBORTag, "tag"),
)


def kind_name(value: object) -> str:
    """Name the CBOR kind of a decoded value ("map", "byte string", "null", ...) for messages."""
    if value is None:
        return "null"
    for kind, name in _KINDS:
        if isinstance(value, kind):
            return name
    return type(value).__name__


class _RefusedTagError(Exception):
    """Internal: a tag the caller did not allow; carries the tag number."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        super().__init__(tag)


def _semantic_decoder(tag: int, allowed: frozenset[int]) -> Callable[[Any, bool], Any]:
    """Return a cbor2 semantic decoder that keeps allowed tags as CBORTag, refuses others."""

    def decode(value: Any, immutable: bool) -> Any:  # noqa: FBT001 (cbor2's callback signature)
        del immutable
        if tag not in allowed:
            raise _RefusedTagError(tag)
        return cbor2.CBORTag(tag, value)

    return decode


class _TagPolicy(dict[int, Callable[[Any, bool], Any]]):
    """A ``semantic_decoders`` mapping that answers for *every* tag number.

    cbor2 has built-in decoders for many tags (0, 1 datetimes; 2, 3 bignums; 4, 5 decimals;
    24 embedded CBOR; 258 sets; 55799 self-describe, which it silently drops; …). A plain dict
    could only override the tags we think of; this mapping overrides all of them, so every tag
    goes through :func:`_semantic_decoder` (tests check a sweep of tag numbers).
    """

    def __init__(self, allowed: frozenset[int]) -> None:
        super().__init__()
        self._allowed = allowed

    def __missing__(self, key: int) -> Callable[[Any, bool], Any]:
        return _semantic_decoder(key, self._allowed)

    def get(self, key: int, default: Any = None) -> Callable[[Any, bool], Any]:
        del default
        return self[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int)


def _tag_hook(allowed: frozenset[int]) -> Callable[[cbor2.CBORTag, bool], Any]:
    """Return a cbor2 ``tag_hook`` (tags without a built-in decoder) with the same policy."""

    def hook(tag: cbor2.CBORTag, immutable: bool) -> Any:  # noqa: FBT001 (cbor2's signature)
        del immutable
        if tag.tag not in allowed:
            raise _RefusedTagError(tag.tag)
        return tag

    return hook


@functools.lru_cache(maxsize=64)
def _decoder_hooks(
    allowed: frozenset[int],
) -> tuple[Callable[[cbor2.CBORTag, bool], Any], _TagPolicy]:
    """The ``tag_hook`` and ``semantic_decoders`` for ``allowed``, built once per tag set.

    Both are stateless (the policy never stores what ``__missing__`` returns), so one pair can
    serve every call and thread; building them anew cost a few microseconds per decode.
    """
    return _tag_hook(allowed), _TagPolicy(allowed)


def _find_cause(exc: BaseException) -> _RefusedTagError | None:
    """Return the :class:`_RefusedTagError` behind a cbor2 error, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _RefusedTagError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def decode_strict(
    data: bytes,
    *,
    allowed_tags: Iterable[int] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    what: str = "CBOR",
) -> object:
    """Decode exactly one data item in core deterministic encoding, refusing anything else.

    Refused, each with :class:`~tracecore.errors.MalformedMessage` and a detail that starts with
    ``what``:

    * input longer than ``max_bytes`` (checked before decoding, so a huge declared length can
      never make the decoder allocate more than the input);
    * not well-formed CBOR (RFC 8949 §3, Appendix F), invalid UTF-8 in text, truncated input;
    * trailing bytes after the data item;
    * indefinite-length items (RFC 8949 §4.2.1);
    * duplicate map keys (RFC 8949 §5.6);
    * any tag not in ``allowed_tags`` (an allowed tag decodes to :class:`cbor2.CBORTag`);
    * nesting of arrays and maps deeper than :data:`MAX_DEPTH`;
    * values with no place in our data model (``undefined``, other simple values,
      integers beyond 64 bits);
    * anything not in deterministic encoding (RFC 8949 §4.2.1): the decoded item is re-encoded
      with :func:`encode_deterministic` and must give back the input bytes exactly.

    Returns the decoded item: ``dict`` for maps (keys as cbor2 gives them), ``list`` or
    ``tuple`` for arrays, ``bytes``, ``str``, ``int``, ``float``, ``bool``, ``None`` or
    :class:`cbor2.CBORTag`.
    """
    if not isinstance(data, bytes):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MalformedMessage(f"{what}: {len(data)} bytes, more than the {max_bytes}-byte limit")
    if not data:
        raise MalformedMessage(f"{what}: empty input, expected one CBOR data item")
    tag_hook, tag_policy = _decoder_hooks(frozenset(allowed_tags))
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=tag_hook,
        semantic_decoders=tag_policy,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        item = decoder.decode()
    except _RefusedTagError as exc:
        raise MalformedMessage(f"{what}: CBOR tag {exc.tag} is not allowed here") from exc
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        refused = _find_cause(exc)
        if refused is not None:
            raise MalformedMessage(f"{what}: CBOR tag {refused.tag} is not allowed here") from exc
        raise MalformedMessage(f"{what}: not valid CBOR: {exc}") from exc
    consumed = stream.tell()
    if consumed != len(data):
        raise MalformedMessage(
            f"{what}: trailing bytes after the CBOR data item (it ends at byte {consumed}, "
            f"the input has {len(data)})"
        )
    try:
        again = encode_deterministic(item)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"{what}: value outside the supported data model: {exc}") from exc
    if again != data:
        offset = next(
            (i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b),
            min(len(again), len(data)),
        )
        raise MalformedMessage(
            f"{what}: not in deterministic encoding (RFC 8949 §4.2.1: shortest integers, "
            f"lengths and floats, map keys sorted bytewise); first difference at byte {offset}"
        )
    return item


# --- fast decoding: decode_strict's answer for deterministic input, without re-encoding -------
#
# decode_strict decodes with cbor2 and then re-encodes the item to compare bytes; for a device
# payload the re-encoding (and the walk that picks the encoder) costs several times the decoding.
# decode_fast decodes with exactly the same cbor2 options (so any tag, indefinite length,
# duplicate key or excess depth fails as in decode_strict) and then proves, without encoding,
# that the input is the deterministic encoding of the item, by two cheap checks:
#
# 1. the input's length equals the length of the item's deterministic encoding, computed from
#    the item (_canonical_length);
# 2. the keys of every map come in the deterministic order (RFC 8949 §4.2.1), which for text
#    keys is shorter UTF-8 first, then bytewise (the block comment above on key orders); only
#    ASCII keys are measured, whose UTF-8 bytes are their characters.
#
# Why that suffices: with tags, indefinite lengths and duplicate keys refused by the decoder, the
# only freedom a well-formed encoding of the item has left is the size of each head (integers,
# lengths: RFC 8949 §3.1 allows 1, 2, 3, 5 or 9 bytes for small arguments), the width of each
# float (half, single or double), the bits of a NaN and the order of map entries. A head or a
# float wider than the shortest one makes the encoding longer, never shorter, and every other
# part is fixed by the item; so equal length means every head and float is the shortest, i.e.
# the deterministic one (§4.2.1). A non-NaN float has one bit pattern per width and NaNs are
# left to decode_strict; the order is checked by 2. Trailing bytes make the input longer than
# the item. Only exact types are measured (dict with ASCII text keys, list, str, bytes, 64-bit int,
# float, bool, None); anything else, including CBORTag and cbor2's undefined and simple values,
# is left to decode_strict. So whenever decode_fast returns an item, decode_strict(data) returns
# an equal item of the same types (tests/tracecore/test_parse_fast_path.py checks it on
# mutated and re-encoded messages); when in doubt it returns UNDECIDED and never raises.


class _Undecided:
    """The type of :data:`UNDECIDED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECIDED"


UNDECIDED: Final = _Undecided()
"""What :func:`decode_fast` returns when it cannot cheaply prove the input deterministic."""


def _head_length(argument: int) -> int:
    """Length of the shortest head for ``argument`` (RFC 8949 §3, §4.2.1)."""
    if argument < 24:
        return 1
    if argument <= 0xFF:
        return 2
    if argument <= 0xFFFF:
        return 3
    if argument <= 0xFFFFFFFF:
        return 5
    return 9


def _text_length(text: str) -> int:
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return _head_length(size) + size


def _bytes_length(data: bytes) -> int:
    return _head_length(len(data)) + len(data)


def _int_length(number: int) -> int:
    if 0 <= number <= _UINT64_MAX:
        return _head_length(number)
    if _NINT64_MIN <= number < 0:
        return _head_length(-1 - number)
    return -1


def _float_length(value: float) -> int:
    return -1 if math.isnan(value) else len(_encode_float(value))


def _simple_length(value: object) -> int:
    del value
    return 1


def _array_length(items: list[object]) -> int:
    total = _head_length(len(items))
    for item in items:
        length = _leaf_length(item)
        if length < 0:
            length = _canonical_length(item)
            if length < 0:
                return -1
        total += length
    return total


def _leaf_length(item: object) -> int:
    """:func:`_canonical_length` of the commonest leaves (ASCII text, small ints), else -1.

    Inlined here because most items are such leaves and a call per leaf is most of the cost.
    """
    kind = type(item)
    if kind is str and item.isascii():  # type: ignore[attr-defined]
        size: int = len(item)  # type: ignore[arg-type]
        return size + (1 if size < 24 else 2 if size <= 0xFF else 3 if size <= 0xFFFF else -size)
    if kind is int and 0 <= item <= 0xFFFF:  # type: ignore[operator]
        return 1 if item < 24 else 2 if item <= 0xFF else 3  # type: ignore[operator]
    return -1


def _canonical_length(obj: object) -> int:
    """Length of the deterministic encoding of ``obj``, or -1 if not a plain decoded item.

    -1 also for a map whose text keys are not in deterministic order, a non-text map key, a
    NaN or an integer beyond 64 bits (the comment above says why each is left to the strict
    decoder). Exact types only: bool is not int here, and no subclass is measured.
    """
    measure = _LENGTH_OF.get(type(obj))
    return -1 if measure is None else measure(obj)


def _map_length(mapping: dict[object, object]) -> int:
    """:func:`_canonical_length` of a map with ASCII text keys in deterministic order, else -1.

    For ASCII keys the UTF-8 bytes are the characters, so the deterministic order (shorter
    first, then bytewise; RFC 8949 §4.2.1) is the order of ``(len(key), key)``. Maps with other
    keys are left to the strict decoder.
    """
    total = _head_length(len(mapping))
    previous: tuple[int, str] = (-1, "")
    for key, value in mapping.items():
        if type(key) is not str or not key.isascii():
            return -1
        size = len(key)
        order = (size, key)
        if order <= previous:
            return -1
        previous = order
        length = _leaf_length(value)
        if length < 0:
            length = _canonical_length(value)
            if length < 0:
                return -1
        total += (1 if size < 24 else _head_length(size)) + size + length
    return total


_LENGTH_OF: Final[dict[type, Callable[[Any], int]]] = {
    str: _text_length,
    int: _int_length,
    dict: _map_length,
    list: _array_length,
    bytes: _bytes_length,
    float: _float_length,
    bool: _simple_length,
    type(None): _simple_length,
}


_NO_TAGS: Final = _decoder_hooks(frozenset())


def decode_fast(data: bytes) -> object:
    """Return what ``decode_strict(data)`` returns, if that is cheap to prove, else UNDECIDED.

    For the common case, bytes in deterministic encoding (RFC 8949 §4.2.1) with no tags and
    text map keys, this decodes once with cbor2 and checks the encoding by length and key
    order instead of re-encoding (the block comment above gives the reasoning). It never
    raises and never refuses: :data:`UNDECIDED` means "ask :func:`decode_strict`", which
    gives the verdict and the error detail.
    """
    if type(data) is not bytes or not 0 < len(data) <= DEFAULT_MAX_BYTES:
        return UNDECIDED
    tag_hook, tag_policy = _NO_TAGS
    try:
        item = cbor2.loads(
            data,
            tag_hook=tag_hook,
            semantic_decoders=tag_policy,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        length = _canonical_length(item)
    except Exception:  # noqa: BLE001 (any failure is decode_strict's to report)
        return UNDECIDED
    return item if length == len(data) else UNDECIDED
