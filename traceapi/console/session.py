"""Console sessions in the browser: the cookie, the CSRF token and who is signed in.

A signed-in browser holds one cookie, ``agritrace_console`` (``__Host-agritrace_console`` over
https): a random secret whose SHA-256 is the session's row (:mod:`tracecore.storage.console`).
It is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it) and
``Secure`` whenever the console is served over https. Every form that changes something carries
a CSRF token, an HMAC of the session secret, so it cannot be forged without the cookie
(OWASP CSRF Prevention Cheat Sheet, "Signed Double-Submit Cookie"). The sign-in form, which has
no session yet, is bound the same way to a short-lived ``agritrace_sign_in`` cookie, so another
site cannot sign a browser in under someone else's token ("login CSRF").
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from fastapi import Request, Response
from sqlalchemy import Engine

from traceapi.access import note_principal
from tracecore.settings import Settings
from tracecore.storage.console import SessionEnding, admin_token_hash, find_session, touch_session
from tracecore.storage.engine import session_scope, statistics_scope

__all__ = [
    "SIGN_IN_COOKIE",
    "ConsoleUser",
    "SignInRequired",
    "clear_session_cookie",
    "cookie_name",
    "csrf_ok",
    "csrf_token",
    "current_user",
    "secure",
    "set_session_cookie",
    "set_sign_in_nonce",
    "sign_in_nonce",
]

_COOKIE: Final = "agritrace_console"
#: The cookie that binds the sign-in form to the browser that asked for it.
SIGN_IN_COOKIE: Final = "agritrace_sign_in"
_SIGN_IN_COOKIE_S: Final = 3600
_CSRF_LABEL: Final = b"agritrace/console/csrf"
# Record activity at most this often: an idle limit of minutes does not need each request.
_TOUCH_EVERY_MS: Final = 60_000


class SignInRequired(Exception):
    """No valid session: the console answers with the sign-in page (``ending`` says why)."""

    def __init__(self, ending: SessionEnding | None) -> None:
        super().__init__(ending or "no session")
        self.ending = ending


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """The signed-in caller of a console page."""

    session_id: int
    role: str
    party_id: str | None
    token_id: int | None
    csrf: str
    expires_ms: int


def secure(request: Request) -> bool:
    """True when the console is served over https (here, or at the public URL behind a proxy)."""
    settings: Settings = request.app.state.settings
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def cookie_name(request: Request) -> str:
    """The session cookie's name: ``__Host-`` prefixed over https (RFC 6265bis §4.1.3.2)."""
    return f"__Host-{_COOKIE}" if secure(request) else _COOKIE


def _mac(secret: str, label: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_token(secret: str) -> str:
    """The CSRF token of the session (or sign-in form) whose secret is ``secret``."""
    return _mac(secret, _CSRF_LABEL)


def csrf_ok(secret: str | None, presented: str | None) -> bool:
    """True if ``presented`` is the CSRF token of ``secret`` (constant time)."""
    if not secret or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret).encode(), presented.encode("utf-8", "replace"))


def set_session_cookie(response: Response, request: Request, secret: str, max_age_s: int) -> None:
    """Give the browser the session's secret (path ``/``, as ``__Host-`` requires)."""
    response.set_cookie(
        cookie_name(request),
        secret,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(
        cookie_name(request), path="/", httponly=True, samesite="strict", secure=secure(request)
    )


def sign_in_nonce(request: Request) -> str | None:
    """The sign-in form's cookie, if the browser has one."""
    return request.cookies.get(SIGN_IN_COOKIE)


def set_sign_in_nonce(response: Response, request: Request, nonce: str) -> None:
    """Give the browser the sign-in form's cookie, ``nonce``."""
    response.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        max_age=_SIGN_IN_COOKIE_S,
        path="/console/",
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )


def current_user(request: Request) -> ConsoleUser:
    """The signed-in user of this request; raise :class:`SignInRequired` if there is none.

    Looks the session up on every request, with the token it stands for, so a sign-out, a
    revoked or expired token and the idle and absolute lifetimes hold at once, in every API
    process.
    """
    secret = request.cookies.get(cookie_name(request))
    if not secret:
        raise SignInRequired(None)
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    idle_ms = settings.console_idle_minutes * 60_000
    max_ms = settings.console_max_hours * 3_600_000
    admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
    with session_scope(engine) as session:
        info = find_session(session, secret)
    if info is None:
        raise SignInRequired(None)
    ending = info.ending(
        now, idle_ms=idle_ms, max_ms=max_ms, admin_hash=admin_token_hash(admin) if admin else None
    )
    if ending is not None:
        raise SignInRequired(ending)
    if now - info.last_seen_ms >= _TOUCH_EVERY_MS:
        # Activity only moves the idle limit: a lost update ends a session early, never late.
        with statistics_scope(engine) as session:
            touch_session(session, info.id, now)
        info = dataclasses.replace(info, last_seen_ms=now)
    note_principal(request, info.party_id or "admin", info.role)
    return ConsoleUser(
        session_id=info.id,
        role=info.role,
        party_id=info.party_id,
        token_id=info.token_id,
        csrf=csrf_token(secret),
        expires_ms=info.expires_ms(idle_ms=idle_ms, max_ms=max_ms),
    )
