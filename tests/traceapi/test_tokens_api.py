"""Token lifetime and revocation over HTTP (docs/registry-api.md), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from clock_kit import Clock
from pydantic import SecretStr
from sqlalchemy import Engine, inspect, text

from traceapi.app import create_app
from tracecore.keys import SignerKey
from tracecore.settings import Settings
from tracecore.storage import hash_token

ADMIN = "admin-secret-for-token-tests"
NOW = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


@dataclass
class Api:
    """A test client on a fresh database, its engine and clock, and the tokens it issued."""

    client: Any
    engine: Engine
    clock: Clock

    def call(
        self, method: str, path: str, token: str | None, body: dict[str, Any] | None = None
    ) -> Any:
        """Send a request with an optional bearer token and JSON body; return the response."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.client.request(method, path, headers=headers, json=body)

    def issue(self, party: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Issue a token for ``party`` as the admin; return the answer's JSON."""
        response = self.call("POST", f"/v1/parties/{party}/tokens", ADMIN, body)
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        return issued

    def whoami(self, token: str) -> Any:
        """Call a route every valid token may call (its own listing)."""
        return self.call("GET", "/v1/tokens", token)


@pytest.fixture
def api(engine_factory: Callable[[], Engine], app_client: Any) -> Iterator[Api]:
    """An API with farms farm-1 and farm-2 and the inspection agency agency-1."""
    engine = engine_factory()
    clock = Clock(NOW)
    log_vkey = SignerKey("tokens.test/log", bytes(32)).verifier
    app = create_app(Settings(admin_token=SecretStr(ADMIN)), engine, clock=clock, log_vkey=log_vkey)
    with app_client(app) as client:
        api = Api(client=client, engine=engine, clock=clock)
        for party_id, kind in (("farm-1", "farm"), ("farm-2", "farm"), ("agency-1", "inspector")):
            body = {"id": party_id, "name": "N", "kind": kind}
            assert api.call("POST", "/v1/parties", ADMIN, body).status_code == 201
        yield api


def test_issue_returns_id_and_expiry(api: Api) -> None:
    """The answer names the token by id and gives its expiry: 90 days, or lifetime_days."""
    first = api.issue("farm-1")
    assert set(first) == {"id", "token", "party", "role", "created_ms", "expires_ms"}
    assert (first["party"], first["role"], first["created_ms"]) == ("farm-1", "party", NOW)
    assert first["expires_ms"] == NOW + 90 * DAY_MS
    short = api.issue("agency-1", {"lifetime_days": 7})
    assert (short["role"], short["expires_ms"]) == ("inspector", NOW + 7 * DAY_MS)
    assert short["id"] != first["id"]
    for bad in ({"lifetime_days": 0}, {"lifetime_days": 367}, {"lifetime_days": "x"}, {"x": 1}):
        response = api.call("POST", "/v1/parties/farm-1/tokens", ADMIN, bad)
        assert response.status_code == 422, bad
        assert isinstance(response.json()["detail"], str)


def test_expired_token_is_401_with_its_date(api: Api) -> None:
    """A token is accepted until the ms before expires_ms, then 401 naming the expiry date."""
    issued = api.issue("farm-1", {"lifetime_days": 1})
    api.clock.now_ms = issued["expires_ms"] - 1
    assert api.whoami(issued["token"]).status_code == 200
    api.clock.now_ms = issued["expires_ms"]
    response = api.whoami(issued["token"])
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "token expired on 2023-11-15T22:13:20Z"}


def test_revoked_token_is_401_on_the_next_request(api: Api) -> None:
    """A token revoked through the API is refused from the very next request on."""
    issued = api.issue("farm-1")
    other = api.issue("farm-1")
    token = issued["token"]
    device = {"id": "dev-1", "party": "farm-1", "public_key": "AAAA"}
    assert api.call("POST", "/v1/devices", token, device).status_code == 422  # authenticated
    api.clock.now_ms = NOW + 1_000
    response = api.call("POST", f"/v1/tokens/{issued['id']}/revoke", other["token"])
    assert response.status_code == 200, response.text
    assert response.json()["revoked_ms"] == NOW + 1_000
    assert response.json()["state"] == "revoked"
    refused = api.call("POST", "/v1/devices", token, device)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "token revoked on 2023-11-14T22:13:21Z"}
    assert api.whoami(other["token"]).status_code == 200  # the other token is untouched


def test_a_token_revokes_itself(api: Api) -> None:
    """Any token, an inspector's too, may revoke itself; then it is refused."""
    inspector = api.issue("agency-1")
    response = api.call("POST", f"/v1/tokens/{inspector['id']}/revoke", inspector["token"])
    assert response.status_code == 200
    assert response.json()["current"] is True
    assert api.whoami(inspector["token"]).status_code == 401


