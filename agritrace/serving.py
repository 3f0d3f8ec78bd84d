"""How the API's uvicorn servers treat slow and numerous clients (docs/operations.md).

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but has no timeout for
reading a request: a client that sends half a request line, or headers one byte a minute, holds
its connection (a file descriptor and a slot) for ever. :class:`TimedHttpToolsProtocol` gives
each request ``AGRITRACE_REQUEST_TIMEOUT_SECONDS`` to arrive whole, from the connection's first
moment or the request's first byte to its last body byte, as nginx's ``client_header_timeout``
and Apache's ``mod_reqtimeout`` do. ``AGRITRACE_MAX_CONNECTIONS`` bounds the connections one
process serves: uvicorn answers 503 to a request on any connection beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tracecore.settings import Settings

__all__ = ["TimedHttpToolsProtocol", "run_server", "server_options"]

# RFC 9110 §15.5.9: the server timed out waiting for the request; it closes the connection.
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 52\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b'{"detail": "the request did not arrive in the time"}'
)


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for reading each request.

    The clock starts when the connection is made and at the first byte of each further
    request on it; it stops when the request's body is complete. When it runs out before the
    headers are complete the client gets 408 and the connection is closed; later (a body that
    trickles in) the connection is closed and the route sees the client disconnect.
    """

    #: Seconds a request may take to arrive; set by :func:`server_options` on a subclass.
    request_timeout: ClassVar[float] = 20.0

    _read_timer: asyncio.TimerHandle | None = None
    _headers_done = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request."""
        super().connection_made(transport)
        self._start_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock of a connection that is gone."""
        self._stop_clock()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte: its clock starts (unless it already runs since connect)."""
        super().on_message_begin()
        self._headers_done = False
        self._start_clock()

    def on_headers_complete(self) -> None:
        """The headers are in: a timeout from now on can no longer be answered with 408."""
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The whole request arrived in time."""
        super().on_message_complete()
        self._stop_clock()

    def _start_clock(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def _stop_clock(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if not self._headers_done:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options that bound slow and numerous clients, from ``settings``.

    Pass them to :class:`uvicorn.Config` (or :func:`uvicorn.run`) of every API server.
    """
    protocol = type(
        "TimedHttpToolsProtocol",
        (TimedHttpToolsProtocol,),
        {"request_timeout": settings.request_timeout_seconds},
    )
    return {
        "http": protocol,
        # uvicorn answers 503 once the open connections (this one included) reach the limit;
        # +1 so that AGRITRACE_MAX_CONNECTIONS connections are served.
        "limit_concurrency": settings.max_connections + 1,
        "timeout_keep_alive": settings.keep_alive_seconds,
    }


class _CleanExitServer(uvicorn.Server):
    """uvicorn that ends normally after a shutdown asked for by SIGTERM or SIGINT.

    uvicorn raises the signal again once it has shut down, so the process died of it (exit
    status 143 for SIGTERM) although every request was finished: a service manager took a
    clean stop for a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal handling, without raising the signal again at the end."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def run_server(app: Any, **config: Any) -> None:
    """Serve ``app`` like :func:`uvicorn.run` with ``config``; return after SIGTERM or SIGINT."""
    _CleanExitServer(uvicorn.Config(app, **config)).run()
