"""``agritrace demo``: the whole system on one machine, with embedded defaults.

What runs today: the registry and trace API on SQLite, a Gansu laying-hen farm and a packer
registered through the real HTTP API with real tokens, device gateways with Ed25519 key files,
and signed device messages in the wire format of docs/protocol.md, checked against the keys the
registry holds (and a tampered copy refused). Every step goes through the same code paths as
production; later parts (ingest, log, witness, simulator) join this walkthrough as they land.

A second run reuses the data directory: keys, parties and devices are found again, and each
device's sequence number keeps counting up (design.md: ``seq`` survives reboots).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from traceapi import create_app
from tracecore.cose import parse_message, sign_message
from tracecore.errors import ConfigError, KeyFileError, MessageRejected
from tracecore.identifiers import ProductKey
from tracecore.keys import (
    SignerKey,
    generate_signer,
    load_or_create_log_key,
    read_key_file,
    write_key_file,
)
from tracecore.message import Event, Reading, Sensor
from tracecore.settings import Settings

__all__ = ["run_demo"]

# A GTIN-13 of the GS1 China prefix range 690 to 699, with its check digit (GS1 GenSpecs §7.9.1).
EGG_GTIN = "06901234567892"


@dataclass(frozen=True, slots=True)
class _Party:
    id: str
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class _Device:
    id: str
    party: str


PARTIES = (
    _Party("gansu-hens-01", "临夏蛋鸡养殖场 Linxia laying-hen farm", "farm"),
    _Party("lanzhou-pack", "兰州禽蛋包装厂 Lanzhou egg packing plant", "packer"),
)
DEVICES = (
    _Device("hens01-house1-climate", "gansu-hens-01"),
    _Device("hens01-collect", "gansu-hens-01"),
)


def run_demo(settings: Settings, *, host: str, port: int, serve: bool) -> int:
    """Run the demo: start the API, register sample parties and devices, sign and check data.

    With ``serve`` the API keeps running until Ctrl-C (SIGINT) or SIGTERM; otherwise the demo
    exits after the walkthrough. Returns the process exit status.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"admin_token": _admin_token(settings)})
    log_key, _ = load_or_create_log_key(settings.keys_dir, settings.log_origin)
    _check_port_free(host, port)
    return asyncio.run(_run(settings, log_key, host=host, port=port, serve=serve))


async def _run(settings: Settings, log_key: SignerKey, *, host: str, port: int, serve: bool) -> int:
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    base_url = f"http://{host}:{port}"
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(server.serve(), name="api")
        try:
            await _wait_started(server)
            await _walkthrough(settings, log_key, base_url)
        finally:
            if not serve:
                server.should_exit = True
        if serve:
            _say(f"\nThe API keeps running at {base_url} (docs: {base_url}/docs). Ctrl-C stops it.")
    return 0


async def _wait_started(server: uvicorn.Server) -> None:
    for _ in range(200):
        if server.started:
            return
        await asyncio.sleep(0.05)
    raise ConfigError("the API did not start within 10 s")


async def _walkthrough(settings: Settings, log_key: SignerKey, base_url: str) -> None:
    if settings.admin_token is None:
        raise ConfigError("the demo needs an admin token")
    admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    _say(f"agritrace demo: data in {settings.data_dir.resolve()}")
    _say(f"log key (vkey): {log_key.verifier}")
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        await _register_parties(http, admin)
        farm_auth = await _farm_token(http, admin)
        keys = await _register_devices(http, settings, farm_auth)
        await _sign_and_check(http, settings, keys, farm_auth)
    _say("\n5. Try it yourself:")
    device_url = f"{base_url}/v1/devices/{DEVICES[0].id}"
    _say(f"   curl -H 'Authorization: {farm_auth['Authorization']}' {device_url}")
    _say(f"   {base_url}/healthz    API docs: {base_url}/docs")


