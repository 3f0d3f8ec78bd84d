"""Buyer feedback: ``POST /v1/feedback/{key}`` (public, rate-limited) and ``GET /v1/feedback``.

A buyer rates a product 1-5 and may add a complaint. The body is JSON, or the URL-encoded form
of the product page (which then gets a 303 back to the page, so it works without JavaScript).
Each client (a keyed hash of its address, as for scans) may send
``AGRITRACE_FEEDBACK_PER_HOUR`` submissions an hour; more are 429 with ``Retry-After``.
Inspectors and the admin read all feedback; a party token reads the feedback on its own
products.
"""

from __future__ import annotations

import json
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy import Engine
from sqlmodel import col, select

from traceapi.access import note_parties
from traceapi.auth import Principal, authenticate
from traceapi.limits import FORM_MAX_BODY
from traceapi.openapi import errors
from traceapi.paths import raw_product_key
from traceapi.state import client_address, scan_salt
from tracecore.identifiers import ProductKey, parse_party_id
from tracecore.settings import Settings
from tracecore.storage.access import product_owners
from tracecore.storage.engine import session_scope
from tracecore.storage.items import find_product, registered_product
from tracecore.storage.models import Feedback, Product
from tracecore.storage.trace import client_hash, feedback_count_since

__all__ = ["FeedbackIn", "FeedbackOut", "read_feedback_form", "router", "store_feedback"]

router = APIRouter(prefix="/v1", tags=["feedback"])

_HOUR_MS: Final = 3_600_000
# The body limit middleware refuses larger bodies while they stream in; this check stays for
# an app mounted without it (docs/operations.md, "Request limits").
_MAX_BODY: Final = FORM_MAX_BODY


class FeedbackIn(BaseModel):
    """A rating and an optional complaint."""

    model_config = ConfigDict(extra="forbid")

    rating: StrictInt = Field(ge=1, le=5)
    complaint: str | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    """A stored rating or complaint."""

    id: int
    product: str
    rating: int
    complaint: str | None
    time_ms: int


def _out(row: Feedback) -> FeedbackOut:
    assert row.id is not None  # noqa: S101 (stored rows have ids)
    return FeedbackOut(
        id=row.id,
        product=row.product_key,
        rating=row.rating,
        complaint=row.complaint,
        time_ms=row.at_ms,
    )


_INVALID: Final = "rating must be an integer 1-5; complaint at most 2000 characters"


async def read_feedback_form(request: Request) -> tuple[FeedbackIn, str, dict[str, list[str]]]:
    """Parse a URL-encoded feedback form: the feedback, the page language, every field."""
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the body is too large")
    try:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        complaint = (form.get("complaint") or [""])[0].strip() or None
        rating = (form.get("rating") or [""])[0]
        lang = (form.get("lang") or [""])[0]
        body = FeedbackIn(rating=int(rating) if rating.isdigit() else 0, complaint=complaint)
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _INVALID) from exc
    return body, lang if lang in ("zh", "en") else "zh", form


async def _read_body(request: Request) -> tuple[FeedbackIn, str | None]:
    """Parse the JSON or form body; return it and the page language of a form post."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body, lang, _ = await read_feedback_form(request)
        return body, lang
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the body is too large")
    try:
        return FeedbackIn.model_validate(json.loads(raw)), None
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _INVALID) from exc


def store_feedback(request: Request, product: ProductKey, body: FeedbackIn) -> FeedbackOut | None:
    """Store a buyer's feedback on ``product``; None when the client is over its hourly limit.

    Raises NotFound for a product nobody registered (or a code with another lot than the
    registered item's, :func:`tracecore.storage.items.find_product`).
    """
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    client = client_hash(scan_salt(request), client_address(request))
    with session_scope(engine) as session:
        # Stored for the registered product, whichever form of an item's code was used.
        product = registered_product(session, product)
        if feedback_count_since(session, client, now - _HOUR_MS) >= settings.feedback_per_hour:
            return None
        row = Feedback(
            product_key=product.path,
            rating=body.rating,
            complaint=body.complaint,
            client=client,
            at_ms=now,
        )
        session.add(row)
        session.flush()
        return _out(row)


@router.post(
    "/feedback/{key:path}",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackOut,
    responses={
        303: {
            "description": "a form post: back to the product page",
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
        },
        **errors({404: "no such product", 422: "a bad product key, rating or complaint"}),
        429: {
            **errors({429: "too many submissions from this client this hour (JSON posts only)"})[
                429
            ],
            "headers": {"Retry-After": {"required": True, "schema": {"type": "integer"}}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": FeedbackIn.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": FeedbackIn.model_json_schema()},
            },
        }
    },
)
async def post_feedback(key: str, request: Request) -> Response:  # noqa: ARG001 (raw path)
    """Rate a product 1-5 with an optional complaint (public, rate-limited per client)."""
    product = raw_product_key(request, "/v1/feedback/")
    body, form_lang = await _read_body(request)
    settings: Settings = request.app.state.settings
    page = f"/{product.path}?lang={form_lang}&feedback="
    out = store_feedback(request, product, body)
    if out is None:
        if form_lang is not None:
            return RedirectResponse(page + "limited", status.HTTP_303_SEE_OTHER)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"at most {settings.feedback_per_hour} submissions an hour",
            headers={"Retry-After": "3600"},
        )
    if form_lang is not None:
        return RedirectResponse(page + "thanks", status.HTTP_303_SEE_OTHER)
    return Response(out.model_dump_json(), status.HTTP_201_CREATED, media_type="application/json")


@router.get("/feedback", responses=errors({422: "a bad product key or party id"}))
def list_feedback(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(authenticate)],
    product: Annotated[str | None, Query(description="one product key")] = None,
    party: Annotated[str | None, Query(description="products owned by this party")] = None,
    complaints: Annotated[bool, Query(description="only entries with a complaint")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FeedbackOut]:
    """Ratings and complaints, newest first (inspector, admin, or the owning party)."""
    if party is not None:
        party = parse_party_id(party)  # IdentifierError: 422 naming the rule
    if principal.role == "party":
        if party not in (None, principal.party_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a party reads its own feedback only")
        party = principal.party_id
    query = select(Feedback)
    engine: Engine = request.app.state.engine
    if product is not None:
        key = ProductKey.parse(product)
        with session_scope(engine) as session:  # either form of a serialized item's code
            key = find_product(session, key).product or key
        query = query.where(col(Feedback.product_key) == key.path)
    if party is not None:
        owned = select(col(Product.key)).where(col(Product.owner_party_id) == party)
        query = query.where(col(Feedback.product_key).in_(owned))
    if complaints:
        query = query.where(col(Feedback.complaint).is_not(None))
    query = query.order_by(col(Feedback.at_ms).desc(), col(Feedback.id).desc()).limit(limit)
    with session_scope(engine) as session:
        rows = session.exec(query).all()
        note_parties(request, *product_owners(session, {row.product_key for row in rows}))
        return [_out(row) for row in rows]
