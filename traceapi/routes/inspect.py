"""The inspector API: search, trace back and forward, and exports (inspector or admin token).

* ``GET /v1/products?party=&from=&to=&step=&place=&contract=&status=&recalled=&limit=&offset=``:
  products by owner, by creation time, having a record of a CBV business step or from a place
  within the time range, by contract result, recalled or not
  (:mod:`tracecore.storage.search`);
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

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from traceapi.access import note_parties
from traceapi.auth import Principal, authenticate
from traceapi.exports import (
    ExportTooLarge,
    attachment,
    epcis_body,
    export_story,
    kde_csv,
    kde_entries,
    kde_rows,
)
from traceapi.openapi import errors
from traceapi.paths import raw_product_key
from traceapi.schemas import MAX_INT64
from traceapi.state import scan_policy
from traceapi.views import CreditOut, party_credit
from tracecore.epcis import epcis_document
from tracecore.errors import AgritraceError, NotFound
from tracecore.identifiers import parse_party_id
from tracecore.message import BUSINESS_STEPS
from tracecore.storage.access import product_owners
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import descendants, lineage
from tracecore.storage.items import registered_product
from tracecore.storage.models import Party, Product, ProductParent
from tracecore.storage.search import ProductQuery
from tracecore.storage.search import search_products as find_products

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["inspection"])

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
    place: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="has a record signed at a place (of the device or its party) "
            "containing this text, case-insensitive; with step=, the same record",
        ),
    ] = None,
    contract: Annotated[
        str | None, Query(max_length=64, description="with a stored result of this contract")
    ] = None,
    outcome: Annotated[
        Literal["pass", "fail", "not_applicable"] | None,
        Query(alias="status", description="... with this status (with contract=)"),
    ] = None,
    recalled: Annotated[
        bool | None,
        Query(description="true: only products a scan calls recalled; false: only others"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> list[ProductRow]:
    """Find products by owner, time range and business step (inspector, admin, own party)."""
    party = _party_scope(principal, party)
    if step is not None and step not in BUSINESS_STEPS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown CBV step {step!r}")
    query = ProductQuery(
        owner=party,
        step=step,
        place=place,
        start_ms=start,
        end_ms=end,
        contract=contract,
        status=outcome,
        recalled=recalled,
        offset=offset,
        limit=limit,
    )
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        found = find_products(session, query)
    note_parties(request, *(p.owner for p in found.rows), *(p.holder for p in found.rows))
    return [
        ProductRow(key=p.key, owner=p.owner, created_ms=p.created_ms, holder=p.holder)
        for p in found.rows
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
    engine: Engine = request.app.state.engine
    entries = kde_entries(party, start, end)
    # By the party, or shipped to it (the destination is only in the message).
    with session_scope(engine) as session:
        try:
            shown: set[str] = set()

            def keep(by: str, to: str, _key: object) -> bool:
                """The rows of ``party`` (all without one); the parties in them are shown."""
                if party is not None and party not in (by, to):
                    return False
                shown.update(p for p in (by, to) if p)
                return True

            body = kde_csv(kde_rows(session, entries, keep))
        except ExportTooLarge as exc:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"{exc}: narrow the time range"
            ) from exc
    note_parties(request, *shown)
    return attachment(body, "text/csv; charset=utf-8", f"kde-{party or 'all'}.csv")


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
        exported = export_story(session, product, scan_policy(request))
    if exported is None or exported.story is None or exported.log_size is None:
        detail = "no verified evidence yet" if exported is None else exported.problem
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    try:
        document = epcis_document(
            exported.story, created_ms=now, verdict=exported.verdict, log_size=exported.log_size
        )
    except AgritraceError as exc:  # pragma: no cover - keys in a verified story parse
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return Response(epcis_body(document), media_type="application/ld+json")


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
