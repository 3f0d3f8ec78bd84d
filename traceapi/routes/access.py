"""The access trail over HTTP: who read whose data (docs/inspection.md, "The access trail").

A party sees the accesses to its own data, an inspector its own accesses, the admin all of
them. Each row is an ``access`` log entry: its ``index`` proves it is in the log
(``GET /v1/log/proof/inclusion``), so an operator cannot drop it later without the checkpoint
showing it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from traceapi.auth import Principal, authenticate
from traceapi.openapi import errors
from tracecore.identifiers import parse_party_id
from tracecore.storage.access import list_accesses
from tracecore.storage.engine import session_scope

__all__ = ["AccessOut", "router"]

router = APIRouter(prefix="/v1", tags=["access"])

_MAX_INT64 = 2**63 - 1


class AccessOut(BaseModel):
    """One access: an ``access`` entry of the log."""

    index: int = Field(description="its log index (for GET /v1/log/proof/inclusion)")
    time_ms: int
    who: str = Field(description="the party id of the token, or admin")
    role: str = Field(description="admin, inspector or party")
    action: str = Field(description="the method and route")
    target: str = Field(description="the path and query")
    parties: list[str] = Field(description="the parties whose data the answer showed")


@router.get("/access", responses=errors({403: "another party's trail", 422: "a bad party id"}))
def get_access(
    request: Request,
    *,
    principal: Annotated[Principal, Depends(authenticate)],
    party: Annotated[str | None, Query(description="accesses to this party's data")] = None,
    who: Annotated[str | None, Query(description="accesses by this party id, or admin")] = None,
    before: Annotated[
        int | None, Query(ge=0, le=_MAX_INT64, description="page: log indexes below this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AccessOut]:
    """The access trail, newest first: a party's own data, an inspector's own reads, or all."""
    if party is not None:
        party = parse_party_id(party)  # IdentifierError: 422 naming the rule
    if who is not None and who != "admin":
        who = parse_party_id(who)
    if principal.role == "party":
        if party not in (None, principal.party_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a party sees its own trail only")
        party = principal.party_id
    elif principal.role == "inspector":
        if who not in (None, principal.party_id):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "an inspector sees its own reads only")
        who = principal.party_id
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        rows = list_accesses(session, party=party, who=who, before=before, limit=limit)
    return [
        AccessOut(
            index=r.index,
            time_ms=r.time_ms,
            who=r.who,
            role=r.role,
            action=r.action,
            target=r.target,
            parties=list(r.parties),
        )
        for r in rows
    ]
