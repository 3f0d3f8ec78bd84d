"""``GET /v1/bundle/{key}``: a product's evidence bundle, to verify offline (docs/bundle.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Engine

from traceapi.paths import raw_product_key
from traceapi.schemas import MAX_INT64
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import build_bundle

__all__ = ["router"]

router = APIRouter(tags=["log"])


@router.get("/v1/bundle/{key:path}", response_class=Response)
def get_bundle(
    key: str,  # noqa: ARG001 (parsed from the raw path, escapes intact)
    request: Request,
    previous: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_INT64, description="include a consistency proof from this older tree size"
        ),
    ] = None,
) -> Response:
    """The product's evidence bundle (agritrace-bundle/1), as a JSON download."""
    product = raw_product_key(request, "/v1/bundle/")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        bundle = build_bundle(session, product, previous)
    filename = product.path.replace("/", "_").replace("%", "")
    return Response(
        bundle.to_json(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="agritrace-{filename}.json"',
            "Cache-Control": "no-cache",
        },
    )
