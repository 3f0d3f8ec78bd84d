"""End to end: ingest, checkpoint, GET /v1/bundle, verify offline; a tampered row is caught."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from agritrace.cli import main as cli
from agritrace.monitor import monitor_log
from ingest import Inbound, Processor
from traceapi.app import create_app
from tracecore import checkpoint as checkpoint_module
from tracecore import smt
from tracecore.bundle import Policy, parse_bundle, verify_bundle
from tracecore.checkpoint import make_checkpoint
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.indexstate import fold
from tracecore.keys import SignerKey
from tracecore.logentry import IndexRoot, Recall, parse_any_entry
from tracecore.message import Event, Reading, Sensor
from tracecore.note import CheckpointBody, cosign, cosigner_verifier, sign_note
from tracecore.settings import Settings
from tracecore.storage import (
    Checkpoint,
    Cosignature,
    LogEntry,
    create_party,
    issue_token,
    session_scope,
)
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

ADMIN = "admin-secret-for-bundle-tests"
ORIGIN = "trace.test/log"
T0 = 1_790_000_000_000
LOT = ProductKey.parse("01/06901234567892/10/L261127")
CARTON = ProductKey.parse("01/06901234567892/10/L261127/21/C0001")


def _key(label: str) -> SignerKey:
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


LOG = _key(ORIGIN)
WITNESS = _key("witness.test")
COLLECT = _key("hens01-collect")
CLIMATE = _key("hens01-climate")


@dataclass
class Site:
    """A running API over a log with a lot, readings and a carton packed from the lot."""

    client: Any
    engine: Engine

    def policy(self, quorum: int = 1) -> Policy:
        """The trust policy: the log key, the one witness, the quorum."""
        return Policy.parse(
            f"log {LOG.verifier}\nwitness w {cosigner_verifier(WITNESS)}\nquorum {quorum}\n"
        )


@pytest.fixture
def site(engine: Engine, app_client: Any) -> Iterator[Site]:
    """Register through the API, ingest through the Processor, checkpoint and cosign."""
    with session_scope(engine) as session:
        create_party(session, "gansu-hens-01", "Linxia hens", "farm", T0)
    settings = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN)
    app = create_app(settings, engine, clock=lambda: T0, log_vkey=LOG.verifier)
    with app_client(app) as client:
        for key in (COLLECT, CLIMATE):
            body = {
                "id": key.name,
                "party": "gansu-hens-01",
                "public_key": base64.b64encode(key.public_key).decode(),
            }
            reply = client.post(
                "/v1/devices", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert reply.status_code == 201, reply.text
        messages = [
            (COLLECT, Event(COLLECT.name, 1, T0 + 1_000, (LOT,), "commissioning")),
            (
                CLIMATE,
                Reading(CLIMATE.name, 1, T0 + 2_000, (LOT,), (Sensor("Temperature", 5.5, "CEL"),)),
            ),
            (
                CLIMATE,
                Reading(CLIMATE.name, 2, T0 + 3_000, (LOT,), (Sensor("Temperature", 6.0, "CEL"),)),
            ),
            (
                COLLECT,
                Event(COLLECT.name, 2, T0 + 4_000, (CARTON,), "commissioning", parents=(LOT,)),
            ),
        ]
        processor = Processor(engine, LOG)
        try:
            batch = [
                Inbound(up_topic(key.name), sign_message(message, key.signing_key), T0 + 5_000)
                for key, message in messages
            ]
            result = processor.process(batch, T0 + 5_000)
            assert result.accepted == 4, result
        finally:
            processor.close()
        with session_scope(engine) as session:
            checkpoint = make_checkpoint(session, ORIGIN, LOG, T0 + 6_000)
            assert checkpoint is not None
            text = checkpoint.note.split("\n\n")[0] + "\n"
            line = cosign(text, WITNESS, 1_790_000_010)
            session.add(
                Cosignature(
                    checkpoint_size=checkpoint.size, witness=WITNESS.name, line=line, received_ms=T0
                )
            )
        yield Site(client, engine)


def _bundle(site: Site, key: ProductKey, query: str = "") -> str:
    reply = site.client.get(f"/v1/bundle/{key.path}{query}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    text: str = reply.text
    return text


def test_bundle_verifies_offline(site: Site) -> None:
    """The carton's bundle holds its lot and the devices' key records, and verifies."""
    bundle = parse_bundle(_bundle(site, CARTON))
    report = verify_bundle(bundle, site.policy())
    assert report.ok, report.render()
    kinds = json.loads(_bundle(site, CARTON))["entries"]
    # 2 registrations + commissioning + 2 readings + carton + the product index's root
    assert len(kinds) == 7
    assert sum(1 for e in kinds if e["proof"] is not None) == 5  # 2 registry + 2 heads + root


def test_verify_command_accepts_and_names_failures(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agritrace verify` exits 0 on the genuine bundle and 1 naming the check on a forgery."""
    (tmp_path / "bundle.json").write_text(_bundle(site, CARTON))
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {LOG.verifier}\nwitness w {cosigner_verifier(WITNESS)}\nquorum 1\n")
    assert cli(["verify", str(tmp_path / "bundle.json"), "--policy", str(policy)]) == 0
    assert "VERIFIED" in capsys.readouterr().out

    doc = json.loads((tmp_path / "bundle.json").read_text())
    doc["checkpoint"] = doc["checkpoint"].replace(ORIGIN, ORIGIN + "x", 1)
    (tmp_path / "forged.json").write_text(json.dumps(doc))
    assert cli(["verify", str(tmp_path / "forged.json"), "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL checkpoint" in out
    assert "NOT VERIFIED: checkpoint" in out


def test_an_edited_database_row_is_caught(site: Site) -> None:
    """An operator editing a stored message (a temperature) cannot make a bundle that verifies."""
    six, two = bytes.fromhex("f94600"), bytes.fromhex("f94000")  # 6.0 and 2.0 as CBOR halves
    with session_scope(site.engine) as session:
        # The first reading of 6.0 °C (the log also holds registry and access entries).
        row = next(
            r
            for r in session.exec(select(LogEntry).order_by(col(LogEntry.index)))
            if r.raw is not None and six in r.raw
        )
        assert row.raw is not None
        forged = row.raw.replace(six, two, 1)
        session.execute(update(LogEntry).where(col(LogEntry.index) == row.index).values(raw=forged))
    failed = {c.name for c in verify_bundle(parse_bundle(_bundle(site, LOT)), site.policy()).failed}
    assert "messages" in failed


def test_previous_checkpoint_consistency_through_the_api(site: Site) -> None:
    """A checkpoint kept earlier is proven a prefix of a later one via ?previous=N."""
    old = site.client.get("/v1/log/checkpoint").text
    size = int(old.split("\n")[1])
    later = Reading(CLIMATE.name, 3, T0 + 7_000, (LOT,), (Sensor("Temperature", 6.5, "CEL"),))
    processor = Processor(site.engine, LOG)
    try:
        raw = sign_message(later, CLIMATE.signing_key)
        assert processor.process(
            [Inbound(up_topic(CLIMATE.name), raw, T0 + 8_000)], T0 + 8_000
        ).accepted
    finally:
        processor.close()
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_000) is not None
    bundle = parse_bundle(_bundle(site, CARTON, f"?previous={size}"))
    assert bundle.consistency is not None
    assert bundle.consistency.old == size
    report = verify_bundle(bundle, site.policy(quorum=0), old)
    assert report.ok, report.render()
    assert "extends the previous checkpoint" in report.render()


def test_unknown_product_bundle_is_404(site: Site) -> None:
    """A bundle of a product that does not exist answers 404."""
    reply = site.client.get("/v1/bundle/01/06901234567892/10/NOPE")
    assert reply.status_code == 404


def test_bad_previous_is_400(site: Site) -> None:
    """A previous size beyond the checkpoint answers 400 with a clear message."""
    reply = site.client.get(f"/v1/bundle/{CARTON.path}?previous=99")
    assert reply.status_code == 400
    assert "previous size" in reply.json()["detail"]


def test_a_recall_is_logged_bundled_and_reported(site: Site) -> None:
    """An inspector's recall of the lot is a log entry that the carton's bundle proves."""
    with session_scope(site.engine) as session:
        create_party(session, "gansu-amr", "Gansu market supervision", "inspector", T0)
        token = issue_token(session, "gansu-amr", T0).token
    reply = site.client.post(
        "/v1/recalls",
        json={"product": LOT.path, "reason": "Salmonella Enteritidis in lot samples"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["by"] == "gansu-amr"
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_000) is not None
    report = verify_bundle(parse_bundle(_bundle(site, CARTON)), site.policy(quorum=0))
    assert report.ok, report.render()
    recalls = next(c for c in report.checks if c.name == "recalls")
    assert recalls.detail == (
        f"RECALLED {LOT.path} by gansu-amr: Salmonella Enteritidis in lot samples"
    )


def test_only_inspectors_and_the_admin_recall(site: Site) -> None:
    """A farm's own token cannot recall; an unknown product is 404 for the admin."""
    with session_scope(site.engine) as session:
        farm_token = issue_token(session, "gansu-hens-01", T0).token
    body = {"product": LOT.path, "reason": "x"}
    farm = site.client.post(
        "/v1/recalls", json=body, headers={"Authorization": f"Bearer {farm_token}"}
    )
    assert farm.status_code == 403
    missing = {"product": "01/06901234567892/10/NOPE", "reason": "x"}
    admin = site.client.post(
        "/v1/recalls", json=missing, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert admin.status_code == 404
    assert site.client.post("/v1/recalls", json=body).status_code == 401


def test_verify_reruns_the_contracts_and_catches_a_forged_claim(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bundle carries the server's contract results; verify re-runs them and compares."""
    text = _bundle(site, CARTON)
    doc = json.loads(text)
    assert len(doc["contracts"]) == 7
    (tmp_path / "bundle.json").write_text(text)
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {LOG.verifier}\nwitness w {cosigner_verifier(WITNESS)}\nquorum 1\n")
    assert cli(["verify", str(tmp_path / "bundle.json"), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "egg-cold-chain" in out
    assert "as the server says: egg-cold-chain" in out
    assert "DIFFERS" not in out

    forged = cbor2.loads(base64.b64decode(doc["contracts"][0]))
    forged["status"] = "fail" if forged["status"] != "fail" else "pass"
    doc["contracts"][0] = base64.b64encode(cbor2.dumps(forged, canonical=True)).decode()
    (tmp_path / "forged.json").write_text(json.dumps(doc))
    assert cli(["verify", str(tmp_path / "forged.json"), "--policy", str(policy)]) == 1
    assert "CONTRACTS DIFFER" in capsys.readouterr().out


def test_stored_results_of_an_older_checkpoint_still_verify(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results stored at size N travel in a bundle at size N+1; verify re-runs them at N."""
    from ingest.contracting import evaluate_pending  # noqa: PLC0415

    with session_scope(site.engine) as session:
        stored_at = session.exec(select(func.max(col(Checkpoint.size)))).one()
    evaluate_pending(site.engine, site.policy(quorum=0), T0 + 6_500)
    later = Reading(CLIMATE.name, 3, T0 + 7_000, (LOT,), (Sensor("Temperature", 6.5, "CEL"),))
    processor = Processor(site.engine, LOG)
    try:
        raw = sign_message(later, CLIMATE.signing_key)
        processor.process([Inbound(up_topic(CLIMATE.name), raw, T0 + 8_000)], T0 + 8_000)
    finally:
        processor.close()
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_000) is not None
    text = _bundle(site, CARTON)
    sizes = {cbor2.loads(base64.b64decode(c))["log_size"] for c in json.loads(text)["contracts"]}
    assert sizes == {stored_at}  # stored before the new reading; the bundle's checkpoint is later
    (tmp_path / "bundle.json").write_text(text)
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {LOG.verifier}\nquorum 0\n")
    assert cli(["verify", str(tmp_path / "bundle.json"), "--policy", str(policy)]) == 0
    assert f"as the server says: egg-cold-chain (stored at size {stored_at})" in (
        capsys.readouterr().out
    )


# Completeness: what a bundle leaves out is caught by the product index (docs/bundle.md).


def _later_readings(site: Site, seqs: range) -> None:
    """Ingest more readings of the lot, then checkpoint (the lot's chain grows)."""
    processor = Processor(site.engine, LOG)
    try:
        for seq in seqs:
            reading = Reading(
                CLIMATE.name, seq, T0 + 7_000 + seq, (LOT,), (Sensor("Temperature", 6.5, "CEL"),)
            )
            raw = sign_message(reading, CLIMATE.signing_key)
            assert processor.process(
                [Inbound(up_topic(CLIMATE.name), raw, T0 + 8_000)], T0 + 8_000
            ).accepted
    finally:
        processor.close()
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_000) is not None


def _recall(site: Site, product: ProductKey) -> None:
    reply = site.client.post(
        "/v1/recalls",
        json={"product": product.path, "reason": "Salmonella Enteritidis in lot samples"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert reply.status_code == 201, reply.text
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_500) is not None


def _verify_cli(doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `agritrace verify` on the bundle ``doc``; return its output."""
    capsys.readouterr()
    (tmp_path / "b.json").write_text(json.dumps(doc))
    policy = tmp_path / "policy.txt"
    # Quorum 0: the site's witness cosigned only the first checkpoint.
    policy.write_text(f"log {LOG.verifier}\nquorum 0\n")
    code = cli(["verify", str(tmp_path / "b.json"), "--policy", str(policy)])
    out = capsys.readouterr().out
    assert (code == 0) == ("\nVERIFIED\n" in out), out
    return out


def _failed(out: str) -> set[str]:
    (last,) = [line for line in out.splitlines() if line.startswith("NOT VERIFIED: ")]
    return set(last.removeprefix("NOT VERIFIED: ").split(", "))


def _entries_of(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in doc["entries"] if cbor2.loads(base64.b64decode(e["entry"]))["kind"] == kind]


def _chain_of(doc: dict[str, Any], product: ProductKey) -> list[dict[str, Any]]:
    """The bundle entries of ``product``'s chain, in chain order."""
    found = [
        (link["pseq"], item)
        for item in _entries_of(doc, "device_message")
        for link in cbor2.loads(base64.b64decode(item["entry"]))["chains"]
        if link["product"] == product.path
    ]
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def test_a_genuine_bundle_proves_the_absence_of_recalls(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing recalled, verify reports absence as proven, up to the index's log size."""
    doc = json.loads(_bundle(site, CARTON))
    out = _verify_cli(doc, tmp_path, capsys)
    root = cbor2.loads(base64.b64decode(_entries_of(doc, "index_root")[0]["entry"]))
    assert (
        f"no recall of the product or its 1 ancestor(s) up to log size {root['size']} "
        "(proof of absence)"
    ) in out
    assert "ok   heads" in out
    assert "ok   registry" in out


def test_leaving_out_the_newest_chain_entry_is_caught(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lot's newest reading dropped, its predecessor proven from the public route: heads."""
    _later_readings(site, range(3, 5))
    doc = json.loads(_bundle(site, CARTON))
    chain = _chain_of(doc, LOT)
    newest, previous = chain[-1], chain[-2]
    doc["entries"].remove(newest)
    size = int(doc["checkpoint"].split("\n")[1])
    proof = site.client.get(f"/v1/log/proof/inclusion?index={previous['index']}&size={size}")
    previous["proof"] = proof.json()["hashes"]
    out = _verify_cli(doc, tmp_path, capsys)
    assert _failed(out) == {"heads"}
    assert "entries were left out" in out


def test_leaving_out_a_middle_chain_entry_is_caught(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reading from the middle of the lot's chain dropped: the chain check names the gap."""
    _later_readings(site, range(3, 5))
    doc = json.loads(_bundle(site, CARTON))
    doc["entries"].remove(_chain_of(doc, LOT)[2])
    out = _verify_cli(doc, tmp_path, capsys)
    assert "chains" in _failed(out)
    assert "position 3 is missing" in out


@pytest.mark.parametrize("recalled", [CARTON, LOT], ids=["product", "ancestor"])
def test_leaving_out_a_recall_is_caught(
    site: Site, recalled: ProductKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recall of the carton, or of the lot it came from, removed from the bundle: recalls."""
    _recall(site, recalled)
    doc = json.loads(_bundle(site, CARTON))
    assert "RECALLED" in _verify_cli(doc, tmp_path, capsys)
    (recall,) = _entries_of(doc, "recall")
    doc["entries"].remove(recall)
    out = _verify_cli(doc, tmp_path, capsys)
    assert _failed(out) == {"recalls"}
    assert f"{recalled.path}: the log's index holds the recall at entry {recall['index']}" in out


@pytest.mark.parametrize("forgery", ["empty list", "absent", "another key's leaf"])
def test_a_forged_no_recall_claim_is_caught(
    site: Site, forgery: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recall removed and the lot's index value rewritten to show none: the index check."""
    _recall(site, LOT)
    doc = json.loads(_bundle(site, CARTON))
    doc["entries"].remove(_entries_of(doc, "recall")[0])
    key = base64.b64encode(hashlib.sha256(b"product\x00" + LOT.path.encode()).digest()).decode()
    (proof,) = [p for p in doc["index"]["proofs"] if p["key"] == key]
    if forgery == "absent":
        proof["value"] = None
    elif forgery == "another key's leaf":
        # The lot's own leaf passed off as a neighbour's: same siblings, the key's last bit
        # flipped, so the "other" key shares every bit of the path (docs/product-index.md).
        real = base64.b64decode(key)
        value_hash = hashlib.sha256(base64.b64decode(proof["value"])).digest()
        proof["value"] = None
        proof["other"] = {
            "key": base64.b64encode(real[:-1] + bytes([real[-1] ^ 1])).decode(),
            "value_hash": base64.b64encode(value_hash).decode(),
        }
    else:
        value = cbor2.loads(base64.b64decode(proof["value"]))
        assert value["recalls"]
        value["recalls"] = []
        proof["value"] = base64.b64encode(cbor2.dumps(value, canonical=True)).decode()
    out = _verify_cli(doc, tmp_path, capsys)
    assert "index" in _failed(out)
    assert "does not lead to the index root" in out
    assert "(proof of absence)" not in out


def test_leaving_out_a_revocation_is_caught(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key revocation of a signing device removed from the bundle: registry."""
    reply = site.client.post(
        f"/v1/devices/{CLIMATE.name}/revoke",
        json={"since_ms": T0 + 60_000, "reason": "sensor stolen"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert reply.status_code == 200, reply.text
    _later_readings(site, range(3, 4))
    doc = json.loads(_bundle(site, CARTON))
    assert "\nVERIFIED\n" in _verify_cli(doc, tmp_path, capsys)
    (revocation,) = _entries_of(doc, "key_revoked")
    doc["entries"].remove(revocation)
    out = _verify_cli(doc, tmp_path, capsys)
    assert _failed(out) == {"registry"}
    assert f"registry entry {revocation['index']}, which the bundle left out" in out


def test_a_bundle_without_index_proofs_proves_no_absence(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Index proofs stripped (as a bundle of an older server): absence is not claimed."""
    doc = json.loads(_bundle(site, CARTON))
    del doc["index"]
    out = _verify_cli(doc, tmp_path, capsys)
    assert _failed(out) == {"index", "heads", "recalls", "registry"}
    assert "no recall in the bundle, not proven" in out


# Monitoring: every index root re-derived from the entries (docs/log.md, "Monitoring").


def test_the_monitor_re_derives_every_index_root(site: Site) -> None:
    """A genuine log: the entries hash to the checkpoint and every index root matches."""
    _recall(site, LOT)
    _later_readings(site, range(3, 5))
    result = monitor_log(site.client, site.policy(quorum=0))
    assert result.ok, result.render()
    (index,) = [detail for name, _, detail in result.checks if name == "index"]
    assert index.startswith("3 root(s) re-derived from the entries")


def test_the_monitor_catches_an_index_root_that_hides_a_recall(site: Site) -> None:
    """An operator logs an index root computed without the recall: the monitor names it."""
    _recall(site, LOT)
    with session_scope(site.engine) as session:
        rows = session.exec(select(LogEntry).order_by(col(LogEntry.index))).all()
        entries = [(row.index, parse_any_entry(row.entry), row.entry) for row in rows]
        hidden = [e for e in entries if not isinstance(e[1], Recall | IndexRoot)]
        values = fold(hidden)
        root = smt.root_of({k: smt.value_hash(v.to_bytes()) for k, v in values.items()})
    with log_session(site.engine) as session:
        forged = append_registry_entry(
            session, IndexRoot(size=len(rows), root=root, time=T0 + 9_800), T0 + 9_800
        )
    with session_scope(site.engine) as session:
        assert make_checkpoint(session, ORIGIN, LOG, T0 + 9_900) is not None
    result = monitor_log(site.client, site.policy(quorum=0))
    assert not result.ok
    assert result.render().splitlines()[-1] == "MONITOR FAILED: index"
    (index,) = [detail for name, _, detail in result.checks if name == "index"]
    assert index.startswith(f"1 of 3 wrong; entry {forged}: the log's first {len(rows)} entries")


def test_the_monitor_catches_a_fork_against_a_kept_checkpoint(site: Site) -> None:
    """A checkpoint kept earlier with another root at its size: the growth check fails."""
    kept = site.client.get("/v1/log/checkpoint").text
    assert monitor_log(site.client, site.policy(quorum=0), kept).ok
    body = CheckpointBody.parse(kept.split("\n\n")[0] + "\n")
    other = sign_note(CheckpointBody(ORIGIN, body.size, bytes(32)).format(), [LOG])
    result = monitor_log(site.client, site.policy(quorum=0), other)
    assert [name for name, ok, _ in result.checks if not ok] == ["growth"]
    assert "changed since the kept checkpoint: fork" in result.render()


@pytest.fixture
def before_the_index(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Checkpoints made as a server before the product index made them: no index root."""
    monkeypatch.setattr(checkpoint_module, "update_index", lambda _session, _now, **_: None)
    return monkeypatch


def test_a_log_from_before_the_index_is_pending_until_its_first_root(
    before_the_index: pytest.MonkeyPatch, site: Site
) -> None:
    """Upgraded: scans wait (not 'tampered') until the next round logs the first index root."""
    reply = site.client.get(f"/{CARTON.path}", headers={"Accept": "application/json"})
    assert reply.json()["pending"] is True, reply.json()
    assert "product index is being built" in reply.json()["detail"]
    before_the_index.undo()
    with session_scope(site.engine) as session:
        checkpoint = make_checkpoint(session, ORIGIN, LOG, T0 + 9_000)
    assert checkpoint is not None  # the log did not grow, but its first root is logged now
    reply = site.client.get(f"/{CARTON.path}", headers={"Accept": "application/json"})
    assert reply.json()["verdict"] == "verified", reply.json()
