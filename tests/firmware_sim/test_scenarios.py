"""Pure checks of the scenario timelines: legal under the rights rules, realistic, reproducible."""

from __future__ import annotations

import pytest

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


def _replay(scenario: Scenario) -> dict[str, ProductState]:
    """Apply the timeline to the rights rules in order; every message must be accepted."""
    state: dict[str, ProductState] = {}
    parties = {party.id for party in scenario.parties}
    last_time: dict[str, int] = {}
    for seq, planned in enumerate(scenario.timeline, 1):
        assert planned.at_ms >= last_time.get(planned.device, 0)
        last_time[planned.device] = planned.at_ms
        message = planned.message(seq, 1_700_000_000_000 + planned.at_ms)
        party = scenario.party_of(planned.device)
        keys = [k.path for k in (*planned.products, *planned.parents)]
        decision = decide(message, party, {k: state.get(k) for k in keys}, parties)
        assert decision.outcome is Outcome.ACCEPT, (planned, decision.detail, decision.missing)
        for key in decision.created:
            state[key] = ProductState(owner=party, holder=party, pending=None)
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
