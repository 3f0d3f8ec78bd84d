"""Pure checks of the scenario timelines: legal under the rights rules, realistic, reproducible."""

from __future__ import annotations

import pytest

from contracts import Status, evaluate_story
from firmware_sim.scenarios import (
    BEEF_CUTS_GTIN,
    COLD_CHAIN_LIMIT_C,
    DAY_MS,
    EGG_GTIN,
    Scenario,
    ScenarioConfig,
    build_scenario,
)
from ingest.rights import Outcome, ProductState, decide
from tracecore.identifiers import ProductKey
from tracecore.verdict import SensorPoint, Story, StoryEvent

T0 = 1_700_000_000_000


def _replay(scenario: Scenario) -> dict[str, ProductState]:
    """Apply the timeline to the rights rules in order; every message must be accepted."""
    state: dict[str, ProductState] = {}
    items: dict[str, set[str]] = {}  # GTIN + serial -> the keys registered with it
    parties = {party.id for party in scenario.parties}
    last_time: dict[str, int] = {}
    for seq, planned in enumerate(scenario.timeline, 1):
        assert planned.at_ms >= last_time.get(planned.device, 0)
        last_time[planned.device] = planned.at_ms
        message = planned.message(seq, T0 + planned.at_ms)
        party = scenario.party_of(planned.device)
        keys = [k.path for k in (*planned.products, *planned.parents)]
        decision = decide(message, party, {k: state.get(k) for k in keys}, parties, items)
        assert decision.outcome is Outcome.ACCEPT, (planned, decision.detail, decision.missing)
        for key in decision.created:
            state[key] = ProductState(owner=party, holder=party, pending=None)
            item = ProductKey.parse_canonical(key).item
            if item is not None:
                items.setdefault(item.path, set()).add(key)
        for key, holder, pending in decision.custody:
            state[key] = ProductState(state[key].owner, holder, pending)
    return state


@pytest.mark.parametrize(("name", "days"), [("egg", 2), ("beef", 4)])
def test_timeline_is_legal_under_the_rights_rules(name: str, days: int) -> None:
    """Commissioned before use, by the holder; custody moves only by shipping + receiving."""
    scenario = build_scenario(name, ScenarioConfig(farms=2, excursion_rate=0.1), days * DAY_MS)
    state = _replay(scenario)
    retailer = next(p.id for p in scenario.parties if p.kind == "retailer")
    final = f"01/{EGG_GTIN if name == 'egg' else BEEF_CUTS_GTIN}/"
    at_retail = [k for k, s in state.items() if k.startswith(final) and s.holder == retailer]
    assert at_retail, "custody of the retail products ends at the retailer"
    assert all(s.pending is None for s in state.values() if s.holder == retailer)


@pytest.mark.parametrize("name", ["egg", "beef"])
def test_serials_are_unique_per_gtin_across_lots_and_runs(name: str) -> None:
    """GS1 GenSpecs §3.5.2: GTIN + serial names one item, so no two commissioned keys of two
    runs of a scenario (several farms, several days and lots) share a GTIN and serial."""
    keys: list[ProductKey] = []
    for run in (1, 2):
        scenario = build_scenario(name, ScenarioConfig(farms=2, run=run), 6 * DAY_MS)
        keys += [k for p in scenario.timeline if p.step == "commissioning" for k in p.products]
    serialized = [k for k in keys if k.item is not None]
    assert len(serialized) > 100
    assert len({k.item for k in serialized}) == len(serialized)


def test_transformations_and_aggregations_have_parents() -> None:
    """Cases come from lots, carcasses from animals, cuts from carcasses, lots from flocks."""
    for name in ("egg", "beef"):
        scenario = build_scenario(name, ScenarioConfig(), 3 * DAY_MS)
        commissioned = [p for p in scenario.timeline if p.step == "commissioning"]
        with_parents = [p for p in commissioned if p.parents]
        assert with_parents
        if name == "beef":
            steps = {p.step for p in scenario.timeline}
            assert {"killing", "shipping", "receiving", "inspecting"} <= steps
            tests = [p.data for p in scenario.timeline if p.data and "test" in p.data]
            assert tests
            assert all(t["test"]["disease"] == "brucellosis" for t in tests)  # type: ignore[index]


