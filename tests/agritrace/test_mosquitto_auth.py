"""mosquitto with agritrace broker-auth's files: a gateway publishes only as its own devices."""

from __future__ import annotations

import base64
import contextlib
import getpass
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_kit import free_port

from agritrace.cli import main
from agritrace.mosquitto import INGEST_USER, password_line, write_broker_auth
from tracecore.topics import receipt_topic, up_topic

pytestmark = pytest.mark.mosquitto

FARM_A, FARM_B = "farm-a", "farm-b"
DEV_A, DEV_B = "dev-aaa", "dev-bbb"


@pytest.fixture
def broker(
    tmp_path: Path, mosquitto_programs: tuple[str, str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """A mosquitto of its own with the password file and ACL of two gateways and ingest."""
    binary = mosquitto_programs[0]
    passwords = write_broker_auth(tmp_path, {FARM_A: [DEV_A], FARM_B: [DEV_B]})
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        # Run as us: mosquitto started by root would switch to its own user, which cannot
        # read a password file of mode 0600.
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
        f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
    )
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
        yield port, passwords
    finally:
        process.kill()
        process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Client:
    """A paho MQTT 5 client that records what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.reason: object = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        self.reason = reason
        self.connected.set()

    def accepted(self) -> bool:
        assert self.connected.wait(5), "no CONNACK"
        return not getattr(self.reason, "is_failure", True)

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def _client(port: int, user: str | None, password: str | None = None) -> Iterator[_Client]:
    client = _Client(port, user, password)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _ingest_and_gateway(port: int, passwords: dict[str, str]) -> Iterator[tuple[_Client, _Client]]:
    """Ingest and farm-a's gateway, both logged in."""
    with (
        _client(port, INGEST_USER, passwords[INGEST_USER]) as ingest,
        _client(port, "gw-farm-a", passwords["gw-farm-a"]) as gateway,
    ):
        assert ingest.accepted()
        assert gateway.accepted()
        yield ingest, gateway


def _wait_for(client: _Client, payload: bytes) -> None:
    deadline = time.monotonic() + 5
    while payload not in [p for _, p in client.received]:
        assert time.monotonic() < deadline, f"{payload!r} never arrived"
        time.sleep(0.02)


def test_gateway_publishes_only_under_its_own_devices(broker: tuple[int, dict[str, str]]) -> None:
    """farm-a's gateway reaches ingest as dev-aaa; as dev-bbb the broker drops it."""
    with _ingest_and_gateway(*broker) as (ingest, gateway):
        ingest.subscribe("$share/ingest/agritrace/v1/devices/+/up")  # as ingest subscribes
        gateway.publish(up_topic(DEV_B), b"forged")
        gateway.publish(up_topic(DEV_A), b"own")
        _wait_for(ingest, b"own")
        assert ingest.received == [(up_topic(DEV_A), b"own")]


def test_gateway_reads_only_its_own_receipts(broker: tuple[int, dict[str, str]]) -> None:
    """A receipt for dev-bbb never reaches farm-a's gateway; one for dev-aaa does."""
    with _ingest_and_gateway(*broker) as (ingest, gateway):
        gateway.subscribe("agritrace/v1/devices/+/receipt")
        ingest.publish(receipt_topic(DEV_B), b"not yours")
        ingest.publish(receipt_topic(DEV_A), b"yours")
        _wait_for(gateway, b"yours")
        assert gateway.received == [(receipt_topic(DEV_A), b"yours")]


def test_devices_cannot_publish_receipts_or_log_in_wrongly(
    broker: tuple[int, dict[str, str]],
) -> None:
    """No anonymous login, no wrong password; a gateway cannot forge a receipt."""
    port, passwords = broker
    with _client(port, None) as anonymous:
        assert not anonymous.accepted()
    with _client(port, "gw-farm-a", passwords["gw-farm-b"]) as wrong:
        assert not wrong.accepted()
    with (
        _client(port, "gw-farm-b", passwords["gw-farm-b"]) as listener,
        _client(port, "gw-farm-a", passwords["gw-farm-a"]) as gateway,
    ):
        assert listener.accepted()
        assert gateway.accepted()
        listener.subscribe(receipt_topic(DEV_B))
        gateway.publish(receipt_topic(DEV_B), b"forged receipt")
        time.sleep(0.5)
        assert listener.received == []


def test_password_line_matches_mosquitto_passwd(
    tmp_path: Path, mosquitto_programs: tuple[str, str]
) -> None:
    """Our PBKDF2-SHA512 line is what mosquitto_passwd writes for the same salt."""
    tool = mosquitto_programs[1]
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "gw-x", "s3cret"], check=True)  # noqa: S603
    user, _, stored = path.read_text().strip().partition(":")
    _, kind, _iterations, salt, _digest = stored.split("$")
    assert kind == "7"
    assert password_line(user, "s3cret", base64.b64decode(salt)) == f"{user}:{stored}"


def test_broker_auth_command_keeps_existing_passwords(tmp_path: Path) -> None:
    """A rerun for more gateways adds users; those already there keep their passwords."""
    out = tmp_path / "broker"
    assert main(["broker-auth", "--out", str(out), "--scenario", "egg"]) == 0
    first = {p.name: p.read_text() for p in (out / "passwords").iterdir()}
    assert main(["broker-auth", "--out", str(out), "--scenario", "egg", "--scenario", "beef"]) == 0
    second = {p.name: p.read_text() for p in (out / "passwords").iterdir()}
    assert set(first) < set(second)
    assert all(second[user] == first[user] for user in first)
    acl = (out / "acl").read_text()
    assert "user gw-lanzhou-abattoir\n" in acl
    assert f"topic write {up_topic('abattoir-line')}\n" in acl
    assert all((out / "passwords" / user).stat().st_mode & 0o077 == 0 for user in second)


def test_per_device_logins_use_only_their_own_topics(tmp_path: Path) -> None:
    """--per-device: each device is its own user, with its own two topics and nothing else."""
    out = tmp_path / "broker"
    assert main(["broker-auth", "--out", str(out), "--scenario", "beef", "--per-device"]) == 0
    acl = (out / "acl").read_text()
    block = acl.split("user abattoir-line\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == [
        f"topic write {up_topic('abattoir-line')}",
        f"topic read {receipt_topic('abattoir-line')}",
    ]
    assert (out / "passwords" / "abattoir-line").exists()
    assert not any(p.name.startswith("gw-") for p in (out / "passwords").iterdir())
