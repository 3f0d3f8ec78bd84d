"""Scenarios: the parties, devices and message timelines of simulated Gansu supply chains.

Pure code: no I/O and no clock. A scenario is built from a :class:`ScenarioConfig` (a seed, the
number of farms, a run number that keeps product keys new on every run) and a span of scenario
time; its timeline lists every device message with its offset in scenario milliseconds from the
scenario's start. The runner (:mod:`firmware_sim.sim`) maps offsets to device clock times and
sends the messages in order. The same config and span always give the same timeline.

Two scenarios (docs/scenarios.md describes them in prose, with the rules they exercise):

``egg``   laying-hen houses (climate readings), daily collection into egg lots, grading and
          packing into cases with serials, a farm cold store, a refrigerated truck of a
          cold-chain carrier, a retailer; one flock is treated with a drug under withdrawal.
``beef``  ear-tagged cattle and sheep, feed and treatments, brucellosis tests by a lab, movement
          to a slaughterhouse, killing, carcasses, chilling, cuts lots, cold chain to retail.

Custody follows ingest's rights rules (docs/ingest.md): a party's device commissions a product;
appends need custody; shipping with ``data.destination`` then receiving by the destination's
device moves custody. The timeline is ordered so that every message is legal when the ones
before it have been accepted.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tracecore.identifiers import ProductKey, gtin_check_digit
from tracecore.message import DeviceMessage, Event, Reading, Sensor

__all__ = [
    "COLD_CHAIN_LIMIT_C",
    "DAY_MS",
    "SCENARIOS",
    "DeviceSpec",
    "PartySpec",
    "Planned",
    "Scenario",
    "ScenarioConfig",
    "build_scenario",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
#: FDA 21 CFR 118.4(e): shell eggs held and transported at or below 45 °F (7.2 °C) ambient.
COLD_CHAIN_LIMIT_C: Final = 7.2
#: Chilled meat: 0-4 °C in the cold chain (GB/T 40956 / Codex CXC 58-2005 practice).
MEAT_CHAIN_LIMIT_C: Final = 4.0


def _gtin(body13: str) -> str:
    """A GTIN-14 from 13 digits plus the GS1 mod-10 check digit (GS1 GenSpecs §7.9.1)."""
    return body13 + str(gtin_check_digit(body13))


# GS1 China prefix range 690-699; item references invented for the simulation.
FLOCK_GTIN: Final = _gtin("0690123456001")
EGG_GTIN: Final = _gtin("0690123456002")
CATTLE_GTIN: Final = _gtin("0690123457001")
SHEEP_GTIN: Final = _gtin("0690123457002")
SAMPLE_GTIN: Final = _gtin("0690123457003")
BEEF_CARCASS_GTIN: Final = _gtin("0690123457004")
SHEEP_CARCASS_GTIN: Final = _gtin("0690123457005")
BEEF_CUTS_GTIN: Final = _gtin("0690123457006")
LAMB_CUTS_GTIN: Final = _gtin("0690123457007")

#: Gansu places (Simplified Chinese, English, county code of GB/T 2260 for ear tags).
PLACES: Final = (
    ("临夏", "Linxia", "622901"),
    ("武威", "Wuwei", "620602"),
    ("张掖", "Zhangye", "620702"),
    ("天祝", "Tianzhu", "620623"),
    ("定西", "Dingxi", "621102"),
    ("酒泉", "Jiuquan", "620902"),
    ("平凉", "Pingliang", "620802"),
    ("庆阳", "Qingyang", "621002"),
    ("白银", "Baiyin", "620402"),
)


@dataclass(frozen=True, slots=True)
class PartySpec:
    """A party of the scenario: id, names in Simplified Chinese and English, kind, place.

    ``place`` and ``place_en`` name the city or county (in Gansu); ``licence`` is a made-up
    registration number, marked ``SIM`` so that nobody takes it for a real one.
    """

    id: str
    name_zh: str
    name_en: str
    kind: str
    place: str
    place_en: str = ""
    licence: str = ""

    def profile(self) -> dict[str, str]:
        """The public profile registered with ``POST /v1/parties`` (docs/registry-api.md)."""
        return {
            "name": self.name_zh,
            "name_en": self.name_en,
            "place": f"甘肃省{self.place}",
            "place_en": f"{self.place_en}, Gansu" if self.place_en else "Gansu",
            "licence": self.licence,
        }

    @property
    def name(self) -> str:
        """The registered name: Chinese first, then English (as the demo registers them)."""
        return f"{self.name_zh} {self.name_en}"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device gateway of a party, what it does and where it is (Chinese, English)."""

    id: str
    party: str
    role: str
    place_zh: str = ""
    place_en: str = ""


