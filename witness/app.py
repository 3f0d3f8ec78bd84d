"""The witness HTTP service: C2SP tlog-witness ``POST /add-checkpoint`` on FastAPI.

``create_app(witness)`` builds an app with no module-level state. Routes:

* ``POST /add-checkpoint``: the C2SP tlog-witness call. 200 ``text/plain`` with the
  cosignature line(s); 409 ``text/x.tlog.size`` with the latest cosigned size when the old size
  does not match; 400, 403, 404, 422 and (fork at the same size) 409 with a one-line
  ``text/plain`` reason. Bodies above :data:`~tracecore.tlog_witness.MAX_REQUEST_BYTES` get 413.
* ``GET /vkey``: the witness's cosignature vkey (type 0x04), ``text/plain``.
* ``GET /healthz``: ``ok``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from tracecore.errors import AgritraceError
from tracecore.tlog_witness import (
    ADD_CHECKPOINT_PATH,
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    format_size,
)
from witness.core import Refused, Witness

__all__ = ["create_app"]

_log = logging.getLogger(__name__)
_TEXT = "text/plain; charset=utf-8"


def create_app(witness: Witness) -> FastAPI:
    """Return the witness app for ``witness`` (its key, followed logs and state file)."""
    app = FastAPI(
        title="agritrace witness",
        summary="C2SP tlog-witness: checks that a log only grows, cosigns its checkpoints",
        docs_url=None,
        redoc_url=None,
    )
    app.state.witness = witness

    @app.post(ADD_CHECKPOINT_PATH, response_class=PlainTextResponse)
    async def add_checkpoint(request: Request) -> Response:
        """Verify and cosign a checkpoint (C2SP tlog-witness, "add-checkpoint")."""
        body = await _read_body(request)
        if body is None:
            return PlainTextResponse("request body too large\n", status_code=413)
        try:
            lines = await run_in_threadpool(witness.add_checkpoint, body)
        except Refused as exc:
            if exc.status == 409 and exc.known_size is not None:
                # Exactly "text/x.tlog.size": Starlette would append "; charset=utf-8" to a
                # text/* media type, and clients compare the header as a whole.
                return Response(
                    format_size(exc.known_size).encode("ascii"),
                    status_code=409,
                    headers={"Content-Type": SIZE_CONTENT_TYPE},
                )
            return PlainTextResponse(exc.detail + "\n", status_code=exc.status)
        except AgritraceError as exc:  # the state file failed: never cosign then
            _log.error("add-checkpoint failed: %s", exc)
            return PlainTextResponse("the witness state is unavailable\n", status_code=503)
        return Response("".join(line + "\n" for line in lines), media_type=_TEXT)

    @app.get("/vkey", response_class=PlainTextResponse)
    async def vkey() -> str:
        """Return the witness's cosignature vkey (C2SP signed-note vkey, type 0x04)."""
        return f"{witness.vkey}\n"

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """Liveness."""
        return "ok\n"

    return app


async def _read_body(request: Request) -> bytes | None:
    """Return the request body, or ``None`` as soon as it exceeds the protocol's maximum."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
