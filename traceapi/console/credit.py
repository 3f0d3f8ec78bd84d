"""The producer console's credit score (docs/farms.md, "Credit").

``GET /console/credit`` shows a party's credit score over a window, each deduction explained
and linked to what caused it: the products (their dossiers), the recall's log entry, the
complaints. The score is the one ``GET /v1/parties/{id}/credit`` answers
(:func:`traceapi.views.party_credit`). A party sees its own; inspectors and the admin choose a
party (``?party=``).
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine
from sqlmodel import col, select

from contracts.credit import Weights
from traceapi.access import note_parties
from traceapi.console.pages import LangQuery, page, page_language
from traceapi.console.rejections import reader_party
from traceapi.console.session import ConsoleUser, current_user
from traceapi.views import party_credit
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Party

__all__ = ["WINDOWS", "router"]

router = APIRouter(prefix="/console/credit", include_in_schema=False)

User = Annotated[ConsoleUser, Depends(current_user)]

#: The windows offered, in days (90, the API's default, first).
WINDOWS: Final = (90, 30, 365)


@router.get("", response_class=HTMLResponse)
def credit(
    request: Request,
    user: User,
    party: Annotated[str | None, Query(max_length=100)] = None,
    days: Annotated[str | None, Query(max_length=4)] = None,
    lang: LangQuery = None,
) -> Response:
    """A party's credit score, each deduction explained and linked to its cause."""
    language = page_language(request, lang)
    reader = reader_party(user)
    wanted = (party or "").strip() or reader
    window = int(days) if days and days.isdigit() and int(days) in WINDOWS else WINDOWS[0]
    if reader is not None and wanted != reader:
        return page("console/forbidden.html", language, status.HTTP_403_FORBIDDEN, path="/console/")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        producers = (
            []
            if reader is not None
            else list(
                session.exec(
                    select(Party).where(col(Party.kind) != "inspector").order_by(col(Party.id))
                ).all()
            )
        )
        chosen = session.get(Party, wanted) if wanted else None
        if chosen is not None and chosen.kind == "inspector":
            chosen = None  # inspection agencies have no score
        score = (
            party_credit(session, chosen.id, request.app.state.clock(), window)
            if chosen is not None
            else None
        )
        name = (
            (chosen.name_en if language == "en" and chosen.name_en else chosen.name)
            if chosen is not None
            else None
        )
        choices = [
            (p.id, p.name_en if language == "en" and p.name_en else p.name) for p in producers
        ]
    if chosen is not None:
        note_parties(request, chosen.id)
    query = {"party": wanted} if reader is None and wanted else {}
    query = {**query, **({"days": str(window)} if window != WINDOWS[0] else {})}
    path = "/console/credit" + (f"?{urlencode(query)}" if query else "")
    return page(
        "console/credit.html",
        language,
        status.HTTP_404_NOT_FOUND if wanted and chosen is None else status.HTTP_200_OK,
        path=path,
        user=user,
        section="credit",
        reader=reader,
        party=wanted or "",
        name=name,
        credit=score,
        window=window,
        windows=WINDOWS,
        choices=choices,
        weights=Weights(),
    )
