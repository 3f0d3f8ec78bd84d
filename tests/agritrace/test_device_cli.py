"""``agritrace gateway-key``, ``agritrace device add`` and ``agritrace sim send``: a farm
onboards a gateway with its token, and the gateway, started from its provisioning file, gets
its first verified receipt through the real mosquitto."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest
import uvicorn
from browser_kit import CHROMIUM_ARGS, shot
from mqtt_kit import free_port, ingest_thread, unique, wipe_session
from playwright.sync_api import Page, sync_playwright
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import select

from agritrace.cli import main
from gateway.runtime import load_or_create_device_key, wall_clock_ms
from traceapi.app import create_app
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, generate_signer
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.provisioning import Provisioning
from tracecore.settings import Settings
from tracecore.storage import (
    Device,
    DeviceKey,
    LogEntry,
    Rejection,
    create_party,
    issue_token,
    make_engine,
    session_scope,
    upgrade,
)
from tracecore.topics import up_topic

ORIGIN = "device-cli.test/log"
FARM = "linxia-hens-02"
GTIN = "06901234567892"


@dataclass
class Stack:
    """The API served on loopback over a SQLite database, with a farm and its token."""

    base: str
    engine: Engine
    token: str
    log_key: SignerKey
    settings: Settings


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A uvicorn server over a fresh database whose broker for gateways is ``gateway.test``."""
    engine = make_engine(f"sqlite:///{tmp_path / 'agritrace.sqlite3'}")
    upgrade(engine)
    now = time.time_ns() // 1_000_000
    with session_scope(engine) as session:
        create_party(session, FARM, "临夏蛋鸡二场", "farm", now)
        create_party(session, "other-farm", "Other", "farm", now)
        token = issue_token(session, FARM, now).token
    log_key = generate_signer(ORIGIN)
    port = free_port()
    settings = Settings(
        admin_token=SecretStr("admin-" + secrets.token_hex(8)),
        log_origin=ORIGIN,
        data_dir=tmp_path / "server",
        public_url=f"http://127.0.0.1:{port}",
        public_mqtt_url="mqtt://ingest:secret@gateway.test:8883",
    )
    app = create_app(settings, engine, log_vkey=log_key.verifier)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
    try:
        yield Stack(base, engine, token, log_key, settings)
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


def _gateway_key(keys: Path, device: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["gateway-key", "--device-id", device, "--out", str(keys)]) == 0
    out = capsys.readouterr().out
    public = re.search(r"public key:\s+(\S+)", out)
    fingerprint = re.search(r"fingerprint:\s+(\S+)", out)
    assert public, out
    assert fingerprint, out
    return public.group(1), fingerprint.group(1)


def test_gateway_key_makes_a_private_key_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key file is 0600 in a 0700 directory; a second run shows the same key again."""
    keys = tmp_path / "keys"
    public, fingerprint = _gateway_key(keys, "barn-3", capsys)
    assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", fingerprint)
    assert stat.S_IMODE((keys / "barn-3.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert "PRIVATE" not in public
    assert _gateway_key(keys, "barn-3", capsys) == (public, fingerprint)
    assert main(["gateway-key", "--device-id", "Bad Id", "--out", str(keys)]) == 1


def _add(stack: Stack, device: str, public: str, out: Path, *more: str) -> int:
    return main(
        [
            "device",
            "add",
            "--api",
            stack.base,
            "--token",
            stack.token,
            "--id",
            device,
            "--place",
            "鸡舍三号",
            "--public-key",
            public,
            "--out",
            str(out),
            *more,
        ]
    )


def test_device_add_registers_and_writes_the_provisioning_file(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The device is the token's party's; the file names the public broker, not its login."""
    monkeypatch.setenv("AGRITRACE_PUBLIC_MQTT_URL", "mqtt://ingest:secret@gateway.test:8883")
    public, fingerprint = _gateway_key(tmp_path / "keys", "barn-4", capsys)
    out = tmp_path / "provisioning.json"
    assert _add(stack, "barn-4", public, out) == 0
    assert fingerprint in capsys.readouterr().out
    document = Provisioning.parse(out.read_text(encoding="utf-8"))
    assert document.device == "barn-4"
    assert document.fingerprint == fingerprint
    assert document.log_vkey == str(stack.log_key.verifier)
    assert document.api == stack.base
    assert document.broker == "mqtt://gateway.test:8883"  # never ingest's user or password
    assert document.receipt_topic == "agritrace/v1/devices/barn-4/receipt"
    assert "PRIVATE" not in out.read_text(encoding="utf-8")
    with session_scope(stack.engine) as session:
        device = session.get(Device, "barn-4")
        assert device is not None
        assert (device.party_id, device.place) == (FARM, "鸡舍三号")
    # Again: the file is never overwritten; a taken id is the registry's clear refusal.
    assert _add(stack, "barn-4", public, out) == 1
    assert "exists already" in capsys.readouterr().err
    assert _add(stack, "barn-4", public, tmp_path / "again.json") == 1
    assert "409" in capsys.readouterr().err
    assert _add(stack, "barn-5", "AAAA", tmp_path / "bad.json") == 1
    assert "Ed25519" in capsys.readouterr().err
    assert _add(stack, "barn-6", public, tmp_path / "theirs.json", "--party", "other-farm") == 1
    assert "403" in capsys.readouterr().err
    # A lost file: made again for the registered device and key, and for nothing else.
    lost = tmp_path / "lost.json"
    assert _add(stack, "barn-4", public, lost, "--existing") == 0
    assert lost.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")
    other = base64.b64encode(generate_signer("stranger").public_key).decode()
    assert _add(stack, "barn-4", other, tmp_path / "stranger.json", "--existing") == 1
    assert "not this public key" in capsys.readouterr().err
    assert not (tmp_path / "stranger.json").exists()


