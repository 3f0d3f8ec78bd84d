"""The log entry of an accepted device message (design.md, "The log and the per-product chains").

Every accepted message becomes one log entry: a deterministic CBOR map (RFC 8949 §4.2.1)

============  ==========  ================================================================
key           type        meaning
============  ==========  ================================================================
``v``         uint        format version, 1
``kind``      text        ``"device_message"``
``msg``       bstr (32)   SHA-256 of the exact COSE bytes the device sent
``device``    text        the device id
``seq``       uint        the device's sequence number
``received``  uint        server receive time, ms since the Unix epoch
``chains``    array       one ``{"product", "pseq", "prev"}`` per product the message names,
                          in the message's order: the product's position in its own chain
                          (1 for its first entry) and the leaf hash of the product's previous
                          entry (32 zero bytes for the first); empty for a key rotation,
                          which names no product (docs/protocol.md §5)
============  ==========  ================================================================

The leaf hash of the entry (RFC 9162 §2.1.1, :func:`tracecore.merkle.leaf_hash`) is what
receipts promise and what the next entry of each product points back to, so each product's
history is a hash chain that the log commits.

Registry facts are log entries too (design.md), so the key history a verdict depends on is
itself tamper-evident. Each is a deterministic CBOR map with ``v`` = 1, ``kind`` and ``time``
(server time, ms) and:

=====================  ============================================================
kind                   further keys
=====================  ============================================================
``device_registered``  ``device``, ``party``, ``key`` (bstr 32), ``valid_from`` (ms)
``key_rotated``        ``device``, ``key`` (the new key, bstr 32), ``valid_from`` (ms): the
                       device's previous key is valid only before ``valid_from``
``key_revoked``        ``device``, ``kid`` (bstr 8), ``since`` (ms), ``reason`` (text):
                       messages with a device time at or after ``since`` are not trusted
``recall``             ``products`` (array of 1-64 product keys), ``reason`` (text), ``by``
                       (the party id of the inspector, or ``"admin"``): these products and
                       everything made from them are recalled
``access``             ``who`` (a party id, or ``"admin"``), ``role`` (``"admin"``,
                       ``"inspector"`` or ``"party"``), ``action`` (the request's method and
                       route, 1-200 characters), ``target`` (its path and query, 1-1000
                       characters), ``parties`` (sorted array of 0-1000 distinct party ids
                       whose data it showed): an authenticated read or action on data that is
                       not public (docs/inspection.md, "The access trail"); never a secret
``index_root``         ``size`` (uint), ``root`` (bstr 32): the root of the product index
                       (:mod:`tracecore.indexstate`) over the log's first ``size`` entries,
                       written by the checkpointer at an index ``>= size`` (docs/log.md,
                       "The product index")
=====================  ============================================================
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from tracecore.cbor import decode_strict, encode_deterministic
from tracecore.errors import MalformedMessage
from tracecore.identifiers import ProductKey, parse_device_id, parse_party_id
from tracecore.keys import KID_LENGTH
from tracecore.merkle import HASH_SIZE, leaf_hash

__all__ = [
    "GENESIS_PREV",
    "Access",
    "AnyEntry",
    "ChainPosition",
    "DeviceMessageEntry",
    "DeviceRegistered",
    "IndexRoot",
    "KeyRevoked",
    "KeyRotated",
    "Recall",
    "RegistryEntry",
    "parse_any_entry",
    "parse_entry",
]

ENTRY_VERSION: Final = 1
#: ``prev`` of a product's first entry.
GENESIS_PREV: Final = bytes(HASH_SIZE)
_MAX_ENTRY_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """A product's position in its own hash chain."""

    product: ProductKey
    pseq: int
    prev: bytes

    def __post_init__(self) -> None:
        if self.pseq < 1:
            raise MalformedMessage(f"pseq must be >= 1, got {self.pseq}")
        if len(self.prev) != HASH_SIZE:
            raise MalformedMessage(f"prev must be {HASH_SIZE} bytes, got {len(self.prev)}")
        if (self.pseq == 1) != (self.prev == GENESIS_PREV):
            raise MalformedMessage("prev is 32 zero bytes exactly for a product's first entry")


