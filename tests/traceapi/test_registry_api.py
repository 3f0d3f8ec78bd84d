"""Registry API: parties, tokens, devices and keys over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey
from pydantic import SecretStr
from sqlalchemy import Engine, inspect, text

from traceapi.app import create_app
from tracecore.keys import SignerKey, device_kid
from tracecore.settings import Settings
from tracecore.storage import (
    Product,
    create_party,
    issue_token,
    key_for,
    register_device,
    revoke_token,
    session_scope,
)

ADMIN = "admin-secret-for-tests"
NOW = 1_700_000_000_000


class FakeClock:
    """A settable clock in ms since the Unix epoch."""

    def __init__(self, now_ms: int) -> None:
        """Start at ``now_ms``."""
        self.now_ms = now_ms

    def __call__(self) -> int:
        """Return the current reading."""
        return self.now_ms


def new_key() -> bytes:
    """Return a fresh raw Ed25519 public key."""
    return bytes(SigningKey.generate().verify_key)


def b64(data: bytes) -> str:
    """Return standard base64 text."""
    return base64.b64encode(data).decode()


def bearer(token: str | None) -> dict[str, str]:
    """Return the Authorization header for ``token`` (none for None)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """A test client on a fresh migrated database, with its engine and clock."""

    client: Any
    engine: Engine
    clock: FakeClock

    def call(
        self, method: str, path: str, token: str | None, body: dict[str, Any] | None = None
    ) -> Any:
        """Send a request with an optional bearer token and JSON body; return the response."""
        return self.client.request(method, path, headers=bearer(token), json=body)


def make_api(engine: Engine, admin_token: str | None, app_client: Any) -> Iterator[Api]:
    """Yield an Api whose app runs its lifespan (migrations) on ``engine``."""
    settings = Settings(admin_token=None if admin_token is None else SecretStr(admin_token))
    clock = FakeClock(NOW)
    log_vkey = SignerKey("registry.test/log", bytes(32)).verifier
    with app_client(create_app(settings, engine, clock=clock, log_vkey=log_vkey)) as client:
        yield Api(client=client, engine=engine, clock=clock)


@pytest.fixture
def api(engine_factory: Callable[[], Engine], app_client: Any) -> Iterator[Api]:
    """An API with the admin token ADMIN on a fresh database migrated by the app's startup."""
    yield from make_api(engine_factory(), ADMIN, app_client)


@pytest.fixture
def farm_token(api: Api) -> str:
    """A party token of the farm 'farm-1' (created with 'farm-2' and inspector 'agency-1')."""
    for party_id, kind in (("farm-1", "farm"), ("farm-2", "farm"), ("agency-1", "inspector")):
        response = api.call(
            "POST", "/v1/parties", ADMIN, {"id": party_id, "name": "N", "kind": kind}
        )
        assert response.status_code == 201, response.text
    response = api.call("POST", "/v1/parties/farm-1/tokens", ADMIN)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


# --- happy paths -------------------------------------------------------------------------------


def test_healthz(api: Api) -> None:
    """The health check answers ok after querying the database, without a token."""
    response = api.call("GET", "/healthz", None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "problems": []}


def test_startup_migrates(api: Api) -> None:
    """Starting the app created the tables (migrations ran in the lifespan)."""
    assert "device_keys" in inspect(api.engine).get_table_names()


def test_create_party(api: Api) -> None:
    """The admin creates a party and gets its JSON back with 201."""
    response = api.call(
        "POST", "/v1/parties", ADMIN, {"id": "farm-1", "name": "Farm", "kind": "farm"}
    )
    assert response.status_code == 201
    assert response.json() == {
        "id": "farm-1",
        "name": "Farm",
        "kind": "farm",
        "created_ms": NOW,
        "name_en": None,
        "place": None,
        "place_en": None,
        "licence": None,
    }


