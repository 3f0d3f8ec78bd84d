"""Operations routes: rejected messages, device sequence gaps, Prometheus metrics.

``GET /v1/admin/rejections`` (admin) lists refused device messages with their raw bytes, so an
operator can see exactly what a device sent and why it was refused (design.md: nothing is dropped
silently). ``GET /v1/devices/{id}/gaps`` (admin or the owning party) shows which sequence numbers
have not arrived. ``GET /metrics`` exposes counters computed from the database, so they are the
same whichever process serves them and survive restarts.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import Engine

from traceapi.access import note_parties
from traceapi.auth import Principal, forbidden, require_admin, require_admin_or_party
from traceapi.health import DB_UP_HELP, EXPOSITION, ingest_metrics, metric_lines
from traceapi.openapi import errors
from traceapi.schemas import MAX_INT64
from tracecore.errors import DatabaseUnavailable, RejectReason
from tracecore.identifiers import parse_device_id
from tracecore.storage.access import device_parties
from tracecore.storage.engine import session_scope
from tracecore.storage.queries import (
    MAX_LIST,
    device_gaps,
    list_rejections,
    log_stats,
    rejection_counts,
)
from tracecore.storage.registry import get_device

__all__ = ["router"]

router = APIRouter(tags=["operations"])


class RejectionOut(BaseModel):
    """A refused device message."""

    id: int
    reason: str
    detail: str
    topic: str
    device: str | None
    seq: int | None
    received_ms: int
    raw: str
    raw_size: int
    # docs/operations.md: ``raw`` is whole unless the reason is too_large (then a prefix);
    # these always describe the whole payload and every arrival of it.
    raw_length: int
    raw_sha256: str
    received_count: int
    last_received_ms: int


class GapsOut(BaseModel):
    """The sequence numbers of a device that have not arrived, as inclusive ranges."""

    device: str
    gaps: list[tuple[int, int]]
    missing: int


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/v1/admin/rejections")
def get_rejections(
    request: Request,
    _admin: Annotated[Principal, Depends(require_admin)],
    reason: RejectReason | None = None,
    device: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_INT64, description="page: ids below this")
    ] = None,
) -> list[RejectionOut]:
    """List refused messages, newest first, with raw bytes in base64 (admin only)."""
    with session_scope(_engine(request)) as session:
        rows = list_rejections(
            session, reason=reason, device_id=device, limit=limit, before_id=before
        )
        note_parties(request, *device_parties(session, {r.device_id for r in rows if r.device_id}))
        return [
            RejectionOut(
                id=row.id or 0,
                reason=row.reason,
                detail=row.detail,
                topic=row.topic,
                device=row.device_id,
                seq=row.seq,
                received_ms=row.received_ms,
                raw=base64.b64encode(row.raw).decode("ascii"),
                raw_size=len(row.raw),
                raw_length=row.raw_length,
                raw_sha256=row.raw_sha256.hex(),
                received_count=row.received_count,
                last_received_ms=row.last_received_ms,
            )
            for row in rows
        ]


@router.get("/v1/devices/{device_id}/gaps", responses=errors({404: "no such device"}))
def get_gaps(
    device_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_admin_or_party)],
) -> GapsOut:
    """Show the sequence numbers of a device missing from the log (admin or the owner)."""
    device_id = parse_device_id(device_id)
    with session_scope(_engine(request)) as session:
        device = get_device(session, device_id)
        if not principal.may_act_for(device.party_id):
            raise forbidden("this device belongs to another party")
        note_parties(request, device.party_id)
        gaps = device_gaps(session, device_id)
    return GapsOut(device=device_id, gaps=gaps, missing=sum(b - a + 1 for a, b in gaps))


@router.get("/metrics", response_class=PlainTextResponse)
def get_metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: log size, checkpoint, parked messages, rejections, ingest state."""
    ingest = ingest_metrics(request.app.state.ingest)
    try:
        with session_scope(_engine(request)) as session:
            stats = log_stats(session)
            counts = rejection_counts(session)
    except DatabaseUnavailable:
        # What this process knows without the database still goes out: an outage is exactly
        # when an operator's dashboard needs the ingest gauges.
        lines = [*metric_lines("agritrace_database_up", "gauge", DB_UP_HELP, 0), *ingest]
        return PlainTextResponse("\n".join(lines) + "\n", media_type=EXPOSITION)
    clock = request.app.state.clock
    age = (clock() - stats.checkpoint_ms) / 1000 if stats.checkpoint_ms is not None else None
    lines = [
        *metric_lines("agritrace_database_up", "gauge", DB_UP_HELP, 1),
        *ingest,
        *metric_lines("agritrace_log_entries", "gauge", "Entries in the log.", stats.log_size),
        *metric_lines(
            "agritrace_checkpoint_size",
            "gauge",
            "Size of the newest checkpoint.",
            stats.checkpoint_size,
        ),
        *(
            metric_lines(
                "agritrace_checkpoint_age_seconds", "gauge", "Age of the newest checkpoint.", age
            )
            if age is not None
            else []
        ),
        *metric_lines(
            "agritrace_parked_messages",
            "gauge",
            "Messages waiting for the commissioning of a product.",
            stats.parked,
        ),
        *metric_lines("agritrace_devices", "gauge", "Registered devices.", stats.devices),
        *metric_lines("agritrace_products", "gauge", "Commissioned products.", stats.products),
        *metric_lines(
            "agritrace_access_entries_total",
            "counter",
            "Access entries this API process committed to the log (docs/inspection.md).",
            request.app.state.access_trail.counters.entries,
        ),
        *metric_lines(
            "agritrace_access_commits_total",
            "counter",
            "Transactions this API process took to commit them (one per batch).",
            request.app.state.access_trail.counters.batches,
        ),
        "# HELP agritrace_rejections_total Device messages refused, by reason.",
        "# TYPE agritrace_rejections_total counter",
        *(
            f'agritrace_rejections_total{{reason="{reason.value}"}} {count}'
            for reason, count in counts.items()
        ),
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type=EXPOSITION)