@dataclass(frozen=True, slots=True)
class DeviceMessageEntry:
    """The log entry of one accepted device message."""

    msg: bytes
    device: str
    seq: int
    received: int
    chains: tuple[ChainPosition, ...]

    def __post_init__(self) -> None:
        if len(self.msg) != HASH_SIZE:
            raise MalformedMessage(f"msg must be {HASH_SIZE} bytes, got {len(self.msg)}")
        parse_device_id(self.device)
        if self.seq < 1 or self.received < 0:
            raise MalformedMessage("seq must be >= 1 and received >= 0")
        # No chain is a message that names no product: a device's key rotation (docs/log.md).
        if len({c.product for c in self.chains}) != len(self.chains):
            raise MalformedMessage("an entry names each product once")

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fast = _device_message_bytes(self)
        if fast is not None:
            return fast
        return encode_deterministic(
            {
                "v": ENTRY_VERSION,
                "kind": "device_message",
                "msg": self.msg,
                "device": self.device,
                "seq": self.seq,
                "received": self.received,
                "chains": [
                    {"product": c.product.path, "pseq": c.pseq, "prev": c.prev} for c in self.chains
                ],
            }
        )

    @property
    def leaf_hash(self) -> bytes:
        """The RFC 9162 leaf hash of the encoded entry."""
        return leaf_hash(self.to_bytes())


# The hot path of ingest (one entry per accepted message) assembles the entry's bytes directly:
# the map's keys in the order RFC 8949 §4.2.1 sorts them (text keys: shorter encodings first,
# then bytewise: v, msg, seq, kind, chains, device, received; prev, pseq, product), every
# integer and length in its shortest head (§4.1), definite lengths. Only exact ``str``/``bytes``
# values and ``int`` values within 0 … 2**64-1 are admitted; anything else returns None and takes
# encode_deterministic (with its errors). tests/tracecore/test_logentry.py checks byte equality
# with encode_deterministic on random entries and the golden vectors.
_UINT64_MAX: Final = 2**64 - 1
_HEAD_1: Final = struct.Struct(">BB")
_HEAD_2: Final = struct.Struct(">BH")
_HEAD_4: Final = struct.Struct(">BI")
_HEAD_8: Final = struct.Struct(">BQ")


def _head(major: int, argument: int) -> bytes:
    """The shortest head of ``major`` and ``argument`` (RFC 8949 §3, §4.2.1)."""
    initial = major << 5
    if argument < 24:
        return bytes((initial | argument,))
    if argument < 0x100:
        return _HEAD_1.pack(initial | 24, argument)
    if argument < 0x10000:
        return _HEAD_2.pack(initial | 25, argument)
    if argument < 0x100000000:
        return _HEAD_4.pack(initial | 26, argument)
    return _HEAD_8.pack(initial | 27, argument)


#: Heads of byte strings (major 2), text strings (3) and arrays (4) shorter than 256 (every
#: entry's strings and arrays are): looked up instead of built.
_SHORT_HEADS: Final = {
    major: tuple(_head(major, length) for length in range(256)) for major in (2, 3, 4)
}


def _string_head(major: int, length: int) -> bytes:
    """:func:`_head` of a string or array length."""
    return _SHORT_HEADS[major][length] if length < 0x100 else _head(major, length)