def test_party_profile_is_set_and_replaced(api: Api, farm_token: str) -> None:
    """A party gives its public profile at creation and changes it; bad text is refused."""
    body = {
        "id": "farm-3",
        "name": " 临夏蛋鸡养殖场 ",
        "kind": "farm",
        "name_en": "Linxia laying-hen farm",
        "place": "甘肃省临夏州临夏县",
        "place_en": "Linxia County, Gansu",
        "licence": "91622921MA71H2KX1Q",
    }
    created = api.call("POST", "/v1/parties", ADMIN, body)
    assert created.status_code == 201
    assert created.json()["name"] == "临夏蛋鸡养殖场"
    assert created.json()["licence"] == "91622921MA71H2KX1Q"
    # The profile given replaces the stored one: fields left out are cleared.
    patched = api.call("PATCH", "/v1/parties/farm-3", ADMIN, {"place": "甘肃省兰州市"})
    assert patched.status_code == 200
    assert (patched.json()["place"], patched.json()["licence"]) == ("甘肃省兰州市", None)
    assert patched.json()["name"] == "临夏蛋鸡养殖场"  # no name given: kept
    bad = api.call("PATCH", "/v1/parties/farm-3", ADMIN, {"place": "a\u0000b"})
    assert bad.status_code == 422
    assert "control characters" in bad.json()["detail"]
    assert api.call("PATCH", "/v1/parties/nobody", ADMIN, {}).status_code == 404
    assert api.call("PATCH", "/v1/parties/farm-3", farm_token, {}).status_code == 403


