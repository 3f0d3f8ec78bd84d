"""Schemathesis against the app's own OpenAPI document: no 5xx, no answer outside its schema.

A real uvicorn server on loopback serves the egg world of trace_kit (SQLite); every operation is
called with generated valid and invalid input, with the admin token so that the calls get past
authentication into the handlers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlalchemy import create_engine
from trace_kit import ADMIN, LOG, ORIGIN, make_world

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
    """The base URL of a uvicorn server over a populated SQLite database."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    with make_world(engine, app_client):
        pass  # leaves the world in the database
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


def _operations() -> dict[str, Any]:
    """Every operation of the app's OpenAPI document, by label (``GET /v1/...``)."""
    app = create_app(Settings(), create_engine("sqlite://"), log_vkey=LOG.verifier)
    loaded = schemathesis.openapi.from_dict(app.openapi())
    operations = (result.ok() for result in loaded.get_all_operations())
    return {operation.label: operation for operation in operations}


OPERATIONS = _operations()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors_and_answers_match_the_schema(live_api: str, label: str) -> None:
    """Generated calls of one operation: never a 5xx, always an answer its schema allows."""
    strategy = OPERATIONS[label].as_strategy()

    @given(case=strategy)
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        case.call_and_validate(
            base_url=live_api,
            headers={"Authorization": f"Bearer {ADMIN}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    call()
