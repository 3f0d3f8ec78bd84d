"""Batch files: business events as CSV, one event per row (docs/gateway-csv.md).

A packing line or an office PC writes a file such as::

    step,products,parents,location,count
    commissioning,01/06901234567892/10/L261206/21/L261206-C{001..120},01/06901234567892/10/L261206,414/6901234000004,30

and the gateway sends every event of it, or none. :func:`parse_batch` reads the whole text
first and returns a :class:`Batch` only if every row is good; otherwise it raises one
:class:`~tracecore.errors.BatchError` listing every problem with its line and column. The rules:

* The first record (after blank lines and lines starting with ``#``) is the header. Its names
  are free in order; ``step``, ``products``, ``parents``, ``location`` and ``time`` are matched
  without regard to case; ``step`` and ``products`` are required. Every other column is a field
  of the event's ``data``: lowercase ``[a-z][a-z0-9_]*`` (at most 64 characters), with ``.``
  naming a field of a nested map (``treatment.drug``), at most 4 names deep
  (docs/protocol.md §5, ``data``).
* Rows are RFC 4180 CSV records with as many cells as the header; spaces around a cell are
  ignored; blank rows, rows of empty cells and lines starting with ``#`` are skipped.
* ``step``: a CBV 2.0 business step, bare name (docs/protocol.md §5).
* ``products`` (and ``parents``): canonical product keys (docs/identifiers.md) separated by
  spaces; ``{001..120}`` inside a key stands for each number of the range, written with the
  same number of digits when both ends have the same number of digits (zero padding kept),
  e.g. ``…/21/C{001..120}`` is ``…/21/C001`` to ``…/21/C120``. At most
  :data:`MAX_ROW_PRODUCTS` keys per row and :data:`MAX_FILE_PRODUCTS` per file.
* A row of more than 64 products becomes several events of at most 64 products each, in order,
  with the same step, parents, location, data and time (docs/protocol.md §5: 1 to 64 products).
* ``location``: optional text, the rules of docs/protocol.md §5. ``time``: the rules of
  :mod:`gateway.timestamps`; empty means ``now_ms``.
* ``data`` cells: empty leaves the field out; ``true``/``false`` (any case) are booleans; an
  integer without leading zeros within the signed 64-bit range is a number, and so is a decimal
  like ``2.5`` that a float holds exactly; everything else is kept as text, exactly as written
  (``007``, ``2026-01-01``, ``1e5``).
* Within a row, no key may appear twice, and no item (GTIN + serial, docs/identifiers.md) under
  two keys; no parent may be one of the products. Within a file, a ``commissioning`` names each
  product once: a carton commissioned twice is an error.

Each event is checked with the rules of :class:`tracecore.message.Event` and must fit in one
message of :data:`tracecore.cose.MAX_MESSAGE_BYTES` with the longest device id, so the gateway
never signs what ingest would call ``malformed``. :func:`event_from_args` applies the same rules
to the arguments of ``agritrace gateway event``. Pure: clock and zone are arguments.
"""

from __future__ import annotations

import csv
import decimal
import difflib
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from zoneinfo import ZoneInfo

import nacl.signing

from gateway.timestamps import parse_time
from tracecore.cbor import encode_deterministic
from tracecore.cose import sign_message
from tracecore.errors import BatchError, IdentifierError, InputError, MalformedMessage
from tracecore.identifiers import ProductKey
from tracecore.message import (
    BUSINESS_STEPS,
    MAX_DATA_DEPTH,
    MAX_PARENTS,
    MAX_PRODUCTS,
    MAX_SEQ,
    DataValue,
    Event,
)

__all__ = [
    "MAX_FILE_PRODUCTS",
    "MAX_ROW_PRODUCTS",
    "RESERVED_COLUMNS",
    "Batch",
    "BatchEvent",
    "event_from_args",
    "parse_batch",
]

