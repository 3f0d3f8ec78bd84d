"""The console's access trail page (docs/inspection.md, "The access trail").

The admin sees every access, narrowed by who made it or whose data it showed; an inspector
sees its own. Each row links to its log entry, whose inclusion proof anyone can check.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine

from traceapi.console.pages import LangQuery, page, page_language
from traceapi.console.session import ConsoleUser, current_user
from tracecore.identifiers import parse_party_id
from tracecore.storage.access import list_accesses
from tracecore.storage.engine import session_scope

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

_PAGE: Final = 50
_MAX_INT64: Final = 2**63 - 1


def _party_or_none(value: str | None) -> tuple[str | None, bool]:
    """A party id filter (blank is none); False if it breaks the id rule."""
    value = (value or "").strip()
    if not value:
        return None, True
    if value == "admin":
        return value, True
    try:
        return parse_party_id(value), True
    except ValueError:
        return None, False


@router.get("/access", response_class=HTMLResponse)
def access_trail(
    request: Request,
    *,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
    who: Annotated[str | None, Query(max_length=64)] = None,
    party: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=0, le=_MAX_INT64)] = None,
) -> Response:
    """Who read what, newest first: all for the admin, one's own reads for an inspector."""
    language = page_language(request, lang)
    who_filter, who_ok = _party_or_none(who)
    party_filter, party_ok = _party_or_none(party)
    if user.role != "admin":
        # An inspector sees its own reads (a party, later, the reads of its data).
        who_filter, party_filter = (
            (user.party_id, None) if user.role == "inspector" else (None, user.party_id)
        )
    engine: Engine = request.app.state.engine
    rows = []
    if who_ok and party_ok:
        with session_scope(engine) as session:
            rows = list_accesses(
                session, who=who_filter, party=party_filter, before=before, limit=_PAGE + 1
            )
    more = len(rows) > _PAGE
    rows = rows[:_PAGE]
    query = {k: v for k, v in (("who", who_filter), ("party", party_filter)) if v}
    next_href = None
    if more:
        next_href = "/console/access?" + urlencode(
            {**query, "before": rows[-1].index, "lang": language}
        )
    return page(
        "console/access.html",
        language,
        422 if not (who_ok and party_ok) else 200,
        path="/console/access" + ("?" + urlencode(query) if query else ""),
        section="access",
        user=user,
        rows=rows,
        who=who_filter or "",
        party=party_filter or "",
        bad_filter=not (who_ok and party_ok),
        next_href=next_href,
        first_page=before is None,
    )
