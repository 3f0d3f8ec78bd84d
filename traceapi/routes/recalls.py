"""``POST /v1/recalls``: an inspector (or the admin) recalls a product and all made from it.

A recall is a log entry (design.md), so the recall itself is tamper-evident and travels in
evidence bundles. The public verdict ``recalled`` for the product and its descendants is
derived from these entries at scan time. :func:`record_recall` appends one; the console's
recall form (traceapi/console/dossier.py) calls it too.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from traceapi.access import note_parties
from traceapi.auth import Principal, authenticate, forbidden
from traceapi.openapi import errors
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall
from tracecore.storage.access import product_owners
from tracecore.storage.engine import session_scope
from tracecore.storage.items import registered_product
from tracecore.storage.logwriter import append_registry_entry, log_session

__all__ = [
    "REASON_MAX",
    "ReasonRefused",
    "RecallIn",
    "RecallOut",
    "recaller",
    "record_recall",
    "router",
]

#: The longest recall reason (characters, after surrounding blanks are dropped).
REASON_MAX: Final = 1000

router = APIRouter(prefix="/v1", tags=["inspection"])


class ReasonRefused(ValueError):
    """A recall's reason is blank or longer than :data:`REASON_MAX` characters."""


class RecallIn(BaseModel):
    """Body of ``POST /v1/recalls``."""

    model_config = ConfigDict(extra="forbid")

    product: str = Field(description="product key (Digital Link path), e.g. a lot")
    reason: str = Field(min_length=1, max_length=REASON_MAX)


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
    engine: Engine = request.app.state.engine
    product = ProductKey.parse(body.product)
    try:
        recalled = record_recall(
            engine,
            product,
            body.reason,
            by=recaller(principal.party_id),
            now_ms=request.app.state.clock(),
        )
    except ReasonRefused as exc:  # a reason of blanks only
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    with session_scope(engine) as session:
        note_parties(request, *product_owners(session, {recalled.product}))
    return recalled


def recaller(party_id: str | None) -> str:
    """Who a recall names as recalling: the inspection party, or ``admin`` for the admin."""
    return party_id if party_id is not None else "admin"


def record_recall(
    engine: Engine, product: ProductKey, reason: str, *, by: str, now_ms: int
) -> RecallOut:
    """Append a recall of ``product`` (either spelling of a serialized item) to the log.

    The reason is stripped of surrounding blanks and must then hold 1 to :data:`REASON_MAX`
    characters (:class:`ReasonRefused` otherwise); an unknown product raises
    :class:`~tracecore.errors.NotFound`. The caller has checked that ``by`` may recall.
    """
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX:
        raise ReasonRefused(f"the reason must hold 1 to {REASON_MAX} characters besides blanks")
    with log_session(engine) as session:
        # The recall names the registered key: bundles match recalls by key, so a recall of
        # another form of an item's code would not reach it (tracecore.storage.items).
        product = registered_product(session, product)
        index = append_registry_entry(session, Recall((product,), reason, by, now_ms), now_ms)
    return RecallOut(index=index, product=product.path, reason=reason, by=by, time_ms=now_ms)
