"""The access trail: authenticated reads become ``access`` log entries before they are answered."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import col, select
from trace_kit import ADMIN, FARM, LOT, PACKER, World, make_world

from traceapi.access import AccessTrail
from tracecore.errors import StorageError
from tracecore.logentry import Access, parse_any_entry
from tracecore.merkle import verify_inclusion
from tracecore.storage import create_party, issue_token, session_scope
from tracecore.storage.access import list_accesses
from tracecore.storage.logwriter import write_transaction
from tracecore.storage.models import Checkpoint, LogEntry


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world (a flock, its lot and a carton of FARM) on either database."""
    with make_world(engine, app_client) as built:
        yield built


def _accesses(engine: Engine) -> list[tuple[int, Access, bytes]]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(LogEntry).where(col(LogEntry.kind) == "access").order_by(col(LogEntry.index))
        ).all()
        found = []
        for row in rows:
            entry = parse_any_entry(bytes(row.entry))
            assert isinstance(entry, Access)
            found.append((row.index, entry, bytes(row.leaf_hash)))
        return found


def test_an_inspector_read_is_a_log_entry_with_an_inclusion_proof(world: World) -> None:
    """An inspector's lineage read is an access entry naming the owner, provably in the log."""
    before = len(_accesses(world.engine))
    answer = world.client.get(f"/v1/lineage/{LOT.path}", headers=world.auth("inspector"))
    assert answer.status_code == 200
    after = _accesses(world.engine)
    assert len(after) == before + 1
    index, access, leaf = after[-1]
    assert access.who == "gansu-amr"
    assert access.role == "inspector"
    assert access.action == "GET /v1/lineage/{key:path}"
    assert access.target == f"/v1/lineage/{LOT.path}"
    assert access.parties == (FARM,)
    assert access.time == world.now[0]

    size = world.checkpoint()
    proof = world.client.get("/v1/log/proof/inclusion", params={"index": index, "size": size})
    assert proof.status_code == 200
    with session_scope(world.engine) as session:
        checkpoint = session.get(Checkpoint, size)
        assert checkpoint is not None
        root = bytes(checkpoint.root)
    hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
    verify_inclusion(index, size, leaf, hashes, root)


def test_a_party_sees_who_read_its_data_and_nothing_else(world: World) -> None:
    """The owner's trail lists the inspector's read; the other party's does not; admin sees all."""
    world.client.get(f"/v1/lineage/{LOT.path}", headers=world.auth("inspector"))
    read = _accesses(world.engine)[-1][0]

    farm = world.client.get("/v1/access", headers=world.auth("farm"))
    assert farm.status_code == 200
    rows = {row["index"]: row for row in farm.json()}
    assert rows[read]["who"] == "gansu-amr"
    assert rows[read]["parties"] == [FARM]

    packer = world.client.get("/v1/access", headers=world.auth("packer"))
    assert read not in {row["index"] for row in packer.json()}
    assert all(PACKER in row["parties"] for row in packer.json())
    refused = world.client.get("/v1/access", params={"party": FARM}, headers=world.auth("packer"))
    assert refused.status_code == 403

    mine = world.client.get("/v1/access", headers=world.auth("inspector")).json()
    assert read in {row["index"] for row in mine}
    assert {row["who"] for row in mine} == {"gansu-amr"}
    other = world.client.get("/v1/access", params={"who": FARM}, headers=world.auth("inspector"))
    assert other.status_code == 403

    everything = world.client.get("/v1/access", headers=world.auth("admin")).json()
    assert {row["who"] for row in everything} >= {"gansu-amr", FARM, PACKER}


def test_the_trail_holds_no_secret(world: World) -> None:
    """No token text is ever in an access entry, whoever called and however."""
    world.client.get("/v1/tokens", headers=world.auth("farm"))
    world.client.get(f"/v1/lineage/{LOT.path}", headers=world.auth("admin"))
    world.client.get(f"/v1/products?party={FARM}", headers=world.auth("inspector"))
    secrets = [ADMIN, *world.tokens.values()]
    with session_scope(world.engine) as session:
        entries = session.exec(select(LogEntry.entry).where(col(LogEntry.kind) == "access")).all()
    assert entries
    for entry in entries:
        for secret in secrets:
            assert secret.encode() not in bytes(entry)


def test_public_and_refused_requests_are_not_accesses(world: World) -> None:
    """A scan, an unauthenticated call and a refused one leave no access entry."""
    before = len(_accesses(world.engine))
    assert world.client.get(f"/{LOT.path}").status_code == 200
    assert world.client.get("/v1/access").status_code == 401
    other = world.client.get("/v1/access", params={"party": FARM}, headers=world.auth("packer"))
    assert other.status_code == 403
    assert len(_accesses(world.engine)) == before


