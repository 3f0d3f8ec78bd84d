"""The service runner's edges: what it leaves behind when a part of the process fails."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest
from fastapi import FastAPI
from mqtt_kit import free_port

from agritrace.runner import quiet_server, serve_until_stopped


def test_a_failing_neighbour_leaves_no_listening_socket_open() -> None:
    """When another task of the process fails, the API's listening socket is closed at once."""
    port = free_port()

    async def scenario() -> None:
        stop = asyncio.Event()
        server = quiet_server(FastAPI(), "127.0.0.1", port)

        async def fail_once_serving() -> None:
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.01)
            raise RuntimeError("a neighbour task failed")

        async def run_both() -> None:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(serve_until_stopped(server, stop), name="api")
                tasks.create_task(fail_once_serving(), name="neighbour")

        with pytest.raises(ExceptionGroup):
            await run_both()

    asyncio.run(scenario())
    # Left to the garbage collector, the socket would raise a ResourceWarning (an error here)
    # in whichever later test happened to trigger a collection.
    gc.collect()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
