"""The exports inspectors take away: the key data elements spreadsheet and EPCIS 2.0 documents.

Shared by the inspector API (``/v1/export/...``, :mod:`traceapi.routes.inspect`) and the
console's exports of a search (:mod:`traceapi.console.search`); docs/inspection.md describes
both formats.

* :func:`kde_rows` turns stored business events into spreadsheet rows (one per event and
  product), :func:`kde_csv` writes them as UTF-8 CSV with a byte-order mark;
* :func:`export_story` is a product's verified story and its scan verdict, what an EPCIS
  document is made of (:mod:`tracecore.epcis`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import Response
from sqlalchemy import or_
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from tracecore.bundle import Policy, parse_message_cached
from tracecore.identifiers import ProductKey
from tracecore.message import Event
from tracecore.storage.models import ChainLink, Device, LogEntry
from tracecore.storage.trace import assess_product
from tracecore.verdict import Story, decide

__all__ = [
    "KDE_COLUMNS",
    "MAX_EXPORT_ROWS",
    "ExportTooLarge",
    "ExportedStory",
    "attachment",
    "epcis_body",
    "export_story",
    "kde_csv",
    "kde_entries",
    "kde_entries_of",
    "kde_rows",
    "spreadsheet_text",
]

#: The most rows one spreadsheet holds.
MAX_EXPORT_ROWS: Final = 100_000
KDE_COLUMNS: Final = (
    "event_time_utc",
    "business_step",
    "traceability_lot",
    "product",
    "gtin",
    "lot",
    "serial",
    "quantity",
    "unit",
    "location",
    "from_party",
    "to_party",
    "parents",
    "device",
    "log_index",
)

_QUANTITY_FIELDS: Final = (
    ("count", "EA"),
    ("eggs_per_case", "EA"),
    ("net_kg", "KGM"),
    ("hot_carcass_kg", "KGM"),
)

# OWASP "CSV Injection": a cell starting with one of these is a formula to Excel, LibreOffice
# and Google Sheets (=HYPERLINK(...) from a device's location would be live). "'" is added
# so that the one quote put in front is always the one to remove (docs/inspection.md).
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r", "'")

#: Which rows a spreadsheet keeps: ``keep(from_party, to_party, product)``.
Keep = Callable[[str, str, ProductKey], bool]


class ExportTooLarge(Exception):
    """An export would hold more than it may; the message says how many and what to do."""


def spreadsheet_text(value: str) -> str:
    """Return ``value`` safe as a spreadsheet text cell: prefixed with ``'`` when it could be
    read as a formula.

    A value starting with ``= + - @``, TAB or CR (OWASP CSV injection guidance), or with ``'``
    itself, gets one ``'`` in front; anything else is unchanged. The exact value is the cell
    without its first character when that is ``'``. Numbers are not passed through here: a
    numeric column keeps ``-3.5`` a number.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


def kde_entries(party: str | None, start: int | None, end: int | None) -> Select[LogEntry, str]:
    """The stored messages in ``[start, end)`` (device time) that ``party`` signed or that may
    have been shipped to it (a shipping's destination is only in the message: ``keep`` it)."""
    query = select(LogEntry, Device.party_id).join(
        Device, col(Device.id) == col(LogEntry.device_id)
    )
    if start is not None:
        query = query.where(col(LogEntry.time_ms) >= start)
    if end is not None:
        query = query.where(col(LogEntry.time_ms) < end)
    if party is not None:
        query = query.where(or_(col(Device.party_id) == party, col(LogEntry.step) == "shipping"))
    return query


def kde_entries_of(products: Iterable[str]) -> Select[LogEntry, str]:
    """The stored messages in the chains of ``products`` (each once)."""
    linked = select(col(ChainLink.log_index)).where(col(ChainLink.product_key).in_(list(products)))
    return (
        select(LogEntry, Device.party_id)
        .join(Device, col(Device.id) == col(LogEntry.device_id))
        .where(col(LogEntry.index).in_(linked))
    )