def _device_message_bytes(entry: DeviceMessageEntry) -> bytes | None:
    """The deterministic encoding of ``entry`` assembled directly, or None (not admitted)."""
    msg, device, seq, received = entry.msg, entry.device, entry.seq, entry.received
    if not (
        type(msg) is bytes
        and type(device) is str
        and type(seq) is int
        and type(received) is int
        and 0 <= seq <= _UINT64_MAX
        and 0 <= received <= _UINT64_MAX
        and len(entry.chains) <= _UINT64_MAX
    ):
        return None
    try:
        device_utf8 = device.encode()
        parts = [b"\xa7\x61v\x01\x63msg", _string_head(2, len(msg)), msg]
        parts += (b"\x63seq", _head(0, seq), b"\x64kind\x6edevice_message\x66chains")
        parts.append(_string_head(4, len(entry.chains)))
        for chain in entry.chains:
            path, pseq, prev = chain.product.path, chain.pseq, chain.prev
            if not (
                type(path) is str
                and type(pseq) is int
                and type(prev) is bytes
                and 0 <= pseq <= _UINT64_MAX
            ):
                return None
            path_utf8 = path.encode()
            parts += (b"\xa3\x64prev", _string_head(2, len(prev)), prev)
            parts += (b"\x64pseq", _head(0, pseq))
            parts += (b"\x67product", _string_head(3, len(path_utf8)), path_utf8)
        parts += (b"\x66device", _string_head(3, len(device_utf8)), device_utf8)
        parts += (b"\x68received", _head(0, received))
    except UnicodeEncodeError:  # lone surrogates: encode_deterministic raises its own error
        return None
    return b"".join(parts)


def parse_entry(data: bytes) -> DeviceMessageEntry:
    """Parse the bytes of a device-message log entry.

    Raises :class:`MalformedMessage` unless ``data`` is exactly the deterministic encoding of a
    well-formed entry (so ``parse_entry(b).to_bytes() == b`` for every accepted ``b``).
    """
    value = decode_strict(data, max_bytes=_MAX_ENTRY_BYTES, what="log entry")
    if not isinstance(value, Mapping):
        raise MalformedMessage("a log entry is a CBOR map")
    expected = {"v", "kind", "msg", "device", "seq", "received", "chains"}
    if set(value) != expected:
        raise MalformedMessage(f"a log entry has exactly the keys {sorted(expected)}")
    if value["v"] != ENTRY_VERSION or value["kind"] != "device_message":
        raise MalformedMessage("not a version 1 device_message entry")
    # decode_strict proved ``data`` is the deterministic encoding of ``value``; checking every
    # key and type here makes it the encoding of the entry too (no re-encoding needed).
    raw_chains = value["chains"]
    if not isinstance(raw_chains, list | tuple) or not all(
        isinstance(c, Mapping) and set(c) == _CHAIN_KEYS for c in raw_chains
    ):
        raise MalformedMessage("entry chains are maps of exactly product, pseq and prev")
    _check_types(value, _ENTRY_TYPES)
    try:
        chains = tuple(
            ChainPosition(ProductKey.parse_canonical(c["product"]), c["pseq"], c["prev"])
            for c in raw_chains
            if _check_types(c, _CHAIN_TYPES)
        )
        return DeviceMessageEntry(
            msg=value["msg"],
            device=value["device"],
            seq=value["seq"],
            received=value["received"],
            chains=chains,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"malformed log entry: {exc}") from exc


_CHAIN_KEYS: Final = frozenset({"product", "pseq", "prev"})
_ENTRY_TYPES: Final = {"msg": bytes, "device": str, "seq": int, "received": int}
_CHAIN_TYPES: Final = {"product": str, "pseq": int, "prev": bytes}


def _check_types(value: Mapping[str, object], types: Mapping[str, type]) -> bool:
    for key, kind in types.items():
        item = value[key]
        # bool is an int subclass, but True is not a sequence number.
        if not isinstance(item, kind) or isinstance(item, bool):
            raise MalformedMessage(f"log entry field {key!r} must be {kind.__name__}")
    return True


def _encode_registry(kind: str, time: int, fields: dict[str, object]) -> bytes:
    return encode_deterministic({"v": ENTRY_VERSION, "kind": kind, "time": time, **fields})


