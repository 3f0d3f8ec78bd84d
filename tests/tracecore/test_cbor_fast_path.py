"""encode_deterministic's fast path (cbor2's compiled encoder) gives the pure-Python bytes.

``tracecore.cbor.encode_deterministic`` hands an object to ``cbor2.dumps(canonical=True)`` when
``_fast_path_ok`` says the two encoders provably agree (maps with keys of one major type, exact
types cbor2 encodes as RFC 8949 §4.2.1 wants), and otherwise runs ``_encode_python``, the
reference encoder. These property tests check, over random nested objects built to hit the
corners (mixed key types, integers at and beyond the 64-bit edges, every kind of float, lone
surrogates, empty containers, tags, subclasses), that

* whenever the fast path is taken, its bytes equal the reference encoder's, and
* ``encode_deterministic`` equals the reference on every input, errors included (same type, same
  message).
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from datetime import timedelta
from enum import IntEnum
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracecore.cbor import (
    DEFAULT_MAX_BYTES,
    MAX_DEPTH,
    _encode_python,
    _fast_path_ok,
    decode_strict,
    encode_deterministic,
)

SETTINGS = settings(
    max_examples=5000,
    deadline=timedelta(seconds=1),
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Small(IntEnum):
    ONE = 1


class _Text(str):
    __slots__ = ()


INT_EDGES = [
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    2**70, -1, -24, -25, -256, -257, -65536, -65537, -(2**32), -(2**32) - 1, -(2**63),
    -(2**64) + 1, -(2**64), -(2**64) - 1, -(2**70),
]  # fmt: skip
FLOAT_EDGES = [
    0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan,
    struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0],  # signalling NaN with payload
    5.960464477539063e-8, 2.0**-25, 1.5 * 2.0**-24, 2.0**-14, math.nextafter(2.0**-14, 0.0),
    65504.0, 65520.0, math.nextafter(65504.0, math.inf), 2.0**-149, 2.0**-150, 1.4e-45,
    3.4028234663852886e38, 3.4028235677973366e38, 5e-324, 1.1, 0.1, 100000.0, 1.5, -4.0,
]  # fmt: skip
TEXT_EDGES = ["", "a", "\u00fc", "\u6c34", "\U00010151", "\uffff", "\ud800", "a\udfff", "\x00"]

ODD_LEAVES = [_Small.ONE, _Text("x"), bytearray(b"ab"), memoryview(b"cd")]  # not for cbor2

# Few top-level alternatives: hypothesis spends far more time generating than we do testing.
integers = st.integers(-(2**64) - 2, 2**64 + 1)
floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
leaves = (
    st.sampled_from([None, True, False, *INT_EDGES, *FLOAT_EDGES, *TEXT_EDGES, *ODD_LEAVES])
    | integers
    | floats
    | st.text(max_size=6)
    | st.binary(max_size=6)
)

# Keys: one major type per map (the fast path) as well as every mix (the Python path).
int_keys = st.integers(-(2**64) - 1, 2**64) | st.sampled_from(INT_EDGES)
uint_keys = st.integers(0, 2**64)
nint_keys = st.integers(-(2**64) - 1, -1)
text_keys = st.text(max_size=4) | st.sampled_from(TEXT_EDGES)
any_keys = (
    st.sampled_from(
        [None, True, False, 0.0, math.nan, -1.5, (1,), (-1,), _Text("a"), _Small.ONE, b"", b"\x01"]
    )
    | int_keys
    | text_keys
    | st.binary(max_size=3)
)
tag_numbers = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2, 18, 25, 28, 29, 258, 55799])


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(text_keys, children, max_size=5)
        | st.dictionaries(uint_keys | st.sampled_from(INT_EDGES[:14]), children, max_size=4)
        | st.dictionaries(nint_keys | st.sampled_from(INT_EDGES[15:]), children, max_size=4)
        | st.dictionaries(st.binary(max_size=3), children, max_size=4)
        | st.dictionaries(any_keys, children, max_size=5)
        | st.builds(cbor2.CBORTag, tag_numbers, children)
    )


values = st.recursive(leaves, _containers, max_leaves=6)


def _outcome(encode: Any, obj: object) -> tuple[str, object]:
    """The bytes, or the exception's type and message, of ``encode(obj)``."""
    try:
        return ("ok", encode(obj))
    except Exception as exc:  # noqa: BLE001 (errors are part of the compared result)
        return ("error", (type(exc), str(exc)))


