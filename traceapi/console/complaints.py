"""The producer console's complaints and their answers (docs/farms.md, "Complaints").

``GET /console/complaints`` lists the buyers' complaints on the reader's products, newest first,
each with its answer; ``POST /console/complaints/{id}/answer`` stores the owning party's answer
(1 to 2000 characters of plain text, the form's CSRF token required). A complaint has one
answer: a second is refused, the first stays. Inspectors and the admin read every party's
complaints and answers; only the owning party answers.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from traceapi.access import note_parties
from traceapi.console.pages import HEADERS, LangQuery, csrf_matches, page, page_language, read_form
from traceapi.console.rejections import reader_party
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang
from tracecore.errors import Conflict, NotFound
from tracecore.storage.engine import session_scope
from tracecore.storage.producer import ANSWER_LIMIT, answer_complaint, list_complaints

__all__ = ["router"]

router = APIRouter(prefix="/console/complaints", include_in_schema=False)

User = Annotated[ConsoleUser, Depends(current_user)]

#: Complaints shown per page.
PAGE_SIZE: Final = 50


def _id(value: str | None) -> int | None:
    """A complaint id from a path or query: a positive database integer, else None."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if 1 <= number <= 2**31 - 1 else None


def _render(
    request: Request,
    user: ConsoleUser,
    language: Lang,
    *,
    before: int | None = None,
    status_code: int = 200,
    error: tuple[int, str] | None = None,
    draft: str = "",
) -> Response:
    reader = reader_party(user)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        listed = list_complaints(session, reader, limit=PAGE_SIZE, before_id=before)
    note_parties(request, *{item.owner for item in listed})
    older = None
    if len(listed) == PAGE_SIZE:
        older = "/console/complaints?" + urlencode({"before": listed[-1].id, "lang": language})
    return page(
        "console/complaints.html",
        language,
        status_code,
        path="/console/complaints" + (f"?before={before}" if before else ""),
        user=user,
        section="complaints",
        listed=listed,
        older=older,
        paged=before is not None,
        error=error,
        draft=draft,
        limit=ANSWER_LIMIT,
    )


@router.get("", response_class=HTMLResponse)
def complaints(
    request: Request,
    user: User,
    before: Annotated[str | None, Query(max_length=12)] = None,
    lang: LangQuery = None,
) -> Response:
    """Buyers' complaints on the reader's products, newest first, with their answers."""
    return _render(request, user, page_language(request, lang), before=_id(before))


@router.post("/{complaint_id}/answer", response_class=HTMLResponse)
async def answer(
    request: Request, user: User, complaint_id: Annotated[str, Path(max_length=12)]
) -> Response:
    """Store the owning party's answer to a complaint (CSRF token required; one answer each)."""
    form = await read_form(request)
    language = page_language(request, form.get("lang"))
    # Only the product's owner answers, and only through its own form.
    if not csrf_matches(user, form) or user.role != "party" or user.party_id is None:
        return page("console/forbidden.html", language, 403, path="/console/complaints")
    number = _id(complaint_id)
    # Line ends as a browser sends them; the answer is plain text, shown escaped everywhere.
    text = form.get("answer", "").replace("\r\n", "\n").strip()
    error: tuple[int, str] | None = None
    if number is None:
        return _render(request, user, language, status_code=404)
    if not 1 <= len(text) <= ANSWER_LIMIT:
        error = (number, "console.party.complaints.bad_length")
        return _render(
            request, user, language, status_code=422, error=error, draft=text[:ANSWER_LIMIT]
        )
    engine: Engine = request.app.state.engine
    note_parties(request, user.party_id)
    try:
        with session_scope(engine) as session:
            answer_complaint(
                session,
                number,
                user.party_id,
                text,
                request.app.state.clock(),
                token_id=user.token_id,
            )
    except NotFound:
        return _render(request, user, language, status_code=404)
    except Conflict:
        error = (number, "console.party.complaints.answered_already")
        return _render(request, user, language, status_code=409, error=error)
    target = f"/console/complaints?{urlencode({'lang': language, 'answered': number})}"
    return RedirectResponse(
        f"{target}#complaint-{number}", status.HTTP_303_SEE_OTHER, headers=dict(HEADERS)
    )