def test_create_party_duplicate(api: Api) -> None:
    """A second party with the same id is 409."""
    body = {"id": "farm-1", "name": "Farm", "kind": "farm"}
    assert api.call("POST", "/v1/parties", ADMIN, body).status_code == 201
    response = api.call("POST", "/v1/parties", ADMIN, body)
    assert response.status_code == 409
    assert "exists" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "Farm_1", "name": "F", "kind": "farm"}, "[a-z0-9-]{3,64}"),
        ({"id": "farm-1", "name": "F", "kind": "spaceship"}, "body.kind"),
        ({"id": "farm-1", "name": "", "kind": "farm"}, "body.name"),
        ({"id": "farm-1", "kind": "farm"}, "body.name: Field required"),
        ({"id": "farm-1", "name": "F", "kind": "farm", "extra": 1}, "body.extra"),
    ],
)
def test_create_party_invalid(api: Api, body: dict[str, Any], message: str) -> None:
    """Bad input is 422 with one readable message naming the problem."""
    response = api.call("POST", "/v1/parties", ADMIN, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert message in detail


def test_issue_token_stored_hashed(api: Api, farm_token: str) -> None:
    """The token is shown once; the database holds no trace of the plaintext."""
    response = api.call("POST", "/v1/parties/agency-1/tokens", ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert body["party"] == "agency-1"
    assert body["role"] == "inspector"
    assert body["token"].startswith("at_")
    plaintexts = [farm_token, body["token"]]
    with api.engine.connect() as connection:
        for table in inspect(api.engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608
                for value in row:
                    for plain in plaintexts:
                        assert plain.encode() not in (
                            value if isinstance(value, bytes) else str(value).encode()
                        )


def test_issue_token_unknown_party(api: Api) -> None:
    """A token for an unknown party is 404."""
    assert api.call("POST", "/v1/parties/nobody/tokens", ADMIN).status_code == 404


def test_register_device_as_owner(api: Api, farm_token: str) -> None:
    """The owning party registers a device and gets kid (hex), key and valid_from back."""
    public_key = new_key()
    response = api.call(
        "POST",
        "/v1/devices",
        farm_token,
        {"id": "dev-1", "party": "farm-1", "public_key": b64(public_key)},
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "id": "dev-1",
        "party": "farm-1",
        "kid": device_kid(public_key).hex(),
        "public_key": b64(public_key),
        "valid_from_ms": NOW,
    }
    with session_scope(api.engine) as session:
        assert key_for(session, "dev-1", device_kid(public_key), NOW).public_key == public_key


def test_register_device_errors(api: Api, farm_token: str) -> None:
    """Duplicate device or key is 409, unknown party 404, another party's token 403."""
    public_key = new_key()
    body = {"id": "dev-1", "party": "farm-1", "public_key": b64(public_key)}
    assert api.call("POST", "/v1/devices", ADMIN, body).status_code == 201
    assert (
        api.call("POST", "/v1/devices", ADMIN, {**body, "public_key": b64(new_key())}).status_code
        == 409
    )
    assert api.call("POST", "/v1/devices", ADMIN, {**body, "id": "dev-2"}).status_code == 409
    unknown = {"id": "dev-3", "party": "nobody", "public_key": b64(new_key())}
    assert api.call("POST", "/v1/devices", ADMIN, unknown).status_code == 404
    other = {"id": "dev-4", "party": "farm-2", "public_key": b64(new_key())}
    response = api.call("POST", "/v1/devices", farm_token, other)
    assert response.status_code == 403
    assert response.json() == {"detail": "a party token may register devices of its own party only"}


@pytest.mark.parametrize(
    "public_key",
    ["not base64!", b64(b"\x01" * 31), b64(new_key() + b"\x00"), b64(bytes(32)), "", 42],
    ids=["not-base64", "short", "long", "zero-key", "empty", "not-a-string"],
)
def test_register_device_bad_key(api: Api, farm_token: str, public_key: Any) -> None:
    """A key that is not base64 of a valid 32-byte Ed25519 key is 422 with a message."""
    response = api.call(
        "POST",
        "/v1/devices",
        farm_token,
        {"id": "dev-1", "party": "farm-1", "public_key": public_key},
    )
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
    assert "public_key" in response.json()["detail"] or "Ed25519" in response.json()["detail"]


def test_register_device_bad_id(api: Api, farm_token: str) -> None:
    """An invalid device id is 422."""
    body = {"id": "DEV", "party": "farm-1", "public_key": b64(new_key())}
    response = api.call("POST", "/v1/devices", farm_token, body)
    assert response.status_code == 422
    assert "device id" in response.json()["detail"]


def test_rotate_and_history(api: Api, farm_token: str) -> None:
    """Rotation ends the current key now and starts the new one; GET shows the history."""
    first, second = new_key(), new_key()
    body = {"id": "dev-1", "party": "farm-1", "public_key": b64(first)}
    assert api.call("POST", "/v1/devices", farm_token, body).status_code == 201
    api.clock.now_ms = NOW + 1_000
    response = api.call("POST", "/v1/devices/dev-1/keys", farm_token, {"public_key": b64(second)})
    assert response.status_code == 201
    assert response.json() == {
        "device": "dev-1",
        "kid": device_kid(second).hex(),
        "public_key": b64(second),
        "valid_from_ms": NOW + 1_000,
        "valid_until_ms": None,
        "revoked_ms": None,
        "revoke_reason": None,
    }
    response = api.call("GET", "/v1/devices/dev-1", farm_token)
    assert response.status_code == 200
    device = response.json()
    assert (device["id"], device["party"], device["created_ms"]) == ("dev-1", "farm-1", NOW)
    assert [(k["public_key"], k["valid_from_ms"], k["valid_until_ms"]) for k in device["keys"]] == [
        (b64(first), NOW, NOW + 1_000),
        (b64(second), NOW + 1_000, None),
    ]
    again = api.call("POST", "/v1/devices/dev-1/keys", farm_token, {"public_key": b64(first)})
    assert again.status_code == 409
    bad = api.call("POST", "/v1/devices/dev-1/keys", farm_token, {"public_key": "AAAA"})
    assert bad.status_code == 422
    assert (
        api.call(
            "POST", "/v1/devices/dev-9/keys", ADMIN, {"public_key": b64(new_key())}
        ).status_code
        == 404
    )


def test_revoke(api: Api, farm_token: str) -> None:
    """Revocation defaults to the current key and now; an explicit kid and time are honoured."""
    first, second = new_key(), new_key()
    body = {"id": "dev-1", "party": "farm-1", "public_key": b64(first)}
    assert api.call("POST", "/v1/devices", farm_token, body).status_code == 201
    api.clock.now_ms = NOW + 1_000
    assert (
        api.call("POST", "/v1/devices/dev-1/keys", ADMIN, {"public_key": b64(second)}).status_code
        == 201
    )
    api.clock.now_ms = NOW + 2_000
    response = api.call("POST", "/v1/devices/dev-1/revoke", farm_token, {"reason": "lost"})
    assert response.status_code == 200
    assert response.json()["kid"] == device_kid(second).hex()
    assert (response.json()["revoked_ms"], response.json()["revoke_reason"]) == (
        NOW + 2_000,
        "lost",
    )
    response = api.call(
        "POST",
        "/v1/devices/dev-1/revoke",
        ADMIN,
        {"kid": device_kid(first).hex(), "since_ms": NOW + 500, "reason": "leaked"},
    )
    assert response.status_code == 200
    assert response.json()["revoked_ms"] == NOW + 500
    assert (
        api.call(
            "POST", "/v1/devices/dev-1/revoke", ADMIN, {"kid": "00" * 8, "reason": "x"}
        ).status_code
        == 404
    )
    assert (
        api.call(
            "POST", "/v1/devices/dev-1/revoke", ADMIN, {"kid": "zz", "reason": "x"}
        ).status_code
        == 422
    )
    assert api.call("POST", "/v1/devices/dev-1/revoke", ADMIN, {}).status_code == 422
    assert api.call("POST", "/v1/devices/dev-9/revoke", ADMIN, {"reason": "x"}).status_code == 404


def test_get_unknown_device(api: Api) -> None:
    """GET of an unknown device is 404 with a JSON detail."""
    response = api.call("GET", "/v1/devices/dev-9", ADMIN)
    assert response.status_code == 404
    assert "dev-9" in response.json()["detail"]


# --- authentication ----------------------------------------------------------------------------


def test_missing_and_unknown_tokens_are_401(api: Api) -> None:
    """No token, a malformed header or an unknown token is 401 with a Bearer challenge."""
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        bearer("at_x"),
    ):
        response = api.client.get("/v1/devices/dev-1", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert isinstance(response.json()["detail"], str)


def test_revoked_token_is_401(api: Api, farm_token: str) -> None:
    """A revoked party token is refused with 401."""
    with session_scope(api.engine) as session:
        revoke_token(session, farm_token, NOW)
    assert api.call("GET", "/v1/devices/dev-1", farm_token).status_code == 401


@pytest.mark.parametrize("admin_token", [None, ""])
def test_admin_routes_closed_without_admin_token(
    engine_factory: Callable[[], Engine], admin_token: str | None, app_client: Any
) -> None:
    """With no admin token configured, admin routes answer 401 to any token, even an empty one."""
    for api in make_api(engine_factory(), admin_token, app_client):
        for token in ("", "None", "null", ADMIN):
            response = api.call(
                "POST", "/v1/parties", token, {"id": "farm-1", "name": "F", "kind": "farm"}
            )
            assert response.status_code == 401
        assert api.call("POST", "/v1/parties/farm-1/tokens", ADMIN).status_code == 401


# --- authorization matrix ----------------------------------------------------------------------

PRINCIPALS = ("none", "wrong", "admin", "owner", "other", "inspector")
MATRIX_PRODUCT = "01/06901234567892/10/MATRIX"

#: Expected status per route for each principal, in the order of PRINCIPALS.
MATRIX: dict[str, tuple[int, ...]] = {
    "POST /v1/parties": (401, 401, 201, 403, 403, 403),
    "POST /v1/parties/{party}/tokens": (401, 401, 201, 403, 403, 403),
    # Every valid token lists what it may see (test_tokens_api.py); the revoked token is a
    # fresh one of farm-1, the owner.
    "GET /v1/tokens": (401, 401, 200, 200, 200, 200),
    "POST /v1/tokens/{token}/revoke": (401, 401, 200, 200, 403, 403),
    "PATCH /v1/parties/{party}": (401, 401, 200, 200, 403, 403),
    "POST /v1/devices": (401, 401, 201, 201, 403, 403),
    "POST /v1/devices/{device}/keys": (401, 401, 201, 201, 403, 403),
    "POST /v1/devices/{device}/revoke": (401, 401, 200, 200, 403, 403),
    "GET /v1/devices/{device}": (401, 401, 200, 200, 403, 403),
    "GET /v1/devices/{device}/gaps": (401, 401, 200, 200, 403, 403),
    "GET /v1/admin/rejections": (401, 401, 200, 403, 403, 403),
    "GET /healthz": (200, 200, 200, 200, 200, 200),
    "GET /metrics": (200, 200, 200, 200, 200, 200),
    # The recalled product does not exist: who may recall gets 404, who may not gets 403.
    "POST /v1/recalls": (401, 401, 404, 403, 403, 404),
    # Every party reads the feedback on its own products (none here); a party naming another
    # party is 403 (tested in test_feedback.py).
    "GET /v1/feedback": (401, 401, 200, 200, 200, 200),
    # The inspector API: a party sees its own products (the product belongs to farm-1, the
    # owner); it has no evidence yet, so its EPCIS export is 409 for whoever may see it.
    "GET /v1/products": (401, 401, 200, 200, 200, 200),
    "GET /v1/lineage/{key}": (401, 401, 200, 200, 403, 200),
    "GET /v1/export/kde.csv": (401, 401, 200, 200, 200, 200),
    "GET /v1/export/epcis/{key}": (401, 401, 409, 409, 403, 409),
    "GET /v1/parties/{party}/credit": (401, 401, 200, 200, 403, 200),
    # The access trail: each caller sees its own part of it (test_access_trail.py).
    "GET /v1/access": (401, 401, 200, 200, 200, 200),
}


def test_matrix_covers_every_registry_route(api: Api) -> None:
    """The matrix lists every route of the OpenAPI schema, and nothing else."""
    paths = api.client.app.openapi()["paths"]
    # The document has a path per Digital Link form (traceapi.openapi): one route serves them.
    served = {
        re.sub(r"01/\{gtin\}(/10/\{lot\})?(/21/\{serial\})?", "{key}", f"{method.upper()} {path}")
        .replace("{party_id}", "{party}")
        .replace("{device_id}", "{device}")
        .replace("{token_id}", "{token}")
        for path, operations in paths.items()
        for method in operations
        # The public routes read no token: the log and bundles (test_log_api.py,
        # test_bundle_api.py), scans and QR codes (test_scan.py, test_qr.py) and posting
        # feedback (test_feedback.py) are called without one there.
        # Stall pages (/p/, test_stall.py) are public too.
        if not path.startswith(("/v1/log/", "/v1/bundle/", "/01", "/qr/", "/v1/feedback/", "/p/"))
    }
    assert served == set(MATRIX)


def test_authorization_matrix(api: Api) -> None:
    """Every registry route x {no, wrong, admin, owner, other party, inspector} token."""
    counter = itertools.count()
    with session_scope(api.engine) as session:
        create_party(session, "farm-1", "Owner", "farm", NOW)
        create_party(session, "farm-2", "Other", "farm", NOW)
        create_party(session, "agency-1", "Agency", "inspector", NOW)
        session.add(Product(key=MATRIX_PRODUCT, owner_party_id="farm-1", created_ms=NOW))
        tokens: dict[str, str | None] = {
            "none": None,
            "wrong": "at_" + "A" * 43,
            "admin": ADMIN,
            "owner": issue_token(session, "farm-1", NOW).token,
            "other": issue_token(session, "farm-2", NOW).token,
            "inspector": issue_token(session, "agency-1", NOW).token,
        }

    def fresh_device() -> str:
        """Register a new device of farm-1 directly in the database; return its id."""
        device_id = f"dev-{next(counter)}"
        with session_scope(api.engine) as session:
            register_device(session, device_id, "farm-1", new_key(), NOW)
        return device_id

    def request(route: str) -> tuple[str, str, dict[str, Any] | None]:
        """Return method, concrete path and a valid body for one call of ``route``."""
        method, template = route.split(" ")
        n = next(counter)
        body: dict[str, Any] | None = None
        if route == "POST /v1/parties":
            body = {"id": f"party-{n}", "name": "New", "kind": "packer"}
        elif route == "PATCH /v1/parties/{party}":
            body = {"place": "甘肃省临夏州临夏县", "place_en": "Linxia County, Gansu"}
        elif route == "POST /v1/devices":
            body = {"id": f"new-{n}", "party": "farm-1", "public_key": b64(new_key())}
        elif route.endswith("/keys"):
            body = {"public_key": b64(new_key())}
        elif route.endswith("/revoke"):
            body = {"reason": "test"}
        elif route == "POST /v1/recalls":
            body = {"product": "01/06901234567892/10/NONE", "reason": "test"}
        path = template.replace("{party}", "farm-1").replace("{key}", MATRIX_PRODUCT)
        if "{device}" in path:
            path = path.replace("{device}", fresh_device())
        if "{token}" in path:
            with session_scope(api.engine) as session:
                path = path.replace("{token}", str(issue_token(session, "farm-1", NOW).id))
        return method, path, body

    mismatches = []
    for route, expected in MATRIX.items():
        for principal, status in zip(PRINCIPALS, expected, strict=True):
            method, path, body = request(route)
            response = api.call(method, path, tokens[principal], body)
            if response.status_code != status:
                mismatches.append((route, principal, status, response.status_code, response.text))
            if response.status_code == 401:
                assert response.headers.get("WWW-Authenticate") == "Bearer"
    assert mismatches == []