def test_values_are_realistic_and_excursions_configurable() -> None:
    """Hen houses 18-24 °C / 50-70 %RH; cold chain ≤ 7.2 °C except the requested excursions."""
    clean = build_scenario("egg", ScenarioConfig(), DAY_MS)
    warm = build_scenario("egg", ScenarioConfig(excursion_rate=0.2, seed=3), DAY_MS)
    houses = [p for p in clean.timeline if p.step is None and "climate" in p.device]
    assert len(houses) >= 2 * 280  # every 5 min, two houses, a day
    for planned in houses:
        celsius, humidity = (s.value for s in planned.sensors)
        assert 18.0 <= celsius <= 24.0
        assert 50.0 <= humidity <= 70.0

    def cold(scenario: Scenario) -> list[float]:
        return [
            float(p.sensors[0].value)
            for p in scenario.timeline
            if p.step is None and "climate" not in p.device
        ]

    assert cold(clean)
    assert max(cold(clean)) <= COLD_CHAIN_LIMIT_C  # FDA 21 CFR 118.4(e)
    too_warm = [v for v in cold(warm) if v > COLD_CHAIN_LIMIT_C]
    assert 0.1 < len(too_warm) / len(cold(warm)) < 0.3
    treatments = [p.data for p in clean.timeline if p.data and "treatment" in p.data]
    assert treatments == [
        {"treatment": {"drug": "oxytetracycline", "dose": 2.5, "withdrawal_days": 7}}
    ]


def test_reproducible_with_a_seed_and_new_keys_per_run() -> None:
    """Same config, same timeline; another run number gives other product keys."""
    one = build_scenario("beef", ScenarioConfig(seed=7, farms=2), 3 * DAY_MS)
    two = build_scenario("beef", ScenarioConfig(seed=7, farms=2), 3 * DAY_MS)
    assert one.timeline == two.timeline
    other = build_scenario("beef", ScenarioConfig(seed=7, farms=2, run=2), 3 * DAY_MS)
    keys = {k.path for p in one.timeline for k in p.products}
    assert keys.isdisjoint({k.path for p in other.timeline for k in p.products})
    prefixed = build_scenario("egg", ScenarioConfig(prefix="t1-"), DAY_MS)
    assert all(d.id.startswith("t1-") for d in prefixed.devices)
    assert all(p.id.startswith("t1-") for p in prefixed.parties)
    names = {p.name for p in prefixed.parties}
    assert any("兰州" in name and "Lanzhou" in name for name in names)


def _story(scenario: Scenario, product: str) -> Story:
    """What a bundle of ``product`` holds: the entries naming it or an ancestor (device time =
    scenario time, as at ``--speed 1``)."""
    parents: dict[str, tuple[str, ...]] = {}
    for planned in scenario.timeline:
        for key in planned.products:
            if planned.parents:
                parents[key.path] = tuple(p.path for p in planned.parents)
    lineage, frontier = {product}, [product]
    while frontier:
        frontier = [p for key in frontier for p in parents.get(key, ()) if p not in lineage]
        lineage.update(frontier)
    devices = {d.id: d.party for d in scenario.devices}
    events: list[StoryEvent] = []
    readings: list[SensorPoint] = []
    for index, planned in enumerate(scenario.timeline, 1):
        keys = tuple(k.path for k in planned.products)
        if lineage.isdisjoint(keys):
            continue
        time, device = T0 + planned.at_ms, planned.device
        if planned.step is None:
            readings.extend(
                SensorPoint(index, time, device, keys, s.type, float(s.value), s.uom)
                for s in planned.sensors
            )
            continue
        events.append(
            StoryEvent(
                index,
                time,
                planned.step,
                device,
                devices[device],
                keys,
                tuple(p.path for p in planned.parents),
                planned.location,
                planned.data,
            )
        )
    return Story(
        product=product,
        owner=None,
        created=None,
        owners={},
        heads={},
        events=tuple(sorted(events, key=lambda e: (e.time, e.index))),
        readings=tuple(sorted(readings, key=lambda r: (r.time, r.index))),
        parents=parents,
        devices=devices,
        recalls=(),
    )


def _withdrawal(scenario: Scenario, case: str) -> tuple[Status, str]:
    """The drug-withdrawal status of ``case`` and its first reason."""
    results = {r.contract: r for r in evaluate_story(_story(scenario, case), 1)}
    result = results["drug-withdrawal"]
    return result.status, result.reasons[0].text


def test_eggs_of_the_treated_flock_reach_retail_and_fail_withdrawal() -> None:
    """On farm 1, sold cases of house 2 laid within the 7-day withdrawal fail drug-withdrawal;
    sold cases of house 1, and unsold ones of house 2, pass."""
    scenario = build_scenario("egg", ScenarioConfig(), 2 * DAY_MS)
    sold = {k.path for p in scenario.timeline if p.step == "retail_selling" for k in p.products}
    for day in (0, 1):
        lot = f"R1F1D{day}"
        treated, untreated, unsold = (
            f"01/{EGG_GTIN}/10/{lot}H{h}/21/{lot}H{h}-C{n:03d}"
            for h, n in ((2, 1), (1, 1), (2, 20))
        )
        assert {treated, untreated} <= sold
        assert unsold not in sold
        status, reason = _withdrawal(scenario, treated)
        assert status is Status.FAIL
        assert "during the 7-day withdrawal of oxytetracycline" in reason
        assert "sold at entry" in reason
        assert _withdrawal(scenario, untreated)[0] is Status.PASS
        assert _withdrawal(scenario, unsold)[0] is Status.PASS
