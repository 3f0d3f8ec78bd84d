"""Request bodies: a size limit enforced while the body streams in, and no body read for nobody.

:class:`BodyLimit` is an ASGI middleware in front of every route (docs/operations.md, "Request
limits"):

* A request body larger than its route's limit is answered 413 ``{"detail": "..."}`` and the
  connection closed. A ``Content-Length`` over the limit is refused before anything is read; a
  chunked body is counted as it arrives and refused at the first chunk past the limit, so a
  server process never holds more than the limit of it. The limit is
  ``AGRITRACE_MAX_BODY_BYTES`` (64 KiB) for the JSON routes and 16 KiB for the public feedback
  forms.
* A body sent to any other route than the public feedback forms is only read once the caller's
  bearer token is known: without a valid one the answer is 401 and the body stays unread.
  (FastAPI reads and parses a declared body before it runs a route's dependencies, the token
  check among them.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from traceapi.auth import authenticate
from traceapi.console.routes import sign_in_required
from traceapi.console.session import SignInRequired, current_user

__all__ = ["CONSOLE_MAX_BODY", "FORM_MAX_BODY", "BodyLimit"]

#: The limit of the public feedback forms (a rating and at most 2,000 characters of complaint).
FORM_MAX_BODY: Final = 16_384
#: The limit of a signed-in console form: an answer to a complaint holds 2,000 characters, and
#: 2,000 Chinese characters are 18,000 bytes once a browser percent-encodes them.
CONSOLE_MAX_BODY: Final = 32_768

# The only routes that take a body from anyone (traceapi/routes/feedback.py, stall.py, and the
# console's sign-in form, traceapi/console/routes.py).
_PUBLIC_FORMS: Final = re.compile(r"/v1/feedback/.+|/p/[^/]+/feedback|/console/sign-in")
# Console forms: authenticated by the session cookie, not a bearer token.
_CONSOLE: Final = re.compile(r"/console/.*")


class _TooLarge(Exception):
    """The body went past its limit while the app was reading it."""


class BodyLimit:
    """ASGI middleware: bound each request body, and read none before authentication."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        """Wrap ``app``; ``max_body`` is the limit in bytes of every route but the forms."""
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an oversized or unauthenticated body; count the bytes of the others."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        public = _PUBLIC_FORMS.fullmatch(path) is not None
        limit = FORM_MAX_BODY if public else self.max_body
        headers = Request(scope).headers
        lengths = headers.getlist("content-length")
        declared: int | None = None
        if lengths:
            # RFC 9110 §8.6: one decimal number; uvicorn already refuses most malformed ones.
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                await _answer(send, 400, "invalid Content-Length")
                return
            declared = int(lengths[0])
        if declared is not None and declared > limit:
            await _answer(send, 413, _too_large(limit))
            return
        has_body = (declared or 0) > 0 or "chunked" in headers.get("transfer-encoding", "")
        if has_body and _CONSOLE.fullmatch(path) and not public:
            limit = CONSOLE_MAX_BODY
            if not await _signed_in(scope, send):
                return
        elif has_body and not public and not await _authenticated(scope, send):
            return
        await self._bounded(scope, receive, send, limit)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app, refusing the body at the first message that takes it past ``limit``."""
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app turned _TooLarge into an answer of its own (FastAPI answers 400
                # "error parsing the body"): the 413 below is the true one.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except* _TooLarge:  # in a group when it passed a task group (BaseHTTPMiddleware)
            exceeded = True  # set where raised already; the 413 goes out below
        if exceeded and not started:
            await _answer(send, 413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the limit of this route"


async def _authenticated(scope: Scope, send: Send) -> bool:
    """Check the bearer token before the body is read; answer 401 and return False if bad.

    Only a definite 401 or 403 is answered here; any other failure (the database down, say)
    lets the request through, and the route's own token check answers it as it always does.
    """
    try:
        await run_in_threadpool(authenticate, Request(scope))
    except HTTPException as exc:
        await _answer(send, exc.status_code, str(exc.detail), exc.headers)
        return False
    except Exception:  # noqa: BLE001 (see the docstring: the route answers these)
        return True
    return True


async def _signed_in(scope: Scope, send: Send) -> bool:
    """Check the console session before a console form's body is read; else redirect.

    As for bearer tokens, only a definite answer (no session: the sign-in page) is given here.
    """
    request = Request(scope)
    try:
        await run_in_threadpool(current_user, request)
    except SignInRequired as exc:
        response = sign_in_required(request, exc)
        response.headers["connection"] = "close"
        await response(scope, _nothing, send)
        return False
    except Exception:  # noqa: BLE001 (the route answers these, as in _authenticated)
        return True
    return True


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


async def _answer(
    send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    """Send ``{"detail": detail}`` with ``status`` and close the connection.

    ``Connection: close``: the unread rest of the body must not be taken for the next request
    on the connection (RFC 9112 §9.6, §6.3), and closing stops the client sending it.
    """
    body = json.dumps({"detail": detail}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
