"""``POST /v1/recalls``: an inspector (or the admin) recalls a product and all made from it.

A recall is a log entry (design.md), so the recall itself is tamper-evident and travels in
evidence bundles. The public verdict ``recalled`` for the product and its descendants is
derived from these entries at scan time.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from traceapi.access import note_parties
from traceapi.auth import Principal, authenticate, forbidden
from traceapi.openapi import errors
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall
from tracecore.storage.access import product_owners
from tracecore.storage.items import registered_product
from tracecore.storage.logwriter import append_registry_entry, log_session

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["inspection"])


class RecallIn(BaseModel):
    """Body of ``POST /v1/recalls``."""

    model_config = ConfigDict(extra="forbid")

    product: str = Field(description="product key (Digital Link path), e.g. a lot")
    reason: str = Field(min_length=1, max_length=1000)


class RecallOut(BaseModel):
    """A recorded recall and the log index of its entry."""

    index: int
    product: str
    reason: str
    by: str
    time_ms: int


def require_inspector(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Allow the admin and inspector tokens."""
    if principal.role not in ("admin", "inspector"):
        raise forbidden("only inspectors and the admin may recall products")
    return principal


@router.post(
    "/recalls", status_code=status.HTTP_201_CREATED, responses=errors({404: "no such product"})
)
def post_recall(
    body: RecallIn,
    request: Request,
    principal: Annotated[Principal, Depends(require_inspector)],
) -> RecallOut:
    """Recall a product and everything made from it (inspector or admin)."""
    product = ProductKey.parse(body.product)
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    by = principal.party_id if principal.party_id is not None else "admin"
    reason = body.reason.strip()
    with log_session(engine) as session:
        # The recall names the registered key: bundles match recalls by key, so a recall of
        # another form of an item's code would not reach it (tracecore.storage.items).
        product = registered_product(session, product)
        note_parties(request, *product_owners(session, {product.path}))
        index = append_registry_entry(session, Recall((product,), reason, by, now), now)
    return RecallOut(index=index, product=product.path, reason=reason, by=by, time_ms=now)
