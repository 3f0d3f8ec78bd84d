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

:func:`make_pages_world` grows that world into one with every kind of public page
(:data:`PAGE_VARIANTS`): a clean egg case, a beef cut lot with warm readings on its chart, cuts
from a recalled animal, a case whose stored bytes were edited, and codes nobody registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import SecretStr
from sqlalchemy import Engine, select, update
from sqlmodel import col

from firmware_sim.scenarios import (
    BEEF_CARCASS_GTIN,
    BEEF_CUTS_GTIN,
    CATTLE_GTIN,
    SAMPLE_GTIN,
    Planned,
)
from ingest import Inbound, Processor
from ingest.contracting import evaluate_pending
from traceapi.app import create_app
from tracecore.bundle import Policy
from tracecore.checkpoint import make_checkpoint
from tracecore.cose import sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.logentry import DeviceRegistered
from tracecore.message import DeviceMessage, Event, Reading, Sensor
from tracecore.settings import Settings
from tracecore.storage import (
    ChainLink,
    Device,
    LogEntry,
    Party,
    create_party,
    issue_token,
    register_device,
    session_scope,
)
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

__all__ = [
    "ADMIN",
    "CARTON",
    "CLIMATE",
    "COLLECT",
    "ESCAPED",
    "FARM",
    "FLOCK",
    "GTIN",
    "LOG",
    "LOT",
    "ORIGIN",
    "PACKER",
    "PAGE_LANGUAGES",
    "PAGE_VARIANTS",
    "PENDING",
    "PRINTED_PAGES",
    "T0",
    "PageVariant",
    "World",
    "make_pages_world",
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
#: A carton whose lot and serial need percent-encoding in a URL (docs/identifiers.md): the lot
#: ``L/26%1`` is ``L%2F26%251`` in a path, the serial ``C+1`` is ``C%2B1``; and a lot that no
#: checkpoint covers yet. In no world: the tests that need them commission them.
ESCAPED: Final = ProductKey.from_parts(GTIN, lot="L/26%1", serial="C+1")
PENDING: Final = ProductKey.from_parts(GTIN, lot="L261130")


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


# -- every public page variant --------------------------------------------------------------------

HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000
DAY_MS: Final = 24 * HOUR_MS

BEEF_FARM: Final = "wuwei-cattle-01"
LAB: Final = "gansu-vet-lab"
ABATTOIR: Final = "lanzhou-abattoir"
CARRIER: Final = "gansu-coldchain"
RETAILER: Final = "lanzhou-mart"

EGG_FLOCK: Final = ProductKey.parse("01/06901234560008/10/F1H1")
EGG_LOT: Final = ProductKey.parse(f"01/{GTIN}/10/L261128")
EGG_CASE: Final = ProductKey.parse(f"01/{GTIN}/10/L261128/21/C0201")
EGG_CASE_2: Final = ProductKey.parse(f"01/{GTIN}/10/L261128/21/C0202")
TAMPERED_LOT: Final = ProductKey.parse(f"01/{GTIN}/10/L261129")
TAMPERED_CASE: Final = ProductKey.parse(f"01/{GTIN}/10/L261129/21/C0301")
#: Ear tags (畜禽标识): 2 (cattle), county 620602 (Wuwei), then an 8-digit serial.
STEER: Final = ProductKey.from_parts(CATTLE_GTIN, serial="262060200101001")
TREATED_STEER: Final = ProductKey.from_parts(CATTLE_GTIN, serial="262060200101002")
CARCASS: Final = ProductKey.from_parts(BEEF_CARCASS_GTIN, serial=f"K{STEER.serial}")
TREATED_CARCASS: Final = ProductKey.from_parts(BEEF_CARCASS_GTIN, serial=f"K{TREATED_STEER.serial}")
CUTS: Final = ProductKey.from_parts(BEEF_CUTS_GTIN, lot="B261128SL")
RECALLED_CUTS: Final = ProductKey.from_parts(BEEF_CUTS_GTIN, lot="B261128BR")

#: The stored reading value the integrity-failure variant's forger lowers (°C): the CBOR
#: doubles (major type 7, 0xfb) of both, the same length, so only the bytes change.
FORGED_FROM: Final = 6.3
FORGED_TO: Final = 3.1


@dataclass(frozen=True, slots=True)
class PageVariant:
    """A kind of public page: the URL path a buyer scans, the verdict and the HTTP status.

    ``outage`` pages are served by a server whose database is not ready (not migrated yet, or
    unreachable): the page a buyer gets then instead of a verdict.
    """

    path: str
    verdict: str
    status: int = 200
    outage: bool = False


#: The public page variants of :func:`make_pages_world`, by name.
PAGE_VARIANTS: Final[Mapping[str, PageVariant]] = {
    # Verified, and every applicable contract passes.
    "clean-egg": PageVariant(f"/{EGG_CASE.path}", "verified"),
    # Verified; its chart has readings above 4 °C (for 20 min, within the tolerated 30 min).
    "beef-cut": PageVariant(f"/{CUTS.path}", "verified"),
    # Cut from an animal killed during a drug withdrawal period that an inspector recalled.
    "recalled": PageVariant(f"/{RECALLED_CUTS.path}", "recalled"),
    # A stored reading value of the case was edited in the database.
    "integrity-failure": PageVariant(f"/{TAMPERED_CASE.path}", "integrity_failure"),
    # The clean case's code without its lot: GTIN + serial names the same item (a note says so).
    "short-code": PageVariant(f"/01/{GTIN}/21/{EGG_CASE.serial}", "verified"),
    # The clean case's serial printed with another lot: not the case's code.
    "wrong-lot": PageVariant(f"/01/{GTIN}/10/L999998/21/{EGG_CASE.serial}", "unknown", 404),
    # A well-formed GS1 Digital Link nobody registered, and a code that is not a product key.
    "unknown": PageVariant(f"/01/{GTIN}/10/L999999/21/C9999", "unknown", 404),
    "malformed": PageVariant("/01/12345/10/L1", "unknown", 404),
    # One stall, one code: the public page of the shop that sold the meat (no verdict of its own).
    "stall": PageVariant(f"/p/{RETAILER}", ""),
    # The clean egg case scanned while the database is down: no verdict, come back later.
    "unavailable": PageVariant(f"/{EGG_CASE.path}", "unavailable", 503, outage=True),
}

#: Printable pages of the pages world (no verdict of their own), by name: QR label sheets of a
#: lot (one label per carton) and of one carton, and a stall's label.
PRINTED_PAGES: Final[Mapping[str, str]] = {
    "labels-lot": f"/qr/{EGG_LOT.path}/labels",
    "labels-carton": f"/qr/{EGG_CASE.path}/labels",
    "stall-label": f"/p/{RETAILER}/label",
}

#: The languages the page tests ask for, as a browser's Accept-Language names them.
PAGE_LANGUAGES: Final = ("zh-CN", "en")

# Devices of the pages world, as in firmware_sim's scenarios (docs/scenarios.md).
GRADER: Final = signer("hens01-grader")
COLD_STORE: Final = signer("hens01-coldstore")
EGG_TRUCK: Final = signer("coldchain-truck-e01")
MEAT_TRUCK: Final = signer("coldchain-truck-b01")
DOCK: Final = signer("lanzhou-mart-dock")
EGG_CASE_LOGGER: Final = signer("lanzhou-mart-chiller")
MEAT_CASE_LOGGER: Final = signer("lanzhou-mart-meatcase")
GATE: Final = signer("beef01-gate")
FEED: Final = signer("beef01-feed")
VET: Final = signer("beef01-vet")
BENCH: Final = signer("vetlab-bench")
LAIRAGE: Final = signer("abattoir-lairage")
LINE: Final = signer("abattoir-line")
CHILLER: Final = signer("abattoir-chiller")
CUTTING: Final = signer("abattoir-cutting")

#: Parties: id, Chinese and English names, kind, place in Chinese and English.
_PARTIES: Final = (
    (
        BEEF_FARM,
        "武威牛羊养殖场",
        "Wuwei Cattle Farm",
        "farm",
        "甘肃省武威市凉州区",
        "Liangzhou, Wuwei, Gansu",
    ),
    (
        LAB,
        "甘肃省动物疫病预防控制中心",
        "Gansu Animal Disease Control Center",
        "lab",
        "甘肃省兰州市",
        "Lanzhou, Gansu",
    ),
    (
        ABATTOIR,
        "兰州肉类联合加工厂",
        "Lanzhou Meat Processing Plant",
        "processor",
        "甘肃省兰州市",
        "Lanzhou, Gansu",
    ),
    (
        CARRIER,
        "甘肃冷链物流",
        "Gansu Cold Chain Logistics",
        "carrier",
        "甘肃省兰州市",
        "Lanzhou, Gansu",
    ),
    (
        RETAILER,
        "兰州惠民超市",
        "Lanzhou Huimin Supermarket",
        "retailer",
        "甘肃省兰州市",
        "Lanzhou, Gansu",
    ),
)
#: Devices: key, party, where it is (Chinese, English).
_DEVICES: Final = (
    (GRADER, FARM, "分级包装线", "grading and packing line"),
    (COLD_STORE, FARM, "冷库", "cold store"),
    (EGG_TRUCK, CARRIER, "冷藏车 甘A·E2381", "reefer truck GS-A E2381"),
    (MEAT_TRUCK, CARRIER, "冷藏车 甘A·B7716", "reefer truck GS-A B7716"),
    (DOCK, RETAILER, "收货口", "goods-in dock"),
    (EGG_CASE_LOGGER, RETAILER, "蛋品冷柜", "egg display case"),
    (MEAT_CASE_LOGGER, RETAILER, "鲜肉冷柜", "meat display case"),
    (GATE, BEEF_FARM, "耳标读写器", "ear-tag reader"),
    (FEED, BEEF_FARM, "饲喂站", "feed station"),
    (VET, BEEF_FARM, "兽医终端", "vet terminal"),
    (BENCH, LAB, "血清学实验台", "serology bench"),
    (LAIRAGE, ABATTOIR, "待宰圈", "lairage"),
    (LINE, ABATTOIR, "屠宰线", "slaughter line"),
    (CHILLER, ABATTOIR, "排酸间", "carcass chiller"),
    (CUTTING, ABATTOIR, "分割间", "cutting room"),
)


#: Whether parties have a public profile (schema revision 0005: English name, place, licence;
#: a device's place). Without one a party's name carries both languages, as the demo gives it.
PROFILES: Final = hasattr(Party, "name_en")


def _profile(row: Party | Device, **values: str) -> None:
    """Set the public profile columns, when the schema has them."""
    if PROFILES:
        for name, value in values.items():
            setattr(row, name, value)


def _register_pages_parties(engine: Engine) -> None:
    with session_scope(engine) as session:
        for party_id, name, name_en, kind, place, place_en in _PARTIES:
            full = name if PROFILES else f"{name} {name_en}"
            party = create_party(session, party_id, full, kind, T0)
            _profile(party, name_en=name_en, place=place, place_en=place_en)
        farm = session.get(Party, FARM)
        assert farm is not None
        if PROFILES:
            farm.name = "临夏蛋鸡场"
        _profile(
            farm,
            name_en="Linxia Hens",
            place="甘肃省临夏州临夏县",
            place_en="Linxia County, Gansu",
            licence="91622921MA71H2KX1Q",
        )
    with log_session(engine) as session:
        for key, party, place, place_en in _DEVICES:
            registered = register_device(session, key.name, party, key.public_key, T0)
            entry = DeviceRegistered(key.name, party, key.public_key, registered.valid_from_ms, T0)
            append_registry_entry(session, entry, T0)
            device = session.get(Device, key.name)
            assert device is not None
            _profile(device, place=place, place_en=place_en)


def _temperature(value: float) -> tuple[Sensor, ...]:
    return (Sensor("Temperature", value, "CEL"),)


def _readings(
    key: SignerKey,
    products: Sequence[ProductKey],
    times: range,
    value: Callable[[int], float],
) -> list[Planned]:
    """One temperature reading of ``products`` at each time, the n-th reading ``value(n)``."""
    return [
        Planned(at, key.name, tuple(products), _temperature(round(value(n), 1)))
        for n, at in enumerate(times)
    ]


def _event(
    at: int,
    key: SignerKey,
    products: Sequence[ProductKey],
    step: str,
    location: str,
    *,
    data: Mapping[str, object] | None = None,
    parents: Sequence[ProductKey] = (),
) -> Planned:
    return Planned(at, key.name, tuple(products), (), step, tuple(parents), location, data)


def _egg_timeline() -> list[Planned]:
    """A flock, its day's lot and two cases packed from it, cold store, truck and shop; and the
    case the forger will edit, packed from a second lot of the same flock."""
    flock, lay, site, dock = [EGG_FLOCK], 6 * HOUR_MS, f"{FARM}/packing", f"{RETAILER}/dock"
    cases = [EGG_CASE, EGG_CASE_2]
    packed = {"grade": "AA", "eggs_per_case": 360, "standard": "GB/T 39438-2020"}
    hen_house = [
        Planned(
            at,
            CLIMATE.name,
            tuple(flock),
            (Sensor("Temperature", celsius, "CEL"), Sensor("RelativeHumidity", rh, "P1")),
        )
        for at, celsius, rh in ((HOUR_MS, 20.4, 62.0), (3 * HOUR_MS, 21.3, 60.5))
    ]
    return [
        _event(
            0,
            COLLECT,
            flock,
            "commissioning",
            f"{FARM}/houses",
            data={
                "species": "Gallus gallus domesticus",
                "hens": 8000,
                "breed": "京红1号 Jinghong 1",
            },
        ),
        *hen_house,
        _event(
            lay,
            COLLECT,
            [EGG_LOT],
            "commissioning",
            f"{FARM}/house-1",
            data={"count": 720, "house": 1, "flock": EGG_FLOCK.path},
            parents=flock,
        ),
        _event(
            lay + 5 * MINUTE_MS,
            COLLECT,
            [TAMPERED_LOT],
            "commissioning",
            f"{FARM}/house-1",
            data={"count": 360, "house": 1, "flock": EGG_FLOCK.path},
            parents=flock,
        ),
        _event(lay + HOUR_MS, GRADER, cases, "commissioning", site, data=packed, parents=[EGG_LOT]),
        _event(
            lay + HOUR_MS + 5 * MINUTE_MS,
            GRADER,
            [TAMPERED_CASE],
            "commissioning",
            site,
            data=packed,
            parents=[TAMPERED_LOT],
        ),
        _event(lay + 90 * MINUTE_MS, COLD_STORE, [*cases, TAMPERED_CASE], "storing", site),
        # FDA 21 CFR 118.4(e): at or below 7.2 °C; the cold store holds 4-6 °C.
        *_readings(
            COLD_STORE,
            cases,
            range(lay + 95 * MINUTE_MS, lay + 8 * HOUR_MS, 30 * MINUTE_MS),
            lambda n: 4.2 + (n % 4) * 0.5,
        ),
        *_readings(
            COLD_STORE,
            [TAMPERED_CASE],
            range(lay + 2 * HOUR_MS, lay + 3 * HOUR_MS, HOUR_MS),
            lambda _n: FORGED_FROM,
        ),
        _event(
            lay + 8 * HOUR_MS, COLD_STORE, cases, "shipping", site, data={"destination": CARRIER}
        ),
        _event(lay + 8 * HOUR_MS + 20 * MINUTE_MS, EGG_TRUCK, cases, "receiving", site),
        *_readings(
            EGG_TRUCK,
            cases,
            range(lay + 8 * HOUR_MS + 25 * MINUTE_MS, lay + 12 * HOUR_MS, 30 * MINUTE_MS),
            lambda n: 3.8 + (n % 3) * 0.6,
        ),
        _event(
            lay + 12 * HOUR_MS, EGG_TRUCK, cases, "shipping", dock, data={"destination": RETAILER}
        ),
        _event(lay + 12 * HOUR_MS + 30 * MINUTE_MS, DOCK, cases, "receiving", dock),
        # The display case until the sale, past the 36 h after laying that the rule counts from.
        *_readings(
            EGG_CASE_LOGGER,
            cases,
            range(lay + 12 * HOUR_MS + 40 * MINUTE_MS, lay + 40 * HOUR_MS, 45 * MINUTE_MS),
            lambda n: 3.5 + (n % 5) * 0.6,
        ),
        _event(
            lay + 40 * HOUR_MS,
            DOCK,
            [EGG_CASE],
            "retail_selling",
            f"{RETAILER}/store",
            data={"count": 1},
        ),
    ]


def _beef_timeline() -> list[Planned]:
    """Two steers from feedlot to the shop's meat case, one treated and killed too early."""
    steers, farm, dock = [STEER, TREATED_STEER], BEEF_FARM, f"{RETAILER}/dock"
    samples = [ProductKey.from_parts(SAMPLE_GTIN, serial=f"S{s.serial}") for s in steers]
    ration = {
        "ration": "玉米青贮+苜蓿 corn silage + alfalfa",
        "kg_per_head": 22.5,
        "additive": "monensin",
        "withdrawal_days": 0,
    }
    plan = [
        _event(
            6 * HOUR_MS,
            GATE,
            steers,
            "commissioning",
            f"{farm}/pens",
            data={"species": "西门塔尔牛 Simmental cattle", "count": 2},
        ),
        _event(7 * HOUR_MS, FEED, steers, "other", f"{farm}/feedlot", data={"feed": ration}),
        _event(
            8 * HOUR_MS,
            VET,
            [TREATED_STEER],
            "other",
            f"{farm}/pens",
            data={"treatment": {"drug": "oxytetracycline", "dose": 10.0, "withdrawal_days": 28}},
        ),
    ]
    plan += [
        _event(
            9 * HOUR_MS + n * MINUTE_MS,
            VET,
            [sample],
            "commissioning",
            f"{farm}/pens",
            data={"specimen": "serum", "purpose": "brucellosis"},
            parents=[steer],
        )
        for n, (steer, sample) in enumerate(zip(steers, samples, strict=True))
    ]
    plan += [
        _event(10 * HOUR_MS, VET, samples, "shipping", f"{farm}/pens", data={"destination": LAB}),
        _event(12 * HOUR_MS, BENCH, samples, "receiving", f"{LAB}/reception"),
    ]
    for n, (steer, sample) in enumerate(zip(steers, samples, strict=True)):
        test = {
            "disease": "brucellosis",
            "result": "negative",
            "lab": LAB,
            "method": "RBPT + cELISA",
            "report": f"BR0{n:03d}",
        }
        at = 16 * HOUR_MS + n * MINUTE_MS
        plan += [
            _event(at, BENCH, [sample], "inspecting", f"{LAB}/serology", data={"test": test}),
            _event(
                at + HOUR_MS,
                VET,
                [steer],
                "inspecting",
                f"{farm}/office",
                data={"test": {**test, "sample": sample.path}},
            ),
        ]
    plan += [
        _event(
            17 * HOUR_MS + 30 * MINUTE_MS,
            FEED,
            steers,
            "other",
            f"{farm}/feedlot",
            data={"feed": ration},
        ),
        _event(
            DAY_MS + 5 * HOUR_MS,
            GATE,
            steers,
            "shipping",
            f"{farm}/gate",
            data={"destination": ABATTOIR},
        ),
        _event(DAY_MS + 9 * HOUR_MS, LAIRAGE, steers, "receiving", f"{ABATTOIR}/lairage"),
    ]
    kill, line = DAY_MS + 11 * HOUR_MS, f"{ABATTOIR}/line"
    carcasses = [CARCASS, TREATED_CARCASS]
    for n, (steer, carcass, kg) in enumerate(zip(steers, carcasses, (301.4, 287.9), strict=True)):
        at = kill + n * 4 * MINUTE_MS
        plan += [
            _event(at, LINE, [steer], "killing", line, data={"hot_carcass_kg": kg}),
            _event(
                at + MINUTE_MS,
                LINE,
                [carcass],
                "commissioning",
                line,
                data={"hot_carcass_kg": kg, "species": "cattle"},
                parents=[steer],
            ),
        ]
    # Core temperature falling from 38 °C towards the chiller's 1 °C (time constant 8 h).
    for at in range(kill + HOUR_MS, kill + 23 * HOUR_MS, 3 * HOUR_MS):
        core = round(1.0 + 37.0 * math.exp(-(at - kill) / HOUR_MS / 8), 1)
        sensors = (Sensor("Temperature", core, "CEL"), Sensor("RelativeHumidity", 91.5, "P1"))
        plan.append(Planned(at, CHILLER.name, tuple(carcasses), sensors))
    cut0 = 2 * DAY_MS + 10 * HOUR_MS
    cuts = [CUTS, RECALLED_CUTS]
    made = zip(cuts, carcasses, ("西冷 striploin", "牛腩 brisket"), (18.6, 21.2), strict=True)
    plan += [
        _event(
            cut0 + n * MINUTE_MS,
            CUTTING,
            [lot],
            "commissioning",
            f"{ABATTOIR}/cutting",
            data={"cut": cut, "net_kg": kg},
            parents=[carcass],
        )
        for n, (lot, carcass, cut, kg) in enumerate(made)
    ]
    ship = cut0 + 3 * HOUR_MS
    return [
        *plan,
        _event(
            ship,
            CUTTING,
            cuts,
            "shipping",
            f"{ABATTOIR}/dispatch",
            data={"destination": CARRIER},
        ),
        _event(ship + 20 * MINUTE_MS, MEAT_TRUCK, cuts, "receiving", f"{ABATTOIR}/dispatch"),
        *_readings(
            MEAT_TRUCK,
            cuts,
            range(ship + 25 * MINUTE_MS, ship + 4 * HOUR_MS, 20 * MINUTE_MS),
            lambda n: 1.5 + (n % 4) * 0.5,
        ),
        _event(
            ship + 4 * HOUR_MS, MEAT_TRUCK, cuts, "shipping", dock, data={"destination": RETAILER}
        ),
        _event(ship + 4 * HOUR_MS + 30 * MINUTE_MS, DOCK, cuts, "receiving", dock),
        # The meat case every 10 min; its door left open: two readings above 4 °C (20 min).
        *_readings(
            MEAT_CASE_LOGGER,
            cuts,
            range(ship + 4 * HOUR_MS + 40 * MINUTE_MS, ship + 8 * HOUR_MS, 10 * MINUTE_MS),
            lambda n: {6: 5.2, 7: 4.6}.get(n, 2.0 + (n % 3) * 0.4),
        ),
    ]


def _ingest_timeline(world: World, start_ms: int, timeline: Sequence[Planned]) -> None:
    """Sign every planned message at ``start_ms`` + its offset and ingest them in one batch."""
    keys = {key.name: key for key in (COLLECT, CLIMATE, *(device[0] for device in _DEVICES))}
    batch: list[Inbound] = []
    for planned in sorted(timeline, key=lambda p: p.at_ms):  # stable: causal order kept
        seq = world.seqs.get(planned.device, 0) + 1
        world.seqs[planned.device] = seq
        time = start_ms + planned.at_ms
        raw = sign_message(planned.message(seq, time), keys[planned.device].signing_key)
        batch.append(Inbound(up_topic(planned.device), raw, time))
    world.now[0] = batch[-1].received_ms + MINUTE_MS
    processor = Processor(world.engine, LOG)
    try:
        result = processor.process(batch, world.now[0])
    finally:
        processor.close()
    assert result.accepted == len(batch), result


def _forge_reading(engine: Engine, product: ProductKey, old: float, new: float) -> None:
    """Lower a stored reading value of ``product`` in the raw message bytes, as a forger with
    database access would (tests/traceapi/test_scan_tamper.py)."""
    before, after = b"\xfb" + struct.pack(">d", old), b"\xfb" + struct.pack(">d", new)
    with session_scope(engine) as session:
        rows = session.execute(
            select(col(LogEntry.index), col(LogEntry.raw))
            .join(ChainLink, col(ChainLink.log_index) == col(LogEntry.index))
            .where(col(ChainLink.product_key) == product.path)
        ).all()
        found = [(index, raw) for index, raw in rows if raw is not None and before in raw]
        assert len(found) == 1, f"one reading of {old} on {product.path}, found {len(found)}"
        index, raw = found[0]
        session.execute(
            update(LogEntry)
            .where(col(LogEntry.index) == index)
            .values(raw=raw.replace(before, after, 1))
        )


@contextlib.contextmanager
def make_pages_world(engine: Engine, app_client: Any, **settings: Any) -> Iterator[World]:
    """The world of :func:`make_world` grown into one with every page of :data:`PAGE_VARIANTS`.

    The egg chain: ``EGG_FLOCK`` (8,000 hens) lays ``EGG_LOT``, packed into two cases; cold
    store, reefer truck and the shop's display case keep them at 3.5-5.9 °C until ``EGG_CASE``
    is sold 40 h after laying. The beef chain: two steers, fed and tested negative for
    brucellosis by the lab; ``TREATED_STEER`` is given oxytetracycline (28-day withdrawal) and
    still sent to slaughter next day with ``STEER``; carcasses chill, are cut into ``CUTS`` and
    ``RECALLED_CUTS``, trucked to the shop whose meat case reads 5.2 and 4.6 °C for 20 min. An
    inspector recalls the treated steer; the contract evaluator stores its results; then a
    forger edits a cold-store reading of ``TAMPERED_CASE``. 135 signed messages on top of the
    egg world, ingested in one batch: built in about half a second.
    """
    with make_world(engine, app_client, **settings) as world:
        _register_pages_parties(engine)
        start = (world.now[0] // HOUR_MS + 1) * HOUR_MS
        _ingest_timeline(world, start, [*_egg_timeline(), *_beef_timeline()])
        world.checkpoint()
        recall = world.client.post(
            "/v1/recalls",
            json={
                "product": TREATED_STEER.path,
                "reason": "宰杀时仍在土霉素停药期内 "
                "Slaughtered during its oxytetracycline withdrawal period",
            },
            headers=world.auth("inspector"),
        )
        assert recall.status_code == 201, recall.text
        world.checkpoint()
        evaluate_pending(engine, Policy(LOG.verifier), world.now[0])
        _forge_reading(engine, TAMPERED_CASE, FORGED_FROM, FORGED_TO)
        yield world
