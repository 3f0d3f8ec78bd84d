"""The C2SP tlog-tiles layout of the log: tile paths, widths, availability, entry bundles.

c2sp.org/tlog-tiles serves the Merkle tree as *tiles* of height 8: the ``N``-th tile of level
``L`` holds the 256 hashes ``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``, that is
the complete subtrees ``(8 * L, N * 256 + i)`` in :mod:`tracecore.merkle` terms (level 0: the
leaf hashes). Paths are ``tile/<L>/<N>[.p/<W>]`` with ``N`` in zero-padded 3-digit path
elements, all but the last prefixed by ``x`` (1234067 -> ``x001/x234/067``); ``.p/<W>`` marks a
partial tile of ``W`` (1..255) hashes. Entries are served as *entry bundles*
``tile/entries/<N>[.p/<W>]``: the entries ``[N*256, N*256 + W)``, each as a big-endian uint16
length followed by its bytes.

A log serves only what a checkpoint commits to: a tile (or bundle) is available at checkpoint
size ``s`` when all its hashes are complete subtrees of the tree of size ``s``
(:func:`available`). Everything here is pure.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tracecore.errors import IdentifierError

__all__ = [
    "MAX_ENTRY_BYTES",
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TilePath",
    "available",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_index",
    "parse_index",
    "parse_tile_path",
    "partial_width",
    "split_hash_tile",
]

#: C2SP tlog-tiles: tiles have height 8, so a full tile holds 2**8 hashes (8,192 bytes).
TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
#: C2SP tlog-tiles: ``<L>`` is between 0 and 63.
MAX_LEVEL: Final = 63
#: An entry bundle prefixes each entry with a uint16 length.
MAX_ENTRY_BYTES: Final = 0xFFFF

_SEGMENT = re.compile(r"[0-9]{3}")
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")


@dataclass(frozen=True, slots=True)
class TilePath:
    """A parsed tile path: level (``None`` for an entry bundle), index, width (256 when full)."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def partial(self) -> bool:
        """Whether this is a partial tile (``.p/<W>``)."""
        return self.width < TILE_WIDTH

    @property
    def merkle_level(self) -> int:
        """The level, in :mod:`tracecore.merkle` terms, of the subtrees this tile holds."""
        return TILE_HEIGHT * (self.level or 0)

    @property
    def first(self) -> int:
        """Index (at :attr:`merkle_level`) of the first hash or entry of the tile."""
        return self.index * TILE_WIDTH

    def __str__(self) -> str:
        """Return the path, e.g. ``tile/0/x001/x234/067.p/8`` or ``tile/entries/000``."""
        head = "entries" if self.level is None else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{head}/{encode_index(self.index)}{suffix}"


def encode_index(index: int) -> str:
    """Return the C2SP tlog-tiles encoding of a tile index: ``x001/x234/067`` for 1234067."""
    if index < 0:
        raise ValueError(f"a tile index is not negative, got {index}")
    groups = []
    while True:
        groups.append(index % 1000)
        index //= 1000
        if not index:
            break
    groups.reverse()
    return "/".join([*(f"x{g:03d}" for g in groups[:-1]), f"{groups[-1]:03d}"])


def parse_index(text: str) -> int:
    """Parse a tile index path ``x001/x234/067``; raises :class:`IdentifierError`.

    Every element is three digits; all but the last start with ``x``; the encoding must be the
    canonical one (no all-zero leading element), so each index has exactly one path.
    """
    elements = text.split("/")
    value = 0
    for position, element in enumerate(elements):
        last = position == len(elements) - 1
        digits = element if last else element.removeprefix("x")
        if (not last and not element.startswith("x")) or not _SEGMENT.fullmatch(digits):
            raise IdentifierError(
                f"tile index element {element!r} must be 3 digits, prefixed by 'x' unless last"
            )
        value = value * 1000 + int(digits)
    if encode_index(value) != text:
        raise IdentifierError(f"tile index {text!r} is not in canonical form")
    return value


def parse_tile_path(level: str, rest: str) -> TilePath:
    """Parse the parts of ``tile/<level>/<rest>``; ``level`` is a decimal or ``entries``.

    Raises :class:`IdentifierError` naming the rule a part breaks (level 0..63 without leading
    zeroes, the index encoding, ``.p/<W>`` with W in 1..255 without leading zeroes).
    """
    if level == "entries":
        parsed_level: int | None = None
    elif _LEVEL.fullmatch(level) and int(level) <= MAX_LEVEL:
        parsed_level = int(level)
    else:
        raise IdentifierError(f"tile level {level!r} must be 'entries' or a decimal 0..63")
    index_text, partial, width_text = rest.partition(".p/")
    width = TILE_WIDTH
    if partial:
        if not _WIDTH.fullmatch(width_text) or int(width_text) >= TILE_WIDTH:
            raise IdentifierError(f"partial tile width {width_text!r} must be a decimal 1..255")
        width = int(width_text)
    return TilePath(parsed_level, parse_index(index_text), width)


def partial_width(size: int, level: int) -> int:
    """Return the width of the partial tile of ``level`` in a tree of ``size`` (0: none).

    C2SP tlog-tiles: ``floor(size / 256**level) mod 256``.
    """
    return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH


def available(tile: TilePath, size: int) -> bool:
    """Return whether ``tile`` is committed to by a checkpoint of ``size`` (may be served).

    Its last hash must be a complete subtree of the tree of ``size``: for level ``L`` there are
    ``floor(size / 256**L)`` such hashes. An entry bundle follows level 0.
    """
    return tile.first + tile.width <= size >> tile.merkle_level


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Return an entry bundle: each entry as a big-endian uint16 length and its bytes.

    Raises :class:`ValueError` for an entry longer than 65,535 bytes (C2SP tlog-tiles has no
    encoding for it; agritrace entries are far smaller).
    """
    parts = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit an entry bundle")
        parts.append(struct.pack(">H", len(entry)) + entry)
    return b"".join(parts)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle into its entries; raises :class:`ValueError` on a truncated one."""
    entries = []
    position = 0
    while position < len(data):
        if position + 2 > len(data):
            raise ValueError("entry bundle ends inside a length prefix")
        (length,) = struct.unpack_from(">H", data, position)
        position += 2
        if position + length > len(data):
            raise ValueError("entry bundle ends inside an entry")
        entries.append(data[position : position + length])
        position += length
    return entries


def split_hash_tile(data: bytes) -> list[bytes]:
    """Split a hash tile into its 32-byte hashes; raises :class:`ValueError` if misaligned."""
    if len(data) % 32 or not 0 < len(data) <= TILE_WIDTH * 32:
        raise ValueError(f"a hash tile is 1..256 hashes of 32 bytes, got {len(data)} bytes")
    return [data[i : i + 32] for i in range(0, len(data), 32)]
