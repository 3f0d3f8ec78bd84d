"""The buyer's summary: what, where, dates, cold chain, compliance and journey of a product."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pytest

from traceapi.summary import Excursion, excursions, summarise
from tracecore.storage.trace import PartyInfo
from tracecore.verdict import SensorPoint, Story, StoryEvent

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
T0: Final = 1_795_996_800_000  # 2026-11-30 00:00 UTC

FLOCK: Final = "01/06901234560015/10/F1H1"
LOT: Final = "01/06901234560022/10/D0H1"
CASE: Final = "01/06901234560022/10/D0H1/21/C001"
OTHER_CASES: Final = tuple(f"01/06901234560022/10/D0H1/21/C{n:03d}" for n in range(2, 41))

PROFILES: Final = {
    "egg-farm": PartyInfo(
        "egg-farm",
        "临夏蛋鸡养殖场",
        "farm",
        "Linxia laying-hen farm",
        "甘肃省临夏",
        "Linxia, Gansu",
    ),
    "coldchain": PartyInfo("coldchain", "甘肃冷链物流", "carrier", "Gansu Cold Chain"),
    "mart": PartyInfo("mart", "兰州惠民超市", "retailer", "Lanzhou Huimin Supermarket"),
}
PLACES: Final = {
    "store": ("养殖场冷库", "farm cold store"),
    "truck": ("冷藏车", "refrigerated truck"),
    "chiller": ("超市冷柜", "supermarket display case"),
}
DEVICES: Final = {
    "collect": "egg-farm",
    "grader": "egg-farm",
    "store": "egg-farm",
    "truck": "coldchain",
    "dock": "mart",
    "chiller": "mart",
}


@dataclass
class EggChain:
    """A factory of egg stories: flock -> lot -> case -> cold store -> truck -> shop."""

    events: list[StoryEvent] = field(default_factory=list)
    readings: list[SensorPoint] = field(default_factory=list)

    def event(
        self, at: int, device: str, step: str, products: tuple[str, ...], **data: object
    ) -> None:
        """Append a signed event of ``device`` at ``T0 + at``."""
        index = len(self.events) + len(self.readings)
        parents = (
            {LOT: (FLOCK,), CASE: (LOT,)}.get(products[0], ()) if step == "commissioning" else ()
        )
        self.events.append(
            StoryEvent(
                index, T0 + at, step, device, DEVICES[device], products, parents, None, data or None
            )
        )

    def reading(self, at: int, device: str, celsius: float) -> None:
        """Append a temperature reading of the case (and its 39 siblings)."""
        index = len(self.events) + len(self.readings)
        self.readings.append(
            SensorPoint(index, T0 + at, device, (CASE, *OTHER_CASES), "Temperature", celsius, "CEL")
        )

    def story(self) -> Story:
        """The case's story, as tell_story orders it."""
        return Story(
            product=CASE,
            owner="egg-farm",
            created=T0 + 7 * HOUR,
            owners={FLOCK: "egg-farm", LOT: "egg-farm", CASE: "egg-farm"},
            heads={},
            events=tuple(sorted(self.events, key=lambda e: (e.time, e.index))),
            readings=tuple(sorted(self.readings, key=lambda r: (r.time, r.index))),
            parents={LOT: (FLOCK,), CASE: (LOT,)},
            devices=DEVICES,
            recalls=(),
        )


def egg_chain(*, warm: bool = False) -> EggChain:
    """The clean chain, or one where the shop's chiller is too warm for 25 minutes."""
    chain = EggChain()
    chain.event(
        0,
        "collect",
        "commissioning",
        (FLOCK,),
        species="Gallus gallus domesticus",
        hens=8000,
        breed="京红1号 Jinghong 1",
    )
    chain.event(6 * HOUR, "collect", "commissioning", (LOT,), count=720, house=1, flock=FLOCK)
    chain.event(
        7 * HOUR, "grader", "commissioning", (CASE, *OTHER_CASES), grade="AA", eggs_per_case=360
    )
    chain.event(7 * HOUR + 30 * MINUTE, "store", "storing", (CASE, *OTHER_CASES))
    for n in range(12):
        chain.reading(8 * HOUR + n * 10 * MINUTE, "store", 4.5)
    chain.event(14 * HOUR, "store", "shipping", (CASE, *OTHER_CASES), destination="coldchain")
    chain.event(14 * HOUR + 20 * MINUTE, "truck", "receiving", (CASE, *OTHER_CASES))
    for n in range(6):
        chain.reading(15 * HOUR + n * 10 * MINUTE, "truck", 5.0)
    chain.event(18 * HOUR, "truck", "shipping", (CASE, *OTHER_CASES), destination="mart")
    chain.event(18 * HOUR + 30 * MINUTE, "dock", "receiving", (CASE, *OTHER_CASES))
    for n in range(6):
        celsius = 9.0 if warm and n in (2, 3, 4) else 5.5
        chain.reading(19 * HOUR + n * 10 * MINUTE, "chiller", celsius)
    return chain


