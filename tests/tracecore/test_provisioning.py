"""Provisioning files, the broker URL they name, one-time downloads and revocation impact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select
from trace_kit import CLIMATE, make_world

from tracecore.errors import ConfigError, NotFound
from tracecore.keys import device_fingerprint, generate_signer, kid_fingerprint
from tracecore.provisioning import Provisioning
from tracecore.settings import Settings
from tracecore.storage import (
    ChainLink,
    LogEntry,
    create_party,
    make_engine,
    register_device,
    session_scope,
    upgrade,
)
from tracecore.storage.onboarding import (
    claim_provisioning,
    issue_provisioning,
    revocation_impact,
)

LOG = generate_signer("example.test/log")


def _document(device: str = "barn-1") -> Provisioning:
    key = generate_signer(device)
    return Provisioning.make(
        device,
        "mqtt://gw.example:1883",
        str(LOG.verifier),
        "https://t.example/",
        device_fingerprint(key.public_key),
    )


def test_a_document_reads_back_as_written() -> None:
    """to_json and parse agree; the API URL loses its trailing slash; topics follow the id."""
    document = _document()
    assert Provisioning.parse(document.to_json()) == document
    assert document.api == "https://t.example"
    assert document.up_topic == "agritrace/v1/devices/barn-1/up"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"version": 2}, "version"),
        ({"device": "Bad Id"}, "wrong"),
        ({"log_vkey": "nonsense"}, "wrong"),
        ({"broker": "http://x"}, "mqtt://"),
        ({"up_topic": "agritrace/v1/devices/other/up"}, "topics"),
        ({"api": 5}, "text"),
    ],
)
def test_a_wrong_document_is_refused_saying_why(change: dict[str, object], says: str) -> None:
    """Each field is checked; the error names the problem."""
    data = json.loads(_document().to_json())
    data.update(change)
    with pytest.raises(ConfigError, match=says):
        Provisioning.parse(json.dumps(data))


def test_missing_fields_and_non_json_are_refused() -> None:
    """A document without a field, or no JSON object at all, is a ConfigError."""
    data = json.loads(_document().to_json())
    del data["fingerprint"]
    with pytest.raises(ConfigError, match="lacks fingerprint"):
        Provisioning.parse(json.dumps(data))
    with pytest.raises(ConfigError, match="not JSON"):
        Provisioning.parse("{")
    with pytest.raises(ConfigError, match="one JSON object"):
        Provisioning.parse("[]")


def test_the_gateway_broker_never_carries_a_login() -> None:
    """The public broker URL wins over the internal one; credentials are dropped."""
    assert Settings(mqtt_url="mqtt://ingest:pw@broker:1883").gateway_broker == "mqtt://broker:1883"
    both = Settings(mqtt_url="mqtt://broker:1883", public_mqtt_url="mqtt://u:p@farm.example:8883")
    assert both.gateway_broker == "mqtt://farm.example:8883"
    assert Settings(mqtt_url=None, public_mqtt_url=None).gateway_broker == "mqtt://127.0.0.1:1883"


def test_a_fingerprint_is_the_kid_in_groups_of_four() -> None:
    """``3f2a-91c0-7b1e-55d4``: 16 hex digits of the kid, four groups."""
    assert kid_fingerprint(bytes.fromhex("3f2a91c07b1e55d4")) == "3f2a-91c0-7b1e-55d4"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """A fresh migrated SQLite database with one farm and one device."""
    made = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(made)
    with session_scope(made) as session:
        create_party(session, "farm-1", "Farm", "farm", 0)
        register_device(session, "barn-1", "farm-1", generate_signer("barn-1").public_key, 0)
    return made


def test_a_download_token_is_claimed_once_and_only_by_its_holder(engine: Engine) -> None:
    """Someone else is refused without using it up; the holder once; then it is used."""
    with session_scope(engine) as session:
        token = issue_provisioning(session, "barn-1", b"\1" * 8, "farm-1", 10)
    assert token.startswith("pv_")
    with session_scope(engine) as session:
        assert claim_provisioning(session, token, "farm-2", 20).outcome == "refused"
    with session_scope(engine) as session:
        first = claim_provisioning(session, token, "farm-1", 30)
    assert (first.outcome, first.device_id, first.used_ms) == ("ok", "barn-1", 30)
    with session_scope(engine) as session:
        again = claim_provisioning(session, token, "farm-1", 40)
    assert (again.outcome, again.used_ms) == ("used", 30)
    with session_scope(engine) as session, pytest.raises(NotFound):
        claim_provisioning(session, token + "x", "farm-1", 50)


def test_revocation_impact_counts_the_messages_in_the_window(db_url: str, app_client: Any) -> None:
    """On SQLite and PostgreSQL: the device's messages at or after "since" (before "until"),
    their first and last device time, and the products of their chains."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with make_world(engine, app_client):
            pass
        with session_scope(engine) as session:
            rows = session.exec(
                select(LogEntry).where(
                    LogEntry.kind == "device_message", LogEntry.device_id == CLIMATE.name
                )
            ).all()
            times = sorted(r.time_ms for r in rows if r.time_ms is not None)
            assert len(times) >= 2
            since = times[1]
            later = [r.index for r in rows if r.time_ms is not None and r.time_ms >= since]
            links = session.exec(select(ChainLink).where(col(ChainLink.log_index).in_(later))).all()
            impact = revocation_impact(session, CLIMATE.name, since)
            assert impact.messages == len(later)
            assert (impact.first_ms, impact.last_ms) == (since, times[-1])
            assert impact.products == sorted({link.product_key for link in links})
            assert impact.product_count == len(impact.products)
            before = revocation_impact(session, CLIMATE.name, times[0], until_ms=since)
            assert (before.messages, before.first_ms) == (1, times[0])
            nothing = revocation_impact(session, CLIMATE.name, times[-1] + 1)
            assert (nothing.messages, nothing.first_ms, nothing.products) == (0, None, [])
    finally:
        engine.dispose()
