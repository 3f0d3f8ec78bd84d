"""The trace API application factory.

``create_app(settings)`` builds a FastAPI app with no module-level state: the engine (built from
``settings.database_url`` unless one is passed), the settings and the clock live on
``app.state``; the schema is migrated when the app starts (lifespan), or, when the database is
down then, as soon as it comes back (the app serves meanwhile, see :mod:`traceapi.availability`).
Errors of the core become HTTP answers here, in one place, always as ``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from traceapi.access import AccessTrail, AccessTrailMiddleware
from traceapi.availability import RETRY_AFTER_S, IngestState, SchemaGate, unavailable
from traceapi.console import install as install_console
from traceapi.health import health_response, ingest_problems
from traceapi.limits import BodyLimit
from traceapi.openapi import build_openapi
from traceapi.routes.access import router as access_router
from traceapi.routes.bundle import router as bundle_router
from traceapi.routes.feedback import router as feedback_router
from traceapi.routes.inspect import router as inspect_router
from traceapi.routes.log import router as log_router
from traceapi.routes.ops import router as ops_router
from traceapi.routes.qr import router as qr_router
from traceapi.routes.recalls import router as recalls_router
from traceapi.routes.registry import router as registry_router
from traceapi.routes.scan import router as scan_router
from traceapi.routes.stall import router as stall_router
from traceapi.schemas import StatusOut
from traceapi.views import unknown_view
from tracecore.errors import (
    AgritraceError,
    Conflict,
    DatabaseUnavailable,
    IdentifierError,
    KeyFileError,
    NotFound,
    ProofError,
    StorageError,
)
from tracecore.keys import VerifierKey
from tracecore.settings import Settings, load_settings
from tracecore.storage.engine import make_engine
from tracecore.storage.migrate import upgrade

__all__ = ["ERROR_STATUS", "app_from_environment", "create_app", "wall_clock_ms"]

#: HTTP status of each core error; the first matching class (in this order) wins.
ERROR_STATUS: tuple[tuple[type[AgritraceError], int], ...] = (
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Conflict, status.HTTP_409_CONFLICT),
    (IdentifierError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (KeyFileError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ProofError, status.HTTP_400_BAD_REQUEST),
    (StorageError, status.HTTP_503_SERVICE_UNAVAILABLE),
)


_log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Return the wall-clock time in ms since the Unix epoch (the edge reads the clock)."""
    return time.time_ns() // 1_000_000


def _status_of(exc: AgritraceError) -> int:
    """Return the HTTP status for a core error (500 for one without a mapping)."""
    for cls, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return code
    return status.HTTP_500_INTERNAL_SERVER_ERROR


