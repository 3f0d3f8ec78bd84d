"""The producer console's tokens (docs/farms.md, "Tokens").

``GET /console/tokens`` lists tokens without their text: a party its own party's, an inspector
its own token only, the admin every token (``?party=`` filters). ``POST /console/tokens`` issues
a new token for the reader's party (the admin: for the party of the form) valid 1 to 365 days,
its text shown once on the answer; ``POST /console/tokens/{id}/revoke`` revokes one, as
``POST /v1/tokens/{id}/revoke`` does: a party its own party's tokens, any session its own token,
the admin any. Both forms need their CSRF token. Revoking the token of the session ends it.
"""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine
from sqlmodel import col, select

from traceapi.access import note_parties
from traceapi.console.pages import HEADERS, LangQuery, csrf_matches, page, page_language, read_form
from traceapi.console.session import ConsoleUser, current_user
from traceapi.i18n import Lang
from tracecore.errors import NotFound
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Party
from tracecore.storage.registry import (
    IssuedToken,
    TokenInfo,
    get_token,
    issue_token,
    list_tokens,
    revoke_token_id,
)

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "router"]

router = APIRouter(prefix="/console/tokens", include_in_schema=False)

User = Annotated[ConsoleUser, Depends(current_user)]

_DAY_MS: Final = 86_400_000
#: The lifetime a new token gets unless another is chosen (as ``POST /v1/parties/{id}/tokens``).
DEFAULT_DAYS: Final = 90
#: The longest lifetime the form offers, in days.
MAX_DAYS: Final = 365


def _token_id(value: str) -> int | None:
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if 1 <= number <= 2**31 - 1 else None


def _visible(user: ConsoleUser, info: TokenInfo) -> bool:
    """True if ``user`` may see and revoke the token ``info`` (the API's rule)."""
    if user.role == "admin" or info.id == user.token_id:
        return True
    return user.role == "party" and info.party_id is not None and info.party_id == user.party_id


def _render(
    request: Request,
    user: ConsoleUser,
    language: Lang,
    *,
    party: str | None = None,
    issued: IssuedToken | None = None,
    revoked: int | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    with session_scope(engine) as session:
        if user.role == "admin":
            wanted = party if party and session.get(Party, party) is not None else None
            infos = list_tokens(session, wanted)
            parties = [p.id for p in session.exec(select(Party).order_by(col(Party.id))).all()]
        elif user.role == "party" and user.party_id is not None:
            wanted, parties = user.party_id, []
            infos = list_tokens(session, user.party_id)
        else:  # an inspector sees its own token only
            wanted, parties = None, []
            infos = [get_token(session, user.token_id)] if user.token_id is not None else []
    note_parties(request, *{info.party_id for info in infos})
    rows = sorted(infos, key=lambda info: -info.id)
    return page(
        "console/tokens.html",
        language,
        status_code,
        path="/console/tokens" + (f"?{urlencode({'party': wanted})}" if party and wanted else ""),
        user=user,
        section="tokens",
        rows=[(info, info.state(now)) for info in rows],
        issued=issued,
        revoked=revoked,
        error=error,
        party=wanted or "",
        parties=parties,
        may_issue=user.role in ("party", "admin"),
        default_days=DEFAULT_DAYS,
        max_days=MAX_DAYS,
    )


@router.get("", response_class=HTMLResponse)
def tokens(
    request: Request,
    user: User,
    party: Annotated[str | None, Query(max_length=100)] = None,
    revoked: Annotated[str | None, Query(max_length=12)] = None,
    lang: LangQuery = None,
) -> Response:
    """The reader's tokens (never their text), the form for a new one and revoke buttons."""
    return _render(
        request,
        user,
        page_language(request, lang),
        party=(party or "").strip() or None,
        revoked=_token_id(revoked or ""),
    )


@router.post("", response_class=HTMLResponse)
async def create(request: Request, user: User) -> Response:
    """Issue a token for the reader's party, valid 1-365 days; its text is shown this once."""
    form = await read_form(request)
    language = page_language(request, form.get("lang"))
    if not csrf_matches(user, form) or user.role not in ("party", "admin"):
        return page("console/forbidden.html", language, 403, path="/console/tokens")
    party = user.party_id if user.role == "party" else form.get("party", "").strip()
    days_text = form.get("days", "").strip()
    days = int(days_text) if days_text.isascii() and days_text.isdigit() else 0
    if not party or not 1 <= days <= MAX_DAYS:
        error = "console.party.tokens.bad_days" if party else "console.party.tokens.bad_party"
        return _render(request, user, language, error=error, status_code=422)
    engine: Engine = request.app.state.engine
    note_parties(request, party)
    try:
        with session_scope(engine) as session:
            issued = issue_token(
                session, party, request.app.state.clock(), lifetime_ms=days * _DAY_MS
            )
    except NotFound:
        return _render(
            request, user, language, error="console.party.tokens.bad_party", status_code=422
        )
    return _render(request, user, language, party=party, issued=issued, status_code=201)


@router.post("/{token_id}/revoke", response_class=HTMLResponse)
async def revoke(
    request: Request, user: User, token_id: Annotated[str, Path(max_length=12)]
) -> Response:
    """Revoke a token from now on: the party's own, the session's own, or any for the admin."""
    form = await read_form(request)
    language = page_language(request, form.get("lang"))
    if not csrf_matches(user, form):
        return page("console/forbidden.html", language, 403, path="/console/tokens")
    number = _token_id(token_id)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        try:
            info = get_token(session, number) if number is not None else None
        except NotFound:
            info = None
        # Another party's token is as unknown as one never issued: nothing tells it exists.
        if info is None or not _visible(user, info):
            return _render(
                request, user, language, error="console.party.tokens.not_found", status_code=404
            )
        revoke_token_id(session, info.id, request.app.state.clock())
    note_parties(request, info.party_id)
    target = "/console/tokens?" + urlencode({"revoked": info.id, "lang": language})
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER, headers=dict(HEADERS))
