"""Tests of `agritrace demo`: the whole pipeline runs for real, and a second run resumes."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import epcis_kit
import pytest
from epcis_event_hash_generator.dl_normaliser import normaliser
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from agritrace.cli import main
from traceapi import create_app
from tracecore.bundle import Policy, parse_bundle, parse_message_cached, verify_bundle
from tracecore.epcis import GS1_RESOLVER
from tracecore.identifiers import ProductKey
from tracecore.settings import load_settings
from tracecore.storage import LogEntry, Product, make_engine, session_scope


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(data: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, int]:
    """Run the demo once at a free port; return its output and the port."""
    port = _free_port()
    args = ["--data-dir", str(data), "demo", "--no-serve", "--port", str(port)]
    assert main(args) == 0
    return capsys.readouterr().out, port


def _pages(out: str) -> dict[str, tuple[str, str]]:
    """The demo's four product pages: label → (verdict, URL)."""
    found = re.findall(
        r"^   (excursion|clean|failing|recalled) +(\w+) +(http://\S+)$", out, re.MULTILINE
    )
    return {label: (verdict, url) for label, verdict, url in found}


def _contracts(data: Path, app_client: Any, url: str) -> dict[str, str]:
    """Scan the product of ``url`` again on the demo's data: contract id → status."""
    path = url.split("/", 3)[3]
    with app_client(create_app(load_settings(data_dir=data))) as client:
        reply = client.get(f"/{path}", headers={"Accept": "application/json"})
    assert reply.status_code == 200
    return {c["id"]: c["status"] for c in reply.json()["contracts"]}


def _exports_pass_every_check(data: Path, app_client: Any, urls: list[str]) -> None:
    """The EPCIS exports of the demo's products pass the schema, GS1's reference event
    hashes and a JSON-LD expansion that keeps every signed value (docs/inspection.md)."""
    token = (data / "admin-token").read_text().strip()
    settings = load_settings(data_dir=data, admin_token=SecretStr(token))
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            rows = session.execute(select(col(LogEntry.index), col(LogEntry.raw))).all()
    finally:
        engine.dispose()
    signed = {i: parse_message_cached(raw).message for i, raw in rows if raw is not None}
    admin = {"Authorization": f"Bearer {token}"}
    schema = epcis_kit.validator()
    hashed: set[str] = set()
    with app_client(create_app(settings)) as client:
        for url in urls:
            path = url.split("/", 3)[3]
            reply = client.get(f"/v1/export/epcis/{path}", headers=admin)
            assert reply.status_code == 200, (path, reply.text)
            epcis_kit.check_export(reply.json(), signed, schema, hashed)
    assert hashed, "no event was checked"


def _gs1_sees_distinct_items(data: Path) -> None:
    """GS1's own normaliser (epcis-event-hash-generator) maps every serialized product of the
    demo's two runs to an identifier of its own: GTIN + serial, the lot left out
    (docs/identifiers.md)."""
    engine = make_engine(load_settings(data_dir=data).database_url)
    try:
        with session_scope(engine) as session:
            keys = list(session.execute(select(col(Product.key))).scalars())
    finally:
        engine.dispose()
    serialized = [k for k in keys if ProductKey.parse_canonical(k).serial is not None]
    identifiers = {normaliser(ProductKey.parse_canonical(k).uri(GS1_RESOLVER)) for k in serialized}
    assert len(serialized) > 100, len(serialized)
    assert None not in identifiers
    assert len(identifiers) == len(serialized)


def _kept_checkpoint_size(data_dir: Path) -> int:
    """The size of the checkpoint a demo run kept (the next run proves the log only grew)."""
    return int((data_dir / "demo" / "checkpoint.txt").read_text().split("\n")[1])


def _assert_log_grew(output: str, kept_size: int) -> None:
    """The run's bundle proves the log at its size extends the kept checkpoint."""
    grown = re.search(
        r"consistency  the log at (\d+) extends the previous checkpoint at (\d+)", output
    )
    assert grown is not None, output
    assert int(grown.group(2)) == kept_size < int(grown.group(1))


def _check_stall_and_console(data_dir: Path, app_client: Any, first: str, here: str) -> None:
    """The stall page of the shop that sold the clean case, with its QR label (一摊一码), and
    the console sign-in the demo printed."""
    stall = re.search(rf"^   stall +\d+/100 +({here}p/\S+)$", first, re.MULTILINE)
    assert stall is not None, first
    path = stall.group(1).removeprefix(here)
    with app_client(create_app(load_settings(data_dir=data_dir))) as client:
        reply = client.get(f"/{path}", headers={"Accept": "application/json"})
        _sign_in_as_printed(client, first, here)
    assert reply.status_code == 200
    assert reply.json()["kind"] == "retailer"
    assert reply.json()["products"]


