"""A small traced world for tests of the public trace API: a hen farm, a packer, a lot of eggs.

Importable as ``trace_kit`` (tests/ is on ``sys.path``). :func:`make_world` registers parties and
devices, ingests signed messages through the real :class:`ingest.Processor` and signs a
checkpoint, so the API sees exactly what a deployment would store.

The world (times from ``T0``):

* ``gansu-hens-01`` (farm) commissions the flock ``FLOCK`` (8,000 hens) with a hen-house reading
  of 21 °C, then the egg lot ``LOT`` from the flock, and reports the lot's cold-store
  temperature, one reading above 7.2 °C (an excursion);
* the farm commissions the serialized carton ``CARTON`` from the lot; ``gansu-pack-01``
  (packer) is registered but has no part in it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import SecretStr
from sqlalchemy import Engine

from ingest import Inbound, Processor
from traceapi.app import create_app
from tracecore.checkpoint import make_checkpoint
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.logentry import DeviceRegistered
from tracecore.message import DeviceMessage, Event, Reading, Sensor
from tracecore.settings import Settings
from tracecore.storage import create_party, issue_token, register_device, session_scope
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

__all__ = [
    "ADMIN",
    "CARTON",
    "CLIMATE",
    "COLLECT",
    "FARM",
    "FLOCK",
    "GTIN",
    "LOG",
    "LOT",
    "ORIGIN",
    "PACKER",
    "T0",
    "World",
    "make_world",
    "populate",
    "signer",
]

ADMIN: Final = "admin-secret-for-trace-tests"
ORIGIN: Final = "trace.test/log"
T0: Final = 1_790_000_000_000
FARM: Final = "gansu-hens-01"
PACKER: Final = "gansu-pack-01"
GTIN: Final = "06901234567892"
FLOCK: Final = ProductKey.parse("01/06901234560008/10/F1H2")
LOT: Final = ProductKey.parse(f"01/{GTIN}/10/L261127")
CARTON: Final = ProductKey.parse(f"01/{GTIN}/10/L261127/21/C0001")


def signer(label: str) -> SignerKey:
    """A deterministic key named ``label``."""
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


LOG: Final = signer(ORIGIN)
COLLECT: Final = signer("hens01-collect")
CLIMATE: Final = signer("hens01-climate")


@dataclass
class World:
    """The running API over the database, and helpers to grow the log."""

    client: Any
    engine: Engine
    now: list[int]
    seqs: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def send(self, key: SignerKey, make: Callable[[int, int], DeviceMessage]) -> None:
        """Sign and ingest ``make(seq, time)`` from device ``key``; it must be accepted."""
        seq = self.seqs.get(key.name, 0) + 1
        self.seqs[key.name] = seq
        self.now[0] += 1_000
        message = make(seq, self.now[0])
        processor = Processor(self.engine, LOG)
        try:
            raw = sign_message(message, key.signing_key)
            result = processor.process([Inbound(up_topic(key.name), raw, self.now[0])], self.now[0])
        finally:
            processor.close()
        assert result.accepted == 1, result

    def checkpoint(self) -> int:
        """Sign a checkpoint of everything so far; return its size."""
        self.now[0] += 1_000
        with session_scope(self.engine) as session:
            made = make_checkpoint(session, ORIGIN, LOG, self.now[0])
            assert made is not None
            return made.size

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of ``who``: ``admin`` or a token name in ``tokens``."""
        token = ADMIN if who == "admin" else self.tokens[who]
        return {"Authorization": f"Bearer {token}"}


def _reading(device: str, value: float) -> Callable[[int, int], DeviceMessage]:
    return lambda seq, time: Reading(
        device, seq, time, (LOT,), (Sensor("Temperature", value, "CEL"),)
    )


@contextlib.contextmanager
def make_world(
    engine: Engine,
    app_client: Any,
    *,
    readings: tuple[float, ...] = (5.5, 6.0, 8.4, 6.2),
    **settings: Any,
) -> Iterator[World]:
    """Build the world of the module docstring on ``engine`` and serve the API over it."""
    now = [T0]
    with session_scope(engine) as session:
        create_party(session, FARM, "临夏蛋鸡场 Linxia Hens", "farm", T0)
        create_party(session, PACKER, "兰州包装 Lanzhou Packing", "packer", T0)
        create_party(session, "gansu-amr", "甘肃省市场监管局 Gansu AMR", "inspector", T0)
        tokens = {
            "farm": issue_token(session, FARM, T0).token,
            "packer": issue_token(session, PACKER, T0).token,
            "inspector": issue_token(session, "gansu-amr", T0).token,
        }
    with log_session(engine) as session:
        for key in (COLLECT, CLIMATE):
            device = register_device(session, key.name, FARM, key.public_key, T0)
            entry = DeviceRegistered(key.name, FARM, key.public_key, device.valid_from_ms, T0)
            append_registry_entry(session, entry, T0)
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, **settings)
    app = create_app(config, engine, clock=lambda: now[0], log_vkey=LOG.verifier)
    with app_client(app) as client:
        world = World(client, engine, now, tokens=tokens)
        world.send(
            COLLECT,
            lambda seq, time: Event(
                COLLECT.name, seq, time, (FLOCK,), "commissioning", data={"hens": 8000}
            ),
        )
        world.send(
            CLIMATE,
            lambda seq, time: Reading(
                CLIMATE.name, seq, time, (FLOCK,), (Sensor("Temperature", 21.0, "CEL"),)
            ),
        )
        world.send(
            COLLECT,
            lambda seq, time: Event(
                COLLECT.name,
                seq,
                time,
                (LOT,),
                "commissioning",
                parents=(FLOCK,),
                data={"count": 720},
            ),
        )
        for value in readings:
            world.send(CLIMATE, _reading(CLIMATE.name, value))
        world.send(
            COLLECT,
            lambda seq, time: Event(
                COLLECT.name, seq, time, (CARTON,), "commissioning", parents=(LOT,)
            ),
        )
        world.checkpoint()
        yield world


def populate(engine: Engine, app_client: Any) -> None:
    """Leave the world of :func:`make_world` in the database (for a server started later)."""
    with make_world(engine, app_client):
        return
