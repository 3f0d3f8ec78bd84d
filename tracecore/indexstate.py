"""What the product index maps: each product's chain head and recalls, each device's registry.

The log commits, with every checkpoint, a sparse Merkle map (:mod:`tracecore.smt`) derived from
its entries alone (docs/log.md, "The product index"). Its keys and values:

==========================================  ====================================================
key                                         value (deterministic CBOR, RFC 8949 §4.2.1)
==========================================  ====================================================
``SHA-256("product" || 0x00 || path)``      ``{"v": 1, "product": path, "chain": [pseq, index,
                                            leaf] or null, "recalls": [index, ...]}``
``SHA-256("device" || 0x00 || device id)``  ``{"v": 1, "device": id, "registry": [index, ...]}``
==========================================  ====================================================

* ``chain`` is the product's newest chain entry: its position ``pseq`` in the product's chain,
  its log ``index`` and its ``leaf`` hash; null for a product that a recall names but no device
  message does.
* ``recalls`` are the log indexes of the ``recall`` entries naming the product, ascending.
* ``registry`` are the log indexes of the device's ``device_registered``, ``key_rotated`` and
  ``key_revoked`` entries, ascending.

Other entries (``access``, ``index_root``) change nothing. So the value of a key at log size
``N`` is a pure function of entries ``[0, N)``: :class:`IndexChanges` folds entries into changed
values, :func:`product_key` and :func:`device_key` name the keys, :func:`parse_value` reads a
value back (refusing anything but the exact deterministic encoding).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from tracecore.cbor import decode_strict, encode_deterministic
from tracecore.errors import IdentifierError, MalformedMessage
from tracecore.identifiers import ProductKey, parse_device_id
from tracecore.logentry import (
    AnyEntry,
    DeviceMessageEntry,
    DeviceRegistered,
    KeyRevoked,
    KeyRotated,
    Recall,
)
from tracecore.merkle import leaf_hash as log_leaf_hash
from tracecore.smt import value_hash

__all__ = [
    "ChainHead",
    "DeviceState",
    "IndexChanges",
    "IndexValue",
    "ProductState",
    "device_key",
    "fold",
    "parse_value",
    "product_key",
    "touched_keys",
]

VALUE_VERSION: Final = 1
_MAX_VALUE_BYTES: Final = 1024 * 1024


def product_key(path: str) -> bytes:
    """The index key of the product with canonical key ``path``."""
    return hashlib.sha256(b"product\x00" + path.encode()).digest()


def device_key(device: str) -> bytes:
    """The index key of the device ``device``."""
    return hashlib.sha256(b"device\x00" + device.encode()).digest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest entry of a product's chain: its position, log index and leaf hash."""

    pseq: int
    index: int
    leaf: bytes


