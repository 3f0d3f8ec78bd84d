"""The console's device onboarding and revocation pages (traceapi/console/onboard.py)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select
from trace_kit import CLIMATE, FARM, LOG, PACKER

from agritrace.cli import main
from gateway.runtime import load_or_create_device_key
from tracecore.keys import SignerKey, device_fingerprint
from tracecore.provisioning import Provisioning
from tracecore.storage import Device, DeviceKey, LogEntry, session_scope
from tracecore.storage.models import ChainLink

_CST = timezone(timedelta(hours=8))


def _gateway_key(
    tmp_path: Path, device: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    """Make the key as a gateway does (``agritrace gateway-key``): its public key, fingerprint."""
    assert main(["gateway-key", "--device-id", device, "--out", str(tmp_path / "keys")]) == 0
    printed = capsys.readouterr().out
    public = re.search(r"public key:\s+(\S+)", printed)
    fingerprint = re.search(r"fingerprint:\s+(\S+)", printed)
    assert public, printed
    assert fingerprint, printed
    return public.group(1), fingerprint.group(1)


def _register(client: httpx.Client, device: str, public_key: str, **extra: str) -> httpx.Response:
    form = {
        "csrf": client.csrf,  # type: ignore[attr-defined]
        "lang": "en",
        "device": device,
        "place": "鸡舍一号",
        "place_en": "hen house 1",
        "public_key": public_key,
        **extra,
    }
    return client.post("/console/devices/new", data=form)


def _token(page: str) -> str:
    found = re.search(r'name="token" value="(pv_[^"]+)"', page)
    assert found, page
    return found.group(1)


def _download(client: httpx.Client, token: str) -> httpx.Response:
    form = {"csrf": client.csrf, "token": token, "lang": "en"}  # type: ignore[attr-defined]
    return client.post("/console/devices/provisioning", data=form)


def test_a_farm_registers_its_gateway_and_downloads_the_file_once(
    console_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key made on the gateway registers; the fingerprints agree; the file comes once."""
    public_key, gateway_fingerprint = _gateway_key(tmp_path, "henhouse-7", capsys)
    with console_world.client("farm") as farm, console_world.client("packer") as packer:
        form = farm.get("/console/devices/new", params={"lang": "en"})
        assert form.status_code == 200
        assert 'name="party"' not in form.text  # a party registers for itself only
        added = _register(farm, "henhouse-7", public_key, party=PACKER)
        assert added.status_code == 201, added.text
        shown = re.search(r'id="fingerprint">([^<]+)<', added.text)
        assert shown
        assert shown.group(1) == gateway_fingerprint
        assert "<svg" in added.text
        assert "PRIVATE" not in added.text
        token = _token(added.text)
        # Another party can neither take the file nor use the token up.
        refused = _download(packer, token)
        assert refused.status_code == 403
        first = _download(farm, token)
        assert first.status_code == 200
        assert "attachment" in first.headers["content-disposition"]
        second = _download(farm, token)
        assert second.status_code == 410
        assert "downloaded" in second.text
    document = Provisioning.parse(first.content)
    assert document.device == "henhouse-7"
    assert document.fingerprint == gateway_fingerprint
    assert document.log_vkey == str(LOG.verifier)
    assert document.up_topic == "agritrace/v1/devices/henhouse-7/up"
    assert document.receipt_topic == "agritrace/v1/devices/henhouse-7/receipt"
    assert document.api == "http://127.0.0.1:8000"  # the world's settings.public_url
    assert document.broker == "mqtt://127.0.0.1:1883"
    assert "PRIVATE" not in first.text
    key = load_or_create_device_key(tmp_path / "keys", "henhouse-7")
    assert device_fingerprint(key.public_key) == document.fingerprint
    with session_scope(console_world.engine) as session:
        device = session.get(Device, "henhouse-7")
        assert device is not None
        assert (device.party_id, device.place, device.place_en) == (FARM, "鸡舍一号", "hen house 1")
        logged = session.exec(
            select(LogEntry).where(
                LogEntry.kind == "device_registered", LogEntry.device_id == "henhouse-7"
            )
        ).all()
        assert len(logged) == 1


