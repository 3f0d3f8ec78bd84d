"""A refused device message read again for people: which check refused it, and what it holds.

Ingest stores every refused message with its reason (:class:`tracecore.storage.Rejection`).
:func:`refused_by` names the check of docs/protocol.md §6 that a reason stands for; for
``malformed``, which covers several checks, it runs the project's own parsers on the stored topic
and bytes again and names the first form check they fail. :func:`check_path` lays the checks out
in ingest's order with the ones the message passed before it. :func:`decode_rejected` decodes the
bytes as far as the strict parsers accept them, each step on its own: a step that fails is
recorded with the parser's complaint and a hex dump of the first bytes, never raised.

Nothing here trusts the bytes: every value is turned into bounded plain text, for a template
that escapes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal, get_args

import cbor2

from tracecore.cbor import decode_strict
from tracecore.cose import (
    ALG_EDDSA,
    COSE_SIGN1_TAG,
    HEADER_ALG,
    HEADER_KID,
    MAX_MESSAGE_BYTES,
    parse_cose,
)
from tracecore.errors import MalformedMessage, RejectReason
from tracecore.message import AnyMessage, from_cbor_map
from tracecore.topics import device_from_up_topic

__all__ = [
    "CHECKS",
    "DUMP_BYTES",
    "KINDS",
    "Check",
    "CheckState",
    "CheckStep",
    "DecodedRejection",
    "Item",
    "Kind",
    "Part",
    "check_path",
    "decode_rejected",
    "hex_dump",
    "refused_by",
]


class Check(StrEnum):
    """A check of ingest, in the order ingest applies them (docs/protocol.md §6)."""

    READ_LIMIT = "read_limit"  # too_large: over the service's own limit, never read
    TOPIC = "topic"  # malformed: the MQTT topic is not agritrace/v1/devices/{id}/up (§1)
    SIZE = "size"  # malformed: over 16 KiB (§4 rule 8)
    CBOR = "cbor"  # malformed: not one data item of deterministic CBOR (§4)
    COSE = "cose"  # malformed: not a tagged COSE_Sign1 of agritrace's profile (§3)
    PAYLOAD_CBOR = "payload_cbor"  # malformed: the payload is not deterministic CBOR (§4, §5)
    FIELDS = "fields"  # malformed: a payload field rule (§5)
    DEVICE = "device"  # unknown_device
    TOPIC_MATCH = "topic_match"  # topic_mismatch (§1)
    KEY_KNOWN = "key_known"  # unknown_key (§2)
    KEY_VALID = "key_valid"  # revoked_key (§8, "Clock")
    SIGNATURE = "signature"  # bad_signature (§3, "The signature")
    CLOCK = "clock"  # clock_skew (§5, time)
    SEQUENCE = "sequence"  # equivocation (§8, "Never reuse a seq")
    ROTATION = "rotation"  # bad_rotation (§5, "Key rotations")
    RIGHTS = "rights"  # unauthorized_product
    SERIAL = "serial"  # serial_conflict (§5, events)
    COMMISSIONED = "commissioned"  # unknown_product (§5, events)


#: Every check, in ingest's order.
CHECKS: Final[tuple[Check, ...]] = tuple(Check)

_BY_REASON: Final[Mapping[RejectReason, Check]] = {
    RejectReason.TOO_LARGE: Check.READ_LIMIT,
    RejectReason.UNKNOWN_DEVICE: Check.DEVICE,
    RejectReason.TOPIC_MISMATCH: Check.TOPIC_MATCH,
    RejectReason.UNKNOWN_KEY: Check.KEY_KNOWN,
    RejectReason.REVOKED_KEY: Check.KEY_VALID,
    RejectReason.BAD_SIGNATURE: Check.SIGNATURE,
    RejectReason.CLOCK_SKEW: Check.CLOCK,
    RejectReason.EQUIVOCATION: Check.SEQUENCE,
    RejectReason.BAD_ROTATION: Check.ROTATION,
    RejectReason.UNAUTHORIZED_PRODUCT: Check.RIGHTS,
    RejectReason.SERIAL_CONFLICT: Check.SERIAL,
    RejectReason.UNKNOWN_PRODUCT: Check.COMMISSIONED,
}

#: How many bytes a hex dump shows: enough to recognise a format, small enough for a page.
DUMP_BYTES: Final = 256
#: The most decoded values listed per part; a payload has at most a few hundred.
_MAX_ITEMS: Final = 400
#: The longest text or byte string shown whole (characters, bytes).
_MAX_TEXT: Final = 200
_MAX_BYTES_SHOWN: Final = 64


def _at_most_16_kib(raw: bytes) -> None:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message is {len(raw)} bytes")


def _form_refusal(raw: bytes, topic: str) -> Check | None:
    """The first form check (topic, size, CBOR, COSE, payload) that ``raw`` on ``topic`` fails."""

    def payload() -> object:
        return decode_strict(parse_cose(raw).payload, what="payload")

    # The order of ingest's rule 1: the topic before the bytes, then the parsers' own order.
    steps: tuple[tuple[Check, Callable[[], object]], ...] = (
        (Check.TOPIC, lambda: device_from_up_topic(topic)),
        (Check.SIZE, lambda: _at_most_16_kib(raw)),
        (Check.CBOR, lambda: decode_strict(raw, allowed_tags=(COSE_SIGN1_TAG,))),
        (Check.COSE, lambda: parse_cose(raw)),
        (Check.PAYLOAD_CBOR, payload),
        (Check.FIELDS, lambda: from_cbor_map(payload())),
    )
    for check, run in steps:
        try:
            run()
        except MalformedMessage:
            return check
    return None


def refused_by(reason: RejectReason, raw: bytes, topic: str) -> Check | None:
    """Name the check that refused a stored message.

    Args:
        reason: the stored reason.
        raw: the stored bytes (for ``malformed`` the whole message, as ingest keeps it).
        topic: the MQTT topic it arrived on.

    Returns:
        The check a reason stands for; for ``malformed``, the first form check that the stored
        topic and bytes fail when parsed again. None for a ``malformed`` message that passes
        every form check today (the rules were different when it was refused).
    """
    if reason is RejectReason.MALFORMED:
        return _form_refusal(raw, topic)
    return _BY_REASON[reason]


CheckState = Literal["passed", "refused", "not_reached"]


@dataclass(frozen=True, slots=True)
class CheckStep:
    """One check on the way of a refused message: passed, the one that refused it, not reached."""

    check: Check
    state: CheckState


def check_path(refused: Check) -> tuple[CheckStep, ...]:
    """Every check in ingest's order, marked as passed before ``refused`` and not reached after.

    ``too_large`` is decided before anything else is looked at, so every other check is not
    reached; a message refused by a later check passed every one before it (ingest applies
    them in this order and stops at the first that fails).
    """
    steps: list[CheckStep] = []
    state: CheckState = "passed" if refused is not Check.READ_LIMIT else "not_reached"
    for check in CHECKS:
        if check is Check.READ_LIMIT and refused is not Check.READ_LIMIT:
            steps.append(CheckStep(check, "passed"))
            continue
        if check is refused:
            steps.append(CheckStep(check, "refused"))
            state = "not_reached"
            continue
        steps.append(CheckStep(check, state))
    return tuple(steps)


Kind = Literal["map", "array", "tag", "integer", "float", "text", "bytes", "bool", "null", "other"]
#: Every kind of decoded value an :class:`Item` names.
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class Item:
    """One decoded CBOR value as a line of text.

    ``depth`` is its nesting level, ``name`` its map key or ``[index]``, ``kind`` one of
    :data:`KINDS`, ``size`` the number of entries, characters or bytes of a map, array, text or
    byte string (the tag number of a tag), ``value`` a scalar as text (empty for containers).
    """

    depth: int
    name: str
    kind: Kind
    size: int | None
    value: str


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a message decoded as far as the strict parser accepts it.

    ``items`` holds the decoded values (empty if it does not decode), ``error`` the parser's
    complaint, ``dump`` a hex dump of the part's first bytes when it does not decode.
    """

    length: int
    items: tuple[Item, ...] = ()
    error: str | None = None
    dump: tuple[str, ...] = ()
    cut: bool = False  # more values than listed