@SETTINGS
@given(values)
def test_fast_path_equals_python_encoder(obj: object) -> None:
    """Whenever the fast path applies and cbor2 encodes, the bytes are the reference's."""
    reference = _outcome(_encode_python, obj)
    if _fast_path_ok(obj, 0):
        fast = _outcome(lambda o: cbor2.dumps(o, canonical=True), obj)
        if fast[0] == "ok":
            assert fast == reference
        else:  # only lone surrogates make cbor2 refuse something the check admits
            assert reference[0] == "error"
    assert _outcome(encode_deterministic, obj) == reference


CBOR2_OWN_TAGS = frozenset({25, 28, 29, 256})  # string references, shared values: cbor2's rules


def _depth(obj: object, tags: set[int]) -> int:
    """Nesting depth of arrays and maps as decode_strict counts it; collects tag numbers."""
    if isinstance(obj, cbor2.CBORTag):
        tags.add(obj.tag)
        return _depth(obj.value, tags)
    if isinstance(obj, list | tuple):
        return 1 + max((_depth(item, tags) for item in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth(item, tags) for pair in obj.items() for item in pair), default=0)
    return 0


@settings(SETTINGS, max_examples=600)
@given(values)
def test_decode_strict_round_trip(obj: object) -> None:
    """decode_strict accepts every encoding and gives back a value with the same encoding."""
    try:
        data = _encode_python(obj)
    except (TypeError, ValueError):
        return
    tags: set[int] = set()
    if len(data) > DEFAULT_MAX_BYTES or _depth(obj, tags) > MAX_DEPTH or tags & CBOR2_OWN_TAGS:
        return
    decoded = decode_strict(data, allowed_tags=tags)
    assert encode_deterministic(decoded) == data == _encode_python(decoded)


@pytest.mark.parametrize(
    "value",
    [
        {100: 1, -1: 2},  # length-first: 20 before 1864; bytewise: 1864 first
        {"a": 1, b"\x01\x02": 2},
        {False: 8, (-1,): 7, (100,): 6, "aa": 5, "z": 4, -1: 3, 100: 2, 10: 1},
        {"x": [{0: 1, -1: 2}]},
        {1: 2**64},
        [2**64],
        cbor2.CBORTag(1, -(2**64) - 1),
        OrderedDict(a=1),
        [_Text("a")],
        [True, _Small.ONE],
        {True: 1, 2: 2},
        [float("nan"), {float("nan"): 1, float("nan"): 2}],
    ],
    ids=repr,
)
def test_python_path_for_what_cbor2_would_get_wrong(value: object) -> None:
    """Mixed key types, integers beyond 64 bits, subclasses: no fast path, same result."""
    assert not _fast_path_ok(value, 0)
    assert _outcome(encode_deterministic, value) == _outcome(_encode_python, value)


def test_lone_surrogate_gives_the_python_error() -> None:
    """The check admits any str; cbor2 refuses a lone surrogate, then the Python error wins."""
    value = {"a": ["\ud800"]}
    assert _fast_path_ok(value, 0)
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        encode_deterministic(value)


def test_deep_and_cyclic_containers_take_the_python_path() -> None:
    deep: list[object] = []
    for _ in range(40):
        deep = [deep]
    assert not _fast_path_ok(deep, 0)
    assert encode_deterministic(deep) == _encode_python(deep)
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert not _fast_path_ok(cyclic, 0)
    with pytest.raises(RecursionError):
        encode_deterministic(cyclic)


def test_realistic_objects_take_the_fast_path() -> None:
    """Payloads, log entries and receipts: maps with text keys only, so cbor2 encodes them."""
    digest = bytes(range(32))
    objects: list[object] = [
        {
            "v": 1,
            "device": "farm-linden-barn-2",
            "seq": 17,
            "time": 1_767_258_000_000,
            "products": ["01/09506000134352/10/EGG-2026-001"],
            "type": "reading",
            "sensors": [
                {"type": "Temperature", "value": 4.5, "uom": "CEL"},
                {"type": "RelativeHumidity", "value": 71, "uom": "P1"},
            ],
        },
        {"v": 1, "data": {"grade": "A", "w": [61.5, 0.1], "crate": {"eggs": 30, "n": None}}},
        {"v": 1, "kind": "device_message", "msg": digest, "chains": [{"pseq": 4, "prev": digest}]},
        cbor2.CBORTag(18, [encode_deterministic({1: -8}), {}, b"payload", bytes(64)]),
    ]
    for obj in objects:
        assert _fast_path_ok(obj, 0)
        assert encode_deterministic(obj) == _encode_python(obj)
