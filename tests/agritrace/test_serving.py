"""Slow and numerous clients against a real uvicorn server with the API's server options."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from agritrace.serving import server_options
from tracecore.settings import Settings

# Far above every timeout under test: a server that never times out fails at this bound.
GENEROUS = 30.0


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI app: reads the whole body, answers 200 with its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def _server(settings: Settings) -> Iterator[int]:
    """Run uvicorn with ``server_options(settings)`` on a port the OS picks; yield the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        _app, log_level="warning", lifespan="off", loop="asyncio", **server_options(settings)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + GENEROUS
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(GENEROUS)
        listener.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)
    sock.settimeout(GENEROUS)
    return sock


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it never)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (its headers and Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_half_a_request_line_is_answered_408_and_closed() -> None:
    """A client that stops in the request line is disconnected after the request timeout."""
    with _server(Settings(request_timeout_seconds=0.5)) as port, _connect(port) as sock:
        sock.sendall(b"GET /hea")
        started = time.monotonic()
        answer = _read_to_eof(sock)  # TimeoutError after GENEROUS s without the fix
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert answer.endswith(b'{"detail": "the request did not arrive in the time"}')
        assert time.monotonic() - started < GENEROUS / 2


def test_a_silent_connection_is_closed() -> None:
    """A connection that never sends a byte is closed too."""
    with _server(Settings(request_timeout_seconds=0.5)) as port, _connect(port) as sock:
        assert _read_to_eof(sock).startswith(b"HTTP/1.1 408")


def test_a_trickling_body_is_cut_off() -> None:
    """Headers in time but a body that never completes: the connection is closed, no answer."""
    with _server(Settings(request_timeout_seconds=0.5)) as port, _connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
        assert _read_to_eof(sock) == b""


def test_a_prompt_client_is_served_and_kept_alive() -> None:
    """The timeout only bounds how long a request takes to arrive: whole requests are served."""
    with _server(Settings(request_timeout_seconds=0.5)) as port, _connect(port) as sock:
        for _ in range(2):  # the second request on the same (kept-alive) connection
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            assert _read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        time.sleep(1.0)  # idle past the request timeout: keep-alive rules now, not it
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_connections_beyond_the_limit_get_503() -> None:
    """With AGRITRACE_MAX_CONNECTIONS=3, a request on a fourth connection is 503."""
    settings = Settings(max_connections=3, request_timeout_seconds=GENEROUS)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with _server(settings) as port:
        held = [_connect(port) for _ in range(3)]
        try:
            for sock in held:  # the first three are served
                sock.sendall(request)
                assert _read_response(sock).startswith(b"HTTP/1.1 200 OK\r\n")
            with _connect(port) as extra:
                extra.sendall(request)
                assert _read_to_eof(extra).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            held.pop().close()
            # Once one of the three closed, a new connection is served again (as soon as the
            # server has noticed the close).
            deadline = time.monotonic() + GENEROUS
            while True:
                with _connect(port) as again:
                    again.sendall(request)
                    if _read_response(again).startswith(b"HTTP/1.1 200 OK\r\n"):
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()
