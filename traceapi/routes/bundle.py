"""``GET /v1/bundle/{key}``: a product's evidence bundle, to verify offline (docs/bundle.md)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import col, select

from contracts import evaluate_story
from traceapi.openapi import errors
from traceapi.paths import raw_product_key
from traceapi.schemas import MAX_INT64
from traceapi.state import scan_policy
from tracecore.bundle import Bundle, inspect_bundle_memo
from tracecore.storage.engine import session_scope
from tracecore.storage.evidence import build_bundle
from tracecore.storage.items import registered_product
from tracecore.storage.models import ContractResult
from tracecore.verdict import tell_story_memo

__all__ = ["router"]

router = APIRouter(tags=["log"])


class BundleEntryOut(BaseModel):
    """An entry of a bundle: its bytes, the device message, its inclusion proof (base64)."""

    index: int
    entry: str
    message: str | None
    proof: list[str] | None


class ConsistencyOut(BaseModel):
    """A consistency proof from the older tree size ``old`` to the bundle's checkpoint."""

    old: int
    proof: list[str]


class IndexOtherOut(BaseModel):
    """Another key's leaf that ends a proof of absence: its key and value hash (base64)."""

    key: str
    value_hash: str


class IndexProofOut(BaseModel):
    """A proof of presence (``value`` set) or absence (``value`` null) in the product index."""

    key: str = Field(description="the index key, base64 (docs/product-index.md)")
    value: str | None = Field(description="the key's value, deterministic CBOR in base64")
    siblings: list[str] = Field(description="sibling hashes from depth 1 down, base64")
    other: IndexOtherOut | None


class IndexOut(BaseModel):
    """Proofs from the product index whose root the ``index_root`` entry ``root`` holds."""

    root: int = Field(description="the log index of the index_root entry (in entries)")
    proofs: list[IndexProofOut]


class BundleOut(BaseModel):
    """An evidence bundle, ``agritrace-bundle/1`` (docs/bundle.md): for the OpenAPI document."""

    format: Literal["agritrace-bundle/1"]
    product: str = Field(description="the canonical product key")
    checkpoint: str = Field(description="the checkpoint, a C2SP signed note")
    entries: list[BundleEntryOut]
    consistency: ConsistencyOut | None = Field(default=None, description="with previous=")
    contracts: list[str] | None = Field(default=None, description="stored contract results")
    index: IndexOut | None = Field(
        default=None, description="product index proofs: completeness, recalls (docs/bundle.md)"
    )


def _size(bundle: Bundle) -> int:
    """The tree size of the bundle's checkpoint (its second line)."""
    return int(bundle.checkpoint.split("\n")[1])


@router.get(
    "/v1/bundle/{key:path}",
    response_class=Response,
    responses={
        200: {
            "model": BundleOut,
            "description": "the bundle, as a download (Content-Disposition: attachment)",
        },
        **errors(
            {
                400: "previous is beyond the checkpoint size",
                404: "no such product, or none of its entries is in a checkpoint yet",
                422: "the product key breaks a rule of docs/identifiers.md",
            }
        ),
    },
)
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
        # A code of the item in another form (with or without its lot) gets the registered
        # product's bundle; a code with a wrong lot gets none (tracecore.storage.items).
        product = registered_product(session, product)
        bundle = build_bundle(session, product, previous)
        stored = session.scalars(
            select(col(ContractResult.result))
            .where(
                col(ContractResult.product_key) == product.path,
                col(ContractResult.log_size) <= _size(bundle),
            )
            .order_by(col(ContractResult.contract))
        ).all()
    # The stored contract results travel with the evidence; the verifier re-runs each one at
    # the log size it records. Before the evaluator has run, the results of this checkpoint.
    results = tuple(bytes(r) for r in stored)
    if not results:
        inspection = inspect_bundle_memo(bundle, scan_policy(request))
        if inspection.report.ok:
            story = tell_story_memo(product.path, inspection)
            fresh = evaluate_story(story, inspection.report.size)
            results = tuple(r.to_bytes() for r in fresh)
    bundle = dataclasses.replace(bundle, contracts=results)
    filename = product.path.replace("/", "_").replace("%", "")
    return Response(
        bundle.to_json(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="agritrace-{filename}.json"',
            "Cache-Control": "no-cache",
        },
    )