def test_the_admin_registers_for_a_party_it_chooses(console_world: Any) -> None:
    """The admin picks the party; only the admin may then download the file."""
    public_key = base64.b64encode(load_key_bytes("admin-made")).decode()
    with console_world.client("admin") as admin, console_world.client("packer") as packer:
        form = admin.get("/console/devices/new", params={"lang": "en"})
        assert f'<option value="{PACKER}"' in form.text
        assert 'value="gansu-amr"' not in form.text  # no devices for inspection agencies
        missing = _register(admin, "pack-scale-1", public_key)
        assert missing.status_code == 422
        added = _register(admin, "pack-scale-1", public_key, party=PACKER)
        assert added.status_code == 201, added.text
        token = _token(added.text)
        assert _download(packer, token).status_code == 403
        assert _download(admin, token).status_code == 200
    with session_scope(console_world.engine) as session:
        device = session.get(Device, "pack-scale-1")
        assert device is not None
        assert device.party_id == PACKER


def load_key_bytes(label: str) -> bytes:
    """A valid Ed25519 public key of its own for each label."""
    return SignerKey(label, hashlib.sha256(label.encode()).digest()).public_key


def test_inspectors_do_not_register_devices(console_world: Any) -> None:
    """An inspector gets 403 on the form and on a post of it; nothing is registered."""
    public_key = base64.b64encode(load_key_bytes("inspector-made")).decode()
    with console_world.client("inspector") as inspector:
        assert inspector.get("/console/devices/new").status_code == 403
        refused = _register(inspector, "sneaky-1", public_key, party=FARM)
        assert refused.status_code == 403
    with session_scope(console_world.engine) as session:
        assert session.get(Device, "sneaky-1") is None


@pytest.mark.parametrize(
    ("device", "key", "status", "says"),
    [
        ("Bad_Id", "good", 422, "breaks the rule"),
        ("key-bad-1", base64.b64encode(b"\0" * 32).decode(), 422, "not a valid Ed25519"),
        ("key-bad-2", "not base64!", 422, "not a valid Ed25519"),
        (CLIMATE.name, "good", 409, "registered already"),
        ("dup-key-1", base64.b64encode(CLIMATE.public_key).decode(), 409, "another device"),
    ],
)
def test_a_bad_form_says_what_is_wrong(
    console_world: Any, device: str, key: str, status: int, says: str
) -> None:
    """A bad id or key, or a taken id or key, is a clear error on the form, never a 500."""
    if key == "good":
        key = base64.b64encode(load_key_bytes(f"good-{device}")).decode()
    with console_world.client("farm") as farm:
        answer = _register(farm, device, key)
    assert answer.status_code == status, answer.text
    assert says in html.unescape(answer.text)
    assert 'role="alert"' in answer.text


def test_markup_in_a_device_place_is_shown_escaped(console_world: Any) -> None:
    """A place with markup is shown as text on the result and on the revoke page."""
    public_key = base64.b64encode(load_key_bytes("markup")).decode()
    with console_world.client("farm") as farm:
        added = _register(farm, "markup-1", public_key, place="<b>x</b><script>alert(1)</script>")
        assert added.status_code == 201
        assert "<script>alert(1)" not in added.text
        assert "&lt;script&gt;alert(1)" in added.text
        page = farm.get("/console/devices/markup-1/revoke")
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;" in page.text


