"""Registry changes made through the API are log entries (design.md: key history is provable)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from nacl.signing import SigningKey
from pydantic import SecretStr
from sqlalchemy import Engine, select
from sqlmodel import col

from traceapi.app import create_app
from tracecore.logentry import DeviceRegistered, KeyRevoked, KeyRotated, parse_any_entry
from tracecore.merkle import leaf_hash
from tracecore.settings import Settings
from tracecore.storage import LogEntry, create_party, session_scope

ADMIN = "admin-secret-for-registry-log-tests"
NOW = 1_790_000_000_000
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def client(engine: Engine, app_client: Any) -> Iterator[Any]:
    """A client of the API on a migrated database with the party farm-1."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm one", "farm", NOW)
    settings = Settings(admin_token=SecretStr(ADMIN))
    with app_client(create_app(settings, engine, clock=lambda: NOW)) as test_client:
        yield test_client


def _key(n: int) -> bytes:
    return bytes(SigningKey(bytes([n]) * 32).verify_key)


def _log(engine: Engine) -> list[LogEntry]:
    with session_scope(engine) as session:
        return list(session.scalars(select(LogEntry).order_by(col(LogEntry.index))))


def test_register_rotate_revoke_are_logged(client: Any, engine: Engine) -> None:
    """Registration, rotation and revocation each append one registry entry, in order."""
    body = {"id": "gw-1", "party": "farm-1", "public_key": base64.b64encode(_key(1)).decode()}
    assert client.post("/v1/devices", json=body, headers=AUTH).status_code == 201
    rotate = {"public_key": base64.b64encode(_key(2)).decode()}
    assert client.post("/v1/devices/gw-1/keys", json=rotate, headers=AUTH).status_code == 201
    revoke = {"reason": "gateway stolen", "since_ms": NOW - 5}
    assert client.post("/v1/devices/gw-1/revoke", json=revoke, headers=AUTH).status_code == 200

    logged = _log(engine)
    # Each call is also an access of the admin's, logged right after what it changed.
    assert [row.kind for row in logged] == [
        "device_registered",
        "access",
        "key_rotated",
        "access",
        "key_revoked",
        "access",
    ]
    assert [row.index for row in logged] == list(range(6))
    accesses = [parse_any_entry(row.entry) for row in logged[1::2]]
    assert [(a.who, a.action, a.parties) for a in accesses] == [  # type: ignore[union-attr]
        ("admin", "POST /v1/devices", ("farm-1",)),
        ("admin", "POST /v1/devices/{device_id}/keys", ("farm-1",)),
        ("admin", "POST /v1/devices/{device_id}/revoke", ("farm-1",)),
    ]
    rows = logged[0::2]
    entries = [parse_any_entry(row.entry) for row in rows]
    assert entries == [
        DeviceRegistered("gw-1", "farm-1", _key(1), NOW, NOW),
        KeyRotated("gw-1", _key(2), NOW, NOW),
        KeyRevoked("gw-1", entries[2].kid, NOW - 5, "gateway stolen", NOW),  # type: ignore[union-attr]
    ]
    assert all(row.leaf_hash == leaf_hash(row.entry) for row in rows)
    assert all(row.device_id == "gw-1" and row.raw is None for row in rows)


def test_a_refused_registration_logs_nothing(client: Any, engine: Engine) -> None:
    """A registration that fails (unknown party) leaves no log entry behind."""
    body = {"id": "gw-2", "party": "nobody", "public_key": base64.b64encode(_key(3)).decode()}
    assert client.post("/v1/devices", json=body, headers=AUTH).status_code == 404
    assert _log(engine) == []
