"""Every ingest outcome through mosquitto and the real service, on SQLite and PostgreSQL.

One scenario per engine drives ``run_ingest`` (the real service with a real ``Processor``)
through the shared mosquitto broker: crafted device messages go in on the device up topics with
a plain aiomqtt client, receipts are collected from the receipt topics with another, and the
outcome of each case is read back from the database. The cases run in phases; each phase waits
(bounded) for its outcomes before the next one starts, because some depend on earlier commits
(equivocation, custody, parking). The parked message that must expire is expired by moving the
service's clock 25 h ahead at the end and letting the service's own expiry task run.

Device ids and client ids are unique per run: the broker and its topic space are shared.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass

import aiomqtt
import pytest
from mqtt_kit import lot, now_ms, provision, unique, wait_for, wipe_session
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from ingest import IngestConfig, IngestStats, Processor, ServiceOptions
from ingest.service import run_ingest
from tracecore.cose import parse_message, sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, generate_signer
from tracecore.message import Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.receipt import parse_receipt
from tracecore.storage import revoke_key, session_scope
from tracecore.storage.queries import device_gaps
from tracecore.topics import receipt_topic, up_topic

HOUR = 3_600_000
PHASE_S = 20.0  # the bound of every wait for the outcomes of one phase

_TABLES = SQLModel.metadata.tables
_LOG = _TABLES["log_entries"]
_LINKS = _TABLES["chain_links"]
_REJECTIONS = _TABLES["rejections"]
_PARKED = _TABLES["parked_messages"]
_PRODUCTS = _TABLES["products"]
_RECEIPTS = _TABLES["receipts"]

LOT_A, LOT_B, LOT_C = lot("A"), lot("B"), lot("C")  # general, the packer's, the shipped one
LOT_M1, LOT_M2, LOT_O = lot("M1"), lot("M2"), lot("O")  # multi-product pair, out-of-order
LOT_P, LOT_X = lot("P"), lot("X")  # commissioned after a reading; never commissioned


@dataclass
class _Dev:
    """A device id and a key that signs messages with explicit seqs at the device clock."""

    id: str
    key: SignerKey

    def reading(
        self, seq: int, *products: ProductKey, value: float = 4.5, ahead_ms: int = 0
    ) -> bytes:
        """Return the COSE bytes of a temperature reading about ``products``."""
        sensors = (Sensor("Temperature", value, "CEL"),)
        message = Reading(self.id, seq, now_ms() + ahead_ms, tuple(products), sensors)
        return sign_message(message, self.key.signing_key)

    def event(
        self, seq: int, step: str, *products: ProductKey, data: Mapping[str, object] | None = None
    ) -> bytes:
        """Return the COSE bytes of an event ``step`` about ``products``."""
        message = Event(
            device=self.id,
            seq=seq,
            time=now_ms(),
            products=tuple(products),
            step=step,
            data=data,
        )
        return sign_message(message, self.key.signing_key)


class _Clock:
    """The service clock: wall-clock ms plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return now_ms() + self.offset_ms


class _ReceiptBox:
    """Receipts collected from the receipt topics: ``(topic device, raw)`` by (device, seq)."""

    def __init__(self) -> None:
        self.got: dict[tuple[str, int], list[tuple[str, bytes]]] = collections.defaultdict(list)

    async def collect(self, client: aiomqtt.Client) -> None:
        """Store every receipt that arrives until cancelled."""
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            receipt = parse_receipt(message.payload).receipt
            topic_device = message.topic.value.split("/")[3]
            self.got[receipt.device, receipt.seq].append((topic_device, message.payload))

    def count(self, device: str, seq: int) -> int:
        """Return how many receipts for ``device``/``seq`` arrived."""
        return len(self.got.get((device, seq), []))


def _entries(engine: Engine, devices: list[str]) -> dict[tuple[str, int], tuple[int, bytes]]:
    """Return ``(device, seq) -> (log index, raw)`` of the entries of ``devices``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_LOG.c.device_id, _LOG.c.seq, _LOG.c.index.label("log_index"), _LOG.c.raw).where(
                _LOG.c.device_id.in_(devices)
            )
        ).all()
    return {(r.device_id, r.seq): (int(r.log_index), bytes(r.raw)) for r in rows}


def _rejections(engine: Engine, topics: list[str]) -> list[tuple[str, bytes, str]]:
    """Return ``(reason, raw, topic)`` of the rejections received on ``topics``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_REJECTIONS.c.reason, _REJECTIONS.c.raw, _REJECTIONS.c.topic).where(
                _REJECTIONS.c.topic.in_(topics)
            )
        ).all()
    return [(r.reason, bytes(r.raw), r.topic) for r in rows]