def test_an_access_that_cannot_be_recorded_shows_nothing(world: World) -> None:
    """If the trail cannot commit, the answer is a 503 without the data."""
    with session_scope(world.engine) as session:
        # Break only the trail's index: the log and everything else still work.
        session.execute(text("ALTER TABLE access_parties RENAME TO access_parties_gone"))
    try:
        answer = world.client.get(f"/v1/lineage/{LOT.path}", headers=world.auth("inspector"))
        assert answer.status_code == 503
        assert LOT.path not in answer.text
        assert "access could not be recorded" in answer.json()["detail"]
    finally:
        with session_scope(world.engine) as session:
            session.execute(text("ALTER TABLE access_parties_gone RENAME TO access_parties"))
    # Nothing half-written: the failed access left no log entry behind.
    assert all(a.parties != (FARM,) or a.who != "gansu-amr" for _, a, _ in _accesses(world.engine))


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_accesses_arriving_during_a_write_commit_together(engine: Engine) -> None:
    """Accesses that wait while a batch is written are committed in one next transaction."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm", "farm", 0)
    trail = AccessTrail(engine)
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            results[n] = trail.record(Access("farm-1", "party", "GET /x", f"/x/{n}", (), n))
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,), name=f"read-{n}") for n in range(20)]
    # Hold the log's write lock, as an ingest batch would: the first access starts a write and
    # waits for the lock; the 19 others arrive meanwhile and queue behind it.
    with write_transaction(engine):
        threads[0].start()
        _wait(lambda: trail.waiting() == (1, 0), "the first write to start")
        for thread in threads[1:]:
            thread.start()
        _wait(lambda: trail.waiting() == (1, 19), "the others to queue")
    for thread in threads:
        thread.join(60)
    assert not errors
    assert trail.counters.batches == 2
    assert trail.counters.entries == 20
    assert trail.counters.largest_batch == 19
    assert sorted(results.values()) == list(
        range(min(results.values()), min(results.values()) + 20)
    )
    with session_scope(engine) as session:
        rows = list_accesses(session, who="farm-1", limit=100)
    assert sorted(r.target for r in rows) == sorted(f"/x/{n}" for n in range(20))


def test_a_failed_batch_fails_every_access_in_it(engine: Engine) -> None:
    """Each waiting access gets the batch's error; none is reported committed."""
    trail = AccessTrail(engine)  # no party farm-9 is needed: the log kind check is the failure
    with session_scope(engine) as session:
        session.execute(text("DROP TABLE access_parties"))
        session.execute(text("DROP TABLE access_records"))
    with pytest.raises(StorageError):
        trail.record(Access("farm-9", "party", "GET /x", "/x", ("farm-9",), 1))
    assert trail.counters.entries == 0
    with session_scope(engine) as session:
        assert session.exec(select(LogEntry).where(col(LogEntry.kind) == "access")).first() is None


def test_a_console_page_is_an_access(world: World, app_client: Any) -> None:
    """A signed-in inspector's console page is recorded like an API read."""
    with session_scope(world.engine) as session:
        token = issue_token(session, "gansu-amr", world.now[0]).token
    page = world.client.get("/console/sign-in", params={"lang": "en"})
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    signed = world.client.post(
        "/console/sign-in",
        data={"csrf": csrf, "token": token, "lang": "en"},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    home = world.client.get("/console/")
    assert home.status_code == 200
    _, access, _ = _accesses(world.engine)[-1]
    assert (access.who, access.role, access.action) == ("gansu-amr", "inspector", "GET /console/")


def _trail_rows(html: str) -> list[tuple[str, str]]:
    """(who, action) of each row of the console's trail table."""
    return re.findall(
        r'<td[^>]*><span class="mono">([^<]+)</span><br><span class="muted small">[^<]*</span></td>'
        r'\s*<td[^>]*><span class="mono">([^<]+)</span>',
        html,
    )


def test_the_console_trail_page_shows_reads_by_role(console_world: Any) -> None:
    """The admin sees everyone's reads and filters them; an inspector sees its own only."""
    with console_world.client("inspector") as inspector, console_world.client("admin") as admin:
        farm_read = inspector.get("/v1/products", headers=console_world.world.auth("farm"))
        assert farm_read.status_code == 200
        own = _trail_rows(inspector.get("/console/access", params={"lang": "en"}).text)
        assert ("gansu-amr", "GET /console/") in own
        assert {who for who, _ in own} == {"gansu-amr"}

        everyone = _trail_rows(admin.get("/console/access", params={"lang": "en"}).text)
        assert (FARM, "GET /v1/products") in everyone
        assert ("gansu-amr", "GET /console/access") in everyone
        narrowed = admin.get("/console/access", params={"who": FARM, "lang": "en"})
        assert {who for who, _ in _trail_rows(narrowed.text)} == {FARM}
        bad = admin.get("/console/access", params={"who": "<b>x</b>", "lang": "en"})
        assert bad.status_code == 422
        assert "<b>x</b>" not in bad.text
