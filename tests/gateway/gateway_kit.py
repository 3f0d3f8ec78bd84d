"""A farm for gateway tests: a registered gateway device in a directory, ingest on the broker,
and the gateway process of a ``gateway.toml`` run in a thread.

The gateway here is the real one (:func:`gateway.service.run_gateway`); the broker is the real
mosquitto, which also plays the farm's own broker (on other topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from mqtt_kit import ingest_thread, unique, wipe_session
from sqlalchemy import Engine
from sqlmodel import select

from gateway.config import GatewayConfig, parse_config
from gateway.runtime import load_or_create_device_key
from gateway.service import Gateway, run_gateway
from tracecore.cose import parse_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, device_fingerprint, generate_signer
from tracecore.logentry import DeviceRegistered
from tracecore.message import DeviceMessage
from tracecore.mqtt import BrokerAddress
from tracecore.provisioning import Provisioning
from tracecore.storage import LogEntry, create_party, register_device, session_scope
from tracecore.storage.logwriter import append_registry_entry, log_session

__all__ = ["GTIN", "ORIGIN", "Farm", "RunningGateway", "logged_messages", "publish", "wait_until"]

GTIN = "06901234567892"
ORIGIN = "gateway.test/log"


@dataclass
class RunningGateway:
    """A gateway process running in a thread; ``gateway`` is its live state."""

    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


@dataclass
class Farm:
    """A farm with one registered gateway device, its directory and its provisioning file."""

    engine: Engine
    broker: BrokerAddress
    directory: Path
    device: str
    party: str
    key: SignerKey
    log_key: SignerKey
    client_ids: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, engine: Engine, broker: BrokerAddress, directory: Path) -> Farm:
        """Register a farm and a gateway device whose key is made in ``directory/keys``."""
        party = unique("farm")
        device = unique("gw")
        key = load_or_create_device_key(directory / "keys", device)
        log_key = generate_signer(ORIGIN)
        since = time.time_ns() // 1_000_000 - 30 * 86_400_000  # readings of the past month
        with session_scope(engine) as session:
            create_party(session, party, "张家川养殖场", "farm", since)
        with log_session(engine) as session:
            # Logged as the registry API logs it: the key history is part of every proof.
            registered = register_device(session, device, party, key.public_key, since)
            entry = DeviceRegistered(device, party, key.public_key, registered.valid_from_ms, since)
            append_registry_entry(session, entry, since)
        provisioning = Provisioning.make(
            device,
            str(broker),
            str(log_key.verifier),
            "http://api.test",
            device_fingerprint(key.public_key),
        )
        (directory / "provisioning.json").write_text(provisioning.to_json(), encoding="utf-8")
        return cls(engine, broker, directory, device, party, key, log_key)

    def lot(self, name: str) -> ProductKey:
        """A lot of this farm's eggs, unique to the test run."""
        return ProductKey.from_parts(GTIN, lot=f"{name}{unique('').strip('-').upper()}")

    def config(self, sources: str, *, gateway: str = "") -> GatewayConfig:
        """Write and read a gateway.toml with these ``[[source]]`` tables."""
        quiet = "" if "status_interval" in gateway else "status_interval = 0\n"
        text = (
            '[gateway]\nprovisioning = "provisioning.json"\nkeys = "keys"\n'
            f"{quiet}{gateway}\n{sources}"
        )
        path = self.directory / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        return parse_config(text, path)

    @contextlib.contextmanager
    def ingest(self) -> Iterator[None]:
        """The ingest service on the broker, with this farm's log key."""
        with ingest_thread(self.engine, self.log_key, self.broker):
            yield

    @contextlib.contextmanager
    def run_offline(self, config: GatewayConfig) -> Iterator[RunningGateway]:
        """Run the gateway of ``config`` without waiting for it to reach its broker."""
        with self.run(config, connect=False) as running:
            yield running

    @contextlib.contextmanager
    def run(self, config: GatewayConfig, *, connect: bool = True) -> Iterator[RunningGateway]:
        """Run the gateway of ``config`` in a thread until the block ends (connected first)."""
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        opened: list[Gateway] = []
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                loop.run_until_complete(run_gateway(config, stop, ready=opened.append))
            except BaseException as exc:  # noqa: BLE001 (re-raised in the test thread)
                failed.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        wait_until(lambda: bool(opened) or bool(failed), "the gateway to open")
        if failed:
            raise failed[0]
        running = RunningGateway(opened[0], loop, stop)
        self.client_ids.append(f"gateway-{self.device}")
        self.client_ids.extend(
            f"agritrace-{self.device}-{source.name}" for source in config.sources
        )
        try:
            if connect:
                wait_until(running.gateway.fleet.connected.is_set, "the gateway to connect")
            yield running
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            loop.close()
        if failed:
            raise failed[0]

    def wipe(self) -> None:
        """Remove the persistent sessions the gateways left on the shared broker."""
        for client_id in self.client_ids:
            asyncio.run(wipe_session(self.broker, client_id))


def logged_messages(engine: Engine, device: str, key: SignerKey) -> list[DeviceMessage]:
    """The device's messages in the log, each verified under ``key``, by seq."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(LogEntry)
            .where(LogEntry.device_id == device, LogEntry.kind == "device_message")
            .order_by(LogEntry.seq)  # type: ignore[arg-type]
        ).all()
        raws = [row.raw for row in rows]
    messages = []
    for raw in raws:
        assert raw is not None
        signed = parse_message(raw)
        signed.verify(key.public_key)
        messages.append(signed.message)
    return messages


def wait_until(condition: Callable[[], bool], what: str, within_s: float = 60) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def publish(broker: BrokerAddress, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """Publish one message at QoS 1, as a farm sensor does."""

    async def send() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=unique("sensor")) as client:
            await client.publish(topic, payload, qos=1, retain=retain)

    asyncio.run(send())