def _parked(engine: Engine, device: str) -> set[int]:
    """Return the seqs of ``device`` waiting in ``parked_messages``."""
    with engine.connect() as conn:
        rows = conn.execute(select(_PARKED.c.seq).where(_PARKED.c.device_id == device)).all()
    return {r.seq for r in rows}


def _links(engine: Engine, log_index: int) -> list[tuple[str, int]]:
    """Return the sorted ``(product, pseq)`` chain links of one log entry."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_LINKS.c.product_key, _LINKS.c.pseq).where(_LINKS.c.log_index == log_index)
        ).all()
    return sorted((r.product_key, r.pseq) for r in rows)


class _Scenario:
    """The parties, devices, expectations and MQTT clients of one run."""

    def __init__(self, broker: BrokerAddress, engine: Engine) -> None:
        self.broker, self.engine = broker, engine
        self.log_key = generate_signer("log")
        self.farm, self.packer = unique("farm"), unique("packer")
        fa_id, fo_id, fr_id, pb_id = unique("fa"), unique("fo"), unique("fr"), unique("pb")
        farm_keys = provision(engine, self.farm, [fa_id, fo_id, fr_id])
        packer_keys = provision(engine, self.packer, [pb_id])
        with session_scope(engine) as session:  # fr's key is compromised since an hour ago
            revoke_key(session, fr_id, revoked_since_ms=now_ms() - HOUR, reason="stolen")
        self.fa, self.fo, self.fr = (_Dev(d, farm_keys[d]) for d in (fa_id, fo_id, fr_id))
        self.pb = _Dev(pb_id, packer_keys[pb_id])
        self.ghost = _Dev(unique("ghost"), generate_signer("ghost"))  # never registered
        self.impostor = _Dev(fa_id, generate_signer("impostor"))  # a key fa never registered
        self.devices = [fa_id, fo_id, fr_id, pb_id, self.ghost.id]
        self.topics = [up_topic(d) for d in self.devices]
        self.box = _ReceiptBox()
        self.accepted: dict[tuple[str, int], bytes] = {}  # what the log must hold
        self.rejected: list[tuple[str, bytes, str]] = []  # (reason, raw, topic) expected
        self.clock = _Clock()
        self.stats = IngestStats()
        self.tx: aiomqtt.Client | None = None
        self.expiring = b""  # the parked reading that must expire (phase 2)

    async def send(self, dev: _Dev, raw: bytes, *, on: str | None = None) -> bytes:
        """Publish ``raw`` on the up topic of ``on`` (default: the device's own) at QoS 1."""
        assert self.tx is not None
        await self.tx.publish(up_topic(on or dev.id), raw, qos=1)
        return raw

    async def accept(self, dev: _Dev, raw: bytes) -> None:
        """Publish a message that must be logged and receipted."""
        self.accepted[dev.id, parse_message(raw).message.seq] = await self.send(dev, raw)

    async def reject(self, reason: str, dev: _Dev, raw: bytes, *, on: str | None = None) -> None:
        """Publish a message that must be rejected with ``reason``."""
        self.rejected.append((reason, await self.send(dev, raw, on=on), up_topic(on or dev.id)))

    async def settle(self, what: str, parked: set[int]) -> None:
        """Wait until every expected receipt and rejection is in, and fa's parked seqs."""
        engine, box = self.engine, self.box
        await wait_for(
            lambda: all(box.count(*key) for key in self.accepted), PHASE_S, f"{what}: receipts"
        )
        await wait_for(
            lambda: len(_rejections(engine, self.topics)) == len(self.rejected),
            PHASE_S,
            f"{what}: rejections",
        )
        await wait_for(lambda: _parked(engine, self.fa.id) == parked, PHASE_S, f"{what}: parked")

    async def run(self) -> None:
        """Run the service and the receipt collector while the phases are sent."""
        ingest_id = unique("ingest")
        stop = asyncio.Event()
        processor = Processor(self.engine, self.log_key, IngestConfig(batch_size=100))
        options = ServiceOptions(
            self.broker,
            client_id=ingest_id,
            batch_size=100,
            linger_ms=20,
            expire_interval_s=0.2,
            reconnect_initial_s=0.1,
            reconnect_cap_s=1.0,
        )
        host, port = self.broker.host, self.broker.port
        try:
            async with (
                aiomqtt.Client(host, port, identifier=unique("rx")) as rx,
                aiomqtt.Client(host, port, identifier=unique("tx")) as self.tx,
                asyncio.TaskGroup() as tasks,
            ):
                for device in self.devices:
                    await rx.subscribe(receipt_topic(device), qos=1)
                collector = tasks.create_task(self.box.collect(rx), name="receipts")
                service = tasks.create_task(
                    run_ingest(processor, options, stop, stats=self.stats, clock=self.clock),
                    name="ingest",
                )
                await wait_for(lambda: self.stats.connects == 1, 10, "ingest to connect")
                await self.phases()
                stop.set()
                async with asyncio.timeout(PHASE_S):
                    await service
                collector.cancel()
        finally:
            processor.close()
            await wipe_session(self.broker, ingest_id)

    async def phases(self) -> None:
        """Send the cases in phases, each waiting for the outcomes the next depends on."""
        fa, fo, fr, pb = self.fa, self.fo, self.fr, self.pb
        # Phase 1: commissionings, and a reading about LOT_P before its commissioning.
        await self.accept(fa, fa.event(1, "commissioning", LOT_A))
        await self.accept(fa, fa.event(2, "commissioning", LOT_C))
        await self.accept(fa, fa.event(3, "commissioning", LOT_M1, LOT_M2))
        early = await self.send(fa, fa.reading(4, LOT_P))
        await self.accept(fo, fo.event(1, "commissioning", LOT_O))
        await self.accept(pb, pb.event(1, "commissioning", LOT_B))
        await self.settle("phase 1", parked={4})
        assert self.box.count(fa.id, 4) == 0
        assert (fa.id, 4) not in _entries(self.engine, [fa.id])

        # Phase 2: the commissioning that unparks LOT_P's reading, a multi-product reading, a
        # shipping, out-of-order seqs, the first of a duplicate and of an equivocating pair, a
        # reading that stays parked, and every reason decided before the product rights.
        self.accepted[fa.id, 4] = early
        await self.accept(fa, fa.event(5, "commissioning", LOT_P))
        await self.accept(fa, fa.reading(6, LOT_M1, LOT_M2))
        await self.accept(fa, fa.event(7, "shipping", LOT_C, data={"destination": self.packer}))
        await self.accept(fo, fo.reading(5, LOT_O))
        await self.accept(fo, fo.reading(3, LOT_O))
        await self.accept(fa, fa.reading(8, LOT_A))
        await self.accept(fa, fa.reading(9, LOT_A, value=4.0))
        self.expiring = await self.send(fa, fa.reading(10, LOT_X))
        await self.reject("malformed", fa, b"\x00\xffnot cbor\x00")
        await self.reject("unknown_device", self.ghost, self.ghost.reading(1, LOT_A))
        await self.reject("topic_mismatch", fa, fa.reading(11, LOT_A), on=fo.id)
        await self.reject("unknown_key", self.impostor, self.impostor.reading(12, LOT_A))
        await self.reject("revoked_key", fr, fr.reading(1, LOT_A))
        forged = bytearray(fa.reading(13, LOT_A))
        forged[-1] ^= 0x01  # one bit of the signature
        await self.reject("bad_signature", fa, bytes(forged))
        await self.reject("clock_skew", fa, fa.reading(14, LOT_A, ahead_ms=10 * 60_000))
        await self.reject("unauthorized_product", pb, pb.reading(2, LOT_A))  # the farm's
        await self.settle("phase 2", parked={10})

        # Phase 3: the destination receives LOT_C; the same bytes again; other bytes on seq 9.
        await self.accept(pb, pb.event(3, "receiving", LOT_C))
        await self.send(fa, self.accepted[fa.id, 8])
        await self.reject("equivocation", fa, fa.reading(9, LOT_A, value=9.0))
        await self.settle("phase 3", parked={10})
        await wait_for(lambda: self.box.count(fa.id, 8) == 2, PHASE_S, "the duplicate's receipt")

        # Phase 4: the new holder of LOT_C may append, the old holder may not.
        await self.accept(pb, pb.reading(4, LOT_C))
        await self.reject("unauthorized_product", fa, fa.reading(15, LOT_C))
        await self.settle("phase 4", parked={10})

        # Phase 5: 25 h later (service clock) the parked reading expires as unknown_product.
        self.rejected.append(("unknown_product", self.expiring, up_topic(fa.id)))
        self.clock.offset_ms = 25 * HOUR
        await self.settle("phase 5", parked=set())

    def check_rejections(self) -> None:
        """Every reason code: one row each (unauthorized_product twice), the exact bytes."""
        assert sorted(_rejections(self.engine, self.topics)) == sorted(self.rejected)
        assert collections.Counter(reason for reason, _, _ in self.rejected) == {
            "malformed": 1,
            "unknown_device": 1,
            "topic_mismatch": 1,
            "unknown_key": 1,
            "revoked_key": 1,
            "bad_signature": 1,
            "clock_skew": 1,
            "equivocation": 1,
            "unauthorized_product": 2,
            "unknown_product": 1,
        }
        assert self.stats.alerts == 1  # the equivocation
        with self.engine.connect() as conn:
            assert not conn.execute(select(_PARKED.c.id)).all()

    def check_log_and_receipts(self) -> dict[tuple[str, int], tuple[int, bytes]]:
        """The log holds exactly the accepted bytes; each has its verifying receipt(s)."""
        entries = _entries(self.engine, self.devices)
        assert {key: raw for key, (_, raw) in entries.items()} == self.accepted
        # One receipt per accepted message, two identical ones for the duplicate, none for
        # any rejected or parked message; each verifies under the log key and matches.
        assert set(self.box.got) == set(self.accepted)
        with self.engine.connect() as conn:
            stored = {
                (r.device_id, r.seq): bytes(r.raw)
                for r in conn.execute(
                    select(_RECEIPTS).where(_RECEIPTS.c.device_id.in_(self.devices))
                )
            }
        duplicate = (self.fa.id, 8)
        for key, received in self.box.got.items():
            assert len(received) == (2 if key == duplicate else 1), key
            for topic_device, raw in received:
                signed = parse_receipt(raw)
                signed.verify(self.log_key.public_key)
                assert signed.matches(parse_message(self.accepted[key]))
                assert topic_device == signed.receipt.device == key[0]
                assert signed.receipt.index == entries[key][0]
                assert raw == stored[key]
        return entries

    def check_chains(self, entries: Mapping[tuple[str, int], tuple[int, bytes]]) -> None:
        """Gaps, parking applied, multi-product links and the custody transfer."""
        fa, pb, engine = self.fa.id, self.pb.id, self.engine
        with session_scope(engine) as session:  # fo sent 1, 5, 3
            assert device_gaps(session, self.fo.id) == [(2, 2), (4, 4)]
        # The early reading follows its commissioning on LOT_P's chain.
        assert _links(engine, entries[fa, 5][0]) == [(LOT_P.path, 1)]
        assert _links(engine, entries[fa, 4][0]) == [(LOT_P.path, 2)]
        # One entry, one link per product (each the second of its chain).
        assert _links(engine, entries[fa, 6][0]) == sorted([(LOT_M1.path, 2), (LOT_M2.path, 2)])
        with engine.connect() as conn:
            product = conn.execute(select(_PRODUCTS).where(_PRODUCTS.c.key == LOT_C.path)).one()
        assert (product.owner_party_id, product.holder_party_id) == (self.farm, self.packer)
        assert product.pending_party_id is None
        assert _links(engine, entries[pb, 3][0]) == [(LOT_C.path, 3)]
        assert _links(engine, entries[pb, 4][0]) == [(LOT_C.path, 4)]


@pytest.mark.mosquitto
def test_every_outcome_through_the_broker(mosquitto: BrokerAddress, engine: Engine) -> None:
    """Every reason code, duplicate, gap, parking, custody and multi-product case via mosquitto."""
    scenario = _Scenario(mosquitto, engine)
    asyncio.run(scenario.run())
    scenario.check_rejections()
    scenario.check_chains(scenario.check_log_and_receipts())