def _check_registry(device: str, time: int, *times: int) -> None:
    if not isinstance(device, str):
        raise MalformedMessage("device must be text")
    parse_device_id(device)
    if any(type(t) is not int or t < 0 for t in (time, *times)):
        raise MalformedMessage("registry entry times are integer ms since the Unix epoch, >= 0")


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise MalformedMessage(f"{name} must be {size} bytes")


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    """A device was registered for ``party`` with its first key."""

    device: str
    party: str
    key: bytes
    valid_from: int
    time: int

    def __post_init__(self) -> None:
        _check_registry(self.device, self.time, self.valid_from)
        if not isinstance(self.party, str):
            raise MalformedMessage("party must be text")
        parse_party_id(self.party)
        _check_bytes("key", self.key, 32)

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fields = {"device": self.device, "party": self.party, "key": self.key}
        return _encode_registry(
            "device_registered", self.time, fields | {"valid_from": self.valid_from}
        )


@dataclass(frozen=True, slots=True)
class KeyRotated:
    """A device's key was replaced: ``key`` signs from ``valid_from`` on, the old one before."""

    device: str
    key: bytes
    valid_from: int
    time: int

    def __post_init__(self) -> None:
        _check_registry(self.device, self.time, self.valid_from)
        _check_bytes("key", self.key, 32)

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fields = {"device": self.device, "key": self.key, "valid_from": self.valid_from}
        return _encode_registry("key_rotated", self.time, fields)


@dataclass(frozen=True, slots=True)
class KeyRevoked:
    """A device key is not trusted for messages timed at or after ``since``."""

    device: str
    kid: bytes
    since: int
    reason: str
    time: int

    def __post_init__(self) -> None:
        _check_registry(self.device, self.time, self.since)
        _check_bytes("kid", self.kid, KID_LENGTH)
        if not isinstance(self.reason, str) or not 1 <= len(self.reason) <= 1000:
            raise MalformedMessage("a revocation reason is 1-1000 characters")

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fields = {"device": self.device, "kid": self.kid, "since": self.since}
        return _encode_registry("key_revoked", self.time, fields | {"reason": self.reason})


@dataclass(frozen=True, slots=True)
class Recall:
    """Products (and everything made from them) recalled by an inspector or the admin."""

    products: tuple[ProductKey, ...]
    reason: str
    by: str
    time: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.products) <= 64 or len(set(self.products)) != len(self.products):
            raise MalformedMessage("a recall names 1-64 distinct products")
        if not all(isinstance(p, ProductKey) for p in self.products):
            raise MalformedMessage("recalled products are product keys")
        if not isinstance(self.reason, str) or not 1 <= len(self.reason) <= 1000:
            raise MalformedMessage("a recall reason is 1-1000 characters")
        if not isinstance(self.by, str) or (self.by != "admin" and not _is_party(self.by)):
            raise MalformedMessage("a recall is made by 'admin' or an inspector's party id")
        if type(self.time) is not int or self.time < 0:
            raise MalformedMessage("registry entry times are integer ms since the Unix epoch")

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fields: dict[str, object] = {"products": [p.path for p in self.products]}
        return _encode_registry(
            "recall", self.time, fields | {"reason": self.reason, "by": self.by}
        )


#: The roles an access is made in (an API token's or the console user's).
ACCESS_ROLES: Final = ("admin", "inspector", "party")
#: The most parties one access entry names (a larger export is recorded as several entries).
MAX_ACCESS_PARTIES: Final = 1000


@dataclass(frozen=True, slots=True)
class Access:
    """An authenticated read or action on non-public data: who, in which role, what, when.

    ``parties`` are the parties whose data the answer showed, sorted, so that each can be shown
    who read its data. Nothing secret goes in: no token, no request body.
    """

    who: str
    role: str
    action: str
    target: str
    parties: tuple[str, ...]
    time: int

    def __post_init__(self) -> None:
        if not isinstance(self.who, str) or (self.who != "admin" and not _is_party(self.who)):
            raise MalformedMessage("an access is made by 'admin' or a party id")
        if self.role not in ACCESS_ROLES or (self.who == "admin") != (self.role == "admin"):
            raise MalformedMessage("an access role is admin (for 'admin'), inspector or party")
        if not isinstance(self.action, str) or not 1 <= len(self.action) <= 200:
            raise MalformedMessage("an access action is 1-200 characters")
        if not isinstance(self.target, str) or not 1 <= len(self.target) <= 1000:
            raise MalformedMessage("an access target is 1-1000 characters")
        if not all(isinstance(p, str) and _is_party(p) for p in self.parties):
            raise MalformedMessage("access parties are party ids")
        if list(self.parties) != sorted(set(self.parties)):
            raise MalformedMessage("access parties are sorted and distinct")
        if len(self.parties) > MAX_ACCESS_PARTIES:
            raise MalformedMessage(f"an access names at most {MAX_ACCESS_PARTIES} parties")
        if type(self.time) is not int or self.time < 0:
            raise MalformedMessage("registry entry times are integer ms since the Unix epoch")

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        fields: dict[str, object] = {"who": self.who, "role": self.role, "action": self.action}
        return _encode_registry(
            "access", self.time, fields | {"target": self.target, "parties": list(self.parties)}
        )