def test_demo_runs_the_pipeline_and_resumes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    app_client: Any,
) -> None:
    """Registration, MQTT traffic with receipts, a cosigned checkpoint, a verified bundle, the
    egg and beef scenarios, a recall and four product pages at the demo's port; twice."""
    monkeypatch.delenv("AGRITRACE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("AGRITRACE_MQTT_URL", raising=False)
    monkeypatch.delenv("AGRITRACE_PUBLIC_URL", raising=False)
    first, port = _run(tmp_path, capsys)
    assert len(re.findall(r"  registered\b", first)) == 4
    assert "8 messages signed and all receipted" in first
    assert "refused and kept: bad_signature" in first
    assert "— demo-witness " in first
    assert first.rstrip().count("VERIFIED") == 1
    assert (tmp_path / "admin-token").stat().st_mode & 0o077 == 0
    pages = _pages(first)
    assert pages["excursion"][0] == "verified"
    assert pages["clean"][0] == "verified"
    assert pages["recalled"][0] == "recalled"
    assert "/R1" in pages["clean"][1]  # the scenarios' first run
    # Genuine evidence, so verified; the contract is what catches the sale during withdrawal.
    assert pages["failing"][0] == "verified"
    assert "drug-withdrawal contract fails: eggs collected" in first
    assert re.search(r"/(R1F1D\d+H2)/21/\1-C\d+$", pages["failing"][1])  # the treated house
    assert _contracts(tmp_path, app_client, pages["failing"][1])["drug-withdrawal"] == "fail"
    _exports_pass_every_check(tmp_path, app_client, [url for _, url in pages.values()])
    clean = _contracts(tmp_path, app_client, pages["clean"][1])
    assert clean["drug-withdrawal"] == "pass"
    assert "fail" not in clean.values()
    # Links, QR codes and bundle URLs follow --port when AGRITRACE_PUBLIC_URL is unset.
    here = f"http://127.0.0.1:{port}/"
    assert all(url.startswith(here) for _, url in pages.values())
    assert f"the QR code of the clean one ({here}qr/" in first
    assert f"curl -o bundle.json {here}v1/bundle/" in first
    assert "127.0.0.1:8000" not in first
    _check_stall_and_console(tmp_path, app_client, first, here)

    kept_size = _kept_checkpoint_size(tmp_path)
    second, _ = _run(tmp_path, capsys)
    assert len(re.findall(r"  found again\b", second)) == 4
    # A new lot each run, and new serials: GTIN + serial alone names a carton.
    assert re.search(r"/10/(L\d{6}-2)/21/\1-C0001\b", second)
    _assert_log_grew(second, kept_size)
    _gs1_sees_distinct_items(tmp_path)
    again = _pages(second)
    assert again["recalled"][0] == "recalled"
    assert all("/R2" in url for _, url in again.values())  # this run's products, not the last

    # What the demo saved verifies on its own, as `agritrace verify` would.
    out = tmp_path / "demo"
    policy = Policy.parse((out / "policy.txt").read_text())
    report = verify_bundle(parse_bundle((out / "bundle.json").read_text()), policy)
    assert report.ok, report.render()


def _sign_in_as_printed(client: Any, out: str, here: str) -> None:
    """Sign in to the console with the inspector's and the farm's tokens the demo printed
    (docs/inspection.md, docs/farms.md)."""
    for console, role in (("inspection", "inspector"), ("producer", "Producer console")):
        printed = re.search(
            rf"the {console} console: {here}console/\n +sign in as \S+ with the token (\S+)", out
        )
        assert printed is not None, out
        form = client.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = client.post(
            "/console/sign-in", data={"csrf": csrf.group(1), "token": printed.group(1)}
        )
        assert signed_in.status_code == 303, signed_in.text
        home = client.get("/console/", params={"lang": "en"})
        assert role in home.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert csrf is not None
        client.post("/console/sign-out", data={"csrf": csrf.group(1)})


def test_demo_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With its port taken the demo exits 1 and says which port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--data-dir", str(tmp_path), "demo", "--port", str(port)]) == 1
    assert f"127.0.0.1:{port} is in use" in capsys.readouterr().err
