"""The inspector API: search, trace back and forward, and exports (inspector or admin token).

* ``GET /v1/products?party=&from=&to=&step=&limit=&offset=``: products by owner, by creation
  time, or having an event of a CBV business step within the time range;
* ``GET /v1/lineage/{key}?direction=back|forward|both&depth=1|all``: one step back (parents),
  one step forward (children), or the full lineage;
* ``GET /v1/export/kde.csv?party=&from=&to=``: the key data elements of every business event
  by or to a party in a time range, one row an event, as a spreadsheet (UTF-8 CSV with BOM,
  ISO 8601 UTC times so that sorting by text sorts by time); each row names its log index;
* ``GET /v1/export/epcis/{key}``: the product's verified story as an EPCIS 2.0 JSON-LD document;
* ``GET /v1/parties/{id}/credit?days=``: a producer's credit score, deduction by deduction.

A party token may use them for its own products only (``party`` defaults to, and must be, its
own; the lineage and EPCIS of another party's product are 403).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from traceapi.access import note_parties
from traceapi.auth import Principal, authenticate
from traceapi.openapi import errors
from traceapi.paths import raw_product_key
from traceapi.schemas import MAX_INT64
from traceapi.state import scan_policy
from traceapi.views import CreditOut, party_credit
from tracecore.bundle import parse_message_cached
from tracecore.epcis import epcis_document
from tracecore.errors import AgritraceError, NotFound
from tracecore.identifiers import parse_party_id
from tracecore.message import BUSINESS_STEPS, Event
from tracecore.storage.access import product_owners
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import descendants, lineage
from tracecore.storage.items import registered_product
from tracecore.storage.models import (
    ChainLink,
    ContractResult,
    Device,
    LogEntry,
    Party,
    Product,
    ProductParent,
)
from tracecore.storage.trace import assess_product
from tracecore.verdict import decide

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["inspection"])

_MAX_EXPORT_ROWS: Final = 100_000
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


From = Annotated[
    int | None, Query(alias="from", ge=0, le=MAX_INT64, description="ms since the Unix epoch")
]
To = Annotated[
    int | None,
    Query(alias="to", ge=0, le=MAX_INT64, description="ms since the Unix epoch, excluded"),
]


def _auditor(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid token; what a party token sees is narrowed by each route."""
    return principal