# Where a device of each role stands, as its party would name it (chart legends, pages).
_DEVICE_PLACES: Final = {
    "goods-in scanner": ("超市收货口", "supermarket goods-in"),
    "display case logger": ("超市冷柜", "supermarket display case"),
    "hen house": ("鸡舍", "hen house"),
    "collection counter": ("集蛋线", "egg collection line"),
    "grading and packing line": ("分级包装线", "grading and packing line"),
    "flock health records": ("兽医室", "vet room"),
    "cold store logger": ("养殖场冷库", "farm cold store"),
    "reefer truck": ("冷藏车", "refrigerated truck"),
    "lab bench": ("检测实验室", "laboratory"),
    "lairage scanner": ("待宰圈", "lairage"),
    "slaughter line": ("屠宰线", "slaughter line"),
    "chiller probe": ("胴体冷却间", "carcass chiller"),
    "cutting room": ("分割车间", "cutting room"),
    "ear-tag reader": ("养殖场大门", "farm gate"),
    "feed station": ("饲喂站", "feed station"),
    "vet terminal": ("兽医终端", "vet terminal"),
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One device message of the timeline, at ``at_ms`` scenario ms after the start.

    A reading when ``step`` is None (``sensors`` set), else an event.
    """

    at_ms: int
    device: str
    products: tuple[ProductKey, ...]
    sensors: tuple[Sensor, ...] = ()
    step: str | None = None
    parents: tuple[ProductKey, ...] = ()
    location: str | None = None
    data: Mapping[str, object] | None = None

    def message(self, seq: int, time_ms: int) -> DeviceMessage:
        """The protocol message for this entry with ``seq`` at device time ``time_ms``."""
        if self.step is None:
            return Reading(
                device=self.device,
                seq=seq,
                time=time_ms,
                products=self.products,
                sensors=self.sensors,
            )
        return Event(
            device=self.device,
            seq=seq,
            time=time_ms,
            products=self.products,
            step=self.step,
            parents=self.parents,
            location=self.location,
            data=self.data,
        )


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """What varies between runs of a scenario.

    ``run`` makes product keys unique per run (a product is commissioned once, ever);
    ``prefix`` is put before every party and device id (isolated test runs on a shared broker);
    ``excursion_rate`` is the fraction of cold-chain readings above the limit.
    """

    farms: int = 1
    seed: int = 0
    run: int = 1
    prefix: str = ""
    excursion_rate: float = 0.0
    animals: int = 4  # per species and farm (beef)
    cases_per_lot: int = 20  # egg cases of 360 eggs per house and day

    def __post_init__(self) -> None:
        """Check the ranges."""
        if not 1 <= self.farms <= 99:
            raise ValueError("farms must be 1 to 99")
        if not 0.0 <= self.excursion_rate <= 1.0:
            raise ValueError("excursion_rate must be in [0, 1]")
        if not 1 <= self.animals <= 30 or not 1 <= self.cases_per_lot <= 32:
            raise ValueError("animals must be 1 to 30 and cases_per_lot 1 to 32")


@dataclass(slots=True)
class Scenario:
    """Parties, devices and the timeline (sorted by ``at_ms``, stable) of one scenario."""

    name: str
    parties: list[PartySpec] = field(default_factory=list)
    devices: list[DeviceSpec] = field(default_factory=list)
    timeline: list[Planned] = field(default_factory=list)

    def party_of(self, device_id: str) -> str:
        """The party of a device of this scenario."""
        for device in self.devices:
            if device.id == device_id:
                return device.party
        raise KeyError(device_id)


class _Builder:
    """Collects parties, devices and messages; drops messages at or after the span."""

    def __init__(self, name: str, config: ScenarioConfig, span_ms: int) -> None:
        self.config = config
        self.span_ms = span_ms
        self.rng = random.Random(f"{name}:{config.seed}")  # noqa: S311 (simulation, not crypto)
        self.scenario = Scenario(name)

    def party(self, pid: str, zh: str, en: str, kind: str, place: tuple[str, str]) -> str:
        full = self.config.prefix + pid
        licence = f"SIM-{kind.upper()}-{len(self.scenario.parties) + 1:04d}"
        self.scenario.parties.append(PartySpec(full, zh, en, kind, place[0], place[1], licence))
        return full

    def device(self, did: str, party: str, role: str, place: tuple[str, str] | None = None) -> str:
        full = self.config.prefix + did
        zh, en = place or _DEVICE_PLACES.get(role.split(":", maxsplit=1)[0], ("", ""))
        self.scenario.devices.append(DeviceSpec(full, party, role, zh, en))
        return full

    def add(self, planned: Planned) -> None:
        if 0 <= planned.at_ms < self.span_ms:
            self.scenario.timeline.append(planned)

    def event(
        self,
        at_ms: int,
        device: str,
        products: Sequence[ProductKey],
        step: str,
        *,
        parents: Sequence[ProductKey] = (),
        location: str | None = None,
        data: Mapping[str, object] | None = None,
    ) -> None:
        self.add(Planned(at_ms, device, tuple(products), (), step, tuple(parents), location, data))

    def readings(
        self,
        device: str,
        products: Sequence[ProductKey],
        window: tuple[int, int],
        every_ms: int,
        sensors: Callable[[int], tuple[Sensor, ...]],
    ) -> None:
        """Readings every ``every_ms`` (±10 % jitter, as real loggers drift) in ``window``."""
        start_ms, end_ms = window
        at = start_ms
        while at < min(end_ms, self.span_ms):
            when = at + round(self.rng.uniform(-0.1, 0.1) * every_ms)
            self.add(Planned(max(when, start_ms), device, tuple(products), sensors(at)))
            at += every_ms

    def cold(self, low: float, high: float, limit: float) -> Sensor:
        """A cold-chain temperature; ``excursion_rate`` of them lie 0.3-3 °C above ``limit``."""
        if self.rng.random() < self.config.excursion_rate:
            value = limit + self.rng.uniform(0.3, 3.0)
        else:
            value = self.rng.uniform(low, high)
        return Sensor("Temperature", round(value, 1), "CEL")

    def finish(self) -> Scenario:
        # Stable sort: messages planned for the same instant keep their causal order.
        self.scenario.timeline.sort(key=lambda planned: planned.at_ms)
        return self.scenario


def _place(index: int) -> tuple[str, str, str]:
    return PLACES[index % len(PLACES)]


def _days(span_ms: int) -> int:
    return max(1, math.ceil(span_ms / DAY_MS))


# -- egg ----------------------------------------------------------------------------------------


def build_egg(config: ScenarioConfig, span_ms: int) -> Scenario:
    """The egg scenario; see the module docstring and docs/scenarios.md."""
    b = _Builder("egg", config, span_ms)
    carrier = b.party(
        "gansu-coldchain",
        "甘肃冷链物流",
        "Gansu Cold Chain Logistics",
        "carrier",
        ("兰州", "Lanzhou"),
    )
    retailer = b.party(
        "lanzhou-mart",
        "兰州惠民超市",
        "Lanzhou Huimin Supermarket",
        "retailer",
        ("兰州", "Lanzhou"),
    )
    dock = b.device("lanzhou-mart-dock", retailer, "goods-in scanner: receiving, retail_selling")
    chiller = b.device("lanzhou-mart-chiller", retailer, "display case logger: Temperature")
    for i in range(1, config.farms + 1):
        _egg_farm(b, i, carrier=carrier, retailer=retailer, dock=dock, chiller=chiller)
    return b.finish()


def _egg_farm(b: _Builder, i: int, *, carrier: str, retailer: str, dock: str, chiller: str) -> None:
    cfg, rng = b.config, b.rng
    zh, en, _ = _place(i - 1)
    farm = b.party(
        f"egg-farm-{i:02d}", f"{zh}蛋鸡养殖场", f"{en} laying-hen farm", "farm", (zh, en)
    )
    houses = (1, 2)
    climate = {
        h: b.device(
            f"egg{i:02d}-house{h}-climate",
            farm,
            "hen house: T, RH",
            (f"{h}号鸡舍", f"hen house {h}"),
        )
        for h in houses
    }
    collect = b.device(f"egg{i:02d}-collect", farm, "collection counter: commissioning")
    grader = b.device(f"egg{i:02d}-grader", farm, "grading and packing line: cases")
    vet = b.device(f"egg{i:02d}-vet", farm, "flock health records: treatments")
    store = b.device(f"egg{i:02d}-coldstore", farm, "cold store logger: storing, T, shipping")
    truck = b.device(f"coldchain-truck-e{i:02d}", carrier, "reefer truck: receiving, T, shipping")
    flocks = {h: ProductKey.from_parts(FLOCK_GTIN, lot=f"R{cfg.run}F{i}H{h}") for h in houses}
    site = f"{farm}/packing"
    # The flocks exist first: house readings and lots refer to them.
    b.event(
        0,
        collect,
        list(flocks.values()),
        "commissioning",
        location=f"{farm}/houses",
        data={"species": "Gallus gallus domesticus", "hens": 8000, "breed": "京红1号 Jinghong 1"},
    )
    for h in houses:
        # Hen houses at 18-24 °C and 50-70 %RH, warmest mid-afternoon; every 5 min.
        def house(at: int) -> tuple[Sensor, ...]:
            hour = (at % DAY_MS) / HOUR_MS
            base = 21.0 + 2.0 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi)
            celsius = min(24.0, max(18.0, base + rng.uniform(-0.6, 0.6)))
            humidity = min(70.0, max(50.0, 60.0 - (celsius - 21.0) * 2.5 + rng.uniform(-3, 3)))
            return (
                Sensor("Temperature", round(celsius, 1), "CEL"),
                Sensor("RelativeHumidity", round(humidity, 1), "P1"),
            )

        b.readings(climate[h], [flocks[h]], (MINUTE_MS, b.span_ms), 5 * MINUTE_MS, house)
    if i == 1:
        # The treated flock: eggs of house 2 laid in the next 7 days are under withdrawal; cases
        # of its lots are still sold (below), so that the withdrawal contract has a case to catch.
        b.event(
            5 * HOUR_MS,
            vet,
            [flocks[2]],
            "other",
            location=f"{farm}/house-2",
            data={"treatment": {"drug": "oxytetracycline", "dose": 2.5, "withdrawal_days": 7}},
        )
    # A quarter of each house's cases is sold on the evening of packing: house 2's too, so that
    # on farm 1 eggs laid during the withdrawal reach retail (docs/scenarios.md).
    per_lot = max(1, cfg.cases_per_lot // 4)
    for day in range(_days(b.span_ms)):
        d0 = day * DAY_MS
        lots, cases, sold = [], [], []
        for h in houses:
            lot = ProductKey.from_parts(EGG_GTIN, lot=f"R{cfg.run}F{i}D{day}H{h}")
            count = 360 * cfg.cases_per_lot
            b.event(
                d0 + 6 * HOUR_MS + h * MINUTE_MS,
                collect,
                [lot],
                "commissioning",
                parents=[flocks[h]],
                location=f"{farm}/house-{h}",
                data={"count": count, "house": h, "flock": flocks[h].path},
            )
            # GS1 General Specifications §3.5.2: GTIN + serial alone names a case, whatever its
            # lot, so serials are unique per GTIN: the lot's name and the case number in it.
            packed = [
                ProductKey.from_parts(EGG_GTIN, lot=lot.lot, serial=f"{lot.lot}-C{n:03d}")
                for n in range(1, cfg.cases_per_lot + 1)
            ]
            # Aggregation: each case of 360 eggs comes from the lot (parents).
            b.event(
                d0 + 7 * HOUR_MS + h * MINUTE_MS,
                grader,
                packed,
                "commissioning",
                parents=[lot],
                location=site,
                data={"grade": "AA", "eggs_per_case": 360, "standard": "GB/T 39438-2020"},
            )
            lots.append(lot)
            cases.extend(packed)
            sold.extend(packed[:per_lot])
        b.event(
            d0 + 7 * HOUR_MS + 30 * MINUTE_MS,
            store,
            cases,
            "storing",
            location=f"{farm}/cold-store",
        )
        # FDA 21 CFR 118.4(e): held at or below 7.2 °C; normally 4-6 °C.
        b.readings(
            store,
            cases,
            (d0 + 7 * HOUR_MS + 35 * MINUTE_MS, d0 + 14 * HOUR_MS),
            5 * MINUTE_MS,
            lambda _at: (b.cold(4.0, 6.0, COLD_CHAIN_LIMIT_C),),
        )
        b.event(
            d0 + 14 * HOUR_MS,
            store,
            cases,
            "shipping",
            location=site,
            data={"destination": carrier},
        )
        b.event(d0 + 14 * HOUR_MS + 20 * MINUTE_MS, truck, cases, "receiving", location=site)
        b.readings(
            truck,
            cases,
            (d0 + 14 * HOUR_MS + 25 * MINUTE_MS, d0 + 18 * HOUR_MS),
            5 * MINUTE_MS,
            lambda _at: (b.cold(3.0, 6.0, COLD_CHAIN_LIMIT_C),),
        )
        b.event(
            d0 + 18 * HOUR_MS,
            truck,
            cases,
            "shipping",
            location="lanzhou-mart/dock",
            data={"destination": retailer},
        )
        b.event(
            d0 + 18 * HOUR_MS + 30 * MINUTE_MS,
            dock,
            cases,
            "receiving",
            location="lanzhou-mart/dock",
        )
        b.readings(
            chiller,
            cases,
            (d0 + 18 * HOUR_MS + 40 * MINUTE_MS, d0 + DAY_MS),
            10 * MINUTE_MS,
            lambda _at: (b.cold(3.0, 6.5, COLD_CHAIN_LIMIT_C),),
        )
        b.event(
            d0 + 20 * HOUR_MS + rng.randrange(30) * MINUTE_MS,
            dock,
            sold,
            "retail_selling",
            location="lanzhou-mart/store",
            data={"count": len(sold)},
        )


# -- beef and sheep -----------------------------------------------------------------------------

#: One batch of animals goes from farm to retail in this cycle (days 0-2).
BEEF_CYCLE_MS: Final = 3 * DAY_MS


def build_beef(config: ScenarioConfig, span_ms: int) -> Scenario:
    """The beef (and sheep) scenario; see the module docstring and docs/scenarios.md."""
    b = _Builder("beef", config, span_ms)
    carrier = b.party(
        "gansu-coldchain",
        "甘肃冷链物流",
        "Gansu Cold Chain Logistics",
        "carrier",
        ("兰州", "Lanzhou"),
    )
    retailer = b.party(
        "lanzhou-mart",
        "兰州惠民超市",
        "Lanzhou Huimin Supermarket",
        "retailer",
        ("兰州", "Lanzhou"),
    )
    lab = b.party(
        "gansu-vet-lab",
        "甘肃省动物疫病预防控制中心",
        "Gansu Animal Disease Control Center",
        "lab",
        ("兰州", "Lanzhou"),
    )
    abattoir = b.party(
        "lanzhou-abattoir",
        "兰州肉类联合加工厂",
        "Lanzhou meat processing plant",
        "processor",
        ("兰州", "Lanzhou"),
    )
    roles = {
        "bench": b.device("vetlab-bench", lab, "lab bench: receiving samples, test results"),
        "lairage": b.device("abattoir-lairage", abattoir, "lairage scanner: receiving animals"),
        "line": b.device("abattoir-line", abattoir, "slaughter line: killing, carcasses"),
        "chiller": b.device("abattoir-chiller", abattoir, "chiller probe: carcass core T, RH"),
        "cutting": b.device("abattoir-cutting", abattoir, "cutting room: cuts lots, shipping"),
        "dock": b.device("lanzhou-mart-dock", retailer, "goods-in scanner: receiving"),
        "display": b.device("lanzhou-mart-chiller", retailer, "display case logger: T"),
    }
    parties = {"carrier": carrier, "retailer": retailer, "lab": lab, "abattoir": abattoir}
    for i in range(1, config.farms + 1):
        _beef_farm(b, i, parties, roles)
    return b.finish()


@dataclass(frozen=True, slots=True)
class _Species:
    name: str
    zh: str
    tag_digit: str  # first digit of the Chinese livestock ear tag (畜禽标识): 2 cattle, 3 sheep
    gtin: str
    carcass_gtin: str
    cuts_gtin: str
    cuts: tuple[tuple[str, str], ...]
    carcass_kg: tuple[float, float]
    chill_tau_h: float  # core cooling time constant (large carcasses cool slower)


CATTLE: Final = _Species(
    "cattle",
    "西门塔尔牛 Simmental cattle",
    "2",
    CATTLE_GTIN,
    BEEF_CARCASS_GTIN,
    BEEF_CUTS_GTIN,
    (("SL", "西冷 striploin"), ("BR", "牛腩 brisket")),
    (250.0, 340.0),
    8.0,
)
SHEEP: Final = _Species(
    "sheep",
    "滩羊 Tan sheep",
    "3",
    SHEEP_GTIN,
    SHEEP_CARCASS_GTIN,
    LAMB_CUTS_GTIN,
    (("LG", "羊腿 leg"), ("RK", "羊排 rack")),
    (15.0, 24.0),
    3.0,
)


def _beef_farm(b: _Builder, i: int, parties: Mapping[str, str], roles: Mapping[str, str]) -> None:
    cfg, rng = b.config, b.rng
    zh, en, county = _place(i + 1)
    farm = b.party(
        f"beef-farm-{i:02d}", f"{zh}牛羊养殖场", f"{en} cattle and sheep farm", "farm", (zh, en)
    )
    gate = b.device(f"beef{i:02d}-gate", farm, "ear-tag reader: commissioning, shipping")
    feed = b.device(f"beef{i:02d}-feed", farm, "feed station: rations")
    vet = b.device(f"beef{i:02d}-vet", farm, "vet terminal: treatments, samples, results")
    truck = b.device(f"coldchain-truck-b{i:02d}", parties["carrier"], "reefer truck: cuts")
    for cycle in range(math.ceil(b.span_ms / BEEF_CYCLE_MS) or 1):
        c0 = cycle * BEEF_CYCLE_MS
        herd: dict[str, list[ProductKey]] = {}
        for species in (CATTLE, SHEEP):
            # Ear tag: species digit + county code (GB/T 2260) + 8-digit serial = 15 digits.
            tags = [
                f"{species.tag_digit}{county}{cfg.run % 1000:03d}{i:02d}{cycle % 10}{n:02d}"
                for n in range(1, cfg.animals + 1)
            ]
            animals = [ProductKey.from_parts(species.gtin, serial=tag) for tag in tags]
            herd[species.name] = animals
            b.event(
                c0 + 6 * HOUR_MS,
                gate,
                animals,
                "commissioning",
                location=f"{farm}/pens",
                data={"species": species.zh, "count": len(animals)},
            )
        everyone = herd["cattle"] + herd["sheep"]
        treated = herd["cattle"][-1]
        for day in range(2):
            for hour in (7, 17):
                on_farm = everyone if day == 0 else [treated]
                b.event(
                    c0 + day * DAY_MS + hour * HOUR_MS,
                    feed,
                    on_farm,
                    "other",
                    location=f"{farm}/feedlot",
                    data={
                        "feed": {
                            "ration": "玉米青贮+苜蓿 corn silage + alfalfa",
                            "kg_per_head": 22.5,
                            "additive": "monensin",
                            "withdrawal_days": 0,
                        }
                    },
                )
        # A treated animal stays on the farm until its withdrawal period has passed.
        b.event(
            c0 + 8 * HOUR_MS,
            vet,
            [treated],
            "other",
            location=f"{farm}/pens",
            data={"treatment": {"drug": "oxytetracycline", "dose": 10.0, "withdrawal_days": 28}},
        )
        _brucellosis(
            b,
            c0,
            animals=everyone,
            farm=farm,
            vet=vet,
            lab=parties["lab"],
            bench=roles["bench"],
            cycle=cycle,
        )
        shipped = [animal for animal in everyone if animal != treated]
        b.event(
            c0 + DAY_MS + 5 * HOUR_MS,
            gate,
            shipped,
            "shipping",
            location=f"{farm}/gate",
            data={"destination": parties["abattoir"]},
        )
        b.event(
            c0 + DAY_MS + 9 * HOUR_MS,
            roles["lairage"],
            shipped,
            "receiving",
            location="lanzhou-abattoir/lairage",
        )
        kill0 = c0 + DAY_MS + 11 * HOUR_MS
        carcasses: dict[str, list[ProductKey]] = {}
        for species in (CATTLE, SHEEP):
            carcasses[species.name] = []
            for n, animal in enumerate(a for a in herd[species.name] if a in shipped):
                at = kill0 + n * 4 * MINUTE_MS
                kg = round(rng.uniform(*species.carcass_kg), 1)
                b.event(
                    at,
                    roles["line"],
                    [animal],
                    "killing",
                    location="lanzhou-abattoir/line",
                    data={"hot_carcass_kg": kg},
                )
                carcass = ProductKey.from_parts(species.carcass_gtin, serial=f"K{animal.serial}")
                # Transformation: the carcass comes from the animal (parents).
                b.event(
                    at + MINUTE_MS,
                    roles["line"],
                    [carcass],
                    "commissioning",
                    parents=[animal],
                    location="lanzhou-abattoir/line",
                    data={"hot_carcass_kg": kg, "species": species.name},
                )
                carcasses[species.name].append(carcass)
            if not carcasses[species.name]:
                continue

            # Chilling: core temperature falls from 38 °C towards the 0-2 °C chiller air;
            # EU Reg. 853/2004 Annex III I.VII: ≤ 7 °C before cutting or transport.
            def core(
                at: int, start: int = kill0, tau: float = species.chill_tau_h
            ) -> tuple[Sensor, ...]:
                hours = max(0.0, (at - start) / HOUR_MS)
                celsius = 1.0 + 37.0 * math.exp(-hours / tau) + rng.uniform(-0.3, 0.3)
                return (
                    Sensor("Temperature", round(celsius, 1), "CEL"),
                    Sensor("RelativeHumidity", round(rng.uniform(88.0, 95.0), 1), "P1"),
                )

            b.readings(
                roles["chiller"],
                carcasses[species.name],
                (kill0 + HOUR_MS, kill0 + 23 * HOUR_MS),
                15 * MINUTE_MS,
                core,
            )
        _cuts(
            b, c0, i=i, cycle=cycle, carcasses=carcasses, parties=parties, roles=roles, truck=truck
        )


def _brucellosis(
    b: _Builder,
    c0: int,
    *,
    animals: Iterable[ProductKey],
    farm: str,
    vet: str,
    lab: str,
    bench: str,
    cycle: int,
) -> None:
    """Blood samples to the lab, lab-signed results, and the farm's record on each animal.

    Rights: the lab's device may append only to products its party holds, and the animals stay
    with the farm. So each blood sample is a product of its own (commissioned by the farm's vet
    terminal with the animal as parent), shipped to the lab and received there; the lab's bench
    device signs the result on the sample. The farm's vet terminal then records the same result
    on the animal, naming the sample, so that it is in the ancestry of carcass and cuts.
    """
    samples = []
    for n, animal in enumerate(animals):
        sample = ProductKey.from_parts(SAMPLE_GTIN, serial=f"S{animal.serial}")
        # A product exists once commissioned; the sample comes from the animal (parents).
        b.event(
            c0 + 9 * HOUR_MS + n * MINUTE_MS,
            vet,
            [sample],
            "commissioning",
            parents=[animal],
            location=f"{farm}/pens",
            data={"specimen": "serum", "purpose": "brucellosis"},
        )
        samples.append((animal, sample))
    keys = [sample for _, sample in samples]
    b.event(
        c0 + 10 * HOUR_MS, vet, keys, "shipping", location=f"{farm}/pens", data={"destination": lab}
    )
    b.event(c0 + 12 * HOUR_MS, bench, keys, "receiving", location="gansu-vet-lab/reception")
    for n, (animal, sample) in enumerate(samples):
        test = {
            "disease": "brucellosis",
            "result": "negative",
            "lab": lab,
            "method": "RBPT + cELISA",
            "report": f"BR{cycle}{n:03d}",
        }
        b.event(
            c0 + 16 * HOUR_MS + n * MINUTE_MS,
            bench,
            [sample],
            "inspecting",
            location="gansu-vet-lab/serology",
            data={"test": test},
        )
        b.event(
            c0 + 17 * HOUR_MS + n * MINUTE_MS,
            vet,
            [animal],
            "inspecting",
            location=f"{farm}/office",
            data={"test": {**test, "sample": sample.path}},
        )


def _cuts(
    b: _Builder,
    c0: int,
    *,
    i: int,
    cycle: int,
    carcasses: Mapping[str, list[ProductKey]],
    parties: Mapping[str, str],
    roles: Mapping[str, str],
    truck: str,
) -> None:
    cfg, rng = b.config, b.rng
    lots: list[ProductKey] = []
    for species in (CATTLE, SHEEP):
        sources = carcasses[species.name]
        if not sources:
            continue
        for code, name in species.cuts:
            lot = ProductKey.from_parts(species.cuts_gtin, lot=f"R{cfg.run}F{i}C{cycle}{code}")
            kg = round(len(sources) * species.carcass_kg[0] * rng.uniform(0.04, 0.08), 1)
            # Transformation: a cuts lot from the carcasses it was cut from.
            b.event(
                c0 + 2 * DAY_MS + 10 * HOUR_MS,
                roles["cutting"],
                [lot],
                "commissioning",
                parents=sources,
                location="lanzhou-abattoir/cutting",
                data={"cut": name, "net_kg": kg},
            )
            lots.append(lot)
    if not lots:
        return
    ship = c0 + 2 * DAY_MS + 13 * HOUR_MS
    b.event(
        ship,
        roles["cutting"],
        lots,
        "shipping",
        location="lanzhou-abattoir/dispatch",
        data={"destination": parties["carrier"]},
    )
    b.event(ship + 20 * MINUTE_MS, truck, lots, "receiving", location="lanzhou-abattoir/dispatch")
    b.readings(
        truck,
        lots,
        (ship + 25 * MINUTE_MS, ship + 4 * HOUR_MS),
        5 * MINUTE_MS,
        lambda _at: (b.cold(0.5, 3.5, MEAT_CHAIN_LIMIT_C),),
    )
    b.event(
        ship + 4 * HOUR_MS,
        truck,
        lots,
        "shipping",
        location="lanzhou-mart/dock",
        data={"destination": parties["retailer"]},
    )
    b.event(
        ship + 4 * HOUR_MS + 30 * MINUTE_MS,
        roles["dock"],
        lots,
        "receiving",
        location="lanzhou-mart/dock",
    )
    b.readings(
        roles["display"],
        lots,
        (ship + 4 * HOUR_MS + 40 * MINUTE_MS, c0 + BEEF_CYCLE_MS),
        10 * MINUTE_MS,
        lambda _at: (b.cold(0.5, 3.5, MEAT_CHAIN_LIMIT_C),),
    )


#: Scenario builders by name: ``builder(config, span_ms) -> Scenario``.
SCENARIOS: Final[Mapping[str, Callable[[ScenarioConfig, int], Scenario]]] = {
    "egg": build_egg,
    "beef": build_beef,
}


def build_scenario(name: str, config: ScenarioConfig, span_ms: int) -> Scenario:
    """Build scenario ``name`` covering ``span_ms`` of scenario time (messages in [0, span))."""
    try:
        builder = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return builder(config, span_ms)