MAX_ROW_PRODUCTS: Final = 10_000  # one row: a day's cartons of a line, not a warehouse
MAX_FILE_PRODUCTS: Final = 100_000  # bounds the memory and the time one file can take
RESERVED_COLUMNS: Final = ("step", "products", "parents", "location", "time")
_REQUIRED: Final = ("step", "products")
_DIGEST_DOMAIN: Final = "agritrace gateway batch v1"  # keeps batch digests apart from others

_DATA_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_RANGE: Final = re.compile(r"\{(\d{1,20})\.\.(\d{1,20})\}", re.ASCII)
_INTEGER: Final = re.compile(r"0|-?[1-9]\d*", re.ASCII)  # "-0" and "007" stay text
_DECIMAL: Final = re.compile(r"-?(0|[1-9]\d*)\.\d+", re.ASCII)
_BOOLEANS: Final = {"true": True, "false": False}
_INT64: Final = range(-(2**63), 2**63)

# The size check signs each event as the worst case would: the longest device id (64
# characters, docs/protocol.md §5) and the largest sequence number. The key is a fixed,
# public throwaway: only the length of the result matters.
_PROBE_DEVICE: Final = "x" * 64
_PROBE_KEY: Final = nacl.signing.SigningKey(bytes(32))


def _show(text: str) -> str:
    """Quote a cell for an error message, shortened: a cell may be 100,000 characters long."""
    return repr(text) if len(text) <= 80 else f"{text[:60]!r}… ({len(text)} characters)"


