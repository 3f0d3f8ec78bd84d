"""What the API answers while the database is unavailable (docs/operations.md, "Outages").

The API process stays up through a database outage: routes that need the database answer
``503 Service Unavailable`` with ``Retry-After``, as JSON or, for a buyer's browser on a product
or stall page, as a short bilingual page; routes that need no database keep answering. Until the
schema is migrated (the API may start before the database does), every route except the few in
:data:`WITHOUT_DATABASE` answers the same 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from traceapi.i18n import choose_language
from traceapi.pages import render

__all__ = [
    "RETRY_AFTER_S",
    "WITHOUT_DATABASE",
    "IngestState",
    "SchemaGate",
    "unavailable",
]

#: Seconds a client is asked to wait (RFC 9110 §10.2.3); outages are retried at most this far
#: apart by the services themselves.
RETRY_AFTER_S: Final = 10

#: Paths that answer without a migrated database.
WITHOUT_DATABASE: Final = frozenset(
    {"/healthz", "/metrics", "/v1/log/vkey", "/docs", "/openapi.json"}
)


class IngestState(Protocol):
    """What the API reports of an ingest service running in the same process (``serve``)."""

    database_up: bool
    database_down_since_ms: int | None
    database_outages: int
    broker_connected: bool
    received: int
    accepted: int
    duplicates: int
    receipts_published: int


def _wants_page(request: Request) -> bool:
    """A browser opening a product or stall page (not an app asking for JSON)."""
    path = request.url.path
    if not path.startswith(("/01/", "/p/")):
        return False
    accept = (request.headers.get("accept") or "").lower()
    return "text/html" in accept or "application/json" not in accept


def unavailable(request: Request, detail: str = "the database is unavailable") -> Response:
    """The 503 answer, with Retry-After: a bilingual page for a browser, else JSON."""
    headers = {"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"}
    if _wants_page(request):
        language = choose_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )
        html = render("unavailable.html", lang=language, path=request.url.path)
        return HTMLResponse(html, status_code=503, headers=headers)
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


class SchemaGate:
    """ASGI middleware: 503 for database routes until ``ready()`` (the schema is migrated).

    Plain ASGI rather than an ``@app.middleware("http")`` function: that form runs every
    request through extra tasks and streams, a cost every scan would pay for a check that is
    one attribute read once the database is up.
    """

    def __init__(self, app: ASGIApp, ready: Callable[[], bool]) -> None:
        self.app = app
        self.ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 503 while the schema is not ready."""
        if scope["type"] != "http" or self.ready() or scope["path"] in WITHOUT_DATABASE:
            await self.app(scope, receive, send)
            return
        response = unavailable(Request(scope), "the database is not ready yet")
        await response(scope, receive, send)