def _party_scope(principal: Principal, party: str | None) -> str | None:
    """The party filter in force: a party token is held to its own party."""
    if party is not None:
        party = parse_party_id(party)  # IdentifierError: 422 naming the rule
    if principal.role != "party":
        return party
    if party not in (None, principal.party_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a party sees its own products only")
    return principal.party_id


def _may_see(session: Session, principal: Principal, key: str) -> None:
    product = session.get(Product, key)
    if product is None:
        raise NotFound(f"no product {key}")
    if principal.role == "party" and product.owner_party_id != principal.party_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a party sees its own products only")


class ProductRow(BaseModel):
    """A product found by a search."""

    key: str
    owner: str
    created_ms: int
    holder: str | None


@router.get("/products", responses=errors({422: "a bad party id, CBV step or parameter"}))
def search_products(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(_auditor)],
    party: Annotated[str | None, Query(description="owning party id")] = None,
    start: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_INT64, description="ms since epoch")
    ] = None,
    end: Annotated[
        int | None, Query(alias="to", ge=0, le=MAX_INT64, description="ms since epoch")
    ] = None,
    step: Annotated[str | None, Query(description="has an event of this CBV step")] = None,
    contract: Annotated[
        str | None, Query(max_length=64, description="with a stored result of this contract")
    ] = None,
    outcome: Annotated[
        Literal["pass", "fail", "not_applicable"] | None,
        Query(alias="status", description="... with this status (with contract=)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> list[ProductRow]:
    """Find products by owner, time range and business step (inspector, admin, own party)."""
    party = _party_scope(principal, party)
    if step is not None and step not in BUSINESS_STEPS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown CBV step {step!r}")
    query = select(Product)
    if party is not None:
        query = query.where(col(Product.owner_party_id) == party)
    if step is not None:
        events = (
            select(col(ChainLink.product_key))
            .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
            .where(col(LogEntry.step) == step)
        )
        if start is not None:
            events = events.where(col(LogEntry.time_ms) >= start)
        if end is not None:
            events = events.where(col(LogEntry.time_ms) < end)
        query = query.where(col(Product.key).in_(events))
    else:
        if start is not None:
            query = query.where(col(Product.created_ms) >= start)
        if end is not None:
            query = query.where(col(Product.created_ms) < end)
    if contract is not None or outcome is not None:
        judged = select(col(ContractResult.product_key))
        if contract is not None:
            judged = judged.where(col(ContractResult.contract) == contract)
        if outcome is not None:
            judged = judged.where(col(ContractResult.status) == outcome)
        query = query.where(col(Product.key).in_(judged))
    query = query.order_by(col(Product.created_ms), col(Product.key)).offset(offset).limit(limit)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        return [
            ProductRow(
                key=p.key, owner=p.owner_party_id, created_ms=p.created_ms, holder=p.holder_party_id
            )
            for p in session.exec(query).all()
        ]


class LineageOut(BaseModel):
    """Products one step (or all steps) back and forward of a product."""

    product: str
    back: list[str] = Field(description="parents, or all ancestors with depth=all")
    forward: list[str] = Field(description="children, or all descendants with depth=all")


@router.get(
    "/lineage/{key:path}",
    responses=errors(
        {
            404: "no such product, or a lineage too large to answer",
            422: "the product key breaks a rule of docs/identifiers.md",
        }
    ),
)
def get_lineage(
    key: str,  # noqa: ARG001 (parsed from the raw path, escapes intact)
    request: Request,
    *,
    principal: Annotated[Principal, Depends(_auditor)],
    direction: Literal["back", "forward", "both"] = "both",
    depth: Literal["1", "all"] = "1",
) -> LineageOut:
    """Trace a product one step or all the way back and forward (inspector, admin, owner)."""
    product = raw_product_key(request, "/v1/lineage/")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        product = registered_product(session, product)  # either form of a serialized item
        _may_see(session, principal, product.path)
        back: list[str] = []
        forward: list[str] = []
        if direction in ("back", "both"):
            if depth == "all":
                back = lineage(session, product.path)[1:]
            else:
                back = sorted(
                    session.scalars(
                        select(col(ProductParent.parent_key)).where(
                            col(ProductParent.product_key) == product.path
                        )
                    ).all()
                )
        if direction in ("forward", "both"):
            if depth == "all":
                forward = descendants(session, [product.path])
            else:
                forward = sorted(
                    session.scalars(
                        select(col(ProductParent.product_key)).where(
                            col(ProductParent.parent_key) == product.path
                        )
                    ).all()
                )
        note_parties(request, *product_owners(session, {product.path, *back, *forward}))
    return LineageOut(product=product.path, back=back, forward=forward)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
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


def _spreadsheet_text(value: str) -> str:
    """Return ``value`` safe as a spreadsheet text cell: prefixed with ``'`` when it could be
    read as a formula.

    A value starting with ``= + - @``, TAB or CR (OWASP CSV injection guidance), or with ``'``
    itself, gets one ``'`` in front; anything else is unchanged. The exact value is the cell
    without its first character when that is ``'``. Numbers are not passed through here: a
    numeric column keeps ``-3.5`` a number.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _kde_rows(
    session: Session, party: str | None, start: int | None, end: int | None
) -> Iterator[list[Any]]:
    """One row per (event, product): the key data elements, from the stored device messages."""
    query = select(LogEntry, Device.party_id).join(
        Device, col(Device.id) == col(LogEntry.device_id)
    )
    query = query.where(col(LogEntry.step).is_not(None))
    if start is not None:
        query = query.where(col(LogEntry.time_ms) >= start)
    if end is not None:
        query = query.where(col(LogEntry.time_ms) < end)
    if party is not None:
        # By the party, or shipped to it (the destination is only in the message: match after).
        query = query.where(or_(col(Device.party_id) == party, col(LogEntry.step) == "shipping"))
    query = query.order_by(col(LogEntry.time_ms), col(LogEntry.index)).limit(_MAX_EXPORT_ROWS + 1)
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
        if party is not None and party not in (device_party, to_party):
            continue
        quantity, unit = "", ""
        for name, uom in _QUANTITY_FIELDS:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                quantity, unit = str(value), uom
                break
        for key in message.products:
            count += 1
            if count > _MAX_EXPORT_ROWS:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"more than {_MAX_EXPORT_ROWS} rows: narrow the time range",
                )
            # Text from devices goes through _spreadsheet_text; quantity and log_index are
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
                *(_spreadsheet_text(cell) for cell in text),
                quantity,
                unit,
                *(_spreadsheet_text(cell) for cell in more),
                entry.index,
            ]


@router.get(
    "/export/kde.csv",
    response_class=Response,
    responses={
        200: {
            "description": "the spreadsheet (UTF-8 with BOM, RFC 4180)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **errors(
            {413: "more rows than one export holds: narrow the time range", 422: "a bad party id"}
        ),
    },
)
def export_kde(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(_auditor)],
    party: Annotated[str | None, Query(description="events by or shipped to this party")] = None,
    start: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_INT64, description="ms since epoch")
    ] = None,
    end: Annotated[
        int | None, Query(alias="to", ge=0, le=MAX_INT64, description="ms since epoch")
    ] = None,
) -> Response:
    """Key data elements of every business event, as a CSV spreadsheet (inspector, admin)."""
    party = _party_scope(principal, party)
    buffer = io.StringIO()
    buffer.write("\ufeff")  # the BOM makes spreadsheet programs read the Chinese text as UTF-8
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 §2
    writer.writerow(KDE_COLUMNS)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        for row in _kde_rows(session, party, start, end):
            writer.writerow(row)
    name = f"kde-{party or 'all'}.csv"
    return Response(
        buffer.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/export/epcis/{key:path}",
    response_class=Response,
    responses={
        200: {
            "description": "an EPCIS 2.0 document (JSON-LD)",
            "content": {"application/ld+json": {"schema": {"type": "object"}}},
        },
        **errors(
            {
                404: "no such product",
                409: "the product has no verified evidence yet, or its evidence does not verify",
                422: "the product key breaks a rule of docs/identifiers.md",
            }
        ),
    },
)
def export_epcis(
    key: str,  # noqa: ARG001 (parsed from the raw path, escapes intact)
    request: Request,
    *,
    principal: Annotated[Principal, Depends(_auditor)],
) -> Response:
    """The product's verified story as an EPCIS 2.0 JSON-LD document (inspector, admin, owner)."""
    product = raw_product_key(request, "/v1/export/epcis/")
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    with session_scope(engine) as session:
        product = registered_product(session, product)  # either form of a serialized item
        _may_see(session, principal, product.path)
        note_parties(request, *product_owners(session, {product.path}))
        assessment = assess_product(session, product, scan_policy(request))
    if assessment is None or assessment.story is None or assessment.inspection is None:
        detail = (
            "no verified evidence yet"
            if assessment is None
            else (assessment.pending or "the stored evidence does not verify")
        )
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    verdict = decide(assessment.checks, assessment.story, suspect_copy=False)
    size = assessment.inspection.report.size
    try:
        document = epcis_document(
            assessment.story, created_ms=now, verdict=verdict.value, log_size=size
        )
    except AgritraceError as exc:  # pragma: no cover - keys in a verified story parse
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return Response(
        json.dumps(document, ensure_ascii=False, indent=1),
        media_type="application/ld+json",
    )


@router.get(
    "/parties/{party_id}/credit",
    responses=errors({404: "no such party", 422: "a bad party id or window"}),
)
def get_credit(
    party_id: str,
    request: Request,
    *,
    principal: Annotated[Principal, Depends(_auditor)],
    days: Annotated[int, Query(ge=1, le=3660, description="the window, in days")] = 90,
) -> CreditOut:
    """A producer's credit score, explained (inspector, admin, or the party itself)."""
    party = parse_party_id(party_id)
    if principal.role == "party" and principal.party_id != party:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a party sees its own score only")
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    with session_scope(engine) as session:
        if session.get(Party, party) is None:
            raise NotFound(f"no party {party}")
        note_parties(request, party)
        return party_credit(session, party, now, days)