def _identity(key: ProductKey) -> tuple[str, str | None, str | None]:
    """What a key names: GTIN + serial for an item, whatever its lot (docs/identifiers.md;
    GS1 General Specifications §3.5.2); GTIN + lot for a lot. Cheaper than ``key.item``."""
    if key.serial is not None:
        return (key.gtin, None, key.serial)
    return (key.gtin, key.lot, None)


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One event to send: the arguments of ``Device.send_event``, and the row it came from.

    The constructor checks every rule of :class:`tracecore.message.Event` (step, 1-64 distinct
    products, 0-64 parents not among them, location, data) and that the signed message fits in
    :data:`tracecore.cose.MAX_MESSAGE_BYTES` for any device; it raises
    :class:`~tracecore.errors.MalformedMessage` otherwise. ``data`` is stored read-only.
    ``line`` (the row's line in its file, if any) is not part of the event.
    """

    time_ms: int
    products: tuple[ProductKey, ...]
    step: str
    parents: tuple[ProductKey, ...] = ()
    location: str | None = None
    data: Mapping[str, object] | None = field(default=None, hash=False)
    line: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        """Check the event as the device would sign it; freeze ``data``."""
        probe = Event(
            device=_PROBE_DEVICE,
            seq=MAX_SEQ,
            time=self.time_ms,
            products=self.products,
            step=self.step,
            parents=self.parents,
            location=self.location,
            data=self.data,
        )
        items = [_identity(key) for key in (*self.products, *self.parents) if key.serial]
        if len(set(items)) != len(items):
            # docs/protocol.md §6, serial_conflict: a message names two keys of one GTIN + serial.
            raise MalformedMessage("products and parents name one item (GTIN + serial) twice")
        try:
            sign_message(probe, _PROBE_KEY)  # raises MalformedMessage when too large
        except ValueError as exc:  # text the CBOR encoder refuses (lone surrogates)
            raise MalformedMessage(f"the event cannot be encoded: {exc}") from exc
        object.__setattr__(self, "data", probe.data)

    def to_cbor_map(self) -> dict[str, object]:
        """Return the event's content as a map (no device, no sequence number), for digests."""
        result: dict[str, object] = {
            "time": self.time_ms,
            "products": [key.path for key in self.products],
            "step": self.step,
        }
        if self.parents:
            result["parents"] = [key.path for key in self.parents]
        if self.location is not None:
            result["location"] = self.location
        if self.data is not None:
            result["data"] = self.data
        return result


@dataclass(frozen=True, slots=True)
class Batch:
    """All events of one batch file, checked together, in the order of its rows.

    ``digest`` is the SHA-256 (hex) of the deterministic CBOR (RFC 8949 §4.2.1) of the array
    ``["agritrace gateway batch v1", [event, …]]`` with each event as
    :meth:`BatchEvent.to_cbor_map`: equal events give equal digests, whatever the column order,
    spacing or range notation of the file. Rows without a time take the time the file was read,
    so such a file gives another digest each time it is read.

    The constructor requires at least one event and checks the file-wide rule: no product
    commissioned twice. It raises :class:`~tracecore.errors.BatchError`.
    """

    events: tuple[BatchEvent, ...]
    digest: str = field(init=False, default="")

    def __post_init__(self) -> None:
        """Check the file-wide rules and compute the digest."""
        if not self.events:
            raise BatchError((InputError("the file has no events: only a header or nothing"),))
        problems = _commissioned_twice(self.events)
        if problems:
            raise BatchError(tuple(problems))
        content = [_DIGEST_DOMAIN, [event.to_cbor_map() for event in self.events]]
        digest = hashlib.sha256(encode_deterministic(content)).hexdigest()
        object.__setattr__(self, "digest", digest)

    @property
    def product_count(self) -> int:
        """How many product keys the events name in all."""
        return sum(len(event.products) for event in self.events)


def _commissioned_twice(events: Iterable[BatchEvent]) -> list[InputError]:
    """Report every product a ``commissioning`` names after an earlier one named it."""
    first: dict[tuple[str, str | None, str | None], int | None] = {}
    problems = []
    for event in events:
        if event.step != "commissioning":
            continue
        for key in event.products:
            identity = _identity(key)
            if identity in first:
                where = first[identity]
                on = f"on line {where}" if where is not None else "earlier"
                problems.append(
                    InputError(
                        f"{key.path} is commissioned {on} already (each product is "
                        "commissioned once)",
                        line=event.line,
                        column="products",
                    )
                )
            else:
                first[identity] = event.line
    return problems


@dataclass(slots=True)
class _Header:
    """The columns of a batch file: index of each reserved column, data paths of the others."""

    reserved: dict[str, int]
    data: list[tuple[int, str, tuple[str, ...]]]  # (index, column name, path)


def _parse_header(cells: Sequence[str]) -> tuple[_Header | None, list[str]]:
    """Return the header, or ``None`` and the reasons it cannot be used."""
    reserved: dict[str, int] = {}
    data: list[tuple[int, str, tuple[str, ...]]] = []
    reasons: list[str] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(cells):
        name = raw.strip()
        folded = name.lower()
        if folded in seen:
            reasons.append(f"column {_show(name)} appears twice (column names ignore case)")
            continue
        seen[folded] = index
        if folded in RESERVED_COLUMNS:
            reserved[folded] = index
            continue
        path = tuple(name.split("."))
        bad = [part for part in path if _DATA_NAME.fullmatch(part) is None]
        if name == "":
            reasons.append(f"column {index + 1} has no name")
        elif bad:
            reasons.append(
                f"column {_show(name)} is not a data field name: use lowercase letters, digits and "
                "'_', starting with a letter (e.g. 'count'), and '.' for a nested field"
            )
        elif len(path) > MAX_DATA_DEPTH:
            reasons.append(
                f"column {_show(name)} nests {len(path)} names deep, at most {MAX_DATA_DEPTH} "
                "(docs/protocol.md §5)"
            )
        else:
            data.append((index, name, path))
    reasons += _path_clashes([(name, path) for _, name, path in data])
    for name in _REQUIRED:
        if name not in reserved:
            hint = (
                " (columns must be separated by commas)"
                if len(cells) == 1 and ";" in cells[0]
                else ""
            )
            reasons.append(f"the header has no {name!r} column{hint}")
    if reasons:
        return None, reasons
    return _Header(reserved, data), []


def _path_clashes(paths: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Report a column that is both a value and a map (``treatment`` and ``treatment.drug``)."""
    full = {path: name for name, path in paths}
    return [
        f"columns {_show(full[path[:cut]])} and {_show(name)} clash: "
        f"{_show(full[path[:cut]])} cannot be both a value and a map"
        for name, path in paths
        for cut in range(1, len(path))
        if path[:cut] in full
    ]


def _data_value(text: str) -> DataValue:
    """Return a data cell's value: boolean, integer, exactly-held decimal, or the text."""
    folded = text.lower()
    if folded in _BOOLEANS:
        return _BOOLEANS[folded]
    if _INTEGER.fullmatch(text) and len(text) <= 20 and int(text) in _INT64:
        return int(text)
    if _DECIMAL.fullmatch(text) and len(text) <= 40:
        number = float(text)
        if decimal.Decimal(repr(number)) == decimal.Decimal(text):
            return number
    return text


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: DataValue) -> None:
    """Set ``value`` at ``path``, making nested maps (the header refused value/map clashes)."""
    for name in path[:-1]:
        target = target.setdefault(name, {})
    target[path[-1]] = value


def _expand_keys(text: str, budget: int, limit: str) -> list[ProductKey]:
    """Expand a cell of space-separated keys with ``{a..b}`` ranges; at most ``budget`` keys.

    ``limit`` says which limit ``budget`` is, for the error. Raises :class:`ValueError` naming
    the bad key or range.
    """
    keys: list[ProductKey] = []
    for token in text.split():
        texts = _expand_range(token, budget - len(keys), limit)
        for item in texts:
            try:
                keys.append(ProductKey.parse_canonical(item))
            except IdentifierError as exc:
                where = f" (from {_show(token)})" if item != token else ""
                raise ValueError(f"{_show(item)}{where}: {exc}") from exc
    return keys


def _expand_range(token: str, budget: int, limit: str) -> list[str]:
    ranges = list(_RANGE.finditer(token))
    if len(ranges) > 1:
        raise ValueError(
            f"{_show(token)} has more than one range; write one {{first..last}} per key"
        )
    braces = token.count("{") + token.count("}")
    if braces != 2 * len(ranges):
        raise ValueError(
            f"{_show(token)} has a brace that is not a range: a range is written {{001..120}} "
            "(digits, two dots, digits)"
        )
    if not ranges:
        if budget < 1:
            raise ValueError(f"too many keys: {limit}")
        return [token]
    found = ranges[0]
    low_text, high_text = found[1], found[2]
    low, high = int(low_text), int(high_text)
    if low > high:
        raise ValueError(f"{found[0]!r} counts down; write the smaller number first")
    count = high - low + 1
    if count > budget:
        raise ValueError(f"{_show(token)} names {count} keys, too many: {limit}")
    if len(low_text) == len(high_text):
        width = len(low_text)
    elif low_text.startswith("0") or high_text.startswith("0"):
        raise ValueError(
            f"{found[0]!r}: the ends have different widths and one has leading zeros; write "
            "both with the same number of digits, e.g. {001..120}"
        )
    else:
        width = 0
    head, tail = token[: found.start()], token[found.end() :]
    return [f"{head}{number:0{width}d}{tail}" for number in range(low, high + 1)]


_Fail: TypeAlias = Callable[[str | None, str], None]  # fail(column, reason) within one row


def _check_row_keys(
    products: Sequence[ProductKey], parents: Sequence[ProductKey], fail: _Fail
) -> None:
    for column, keys in (("products", products), ("parents", parents)):
        seen: dict[tuple[str, str | None, str | None], ProductKey] = {}
        for key in keys:
            identity = _identity(key)
            if identity in seen:
                earlier = seen[identity]
                if earlier == key:
                    fail(column, f"{key.path} appears twice")
                else:
                    fail(
                        column,
                        f"{earlier.path} and {key.path} name one item (GTIN + serial; "
                        "docs/identifiers.md)",
                    )
            else:
                seen[identity] = key
    own = {_identity(key) for key in products}
    for key in parents:
        if _identity(key) in own:
            fail("parents", f"{key.path} is also one of the products")


def _build_row(
    cells: Mapping[str, str],
    data_cells: Sequence[tuple[str, tuple[str, ...], str]],
    *,
    line: int | None,
    now_ms: int,
    tz: ZoneInfo,
    budget: tuple[int, str],
) -> tuple[list[BatchEvent], list[InputError]]:
    """Parse one row (reserved cells by column name, data cells with their paths)."""
    problems: list[InputError] = []

    def fail(column: str | None, reason: str) -> None:
        problems.append(InputError(reason, line=line, column=column))

    step = cells.get("step", "")
    if step not in BUSINESS_STEPS:
        close = difflib.get_close_matches(step.lower()[:64], sorted(BUSINESS_STEPS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = "(empty)" if step == "" else _show(step)
        fail("step", f"{shown} is not a CBV 2.0 business step such as commissioning{hint}")
    keys: dict[str, list[ProductKey]] = {"products": [], "parents": []}
    parents_limit = (MAX_PARENTS, f"an event has at most {MAX_PARENTS} parents")
    for column, (limit, limit_text) in (("products", budget), ("parents", parents_limit)):
        text = cells.get(column, "")
        if column == "products" and text == "":
            fail(column, "no product keys; name at least one")
            continue
        try:
            keys[column] = _expand_keys(text, limit, limit_text)
        except ValueError as exc:
            fail(column, str(exc))
    products, parents = keys["products"], keys["parents"]
    _check_row_keys(products, parents, fail)
    location = cells.get("location", "") or None
    time_ms = now_ms
    try:
        time_ms = parse_time(cells.get("time", ""), now_ms=now_ms, tz=tz)
    except ValueError as exc:
        fail("time", str(exc))
    data: dict[str, Any] = {}
    for _name, path, text in data_cells:
        if text != "":
            _set_path(data, path, _data_value(text))
    if problems:
        return [], problems
    events: list[BatchEvent] = []
    for start in range(0, len(products), MAX_PRODUCTS):  # docs/protocol.md §5: 1-64 products
        try:
            events.append(
                BatchEvent(
                    time_ms=time_ms,
                    products=tuple(products[start : start + MAX_PRODUCTS]),
                    step=step,
                    parents=tuple(parents),
                    location=location,
                    data=data or None,
                    line=line,
                )
            )
        except MalformedMessage as exc:
            fail(_column_of(exc.detail), exc.detail)
            return [], problems
    return events, problems


def _column_of(detail: str) -> str | None:
    """The column an Event rule names at the start of its detail, if it is one of a file's."""
    return next((name for name in ("location", "data") if detail.startswith(name)), None)


_ROW_BUDGET: Final = (
    MAX_ROW_PRODUCTS,
    f"a row names at most {MAX_ROW_PRODUCTS} products (split the row)",
)


def parse_batch(text: str, *, now_ms: int, tz: ZoneInfo) -> Batch:
    """Parse a whole batch file: every event of it, or an error listing every problem.

    ``text`` is the file's content (a leading UTF-8 byte order mark is ignored); ``now_ms`` the
    time of rows without one and the clock of the future-time check; ``tz`` the zone of times
    without an offset. The rules are in the module docstring and docs/gateway-csv.md.

    Returns the :class:`Batch` of all events in row order (rows of more than 64 products split).
    Raises :class:`~tracecore.errors.BatchError` whose ``problems`` name line, column and reason
    of each bad cell, row or header.
    """
    records, problems = _read_records(text)
    if not records:
        raise BatchError((*problems, InputError("the file has no header row (e.g. step,products)")))
    header_line, header_cells = records[0]
    header, reasons = _parse_header(header_cells)
    if header is None:
        raise BatchError(tuple(InputError(reason, line=header_line) for reason in reasons))
    width = len(header_cells)
    _check_file_size(records[1:], header)
    events: list[BatchEvent] = []
    for line, record in records[1:]:
        if len(record) != width:
            problems.append(
                InputError(f"expected {width} cells as in the header, got {len(record)}", line=line)
            )
            continue
        cells = {name: record[index].strip() for name, index in header.reserved.items()}
        data_cells = [(name, path, record[i].strip()) for i, name, path in header.data]
        row_events, row_problems = _build_row(
            cells, data_cells, line=line, now_ms=now_ms, tz=tz, budget=_ROW_BUDGET
        )
        problems += row_problems
        events += row_events
    if problems:
        # Good rows may still commission a product twice: report that in the same pass.
        problems += _commissioned_twice(events)
        problems.sort(key=lambda problem: problem.line or 0)
        raise BatchError(tuple(problems))
    return Batch(tuple(events))


def _read_records(text: str) -> tuple[list[tuple[int, list[str]]], list[InputError]]:
    """Return the records that are not skipped, each with its first line, and CSV problems."""
    reader = csv.reader(
        io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True, skipinitialspace=True
    )
    records: list[tuple[int, list[str]]] = []
    last_line = 0
    try:
        for record in reader:
            line = last_line + 1  # the record's first line: a quoted cell may span lines
            last_line = reader.line_num
            if not record or record[0].startswith("#") or all(c.strip() == "" for c in record):
                continue
            records.append((line, record))
    except csv.Error as exc:  # RFC 4180: a stray quote, or a cell over the csv module's limit
        return records, [InputError(f"not valid CSV ({exc})", line=reader.line_num)]
    return records, []


def _check_file_size(rows: Sequence[tuple[int, list[str]]], header: _Header) -> None:
    """Refuse a file naming more than MAX_FILE_PRODUCTS keys before expanding any of them."""
    column = header.reserved["products"]
    total = 0
    for line, record in rows:
        if column < len(record):
            total += sum(_count_keys(token) for token in record[column].split())
        if total > MAX_FILE_PRODUCTS:
            raise BatchError(
                (
                    InputError(
                        f"the file names more than {MAX_FILE_PRODUCTS} products by this row; "
                        "split it into several files",
                        line=line,
                        column="products",
                    ),
                )
            )


def _count_keys(token: str) -> int:
    """How many keys a token stands for (1 unless it holds a well-formed range)."""
    found = _RANGE.search(token)
    return 1 if found is None else max(1, int(found[2]) - int(found[1]) + 1)


def event_from_args(
    step: str,
    products: Sequence[str],
    *,
    parents: Sequence[str] = (),
    location: str | None = None,
    data: Sequence[str] = (),
    time: str = "",
    now_ms: int,
    tz: ZoneInfo,
) -> Batch:
    """Build the event(s) of ``agritrace gateway event`` from its arguments, by the file rules.

    ``products`` and ``parents`` are keys or ranges (each argument may hold several, separated
    by spaces); ``data`` holds ``name=value`` pairs, ``name`` as a data column name (dotted for
    nesting), ``value`` as a data cell; ``time`` as a time cell. More than 64 products make
    several events, as in a file.

    Raises :class:`~tracecore.errors.BatchError` listing every problem; the column of each is
    the argument's name (``step``, ``products``, ``data``, …) and the line is ``None``.
    """
    problems: list[InputError] = []
    names: list[str] = []
    values: list[str] = []
    for pair in data:
        name, sep, value = pair.partition("=")
        if not sep:
            problems.append(InputError(f"{_show(pair)} is not name=value", column="data"))
            continue
        if name.strip().lower() in RESERVED_COLUMNS:
            problems.append(
                InputError(
                    f"{_show(name.strip())} is not a data field: give it as its own argument",
                    column="data",
                )
            )
            continue
        names.append(name.strip())
        values.append(value.strip())
    header, reasons = _parse_header(["step", "products", *names])
    problems += [InputError(reason, column="data") for reason in reasons]
    if header is None or problems:
        raise BatchError(tuple(problems))
    cells = {
        "step": step.strip(),
        "products": " ".join(products),
        "parents": " ".join(parents),
        "location": (location or "").strip(),
        "time": time.strip(),
    }
    data_cells = [(name, path, values[i - 2]) for i, name, path in header.data]
    events, problems = _build_row(
        cells, data_cells, line=None, now_ms=now_ms, tz=tz, budget=_ROW_BUDGET
    )
    if problems:
        raise BatchError(tuple(problems))
    return Batch(tuple(events))