def test_sim_send_refuses_a_file_made_for_another_key(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway whose key is not the file's fingerprint does not send."""
    public, _ = _gateway_key(tmp_path / "keys", "barn-7", capsys)
    out = tmp_path / "provisioning.json"
    assert _add(stack, "barn-7", public, out) == 0
    _gateway_key(tmp_path / "other", "barn-7", capsys)  # another gateway's key, same id
    lot = ProductKey.from_parts(GTIN, lot="L7").path
    argv = ["sim", "send", "--provisioning", str(out), "--product", lot, "--celsius", "4.5"]
    assert main([*argv, "--keys", str(tmp_path / "other")]) == 1
    assert "do not use it" in capsys.readouterr().err


@pytest.mark.mosquitto
def test_a_gateway_from_its_provisioning_file_gets_a_verified_first_receipt(
    stack: Stack, mosquitto: BrokerAddress, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Key on the gateway, device add with the farm's token, sim send: two verified receipts."""
    device = unique("barn")
    keys = tmp_path / "gateway-keys"
    public, _ = _gateway_key(keys, device, capsys)
    out = tmp_path / "provisioning.json"
    assert _add(stack, device, public, out, "--broker", str(mosquitto)) == 0
    assert Provisioning.parse(out.read_text(encoding="utf-8")).broker == str(mosquitto)
    lot = ProductKey.from_parts(GTIN, lot=unique("L").upper()).path
    send = ["sim", "send", "--provisioning", str(out), "--keys", str(keys), "--product", lot]
    try:
        with ingest_thread(stack.engine, stack.log_key, mosquitto):
            assert main([*send, "--step", "commissioning", "--timeout", "30"]) == 0
            assert main([*send, "--celsius", "4.5", "--timeout", "30"]) == 0
        printed = capsys.readouterr().out
    finally:
        asyncio.run(wipe_session(mosquitto, f"gateway-{device}"))
    assert printed.count("(verified)") == 2
    with session_scope(stack.engine) as session:
        logged = session.exec(
            select(LogEntry).where(LogEntry.device_id == device, LogEntry.kind == "device_message")
        ).all()
        assert [entry.seq for entry in logged] == [1, 2]
        key = session.exec(select(DeviceKey).where(DeviceKey.device_id == device)).one()
        assert key.revoked_ms is None


async def _publish(broker: BrokerAddress, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier=unique("forger")) as client:
        await client.publish(topic, payload, qos=1)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def _farm_page(chromium: str, base: str, token: str) -> Iterator[Page]:
    """A Chromium page signed in to the console as the farm (playwright's sync API runs an
    event loop: the gateway's own asyncio runs between two of these, never inside one)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(locale="en", viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(f"{base}/console/sign-in?lang=en")
            page.locator("#token").fill(token)
            with page.expect_navigation():
                page.locator("#token").press("Enter")
            yield page
        finally:
            browser.close()


def _gateway_sends(  # noqa: PLR0917 (the walk's one gateway step)
    stack: Stack, mosquitto: BrokerAddress, provisioning: Path, keys: Path, device: str, lot: str
) -> None:
    """The gateway, from its file: commissions the lot and sends a reading, both receipted; then
    a forger sends a reading with a broken signature, which is refused."""
    send = ["sim", "send", "--provisioning", str(provisioning), "--keys", str(keys)]
    send += ["--product", lot, "--broker", str(mosquitto), "--timeout", "30"]
    try:
        with ingest_thread(stack.engine, stack.log_key, mosquitto):
            assert main([*send, "--step", "commissioning"]) == 0
            assert main([*send, "--celsius", "4.5"]) == 0
            signer = load_or_create_device_key(keys, device)
            cold = (Sensor("Temperature", 2.0, "CEL"),)
            reading = Reading(device, 3, wall_clock_ms(), (ProductKey.parse(lot),), cold)
            forged = bytearray(sign_message(reading, signer.signing_key))
            forged[-1] ^= 0x01
            asyncio.run(_publish(mosquitto, up_topic(device), bytes(forged)))
            _wait_for(lambda: _rejection_id(stack.engine) is not None, "the refusal")
    finally:
        asyncio.run(wipe_session(mosquitto, f"gateway-{device}"))


def _answer_a_complaint(page: Page, base: str, lot: str) -> None:
    """A buyer complains about the lot (with markup); the farm answers it in the console."""
    complaint = httpx.post(
        f"{base}/v1/feedback/{lot}",
        json={"rating": 1, "complaint": "蛋壳有裂纹 <b>cracked shells</b>"},
        timeout=30,
    )
    assert complaint.status_code == 201, complaint.text
    number = complaint.json()["id"]
    page.goto(f"{base}/console/complaints?lang=en")
    page.locator(f"#answer-text-{number}").fill("已为您更换 Replaced, sorry")
    with page.expect_navigation():
        page.locator(f"#complaint-{number} button[type=submit]").click()
    assert "Replaced, sorry" in page.locator(f"#answer-{number}").inner_text()
    assert "<b>" in page.locator(f"#complaint-{number} .complaint").inner_text()  # escaped


@pytest.mark.slow
@pytest.mark.mosquitto
def test_a_farm_onboards_a_gateway_in_the_console_and_manages_it(
    stack: Stack,
    *,
    mosquitto: BrokerAddress,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chromium: str,
    axe_js: Path,
) -> None:
    """In Chromium, as the farm: register a gateway, download its file, see its first reading
    receipted; see a forged reading refused and why; answer a complaint; revoke the key; sign
    out (docs/gateway.md, docs/farms.md)."""
    device = unique("barn")
    keys = tmp_path / "gateway-keys"
    public, fingerprint = _gateway_key(keys, device, capsys)
    lot = ProductKey.from_parts(GTIN, lot=unique("L").upper()).path
    provisioning = tmp_path / "provisioning.json"
    base = stack.base
    with _farm_page(chromium, base, stack.token) as page:
        page.goto(f"{base}/console/devices/new?lang=en")
        page.locator("#device").fill(device)
        page.locator("#place").fill("鸡舍三号")
        page.locator("#public_key").fill(public)
        with page.expect_navigation():
            page.locator("#register").click()
        assert page.locator("#fingerprint").inner_text().strip() == fingerprint
        shot(page, axe_js, "console-walk-farm-added-en-1280")
        with page.expect_download() as download:
            page.locator("#download").click()
        download.value.save_as(provisioning)

    _gateway_sends(stack, mosquitto, provisioning, keys, device, lot)
    assert capsys.readouterr().out.count("(verified)") == 2

    with _farm_page(chromium, base, stack.token) as page:
        page.goto(f"{base}/console/devices?lang=en")
        card = page.locator(f"#device-{device}")
        assert "2" in card.locator(".receipt").inner_text()  # the reading's receipt, seq 2
        assert "Bad signature" in card.locator(".refused").inner_text()
        with page.expect_navigation():
            card.locator(".refused a").first.click()
        with page.expect_navigation():
            page.locator(f'a[href^="/console/rejections/{_rejection_id(stack.engine)}?"]').click()
        assert "signature" in page.locator("#refused-by").inner_text().lower()
        shot(page, axe_js, "console-walk-farm-refusal-en-1280")

        _answer_a_complaint(page, base, lot)

        page.goto(f"{base}/console/devices/{device}/revoke?lang=en")
        page.locator("#reason").fill("网关被盗 gateway stolen")
        page.locator("#confirm").check()
        with page.expect_navigation():
            page.locator("#revoke").click()
        assert page.locator("#done").is_visible()
        shot(page, axe_js, "console-walk-farm-revoked-en-1280")

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/console/sign-in*")
    with session_scope(stack.engine) as session:
        key = session.exec(select(DeviceKey).where(DeviceKey.device_id == device)).one()
        assert key.revoked_ms is not None


def _rejection_id(engine: Engine) -> int | None:
    """The id of the one refused message of the test's database, once it is stored."""
    with session_scope(engine) as session:
        return session.exec(select(Rejection.id)).first()


def test_gateway_init_sets_up_a_gateway_directory_once(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Key, provisioning file with the API's log key, a gateway.toml that checks; never twice."""
    directory = tmp_path / "gw"
    argv = ["gateway", "init", "--device-id", "barn-9", "--api", stack.base]
    argv += ["--broker", "mqtt://trace.example.cn:1883", "--dir", str(directory)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    fingerprint = re.search(r"fingerprint:\s+(\S+)", out)
    assert fingerprint
    provisioning = Provisioning.parse((directory / "provisioning-barn-9.json").read_bytes())
    assert provisioning.log_vkey == str(stack.log_key.verifier)
    assert provisioning.fingerprint == fingerprint.group(1)
    assert stat.S_IMODE((directory / "keys" / "barn-9.key").stat().st_mode) == 0o600
    assert main(["gateway", "check", "--config", str(directory / "gateway.toml")]) == 0
    assert "device barn-9" in capsys.readouterr().out
    key_before = (directory / "keys" / "barn-9.key").read_bytes()
    assert main(argv) == 1
    assert "exists already" in capsys.readouterr().err
    assert (directory / "keys" / "barn-9.key").read_bytes() == key_before