@dataclass(frozen=True, slots=True)
class IndexRoot:
    """The root of the product index over the log's first ``size`` entries (docs/log.md)."""

    size: int
    root: bytes
    time: int

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 0:
            raise MalformedMessage("an index root's size is a non-negative integer")
        _check_bytes("root", self.root, HASH_SIZE)
        if type(self.time) is not int or self.time < 0:
            raise MalformedMessage("registry entry times are integer ms since the Unix epoch")

    def to_bytes(self) -> bytes:
        """Return the deterministic CBOR encoding of the entry."""
        return _encode_registry("index_root", self.time, {"size": self.size, "root": self.root})


def _is_party(text: str) -> bool:
    try:
        parse_party_id(text)
    except ValueError:
        return False
    return True


RegistryEntry: TypeAlias = DeviceRegistered | KeyRotated | KeyRevoked | Recall | Access | IndexRoot
AnyEntry: TypeAlias = DeviceMessageEntry | RegistryEntry

_REGISTRY_FIELDS: Final = {
    "device_registered": (DeviceRegistered, {"device", "party", "key", "valid_from"}),
    "key_rotated": (KeyRotated, {"device", "key", "valid_from"}),
    "key_revoked": (KeyRevoked, {"device", "kid", "since", "reason"}),
    "recall": (Recall, {"products", "reason", "by"}),
    "access": (Access, {"who", "role", "action", "target", "parties"}),
    "index_root": (IndexRoot, {"size", "root"}),
}


def parse_any_entry(data: bytes) -> AnyEntry:
    """Parse the bytes of any log entry (device message or registry fact).

    Raises :class:`MalformedMessage` unless ``data`` is exactly the deterministic encoding of a
    well-formed entry of a known kind.
    """
    value = decode_strict(data, max_bytes=_MAX_ENTRY_BYTES, what="log entry")
    if not isinstance(value, Mapping) or "kind" not in value:
        raise MalformedMessage("a log entry is a CBOR map with a kind")
    kind = value["kind"]
    if kind == "device_message":
        return parse_entry(data)
    if kind not in _REGISTRY_FIELDS:
        raise MalformedMessage(f"unknown log entry kind {kind!r}")
    cls, fields = _REGISTRY_FIELDS[kind]
    if set(value) != fields | {"v", "kind", "time"} or value["v"] != ENTRY_VERSION:
        raise MalformedMessage(
            f"a {kind} entry has exactly the keys v, kind, time, {sorted(fields)}"
        )
    try:
        args = {k: value[k] for k in (*sorted(fields), "time")}
        if kind == "recall":
            if not isinstance(args["products"], list | tuple):
                raise MalformedMessage("recall products must be an array")
            args["products"] = tuple(ProductKey.parse_canonical(p) for p in args["products"])
        if kind == "access":
            if not isinstance(args["parties"], list | tuple):
                raise MalformedMessage("access parties must be an array")
            args["parties"] = tuple(args["parties"])
        entry: RegistryEntry = cls(**args)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"malformed {kind} entry: {exc}") from exc
    if entry.to_bytes() != data:
        raise MalformedMessage("log entry is not in its deterministic encoding")
    return entry