def kde_rows(session: Session, entries: Select[LogEntry, str], keep: Keep) -> Iterator[list[Any]]:
    """One row per (business event, product) of ``entries`` that ``keep`` keeps, in time order:
    the key data elements, from the stored device messages.

    Raises :class:`ExportTooLarge` past :data:`MAX_EXPORT_ROWS` rows.
    """
    query = entries.where(col(LogEntry.step).is_not(None))
    query = query.order_by(col(LogEntry.time_ms), col(LogEntry.index)).limit(MAX_EXPORT_ROWS + 1)
    count = 0
    for entry, device_party in session.exec(query):
        if entry.raw is None:
            continue
        message = parse_message_cached(entry.raw).message
        if not isinstance(message, Event):
            continue
        data = dict(message.data or {})
        destination = data.get("destination")
        to_party = destination if isinstance(destination, str) else ""
        quantity, unit = "", ""
        for name, uom in _QUANTITY_FIELDS:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                quantity, unit = str(value), uom
                break
        for key in message.products:
            if not keep(device_party, to_party, key):
                continue
            count += 1
            if count > MAX_EXPORT_ROWS:
                raise ExportTooLarge(f"more than {MAX_EXPORT_ROWS} rows")
            # Text from devices goes through spreadsheet_text; quantity and log_index are
            # numbers (from int/float only) and stay numbers, "-3.5" included.
            text = [
                _iso(message.time),
                message.step,
                f"{key.gtin}/{key.lot}" if key.lot is not None else "",
                key.path,
                key.gtin,
                key.lot or "",
                key.serial or "",
            ]
            more = [
                message.location or "",
                device_party,
                to_party,
                " ".join(p.path for p in message.parents),
                message.device,
            ]
            yield [
                *(spreadsheet_text(cell) for cell in text),
                quantity,
                unit,
                *(spreadsheet_text(cell) for cell in more),
                entry.index,
            ]


def kde_csv(rows: Iterable[list[Any]]) -> bytes:
    """The spreadsheet of ``rows``: UTF-8 with a byte-order mark, RFC 4180, a header row."""
    buffer = io.StringIO()
    buffer.write("\ufeff")  # the BOM makes spreadsheet programs read the Chinese text as UTF-8
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 §2
    writer.writerow(KDE_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def attachment(
    body: bytes, media_type: str, filename: str, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` as a file to save, named ``filename`` (ASCII)."""
    return Response(
        body,
        media_type=media_type,
        headers={**(headers or {}), "Content-Disposition": f'attachment; filename="{filename}"'},
    )


def epcis_body(document: Mapping[str, Any]) -> bytes:
    """An EPCIS document as the bytes of an answer (UTF-8, Chinese text as it is)."""
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


@dataclass(frozen=True, slots=True)
class ExportedStory:
    """A product's verified story, its scan verdict and the log size it was verified at;
    ``story`` None (and ``problem`` set) when there is no evidence to export."""

    product: str
    story: Story | None
    verdict: str
    log_size: int | None
    problem: str | None = None


def export_story(session: Session, product: ProductKey, policy: Policy) -> ExportedStory | None:
    """What an EPCIS export of ``product`` holds, as its scan checks it now (None: unknown).

    A product not in a signed checkpoint yet has verdict ``pending``; evidence that cannot be
    assembled is ``integrity_failure``; both without a story.
    """
    assessment = assess_product(session, product, policy)
    if assessment is None:
        return None
    if assessment.story is None or assessment.inspection is None:
        if assessment.pending is not None:
            return ExportedStory(product.path, None, "pending", None, assessment.pending)
        problem = "the stored evidence does not verify"
        return ExportedStory(product.path, None, "integrity_failure", None, problem)
    verdict = decide(assessment.checks, assessment.story, suspect_copy=False)
    size = assessment.inspection.report.size
    return ExportedStory(product.path, assessment.story, verdict.value, size)
