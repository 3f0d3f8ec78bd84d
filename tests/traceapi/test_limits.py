"""Request body limits: refused while streaming, and never read before the token is checked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from trace_kit import ADMIN, LOG, ORIGIN

from traceapi.app import create_app
from tracecore.settings import Settings

CHUNK = 64 * 1024
BIG = 50 * 1024 * 1024  # the review's 50 MB body
JSON_ROUTES = ["/v1/parties", "/v1/devices", "/v1/recalls", "/v1/devices/dev-1/keys"]
FORM_ROUTES = ["/v1/feedback/01/06901234567892/10/L1", "/p/farm-1/feedback"]


@dataclass
class Body:
    """A request body that is produced chunk by chunk, counting what the server pulled."""

    size: int
    pulled: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield ``size`` bytes of JSON-ish text in 64 KiB chunks."""
        sent = 0
        while sent < self.size:
            piece = b" " * min(CHUNK, self.size - sent)
            sent += len(piece)
            self.pulled = sent
            yield piece


@pytest.fixture
def client(engine: Engine, app_client: Any) -> Iterator[Any]:
    """The API with an admin token and the default limits."""
    settings = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN)
    with app_client(create_app(settings, engine, log_vkey=LOG.verifier)) as running:
        yield running


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_50_mb_chunked_body_is_413_after_the_limit_not_read_to_the_end(
    client: Any, route: str
) -> None:
    """A chunked body is cut off at the first chunk past 64 KiB: 413, the rest never pulled."""
    body = Body(BIG)
    reply = client.post(
        route,
        content=body.chunks(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 413, reply.text
    assert reply.json() == {
        "detail": "the request body is larger than 65536 bytes, the limit of this route"
    }
    assert reply.headers["connection"] == "close"
    assert body.pulled <= 64 * 1024 + CHUNK


@pytest.mark.parametrize("route", JSON_ROUTES + FORM_ROUTES)
def test_a_declared_content_length_over_the_limit_is_413_before_any_byte(
    client: Any, route: str
) -> None:
    """Content-Length over the limit: 413 without reading a byte, token or not."""
    body = Body(BIG)
    reply = client.post(
        route,
        content=body.chunks(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Length": str(BIG)},
    )
    assert reply.status_code == 413
    assert "larger than" in reply.json()["detail"]
    assert body.pulled == 0


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("token", [None, "at_" + "A" * 43, ""])
def test_a_bad_token_with_a_big_body_is_401_and_the_body_stays_unread(
    client: Any, route: str, token: str | None
) -> None:
    """No or an unknown token: 401 with the Bearer challenge before one byte of the body."""
    body = Body(BIG)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    reply = client.post(route, content=body.chunks(), headers=headers)
    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"] == "Bearer"
    assert isinstance(reply.json()["detail"], str)
    assert body.pulled == 0


@pytest.mark.parametrize("route", FORM_ROUTES)
def test_feedback_forms_are_cut_off_at_16_kib(client: Any, route: str) -> None:
    """The public forms have their own, smaller limit, also enforced while streaming."""
    party = {"id": "farm-1", "name": "F", "kind": "farm"}  # the stall of /p/farm-1
    client.post("/v1/parties", json=party, headers={"Authorization": f"Bearer {ADMIN}"})
    body = Body(BIG)
    reply = client.post(
        route,
        content=body.chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 413
    assert reply.json()["detail"].startswith("the request body is larger than 16384 bytes")
    assert body.pulled <= CHUNK


def test_the_limit_is_a_setting(engine: Engine, app_client: Any) -> None:
    """AGRITRACE_MAX_BODY_BYTES: a valid party of more bytes than it is 413, a smaller one 201."""
    settings = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, max_body_bytes=1024)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with app_client(create_app(settings, engine, log_vkey=LOG.verifier)) as small:
        party = {"id": "farm-1", "name": "F", "kind": "farm", "licence": "x" * 100}
        assert small.post("/v1/parties", json=party, headers=admin).status_code == 201
        padded = {**party, "id": "farm-2", "licence": "x" * 2000}
        reply = small.post("/v1/parties", json=padded, headers=admin)
        assert reply.status_code == 413
        assert "larger than 1024 bytes" in reply.json()["detail"]


def test_a_party_token_with_a_body_still_reaches_its_route(client: Any) -> None:
    """The early token check lets valid tokens through: the route decides (403 here)."""
    client.post(
        "/v1/parties",
        json={"id": "farm-1", "name": "F", "kind": "farm"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    token = client.post(
        "/v1/parties/farm-1/tokens", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()["token"]
    reply = client.post(
        "/v1/parties",
        json={"id": "farm-2", "name": "F", "kind": "farm"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 403