async def _register_parties(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    _say("\n1. Parties registered through POST /v1/parties (admin token):")
    for party in PARTIES:
        body = {"id": party.id, "name": party.name, "kind": party.kind}
        reply = await http.post("/v1/parties", json=body, headers=admin)
        _expect(reply, 201, 409)
        _say(f"   {party.id:<24} {party.kind:<8} {_state(reply)}  {party.name}")


async def _farm_token(http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    farm = PARTIES[0].id
    reply = await http.post(f"/v1/parties/{farm}/tokens", headers=admin)
    _expect(reply, 201)
    token = reply.json()["token"]
    _say(f"\n2. A party token for {farm} (shown once, stored hashed): {token}")
    return {"Authorization": f"Bearer {token}"}


async def _register_devices(
    http: httpx.AsyncClient, settings: Settings, farm_auth: dict[str, str]
) -> dict[str, SignerKey]:
    _say("\n3. Device gateways registered by the farm itself (POST /v1/devices):")
    keys: dict[str, SignerKey] = {}
    for device in DEVICES:
        key = _load_or_create_key(settings.keys_dir, device.id)
        keys[device.id] = key
        body = {
            "id": device.id,
            "party": device.party,
            "public_key": base64.b64encode(key.public_key).decode(),
        }
        reply = await http.post("/v1/devices", json=body, headers=farm_auth)
        _expect(reply, 201, 409)
        _say(f"   {device.id:<24} kid {key.verifier.kid.hex()}  {_state(reply)}")
    return keys


async def _sign_and_check(
    http: httpx.AsyncClient,
    settings: Settings,
    keys: dict[str, SignerKey],
    farm_auth: dict[str, str],
) -> None:
    _say("\n4. Signed device messages (COSE_Sign1 / Ed25519, docs/protocol.md):")
    out_dir = settings.data_dir / "demo-messages"
    out_dir.mkdir(exist_ok=True)
    registry_key = b""
    raw = b""
    for device_id, raw in _sample_messages(settings, keys):
        reply = await http.get(f"/v1/devices/{device_id}", headers=farm_auth)
        _expect(reply, 200)
        registry_key = _current_key(reply.json())
        signed = parse_message(raw)
        signed.verify(registry_key)
        path = out_dir / f"{device_id}-{signed.message.seq}.cbor"
        path.write_bytes(raw)
        products = ", ".join(p.path for p in signed.message.products)
        _say(
            f"   {device_id} seq {signed.message.seq}: {type(signed.message).__name__.lower()} "
            f"for {products}, {len(raw)} bytes, signature verified against the registry key"
            f"\n      saved as {path}"
        )
    tampered = bytearray(raw)
    tampered[-70] ^= 0x01  # one bit of the payload, after signing
    try:
        parse_message(bytes(tampered)).verify(registry_key)
    except MessageRejected as exc:
        _say(f"   the same message with one bit flipped is refused: {exc.reason.value}")
    else:  # pragma: no cover - would mean the signature check is broken
        raise ConfigError("a tampered message verified: the signature check is broken")


def _state(reply: httpx.Response) -> str:
    return "registered" if reply.status_code == 201 else "found again"


def _sample_messages(settings: Settings, keys: dict[str, SignerKey]) -> list[tuple[str, bytes]]:
    now_ms = _now_ms()
    # Lots are named after the laying day, as Gansu packers print them: L + yymmdd.
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%y%m%d")
    lot = ProductKey.from_parts(EGG_GTIN, lot=f"L{day}")
    collect, climate = DEVICES[1].id, DEVICES[0].id
    commissioning = Event(
        device=collect,
        seq=_next_seq(settings.data_dir, collect),
        time=now_ms,
        products=(lot,),
        step="commissioning",
        location="gansu-hens-01/house-1",
        data={"count": 21600, "house": "1"},
    )
    reading = Reading(
        device=climate,
        seq=_next_seq(settings.data_dir, climate),
        time=now_ms + 1_000,
        products=(lot,),
        sensors=(Sensor("Temperature", 18.5, "CEL"), Sensor("RelativeHumidity", 62, "P1")),
    )
    return [
        (collect, sign_message(commissioning, keys[collect].signing_key)),
        (climate, sign_message(reading, keys[climate].signing_key)),
    ]


def _current_key(device_json: dict[str, Any]) -> bytes:
    for key in device_json["keys"]:
        if key.get("valid_until_ms") is None and key.get("revoked_ms") is None:
            return base64.b64decode(key["public_key"])
    raise ConfigError(f"device {device_json['id']} has no current key")


def _next_seq(data_dir: Path, device_id: str) -> int:
    """Return the device's next sequence number, persisted before use so it is never reused."""
    path = data_dir / "seq" / device_id
    path.parent.mkdir(exist_ok=True)
    seq = int(path.read_text()) + 1 if path.exists() else 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(seq))
    tmp.replace(path)
    return seq


def _load_or_create_key(keys_dir: Path, name: str) -> SignerKey:
    try:
        return read_key_file(keys_dir, name)
    except KeyFileError:
        if (keys_dir / f"{name}.key").exists():
            raise
    key = generate_signer(name)
    write_key_file(keys_dir, key)
    return key


def _admin_token(settings: Settings) -> SecretStr:
    """The admin token: AGRITRACE_ADMIN_TOKEN, or one made for the demo and kept in the data dir."""
    if settings.admin_token is not None:
        return settings.admin_token
    path = settings.data_dir / "admin-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return SecretStr(path.read_text().strip())


def _check_port_free(host: str, port: int) -> None:
    with contextlib.closing(socket.socket()) as sock:
        if sock.connect_ex((host, port)) == 0:
            raise ConfigError(f"{host}:{port} is in use; stop what runs there or pass --port")


def _expect(reply: httpx.Response, *codes: int) -> None:
    if reply.status_code not in codes:
        raise ConfigError(
            f"{reply.request.method} {reply.request.url.path} answered {reply.status_code}: "
            f"{reply.text}"
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
