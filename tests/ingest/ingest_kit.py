"""Helpers of the ingest tests: parties, devices with keys, signed messages, table access."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
from sqlalchemy import Engine, Table, func, select
from sqlmodel import SQLModel

from ingest import BatchResult, Inbound, Processor
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Event, Reading, Sensor
from tracecore.storage import create_party, register_device, session_scope
from tracecore.topics import up_topic

__all__ = ["HOUR", "RECEIVED", "T0", "FakeDevice", "World", "product", "seed", "table"]

T0 = 1_767_258_000_000  # 2026-01-01T09:00:00Z
RECEIVED = T0 + 1_000
HOUR = 3_600_000


def product(name: str, gtin: str = "09506000134352") -> str:
    """Return the canonical key of a test product lot ``name``."""
    return ProductKey(gtin, lot=name).path


def table(name: str) -> Table:
    """Return a table of the schema by name."""
    return SQLModel.metadata.tables[name]


def seed(label: str) -> bytes:
    """Return a fixed Ed25519 seed for a test key named ``label``."""
    return hashlib.sha256(b"agritrace/tests/ingest/" + label.encode()).digest()


@dataclass
class FakeDevice:
    """A registered (or not) device that signs messages with its key; seqs count up from 1."""

    id: str
    party: str
    key: nacl.signing.SigningKey
    next_seq: int = 1

    def _seq(self, seq: int | None) -> int:
        if seq is None:
            seq = self.next_seq
        self.next_seq = max(self.next_seq, seq + 1)
        return seq

    def reading(
        self, *products: str, seq: int | None = None, time: int = T0, value: float = 4.5
    ) -> bytes:
        """Return the COSE bytes of a temperature reading about ``products``."""
        message = Reading(
            device=self.id,
            seq=self._seq(seq),
            time=time,
            products=tuple(ProductKey.parse_canonical(p) for p in products),
            sensors=(Sensor("Temperature", value, "CEL"),),
        )
        return sign_message(message, self.key)

    def event(
        self,
        step: str,
        *products: str,
        parents: tuple[str, ...] = (),
        data: Mapping[str, Any] | None = None,
        seq: int | None = None,
        time: int = T0,
    ) -> bytes:
        """Return the COSE bytes of an event ``step`` about ``products``."""
        message = Event(
            device=self.id,
            seq=self._seq(seq),
            time=time,
            products=tuple(ProductKey.parse_canonical(p) for p in products),
            step=step,
            parents=tuple(ProductKey.parse_canonical(p) for p in parents),
            data=data,
        )
        return sign_message(message, self.key)

    def inbound(self, raw: bytes, received_ms: int = RECEIVED, topic: str | None = None) -> Inbound:
        """Wrap ``raw`` as received on this device's up topic (or ``topic``)."""
        return Inbound(topic=topic or up_topic(self.id), payload=raw, received_ms=received_ms)


@dataclass
class World:
    """A migrated database, a processor on it, and helpers to register parties and devices."""

    engine: Engine
    log_key: SignerKey
    processor: Processor
    devices: dict[str, FakeDevice] = field(default_factory=dict)

    def party(self, party_id: str, kind: str = "farm") -> str:
        """Register a party; return its id."""
        with session_scope(self.engine) as session:
            create_party(session, party_id, party_id.title(), kind, T0 - 24 * HOUR)
        return party_id

    def device(self, device_id: str, party_id: str, *, register: bool = True) -> FakeDevice:
        """Return a device of ``party_id`` with a fixed key, registered unless told otherwise."""
        device = FakeDevice(device_id, party_id, nacl.signing.SigningKey(seed(device_id)))
        if register:
            with session_scope(self.engine) as session:
                register_device(
                    session, device_id, party_id, bytes(device.key.verify_key), T0 - 24 * HOUR
                )
        self.devices[device_id] = device
        return device

    def process(self, *batch: Inbound, now_ms: int = RECEIVED) -> BatchResult:
        """Run one batch through the processor."""
        return self.processor.process(list(batch), now_ms)

    def send(self, device: FakeDevice, *raws: bytes, now_ms: int = RECEIVED) -> BatchResult:
        """Run a batch of messages of one device, received at ``now_ms``."""
        return self.process(*(device.inbound(raw, now_ms) for raw in raws), now_ms=now_ms)

    def rows(self, name: str, order_by: str | None = None) -> list[Any]:
        """Return every row of a table (ordered by a column if given)."""
        t = table(name)
        statement = select(t)
        if order_by is not None:
            statement = statement.order_by(t.c[order_by])
        with self.engine.connect() as conn:
            return list(conn.execute(statement).all())

    def count(self, name: str) -> int:
        """Return the number of rows of a table."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