def _expected_impact(console_world: Any, device: str, since_ms: int) -> tuple[int, set[str]]:
    """The device's messages at or after ``since_ms`` and their products, read row by row."""
    with session_scope(console_world.engine) as session:
        rows = session.exec(
            select(LogEntry).where(LogEntry.kind == "device_message", LogEntry.device_id == device)
        ).all()
        later = [r.index for r in rows if r.time_ms is not None and r.time_ms >= since_ms]
        links = session.exec(select(ChainLink).where(col(ChainLink.log_index).in_(later))).all()
        return len(later), {link.product_key for link in links}


def _since(console_world: Any, device: str) -> tuple[str, int]:
    """A minute (China Standard Time) in the middle of the device's messages."""
    with session_scope(console_world.engine) as session:
        times = sorted(
            t
            for t in session.exec(
                select(LogEntry.time_ms).where(
                    LogEntry.kind == "device_message", LogEntry.device_id == device
                )
            ).all()
            if t is not None
        )
    assert len(times) >= 2
    middle = datetime.fromtimestamp(times[len(times) // 2] / 1000, tz=UTC).astimezone(_CST)
    minute = middle.replace(second=0, microsecond=0)
    return minute.strftime("%Y-%m-%dT%H:%M"), int(minute.timestamp() * 1000)


def test_the_revoke_page_previews_the_messages_and_products_it_untrusts(
    console_world: Any,
) -> None:
    """The preview counts the device's messages from "since" on and links their products."""
    since, since_ms = _since(console_world, CLIMATE.name)
    count, products = _expected_impact(console_world, CLIMATE.name, since_ms)
    assert count > 0
    assert products
    with console_world.client("farm") as farm:
        page = farm.get(
            f"/console/devices/{CLIMATE.name}/revoke", params={"since": since, "lang": "en"}
        )
    assert page.status_code == 200
    assert f"logged {count} messages" in page.text
    assert f"touching {len(products)} products" in page.text
    listed = set(re.findall(r'href="/console/products/([^"?]+)\?', page.text))
    assert listed == products


def test_only_the_owner_or_the_admin_see_the_revoke_page(console_world: Any) -> None:
    """Another party and an inspector get 403; an unknown device 404."""
    path = f"/console/devices/{CLIMATE.name}/revoke"
    with (
        console_world.client("packer") as packer,
        console_world.client("inspector") as inspector,
        console_world.client("admin") as admin,
    ):
        assert packer.get(path).status_code == 403
        assert inspector.get(path).status_code == 403
        assert admin.get(path).status_code == 200
        assert admin.get("/console/devices/no-such-device/revoke").status_code == 404
        form = {"csrf": packer.csrf, "reason": "x", "confirm": "yes"}  # type: ignore[attr-defined]
        assert packer.post(path, data=form).status_code == 403


def test_revoking_logs_a_key_revoked_entry(console_world: Any) -> None:
    """The confirmed form revokes the current key since the time given and logs it."""
    public_key = base64.b64encode(load_key_bytes("to-revoke")).decode()
    with console_world.client("farm") as farm:
        assert _register(farm, "stolen-1", public_key).status_code == 201
        path = "/console/devices/stolen-1/revoke"
        form = {"csrf": farm.csrf, "lang": "en", "since": "2026-11-27T08:30", "reason": "stolen"}  # type: ignore[attr-defined]
        unconfirmed = farm.post(path, data=form)
        assert unconfirmed.status_code == 422
        assert "Tick the confirmation box" in unconfirmed.text
        done = farm.post(path, data={**form, "confirm": "yes"})
    assert done.status_code == 200, done.text
    assert 'id="done"' in done.text
    since_ms = int(datetime(2026, 11, 27, 8, 30, tzinfo=_CST).timestamp() * 1000)
    with session_scope(console_world.engine) as session:
        key = session.exec(select(DeviceKey).where(DeviceKey.device_id == "stolen-1")).one()
        assert (key.revoked_ms, key.revoke_reason) == (since_ms, "stolen")
        logged = session.exec(
            select(LogEntry).where(LogEntry.kind == "key_revoked", LogEntry.device_id == "stolen-1")
        ).all()
        assert len(logged) == 1