async def _agritrace_error(request: Request, exc: Exception) -> Response:
    """Answer a core error with its status and message."""
    assert isinstance(exc, AgritraceError)  # noqa: S101 (registered for this class only)
    if isinstance(exc, DatabaseUnavailable):
        _log.warning("request %s: %s", request.url.path, exc)
        return unavailable(request)
    code = _status_of(exc)
    detail = str(exc)
    if code >= 500:
        _log.error("request failed: %s", exc, exc_info=exc)
        detail = "the database is unavailable" if code == 503 else "internal error"
    return JSONResponse({"detail": detail}, status_code=code)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Answer HTTP errors as ``{"detail": ...}``; an unroutable ``/01...`` path as a scan would.

    A path under /01 that no route matches (a control character in it, say) is still a scanned
    code: it gets the scan's 404 answer with verdict ``unknown``.
    """
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 (registered for this class only)
    if exc.status_code == status.HTTP_404_NOT_FOUND and request.url.path.startswith("/01"):
        body = unknown_view("not a product code").model_dump(mode="json")
        return JSONResponse(body, status_code=exc.status_code)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _location(loc: tuple[int | str, ...]) -> str:
    """Return a readable field path such as ``body.public_key``."""
    return ".".join(str(part) for part in loc) or "request"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Answer invalid input with 422 and one readable message naming each bad field."""
    assert isinstance(exc, RequestValidationError)  # noqa: S101 (registered for this class only)
    parts = [f"{_location(tuple(err['loc']))}: {err['msg']}" for err in exc.errors()]
    return JSONResponse(
        {"detail": "; ".join(parts) or "invalid request"},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    clock: Callable[[], int] = wall_clock_ms,
    log_vkey: VerifierKey | None = None,
    migrate: bool = True,
    ingest: IngestState | None = None,
) -> FastAPI:
    """Build the trace API for ``settings``.

    ``engine`` defaults to one built from ``settings.database_url`` (and disposed at shutdown).
    With ``migrate`` the schema is migrated to the newest revision at startup, or, if the
    database is unavailable then, by a background task once it is back; without it the caller
    migrates and sets ``app.state.schema_ready`` (``agritrace serve``, whose ingest migrates).
    ``clock`` returns the time in ms since the Unix epoch and exists for tests. ``log_vkey``
    is the log's public key served at ``/v1/log/vkey``; without it, the public half of
    ``DATA_DIR/keys/log.key`` is used. ``ingest`` is the state of an ingest service in the
    same process, reported by ``/healthz`` and ``/metrics``.
    """
    owned = engine is None
    app_engine = make_engine(settings.database_url) if engine is None else engine

    lifespan = _lifespan(app_engine, owned=owned, migrate=migrate)

    app = FastAPI(title="agritrace", version="0.1.0", lifespan=lifespan)
    app.state.schema_ready = False
    app.state.ingest = ingest
    app.state.settings = settings
    app.state.engine = app_engine
    app.state.clock = clock
    # None: traceapi.routes.log reads the public half of DATA_DIR/keys/log.key on first use.
    app.state.log_vkey = log_vkey
    app.state.access_trail = AccessTrail(app_engine)
    # Innermost: it holds each authenticated answer until its access is in the log.
    app.add_middleware(
        AccessTrailMiddleware,
        trail=lambda: app.state.access_trail,
        # Read at each request: tests set app.state.clock after the app is built.
        clock=lambda: app.state.clock(),  # noqa: PLW0108
    )
    app.add_middleware(SchemaGate, ready=lambda: bool(app.state.schema_ready))
    # Added last, so outermost: it sees the body as it streams in (docs/operations.md).
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes)
    app.add_exception_handler(AgritraceError, _agritrace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(registry_router)
    app.include_router(ops_router)
    app.include_router(log_router)
    app.include_router(bundle_router)
    app.include_router(recalls_router)
    app.include_router(feedback_router)
    app.include_router(inspect_router)
    app.include_router(access_router)
    app.include_router(qr_router)
    app.include_router(stall_router)
    install_console(app)
    app.include_router(scan_router)

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, built once (traceapi.openapi)."""
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    _add_healthz(app, app_engine)

    return app


def _lifespan(
    app_engine: Engine, *, owned: bool, migrate: bool
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: migrate (now or once the database is back); dispose of our engine."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Migrate the schema (now, or once the database is back); dispose of our engine."""
        stopping = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                if migrate:
                    try:
                        await run_in_threadpool(upgrade, app_engine)
                        app.state.schema_ready = True
                    except DatabaseUnavailable as exc:
                        _log.warning("database unavailable at start (%s); serving 503s", exc)
                        tasks.create_task(
                            _migrate_later(app, app_engine, stopping), name="api-migrate"
                        )
                try:
                    yield
                finally:
                    stopping.set()
        finally:
            if owned:
                app_engine.dispose()

    return lifespan


def _add_healthz(app: FastAPI, app_engine: Engine) -> None:
    """Add ``GET /healthz``."""

    @app.get(
        "/healthz",
        response_model=StatusOut,
        responses={
            503: {
                "model": StatusOut,
                "description": "the database, the schema or ingest is not working; problems say",
                "headers": {
                    "Retry-After": {
                        "description": f"seconds to wait ({RETRY_AFTER_S})",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                },
            }
        },
    )
    def healthz() -> Response:
        """Report ok when the database answers and, in ``serve``, ingest is committing."""
        problems: list[str] = []
        try:
            with app_engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            _log.warning("health check failed: %s", exc)
            problems.append("the database is unavailable")
        if not app.state.schema_ready:
            problems.append("the schema is not migrated yet")
        problems += ingest_problems(app.state.ingest)
        return health_response(problems)


async def _migrate_later(app: FastAPI, engine: Engine, stopping: asyncio.Event) -> None:
    """Migrate once the database is back (capped, jittered retries), then open the routes."""
    delay = 0.5
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            # Jittered: several API processes must not hit a recovering database in step.
            await asyncio.wait_for(stopping.wait(), timeout=delay * (0.5 + random.random() / 2))  # noqa: S311
        if stopping.is_set():
            return
        try:
            await run_in_threadpool(upgrade, engine)
        except DatabaseUnavailable:
            delay = min(delay * 2, 10.0)
            continue
        app.state.schema_ready = True
        _log.warning("database available; schema migrated, serving again")
        return


def app_from_environment() -> FastAPI:
    """The app for the ``AGRITRACE_*`` settings of the environment (uvicorn's factory)."""
    return create_app(load_settings())