def test_revocation_rights(api: Api) -> None:
    """Admin revokes any token, a party its own party's; another party's token is 403."""
    farm1, farm1_b, farm2 = api.issue("farm-1"), api.issue("farm-1"), api.issue("farm-2")
    inspector, inspector_b = api.issue("agency-1"), api.issue("agency-1")

    def revoke(token_id: int, by: str) -> int:
        status: int = api.call("POST", f"/v1/tokens/{token_id}/revoke", by).status_code
        return status

    assert revoke(farm2["id"], farm1["token"]) == 403
    assert revoke(inspector["id"], farm1["token"]) == 403
    assert revoke(farm1["id"], farm2["token"]) == 403
    # An inspector token revokes itself only, not its agency's other tokens.
    assert revoke(inspector_b["id"], inspector["token"]) == 403
    assert api.whoami(farm2["token"]).status_code == 200
    assert api.whoami(inspector_b["token"]).status_code == 200
    assert revoke(farm1_b["id"], farm1["token"]) == 200
    assert revoke(farm2["id"], ADMIN) == 200
    assert revoke(farm2["id"], ADMIN) == 200  # again: still revoked, same time
    assert revoke(inspector_b["id"], ADMIN) == 200
    assert revoke(999, ADMIN) == 404
    assert revoke(999, farm1["token"]) == 404
    assert api.call("POST", "/v1/tokens/0/revoke", ADMIN).status_code == 422
    assert api.call("POST", "/v1/tokens/abc/revoke", ADMIN).status_code == 422
    assert api.call("POST", f"/v1/tokens/{farm1['id']}/revoke", None).status_code == 401


def test_listing_rights_and_fields(api: Api) -> None:
    """Admin lists all or one party's; a party its own; an inspector itself; no secrets."""
    farm1, farm2, inspector = api.issue("farm-1"), api.issue("farm-2"), api.issue("agency-1")
    api.issue("agency-1")
    api.clock.now_ms = NOW + 5
    assert api.call("POST", f"/v1/tokens/{farm2['id']}/revoke", ADMIN).status_code == 200

    def ids(token: str, query: str = "") -> list[int] | int:
        response = api.call("GET", f"/v1/tokens{query}", token)
        if response.status_code != 200:
            status: int = response.status_code
            return status
        return [item["id"] for item in response.json()]

    assert ids(ADMIN) == [farm1["id"], farm2["id"], inspector["id"], inspector["id"] + 1]
    assert ids(ADMIN, "?party=farm-2") == [farm2["id"]]
    assert ids(ADMIN, "?party=nobody") == 404
    assert ids(farm1["token"]) == [farm1["id"]]
    assert ids(farm1["token"], "?party=farm-1") == [farm1["id"]]
    assert ids(farm1["token"], "?party=farm-2") == 403
    assert ids(inspector["token"]) == [inspector["id"]]
    assert ids(inspector["token"], "?party=farm-1") == 403
    assert ids(farm2["token"]) == 401
    listed = api.call("GET", "/v1/tokens?party=farm-2", ADMIN).json()
    assert listed == [
        {
            "id": farm2["id"],
            "party": "farm-2",
            "role": "party",
            "created_ms": NOW,
            "expires_ms": NOW + 90 * DAY_MS,
            "revoked_ms": NOW + 5,
            "state": "revoked",
            "current": False,
        }
    ]
    mine = api.call("GET", "/v1/tokens", farm1["token"]).json()
    assert [(item["state"], item["current"]) for item in mine] == [("active", True)]


def test_listing_never_shows_a_token_or_its_hash(api: Api) -> None:
    """No listing or revocation answer holds a token's text or the hex or bytes of its hash."""
    issued = [api.issue(party) for party in ("farm-1", "farm-2", "agency-1")]
    secrets = [item["token"] for item in issued]
    hashes = [hash_token(token) for token in secrets]
    answers = [
        api.call("GET", "/v1/tokens", ADMIN),
        api.call("GET", "/v1/tokens", secrets[0]),
        api.call("GET", "/v1/tokens", secrets[2]),
        api.call("POST", f"/v1/tokens/{issued[1]['id']}/revoke", ADMIN),
    ]
    for response in answers:
        assert response.status_code == 200
        for secret, digest in zip(secrets, hashes, strict=True):
            assert secret not in response.text
            assert secret[3:] not in response.text
            for form in (digest.hex(), digest.hex().upper()):
                assert form not in response.text
        assert "hash" not in response.text
    # The database holds the hashes only, never a text.
    with api.engine.connect() as connection:
        for table in inspect(api.engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                for value in row:
                    stored = value if isinstance(value, bytes) else str(value).encode()
                    assert not any(secret.encode() in stored for secret in secrets)