def _summary(chain: EggChain, lang: str = "en", contracts: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    return summarise(
        chain.story(),
        lang=lang,  # type: ignore[arg-type]
        contracts=contracts
        or [
            ("egg-cold-chain", "pass"),
            ("drug-withdrawal", "pass"),
            ("chilled-meat", "not_applicable"),
        ],
        profiles=PROFILES,
        places=PLACES,
        children=[],
    )


def test_what_where_and_dates_of_an_egg_case() -> None:
    """The case reads as fresh eggs, 360 a case, grade AA, from the farm, with its dates."""
    summary = _summary(egg_chain())
    assert summary.what == "Fresh eggs · 360 per case · grade AA"
    assert summary.what_detail == "Jinghong 1"
    assert summary.origin is not None
    assert (summary.origin.name, summary.origin.place) == (
        "Linxia laying-hen farm",
        "Linxia, Gansu",
    )
    assert summary.origin.href == "/p/egg-farm?lang=en"
    # Laid at 06:00 UTC on 11-30 is 14:00 in China; best before 28 days later.
    assert [(label, text) for label, text, _ in summary.dates] == [
        ("Laid", "30 Nov"),
        ("Packed", "30 Nov"),
        ("Best before", "28 Dec"),
    ]
    zh = _summary(egg_chain(), "zh")
    assert zh.what == "鲜鸡蛋 · 每箱 360 枚 · AA 级"
    assert zh.what_detail == "京红1号"
    assert [text for _, text, _ in zh.dates] == ["11月30日", "11月30日", "12月28日"]


def test_cold_chain_line_when_kept_cold() -> None:
    """Every reading at or below 7.2 °C: one reassuring line with the maximum."""
    cold = _summary(egg_chain()).cold_chain
    assert cold.ok is True
    assert cold.line == "Kept at ≤ 7.2 °C the whole way (24 readings, max 5.5 °C)"


def test_cold_chain_line_names_the_excursion() -> None:
    """Three warm readings at the shop: how long, when (UTC+8) and where."""
    cold = _summary(egg_chain(warm=True)).cold_chain
    assert cold.ok is False
    assert cold.excursions == (
        Excursion("chiller", T0 + 19 * HOUR + 20 * MINUTE, T0 + 19 * HOUR + 50 * MINUTE, 9.0),
    )
    assert cold.line == "30 min above 7.2 °C on 12-01 03:20 at supermarket display case"
    assert _summary(egg_chain(warm=True), "zh").cold_chain.line == (
        "30 分钟高于 7.2 °C：12-01 03:20，超市冷柜"
    )


def test_compliance_line_names_failures() -> None:
    """Not applicable contracts are left out; failures are named."""
    passed = _summary(egg_chain())
    assert (passed.compliance_ok, passed.compliance) == (True, "All 2 compliance checks passed")
    failed = _summary(
        egg_chain(), contracts=[("egg-cold-chain", "fail"), ("drug-withdrawal", "pass")]
    )
    assert failed.compliance_ok is False
    assert failed.compliance == "1 of 2 compliance checks failed: Egg cold chain (≤ 7.2 °C)"


def test_journey_stages_of_an_egg_case() -> None:
    """Farm -> packing -> cold store -> truck -> shop, each dispatch with the party sending it."""
    stages = _summary(egg_chain()).stages
    assert [(s.kind, s.party.id) for s in stages] == [
        ("farm", "egg-farm"),
        ("packing", "egg-farm"),
        ("coldstore", "egg-farm"),
        ("carrier", "coldchain"),
        ("retailer", "mart"),
    ]
    assert [e.name for e in stages[2].events] == ["Stored", "Shipped"]
    assert stages[2].temperatures == (4.5, 4.5, 12)
    # The packing record names 40 cases: the page says 39 others, it does not list them.
    assert stages[1].events[0].others == 39
    assert stages[3].party.name == "Gansu Cold Chain"


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ([5, 6, 7], []),
        ([5, 9, 5], [(1, 2, 9.0)]),
        ([9, 9, 5, 8], [(0, 2, 9.0), (3, 3, 8.0)]),
    ],
)
def test_excursions_run_until_the_first_reading_back_under(
    values: list[float], found: list[tuple[int, int, float]]
) -> None:
    """An excursion lasts from the first warm reading to the first one back at the limit."""
    points = [
        SensorPoint(n, n * MINUTE, "d", (), "Temperature", v, "CEL") for n, v in enumerate(values)
    ]
    assert excursions({"d": points}, 7.2) == [
        Excursion("d", a * MINUTE, b * MINUTE, peak) for a, b, peak in found
    ]


def test_journey_keeps_the_supply_chain_order_when_clocks_disagree() -> None:
    """A cold store whose clock runs behind the grader's still comes after packing."""
    chain = egg_chain()
    stored = next(e for e in chain.events if e.step == "storing")
    chain.events[chain.events.index(stored)] = StoryEvent(
        stored.index, T0 + 6 * HOUR + 50 * MINUTE, "storing", "store", "egg-farm",
        stored.products, (), None, None,
    )  # fmt: skip
    kinds = [s.kind for s in _summary(chain).stages]
    assert kinds == ["farm", "packing", "coldstore", "carrier", "retailer"]
