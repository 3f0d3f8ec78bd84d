"""Fixtures of the trace API tests: a real uvicorn server over the egg world."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from trace_kit import ADMIN, LOG, ORIGIN, populate

from traceapi.app import create_app
from tracecore.settings import Settings
from tracecore.storage import make_engine, upgrade


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory, app_client: Any) -> Iterator[str]:
    """The base URL of a uvicorn server on loopback over the egg world (SQLite)."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    populate(engine, app_client)
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=directory)
    app = create_app(config, engine, log_vkey=LOG.verifier)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base
    server.should_exit = True
    thread.join(10)
    engine.dispose()