@dataclass(frozen=True, slots=True)
class ProductState:
    """The index value of a product."""

    product: str
    chain: ChainHead | None = None
    recalls: tuple[int, ...] = ()

    @property
    def key(self) -> bytes:
        """The index key."""
        return product_key(self.product)

    def to_bytes(self) -> bytes:
        """The deterministic CBOR encoding (the bytes the leaf hashes)."""
        chain = None if self.chain is None else [self.chain.pseq, self.chain.index, self.chain.leaf]
        doc = {"v": VALUE_VERSION, "product": self.product, "chain": chain}
        return encode_deterministic(doc | {"recalls": list(self.recalls)})


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The index value of a device."""

    device: str
    registry: tuple[int, ...] = ()

    @property
    def key(self) -> bytes:
        """The index key."""
        return device_key(self.device)

    def to_bytes(self) -> bytes:
        """The deterministic CBOR encoding (the bytes the leaf hashes)."""
        doc = {"v": VALUE_VERSION, "device": self.device, "registry": list(self.registry)}
        return encode_deterministic(doc)


IndexValue: TypeAlias = ProductState | DeviceState


def _indexes(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(i) is int and i >= 0 for i in value):
        raise MalformedMessage(f"index value {what} must be an array of log indexes")
    if value != sorted(set(value)):
        raise MalformedMessage(f"index value {what} are ascending and distinct")
    return tuple(value)


def _identifier(parse: Callable[[str], object], text: object, what: str) -> str:
    """``text`` if it is a valid identifier; its errors as :class:`MalformedMessage`."""
    if not isinstance(text, str):
        raise MalformedMessage(f"an index value's {what} is text")
    try:
        parse(text)
    except IdentifierError as exc:
        raise MalformedMessage(f"an index value's {what}: {exc}") from exc
    return text


def parse_value(data: bytes) -> IndexValue:
    """Parse an index value; raises :class:`MalformedMessage` unless it is exactly well formed."""
    doc = decode_strict(data, max_bytes=_MAX_VALUE_BYTES, what="index value")
    if not isinstance(doc, Mapping) or doc.get("v") != VALUE_VERSION:
        raise MalformedMessage("an index value is a CBOR map with v = 1")
    value: IndexValue
    if set(doc) == {"v", "product", "chain", "recalls"}:
        path = _identifier(ProductKey.parse_canonical, doc["product"], "product")
        raw = doc["chain"]
        chain = None
        if raw is not None:
            if not isinstance(raw, list) or len(raw) != 3:
                raise MalformedMessage("an index value's chain is [pseq, index, leaf] or null")
            pseq, index, leaf = raw
            if type(pseq) is not int or pseq < 1 or type(index) is not int or index < 0:
                raise MalformedMessage("an index value's chain position and index are integers")
            if not isinstance(leaf, bytes) or len(leaf) != 32:
                raise MalformedMessage("an index value's chain leaf is 32 bytes")
            chain = ChainHead(pseq, index, leaf)
        value = ProductState(path, chain, _indexes(doc["recalls"], "recalls"))
    elif set(doc) == {"v", "device", "registry"}:
        device = _identifier(parse_device_id, doc["device"], "device")
        value = DeviceState(device, _indexes(doc["registry"], "registry"))
    else:
        raise MalformedMessage("an index value holds a product's or a device's keys")
    if value.to_bytes() != data:
        raise MalformedMessage("an index value is not in its deterministic encoding")
    return value


def touched_keys(entry: AnyEntry) -> list[bytes]:
    """The index keys whose value ``entry`` changes (none for most registry entries)."""
    if isinstance(entry, DeviceMessageEntry):
        return [product_key(position.product.path) for position in entry.chains]
    if isinstance(entry, Recall):
        return [product_key(product.path) for product in entry.products]
    if isinstance(entry, DeviceRegistered | KeyRotated | KeyRevoked):
        return [device_key(entry.device)]
    return []


class IndexChanges:
    """Folds log entries, in index order, into the index values they change.

    ``current`` reads the stored value of a key (None when the index has none yet); it is
    called at most once per key. :attr:`values` holds each changed key's new value.
    """

    def __init__(self, current: Callable[[bytes], IndexValue | None]) -> None:
        self._current = current
        self.values: dict[bytes, IndexValue] = {}

    def _get(self, key: bytes) -> IndexValue | None:
        if key in self.values:
            return self.values[key]
        return self._current(key)

    def apply(self, index: int, entry: AnyEntry, entry_bytes: bytes) -> None:
        """Fold the entry at log ``index`` (its parsed form and its bytes)."""
        if isinstance(entry, DeviceMessageEntry):
            leaf = log_leaf_hash(entry_bytes)
            for position in entry.chains:
                self._product(position.product.path, chain=ChainHead(position.pseq, index, leaf))
        elif isinstance(entry, Recall):
            for product in entry.products:
                self._product(product.path, recall=index)
        elif isinstance(entry, DeviceRegistered | KeyRotated | KeyRevoked):
            key = device_key(entry.device)
            old = self._get(key)
            registry = old.registry if isinstance(old, DeviceState) else ()
            self.values[key] = DeviceState(entry.device, (*registry, index))

    def _product(self, path: str, *, chain: ChainHead | None = None, recall: int = -1) -> None:
        key = product_key(path)
        old = self._get(key)
        state = old if isinstance(old, ProductState) else ProductState(path)
        if chain is not None:
            state = ProductState(path, chain, state.recalls)
        if recall >= 0:
            state = ProductState(path, state.chain, (*state.recalls, recall))
        self.values[key] = state

    def value_hashes(self) -> dict[bytes, bytes]:
        """Each changed key's new value hash (the changes :func:`tracecore.smt.update` takes)."""
        return {key: value_hash(v.to_bytes()) for key, v in self.values.items()}


def fold(entries: Iterable[tuple[int, AnyEntry, bytes]]) -> dict[bytes, IndexValue]:
    """Every index value of a log given whole, in index order (the reference for tests)."""
    changes = IndexChanges(lambda _key: None)
    for index, entry, data in entries:
        changes.apply(index, entry, data)
    return changes.values
