"""Tests of the operations routes: rejections, device gaps, /metrics."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from nacl.signing import SigningKey
from pydantic import SecretStr
from sqlalchemy import Engine

from traceapi.app import create_app
from tracecore.settings import Settings
from tracecore.storage import (
    Checkpoint,
    LogEntry,
    Rejection,
    create_party,
    issue_token,
    register_device,
    session_scope,
)

ADMIN = "admin-secret-for-ops-tests"
NOW = 1_790_000_000_000


@pytest.fixture
def client(engine: Engine, app_client: Any) -> Iterator[Any]:
    """A client of the API on a migrated database with farm-1 (device gw-1) and farm-2."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm one", "farm", NOW)
        create_party(session, "farm-2", "Farm two", "farm", NOW)
        register_device(session, "gw-1", "farm-1", bytes(SigningKey(bytes(32)).verify_key), NOW)
    settings = Settings(admin_token=SecretStr(ADMIN))
    with app_client(create_app(settings, engine, clock=lambda: NOW)) as test_client:
        test_client.engine = engine
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reject(
    engine: Engine,
    reason: str,
    device: str | None,
    raw: bytes,
    at: int,
    *,
    length: int | None = None,
    count: int = 1,
) -> None:
    with session_scope(engine) as session:
        session.add(
            Rejection(
                raw=raw,
                topic=f"agritrace/v1/devices/{device or 'x'}/up",
                reason=reason,
                detail=f"because {reason}",
                device_id=device,
                seq=None,
                received_ms=at,
                raw_length=len(raw) if length is None else length,
                raw_sha256=hashlib.sha256(raw).digest(),
                received_count=count,
                last_received_ms=at + count - 1,
            )
        )


def _entry(engine: Engine, index: int, device: str, seq: int) -> None:
    blob = f"{device}/{seq}".encode()
    with session_scope(engine) as session:
        session.add(
            LogEntry(
                index=index,
                kind="device_message",
                raw=blob,
                raw_sha256=hashlib.sha256(blob).digest(),
                entry=blob,
                leaf_hash=hashlib.sha256(b"\0" + blob).digest(),
                device_id=device,
                seq=seq,
                received_ms=NOW,
            )
        )


def test_rejections_are_listed_newest_first_with_raw_bytes(client: Any) -> None:
    """Admins see every rejection, newest first, with the exact raw bytes in base64."""
    _reject(client.engine, "malformed", None, b"\x00garbage", NOW)
    _reject(client.engine, "bad_signature", "gw-1", b"\xd2\x84signed", NOW + 1)
    response = client.get("/v1/admin/rejections", headers=_auth(ADMIN))
    assert response.status_code == 200
    rows = response.json()
    assert [row["reason"] for row in rows] == ["bad_signature", "malformed"]
    assert base64.b64decode(rows[0]["raw"]) == b"\xd2\x84signed"
    assert rows[1]["device"] is None
    assert rows[1]["detail"] == "because malformed"


def test_rejections_show_length_hash_and_repeats(client: Any) -> None:
    """An item says how long the whole payload was, its SHA-256 and how often it came."""
    _reject(client.engine, "too_large", "gw-1", b"\xd2head", NOW, length=10_000_000, count=7)
    [row] = client.get("/v1/admin/rejections", headers=_auth(ADMIN)).json()
    assert base64.b64decode(row["raw"]) == b"\xd2head"
    assert (row["raw_size"], row["raw_length"]) == (5, 10_000_000)
    assert row["raw_sha256"] == hashlib.sha256(b"\xd2head").hexdigest()
    assert (row["received_count"], row["last_received_ms"]) == (7, NOW + 6)


def test_rejections_filter_by_reason_device_and_page(client: Any) -> None:
    """reason=, device=, limit= and before= narrow the list."""
    for i in range(5):
        _reject(client.engine, "clock_skew", "gw-1", bytes([i]), NOW + i)
    _reject(client.engine, "malformed", None, b"m", NOW)
    only = client.get("/v1/admin/rejections?reason=clock_skew&limit=2", headers=_auth(ADMIN))
    page1 = only.json()
    assert [base64.b64decode(r["raw"]) for r in page1] == [b"\x04", b"\x03"]
    page2 = client.get(
        f"/v1/admin/rejections?reason=clock_skew&limit=2&before={page1[-1]['id']}",
        headers=_auth(ADMIN),
    ).json()
    assert [base64.b64decode(r["raw"]) for r in page2] == [b"\x02", b"\x01"]
    by_device = client.get("/v1/admin/rejections?device=gw-1", headers=_auth(ADMIN)).json()
    assert len(by_device) == 5


def test_rejections_refuse_an_unknown_reason(client: Any) -> None:
    """An unknown reason filter is a 422 naming the field."""
    response = client.get("/v1/admin/rejections?reason=nope", headers=_auth(ADMIN))
    assert response.status_code == 422
    assert "reason" in response.json()["detail"]


def test_gaps_show_missing_sequence_numbers(client: Any) -> None:
    """Missing seqs of a device come back as inclusive ranges, starting from 1."""
    for index, seq in enumerate([3, 4, 7, 10]):
        _entry(client.engine, index, "gw-1", seq)
    response = client.get("/v1/devices/gw-1/gaps", headers=_auth(ADMIN))
    assert response.status_code == 200
    assert response.json() == {
        "device": "gw-1",
        "gaps": [[1, 2], [5, 6], [8, 9]],
        "missing": 6,
    }


def test_gaps_of_a_complete_device_are_empty(client: Any) -> None:
    """A device whose seqs 1..n all arrived has no gaps."""
    for index, seq in enumerate([2, 1, 3]):
        _entry(client.engine, index, "gw-1", seq)
    with session_scope(client.engine) as session:
        token = issue_token(session, "farm-1", NOW).token
    response = client.get("/v1/devices/gw-1/gaps", headers=_auth(token))
    assert response.json()["gaps"] == []


def test_gaps_of_an_unknown_device_is_404(client: Any) -> None:
    """Gaps of a device that is not registered answer 404."""
    response = client.get("/v1/devices/nobody/gaps", headers=_auth(ADMIN))
    assert response.status_code == 404


def test_metrics_count_rejections_per_reason_and_the_log(client: Any) -> None:
    """/metrics exposes rejections per reason (zeros included), log size and checkpoint age."""
    _reject(client.engine, "equivocation", "gw-1", b"e", NOW)
    _reject(client.engine, "equivocation", "gw-1", b"f", NOW)
    _reject(client.engine, "too_large", "gw-1", b"g", NOW, length=10**8, count=3)
    for index in range(3):
        _entry(client.engine, index, "gw-1", index + 1)
    with session_scope(client.engine) as session:
        session.add(Checkpoint(size=2, root=bytes(32), note="n", created_ms=NOW - 4_500))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(
        line.rsplit(" ", 1) for line in response.text.splitlines() if not line.startswith("#")
    )
    assert samples['agritrace_rejections_total{reason="equivocation"}'] == "2"
    assert samples['agritrace_rejections_total{reason="too_large"}'] == "3"  # every arrival
    assert samples['agritrace_rejections_total{reason="bad_signature"}'] == "0"
    assert samples["agritrace_log_entries"] == "3"
    assert samples["agritrace_checkpoint_size"] == "2"
    assert samples["agritrace_checkpoint_age_seconds"] == "4.500"
    assert samples["agritrace_devices"] == "1"
