"""The console's sign-in, sign-out and home pages (docs/inspection.md, "The console").

Every console page but the sign-in page requires a session (:func:`current_user`); a browser
without one is sent to the sign-in page, which says why the last session ended. The sign-in
form takes a party's token, an inspector's token or the admin token once; failed attempts are
recorded per client and limited (``AGRITRACE_SIGN_IN_FAILURES`` within
``AGRITRACE_SIGN_IN_WINDOW_MINUTES``).
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from traceapi.auth import is_admin_token
from traceapi.console.pages import HEADERS, LangQuery, csrf_matches, page, page_language, read_form
from traceapi.console.session import (
    SIGN_IN_COOKIE,
    ConsoleUser,
    SignInRequired,
    clear_session_cookie,
    csrf_ok,
    csrf_token,
    current_user,
    set_session_cookie,
    set_sign_in_nonce,
    sign_in_nonce,
)
from traceapi.i18n import Lang, text
from traceapi.state import client_address, scan_salt
from tracecore.settings import Settings
from tracecore.storage.console import (
    SESSION_ENDINGS,
    admin_token_hash,
    end_session,
    failed_sign_ins_since,
    open_session,
    record_sign_in,
)
from tracecore.storage.engine import session_scope
from tracecore.storage.registry import lookup_token
from tracecore.storage.trace import client_hash

__all__ = ["router", "sign_in_required"]

router = APIRouter(prefix="/console", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """A console path to go to after sign-in; anything else (another site) is the home page."""
    if (
        target
        and target.startswith("/console/")
        and not target.startswith("/console//")
        and "\\" not in target
        and all(ord(c) > 0x20 for c in target)
    ):
        return target
    return "/console/"


def _sign_inpage(
    request: Request,
    lang: Lang,
    *,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
    next_path: str = "/console/",
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The sign-in form (``error`` and ``notice`` are texts in ``lang``), bound to a fresh
    sign-in cookie."""
    nonce = secrets.token_urlsafe(32)
    response = page(
        "console/sign_in.html",
        lang,
        status_code,
        path="/console/sign-in",
        error=error,
        notice=notice,
        next_path=next_path,
        csrf=csrf_token(nonce),
    )
    set_sign_in_nonce(response, request, nonce)
    response.headers.update(headers or {})
    return response


def sign_in_required(request: Request, exc: Exception) -> Response:
    """Answer a console request without a valid session: off to the sign-in page."""
    assert isinstance(exc, SignInRequired)  # noqa: S101 (registered for this class only)
    query: dict[str, str] = {"ended": exc.ending or "required"}
    if request.method == "GET":
        query["next"] = request.url.path
    lang = request.query_params.get("lang")
    if lang in ("zh", "en"):
        query["lang"] = lang
    response = RedirectResponse(
        f"/console/sign-in?{urlencode(query)}", status.HTTP_303_SEE_OTHER, headers=dict(HEADERS)
    )
    if exc.ending is not None:
        clear_session_cookie(response, request)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(
    request: Request,
    lang: LangQuery = None,
    ended: Annotated[str | None, Query(max_length=32)] = None,
    next: Annotated[str | None, Query(max_length=512)] = None,  # noqa: A002 (the query's name)
) -> Response:
    """The sign-in page (and, after a session ended, why it did)."""
    language = page_language(request, lang)
    try:
        current_user(request)
    except SignInRequired:
        pass
    else:
        return RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER, headers=dict(HEADERS))
    notice = None
    if ended in (*SESSION_ENDINGS, "required"):
        notice = text(language, f"console.ended.{ended}")
    return _sign_inpage(request, language, notice=notice, next_path=_safe_next(next))


def _token_refusal(request: Request, token: str) -> tuple[str | None, int | None, bytes | None]:
    """Check a presented token: (why it is refused or None, its stored id, the admin hash)."""
    settings: Settings = request.app.state.settings
    if is_admin_token(settings, token):
        return None, None, admin_token_hash(token)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        info = lookup_token(session, token) if token else None
    if info is None:
        return "console.sign_in.unknown", None, None
    state = info.state(request.app.state.clock())
    if state in ("revoked", "expired"):
        return f"console.sign_in.{state}", info.id, None
    return None, info.id, None


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    """Take a token once; open a session and set its cookie, or say why not."""
    form = await read_form(request)
    language = page_language(request, form.get("lang"))
    next_path = _safe_next(form.get("next"))
    if not csrf_ok(sign_in_nonce(request), form.get("csrf")):
        error = text(language, "console.sign_in.expired_form")
        return _sign_inpage(request, language, status_code=403, error=error, next_path=next_path)
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    client = client_hash(scan_salt(request), client_address(request))
    window_ms = settings.sign_in_window_minutes * 60_000
    with session_scope(engine) as session:
        failures, first = failed_sign_ins_since(session, client, now - window_ms)
    if failures >= settings.sign_in_failures:
        wait_ms = max(1000, (first or now) + window_ms - now)
        error = text(language, "console.sign_in.limited", minutes=math.ceil(wait_ms / 60_000))
        return _sign_inpage(
            request,
            language,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            error=error,
            next_path=next_path,
            headers={"Retry-After": str(math.ceil(wait_ms / 1000))},
        )
    refusal, token_id, admin_hash = _token_refusal(request, form.get("token", "").strip())
    with session_scope(engine) as session:
        record_sign_in(session, client, now, ok=refusal is None, token_id=token_id)
        if refusal is None:
            opened = open_session(session, token_id=token_id, admin_hash=admin_hash, now_ms=now)
    if refusal is not None:
        error = text(language, "console.sign_in.failed", reason=text(language, refusal))
        return _sign_inpage(
            request,
            language,
            status_code=status.HTTP_401_UNAUTHORIZED,
            error=error,
            next_path=next_path,
        )
    response = RedirectResponse(next_path, status.HTTP_303_SEE_OTHER, headers=dict(HEADERS))
    set_session_cookie(response, request, opened.secret, settings.console_max_hours * 3600)
    response.delete_cookie(SIGN_IN_COOKIE, path="/console/")
    return response


@router.post("/sign-out")
async def sign_out(
    request: Request, user: Annotated[ConsoleUser, Depends(current_user)]
) -> Response:
    """End the session (the form's CSRF token required) and forget the cookie."""
    form = await read_form(request)
    language = page_language(request, form.get("lang"))
    if not csrf_matches(user, form):
        return page("console/forbidden.html", language, 403, path="/console/")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        end_session(session, user.session_id, request.app.state.clock())
    query = urlencode({"ended": "signed_out", "lang": language})
    response = RedirectResponse(
        f"/console/sign-in?{query}", status.HTTP_303_SEE_OTHER, headers=dict(HEADERS)
    )
    clear_session_cookie(response, request)
    return response


@router.get("/", response_class=HTMLResponse)
def home(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
) -> Response:
    """The console's home page: who is signed in, until when, and the way out."""
    settings: Settings = request.app.state.settings
    return page(
        "console/home.html",
        page_language(request, lang),
        path="/console/",
        user=user,
        idle_minutes=settings.console_idle_minutes,
    )


@router.get("", include_in_schema=False)
def home_without_slash() -> Response:
    """``/console`` is ``/console/``."""
    return RedirectResponse("/console/", status.HTTP_308_PERMANENT_REDIRECT)