@dataclass(frozen=True, slots=True)
class DecodedRejection:
    """What the stored bytes of a refused message hold, as far as they parse.

    ``envelope`` is the whole message as CBOR; the other parts are only set when the envelope is
    an array of 4 items under CBOR tag 18 (a COSE_Sign1). ``profile_error`` is what
    :func:`tracecore.cose.parse_cose` says against agritrace's COSE profile, ``fields_error``
    what the payload field rules say, ``message`` the payload as a typed message if it passed.
    """

    length: int
    prefix_only: bool
    envelope: Part
    profile_error: str | None = None
    protected: Part | None = None
    alg: str | None = None
    kid: str | None = None
    unprotected: Part | None = None
    payload: Part | None = None
    fields_error: str | None = None
    signature: str | None = None
    message: AnyMessage | None = None


def hex_dump(data: bytes, limit: int = DUMP_BYTES) -> tuple[str, ...]:
    """Lines of ``offset  16 bytes in hex  |printable ASCII|`` for the first ``limit`` bytes."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : min(offset + 16, limit)]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:04x}  {hexes:<47}  |{text}|")
    return tuple(lines)


def _short_text(value: str) -> str:
    # JSON quoting shows control characters and other invisible ones as escapes.
    quoted = json.dumps(value[:_MAX_TEXT], ensure_ascii=False)
    if len(quoted) > _MAX_TEXT + 2:
        quoted = quoted[:_MAX_TEXT] + "…"
    return quoted + (f" … ({len(value)} characters)" if len(value) > _MAX_TEXT else "")


def _short_bytes(value: bytes) -> str:
    shown = value[:_MAX_BYTES_SHOWN].hex()
    more = f"… ({len(value)} bytes)" if len(value) > _MAX_BYTES_SHOWN else ""
    return f"h'{shown}{more}'"


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


#: How each kind of decoded scalar reads (CBOR diagnostic notation where it has one); bool
#: before int, as True is an int in Python.
_SCALARS: Final[tuple[tuple[type, Callable[[Any], str]], ...]] = (
    (bool, lambda value: "true" if value else "false"),
    (float, _float_text),
    (int, str),
    (str, _short_text),
    (bytes, _short_bytes),
)


def _scalar(value: object) -> str:
    """A decoded scalar as bounded text."""
    if value is None:
        return "null"
    for kind, show in _SCALARS:
        if isinstance(value, kind):
            return show(value)
    return type(value).__name__


def _key_name(key: object) -> str:
    """A map key: a short printable text key as it is, anything else quoted or shown."""
    if isinstance(key, str) and len(key) <= _MAX_TEXT and key.isprintable():
        return key
    return _scalar(key)


#: The kinds of decoded scalars; bool before int, as True is an int in Python.
_SCALAR_KINDS: Final[tuple[tuple[type, Kind], ...]] = (
    (type(None), "null"),
    (bool, "bool"),
    (int, "integer"),
    (float, "float"),
    (str, "text"),
    (bytes, "bytes"),
)


def _kind(value: object) -> Kind:
    """The kind of a decoded scalar."""
    return next((name for kind, name in _SCALAR_KINDS if isinstance(value, kind)), "other")


def _flatten(value: object, name: str = "", depth: int = 0) -> tuple[list[Item], bool]:
    """``value`` and everything in it as items, depth first; and whether the list was cut."""
    items: list[Item] = []
    stack: list[tuple[object, str, int]] = [(value, name, depth)]
    while stack:
        if len(items) >= _MAX_ITEMS:
            return items, True
        current, label, level = stack.pop()
        children: list[tuple[object, str, int]] = []
        if isinstance(current, Mapping):
            items.append(Item(level, label, "map", len(current), ""))
            children = [(v, _key_name(k), level + 1) for k, v in current.items()]
        elif isinstance(current, list | tuple):
            items.append(Item(level, label, "array", len(current), ""))
            children = [(v, f"[{i}]", level + 1) for i, v in enumerate(current)]
        elif isinstance(current, cbor2.CBORTag):
            items.append(Item(level, label, "tag", current.tag, ""))
            children = [(current.value, "", level + 1)]
        else:
            size = len(current) if isinstance(current, str | bytes) else None
            items.append(Item(level, label, _kind(current), size, _scalar(current)))
        stack.extend(reversed(children))
    return items, False


def _part(data: bytes, what: str, *, allowed_tags: Sequence[int] = ()) -> tuple[Part, object]:
    """Decode ``data`` strictly; the part, and the decoded value (None if it did not decode)."""
    try:
        value = decode_strict(
            data, allowed_tags=allowed_tags, max_bytes=max(1, len(data)), what=what
        )
    except MalformedMessage as exc:
        return Part(len(data), error=exc.detail, dump=hex_dump(data)), None
    items, cut = _flatten(value)
    return Part(len(data), tuple(items), cut=cut), value


def _header_field(header: object, label: int) -> object:
    if isinstance(header, dict):
        return next((v for k, v in header.items() if type(k) is int and k == label), None)
    return None


def decode_rejected(raw: bytes, *, prefix_only: bool = False) -> DecodedRejection:
    """Decode the stored bytes of a refused message as far as they parse, step by step.

    Args:
        raw: the stored bytes (any bytes at all: they were refused).
        prefix_only: the bytes are only the first part of what arrived (``too_large``).

    Returns:
        The envelope as CBOR; if it is a tagged array of 4 items, each COSE part decoded on its
        own (the protected header, the unprotected map, the payload as CBOR and by the payload
        field rules, the signature), with the complaint of the first strict parser that refuses
        a part. Raises nothing for any input.
    """
    envelope, value = _part(raw, "COSE message", allowed_tags=(COSE_SIGN1_TAG,))
    decoded = DecodedRejection(len(raw), prefix_only, envelope)
    if envelope.error is not None:
        return decoded
    try:
        parse_cose(raw, max_bytes=max(MAX_MESSAGE_BYTES, len(raw)))
    except MalformedMessage as exc:
        profile_error: str | None = exc.detail
    else:
        profile_error = None
    body = value.value if isinstance(value, cbor2.CBORTag) and value.tag == COSE_SIGN1_TAG else None
    if not isinstance(body, list | tuple) or len(body) != 4:
        return dataclasses.replace(decoded, profile_error=profile_error)
    protected, unprotected, payload, signature = body
    protected_part: Part | None = None
    alg = kid = None
    if isinstance(protected, bytes):
        protected_part, header = _part(protected, "protected header")
        found_alg, found_kid = _header_field(header, HEADER_ALG), _header_field(header, HEADER_KID)
        if found_alg is not None:
            alg = _scalar(found_alg) + (" (EdDSA)" if found_alg == ALG_EDDSA else "")
        if isinstance(found_kid, bytes):
            kid = found_kid[:_MAX_BYTES_SHOWN].hex()
    unprotected_items, cut = _flatten(unprotected)
    payload_part: Part | None = None
    fields_error = None
    message = None
    if isinstance(payload, bytes):
        payload_part, fields = _part(payload, "payload")
        if payload_part.error is None:
            try:
                message = from_cbor_map(fields)
            except MalformedMessage as exc:
                fields_error = exc.detail
    return DecodedRejection(
        length=len(raw),
        prefix_only=prefix_only,
        envelope=envelope,
        profile_error=profile_error,
        protected=protected_part,
        alg=alg,
        kid=kid,
        unprotected=Part(0, tuple(unprotected_items), cut=cut),
        payload=payload_part,
        fields_error=fields_error,
        signature=_scalar(signature) if isinstance(signature, bytes) else None,
        message=message,
    )
