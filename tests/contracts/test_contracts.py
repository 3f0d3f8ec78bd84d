"""Each contract: pass, fail and not-applicable histories, and the exact boundary values."""

from __future__ import annotations

import pytest
from history_kit import DAY, HOUR, MINUTE, StoryBuilder

from contracts import (
    Brucellosis,
    ChilledMeat,
    ColdChainContinuity,
    Custody,
    DrugWithdrawal,
    EggColdChain,
    EggFreshness,
    Status,
    evaluate,
)

FLOCK, LOT, CASE = (
    "01/06901234560008/10/F1",
    "01/06901234567892/10/L1",
    "01/06901234567892/10/L1/21/C1",
)
COW, CARCASS, CUT = (
    "01/06901234560015/21/A1",
    "01/06901234560022/21/KA1",
    "01/06901234560039/10/CUT1",
)
T0 = 1_790_000_000_000


def eggs(*temperatures: tuple[int, float]) -> StoryBuilder:
    """A flock, a lot collected at T0, a case packed from it, and lot readings (offset, °C)."""
    b = StoryBuilder()
    b.event(T0 - DAY, "commissioning", (FLOCK,), data={"hens": 8000})
    b.event(T0, "commissioning", (LOT,), parents=(FLOCK,), data={"count": 360})
    b.event(T0 + HOUR, "commissioning", (CASE,), parents=(LOT,), data={"eggs_per_case": 360})
    for offset, celsius in temperatures:
        b.reading(T0 + offset, (LOT,), celsius)
    return b


# --- egg cold chain: FDA 21 CFR 118.4(e) -------------------------------------------------------


@pytest.mark.parametrize(
    ("celsius", "status"), [(7.2, Status.PASS), (7.21, Status.FAIL), (7.204, Status.PASS)]
)
def test_egg_cold_chain_boundary(celsius: float, status: Status) -> None:
    """7.2 °C is within the limit; 7.21 °C is not (hundredths, rounded half away from zero)."""
    b = eggs((36 * HOUR, 5.0), (40 * HOUR, celsius), (41 * HOUR, 5.0))
    assert EggColdChain().evaluate(b.history(CASE))[0] is status


def test_egg_cold_chain_grace_period_and_measures() -> None:
    """Warm eggs in the first 36 h are allowed; after that, degree-minutes and span add up."""
    b = eggs((35 * HOUR, 20.0), (37 * HOUR, 8.2), (37 * HOUR + 30 * MINUTE, 9.2), (38 * HOUR, 6.0))
    status, reasons, measures = EggColdChain().evaluate(b.history(CASE))
    assert status is Status.FAIL
    # 8.2 °C held 30 min (100 x 30) + 9.2 °C held 30 min (200 x 30) above 7.2 °C
    assert measures["centidegree_minutes_above"] == 100 * 30 + 200 * 30
    assert measures["longest_excursion_ms"] == 60 * MINUTE
    assert reasons[-1].entries == (5, 6)  # the two readings above the limit
    early = eggs((35 * HOUR, 20.0), (37 * HOUR, 6.0))
    assert EggColdChain().evaluate(early.history(CASE))[0] is Status.PASS


def test_egg_cold_chain_not_for_meat_or_flocks() -> None:
    """A flock is not eggs: the registry answers not_applicable."""
    results = {r.contract: r for r in evaluate(eggs().history(FLOCK), 10)}
    assert results["egg-cold-chain"].status is Status.NOT_APPLICABLE
    assert results["egg-freshness"].status is Status.NOT_APPLICABLE


# --- egg freshness -------------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "status"), [(28 * DAY, Status.PASS), (28 * DAY + 1, Status.FAIL)])
def test_egg_freshness_boundary(age: int, status: Status) -> None:
    """Sold exactly 28 days after laying passes; a millisecond later fails."""
    b = eggs()
    b.event(T0 + age, "retail_selling", (CASE,), device="shop-dev")
    assert EggFreshness().evaluate(b.history(CASE))[0] is status


def test_unsold_eggs_are_fresh_so_far() -> None:
    """Without a sale the contract passes and says so."""
    status, reasons, _ = EggFreshness().evaluate(eggs().history(CASE))
    assert status is Status.PASS
    assert "not sold" in reasons[0].text


# --- drug withdrawal ---------------------------------------------------------------------------


def cattle(kill_after: int, withdrawal_days: int = 28) -> StoryBuilder:
    """A cow treated at T0, killed ``kill_after`` ms later, a carcass and a cut from it."""
    b = StoryBuilder()
    b.event(T0 - DAY, "commissioning", (COW,), data={"species": "牛 cattle", "count": 1})
    b.event(
        T0,
        "other",
        (COW,),
        data={"treatment": {"drug": "oxytetracycline", "withdrawal_days": withdrawal_days}},
        device="vet-dev",
    )
    b.event(T0 + kill_after, "killing", (COW,), device="plant-dev")
    b.event(
        T0 + kill_after + MINUTE,
        "commissioning",
        (CARCASS,),
        parents=(COW,),
        data={"hot_carcass_kg": 250.0},
        device="plant-dev",
    )
    b.event(
        T0 + kill_after + DAY,
        "commissioning",
        (CUT,),
        parents=(CARCASS,),
        data={"cut": "sirloin"},
        device="plant-dev",
    )
    return b


@pytest.mark.parametrize(
    ("after", "status"), [(28 * DAY, Status.PASS), (28 * DAY - 1, Status.FAIL)]
)
def test_withdrawal_before_slaughter(after: int, status: Status) -> None:
    """Killed at treatment + 28 days passes; a millisecond earlier fails, for the cut too."""
    b = cattle(after)
    assert DrugWithdrawal().evaluate(b.history(CUT))[0] is status
    assert DrugWithdrawal().evaluate(b.history(CARCASS))[0] is status


@pytest.mark.parametrize(
    ("collected", "status"), [(7 * DAY, Status.PASS), (7 * DAY - 1, Status.FAIL)]
)
def test_withdrawal_of_a_treated_flock(collected: int, status: Status) -> None:
    """Eggs collected during the 7-day withdrawal must not be sold; collected after, they may."""
    b = StoryBuilder()
    b.event(T0 - DAY, "commissioning", (FLOCK,), data={"hens": 8000})
    b.event(
        T0,
        "other",
        (FLOCK,),
        data={"treatment": {"drug": "x", "withdrawal_days": 7}},
        device="vet-dev",
    )
    b.event(T0 + collected, "commissioning", (LOT,), parents=(FLOCK,), data={"count": 360})
    b.event(
        T0 + collected + HOUR, "commissioning", (CASE,), parents=(LOT,), data={"eggs_per_case": 360}
    )
    b.event(T0 + collected + DAY, "retail_selling", (CASE,), device="shop-dev")
    assert DrugWithdrawal().evaluate(b.history(CASE))[0] is status


def test_untreated_animals_pass_withdrawal() -> None:
    """No treatment: nothing to withdraw."""
    b = StoryBuilder()
    b.event(T0, "commissioning", (COW,), data={"species": "牛", "count": 1})
    assert DrugWithdrawal().evaluate(b.history(COW))[0] is Status.PASS


# --- brucellosis ----------------------------------------------------------------------------------


def brucellosis_story(test_before_move: int, result: str) -> StoryBuilder:
    """A cow tested ``test_before_move`` ms before it is shipped."""
    b = StoryBuilder()
    b.event(T0 - 60 * DAY, "commissioning", (COW,), data={"species": "牛", "count": 1})
    b.event(
        T0 - test_before_move,
        "inspecting",
        (COW,),
        data={"test": {"disease": "brucellosis", "result": result}},
        device="vet-dev",
    )
    b.event(T0, "shipping", (COW,), data={"destination": "abattoir"})
    return b


@pytest.mark.parametrize(
    ("before", "result", "status"),
    [
        (30 * DAY, "negative", Status.PASS),
        (30 * DAY + 1, "negative", Status.FAIL),
        (0, "negative", Status.PASS),
        (DAY, "positive", Status.FAIL),
    ],
)
def test_brucellosis_window(before: int, result: str, status: Status) -> None:
    """A negative test at most 30 days before the movement; a positive one never clears it."""
    assert Brucellosis().evaluate(brucellosis_story(before, result).history(COW))[0] is status


def test_brucellosis_not_for_eggs() -> None:
    """No animal in the history: not applicable."""
    assert Brucellosis().evaluate(eggs().history(CASE))[0] is Status.NOT_APPLICABLE


# --- chilled meat ------------------------------------------------------------------------------


@pytest.mark.parametrize(("core", "status"), [(7.0, Status.PASS), (7.01, Status.FAIL)])
def test_carcass_core_temperature_before_leaving(core: float, status: Status) -> None:
    """The carcass's last reading before it leaves decides; 7 °C is allowed."""
    b = cattle(30 * DAY)
    b.reading(T0 + 30 * DAY + 2 * HOUR, (CARCASS,), 15.0)
    b.reading(T0 + 30 * DAY + 20 * HOUR, (CARCASS,), core)
    b.event(
        T0 + 30 * DAY + 21 * HOUR,
        "shipping",
        (CARCASS,),
        data={"destination": "shop"},
        device="plant-dev",
    )
    b.reading(T0 + 30 * DAY + 22 * HOUR, (CARCASS,), 12.0)  # after leaving: not the core test
    assert ChilledMeat().evaluate(b.history(CARCASS))[0] is status


@pytest.mark.parametrize(("warm_minutes", "status"), [(30, Status.PASS), (31, Status.FAIL)])
def test_cut_tolerated_minutes(warm_minutes: int, status: Status) -> None:
    """A cut may be above 4 °C for 30 minutes in total."""
    b = cattle(30 * DAY)
    b.reading(T0 + 30 * DAY + 2 * HOUR, (CARCASS,), 6.0)
    start = T0 + 32 * DAY
    b.reading(start, (CUT,), 3.0)
    b.reading(start + HOUR, (CUT,), 5.0)
    b.reading(start + HOUR + 20 * MINUTE, (CUT,), 5.0)
    b.reading(start + HOUR + warm_minutes * MINUTE, (CUT,), 3.5)
    assert ChilledMeat().evaluate(b.history(CUT))[0] is status


def test_carcass_without_a_reading_fails() -> None:
    """No core temperature recorded before the carcass left: fail, named."""
    b = cattle(30 * DAY)
    status, reasons, _ = ChilledMeat().evaluate(b.history(CARCASS))
    assert status is Status.FAIL
    assert "no core temperature" in reasons[0].text


# --- cold-chain continuity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "status"), [(60 * MINUTE, Status.PASS), (60 * MINUTE + 1, Status.FAIL)]
)
def test_continuity_gap(gap: int, status: Status) -> None:
    """Readings every hour keep the chain; one missing minute more breaks it."""
    b = eggs()
    b.event(T0 + 2 * HOUR, "storing", (LOT,))
    b.reading(T0 + 2 * HOUR, (LOT,), 5.0)
    b.reading(T0 + 2 * HOUR + gap, (LOT,), 5.0)
    b.event(T0 + 2 * HOUR + gap, "retail_selling", (CASE,), device="shop-dev")
    status_found, _, measures = ColdChainContinuity().evaluate(b.history(CASE))
    assert status_found is status
    assert measures["longest_gap_ms"] == gap


def test_continuity_before_the_cold_chain() -> None:
    """A product that never entered a cold-chain step: not applicable."""
    assert ColdChainContinuity().evaluate(eggs().history(CASE))[0] is Status.NOT_APPLICABLE


# --- custody ---


def shipped(
    receive_after: int | None, receiver: str = "truck-dev", later: int | None = None
) -> StoryBuilder:
    """The lot shipped to the carrier at T0, received ``receive_after`` later by ``receiver``."""
    b = eggs()
    b.event(T0 + 2 * HOUR, "shipping", (LOT,), data={"destination": "carrier"})
    if receive_after is not None:
        b.event(T0 + 2 * HOUR + receive_after, "receiving", (LOT,), device=receiver)
    if later is not None:
        b.event(T0 + 2 * HOUR + later, "storing", (LOT,), device=receiver)
    return b


@pytest.mark.parametrize(
    ("receive_after", "receiver", "later", "status"),
    [
        (48 * HOUR, "truck-dev", None, Status.PASS),
        (48 * HOUR + 1, "truck-dev", None, Status.FAIL),
        (HOUR, "shop-dev", 49 * HOUR, Status.FAIL),  # received by someone else
        (None, "truck-dev", None, Status.PASS),  # in transit, nothing later
        (None, "truck-dev", 49 * HOUR, Status.FAIL),  # later entries, never received
    ],
)
def test_custody(
    receive_after: int | None, receiver: str, later: int | None, status: Status
) -> None:
    """The named party receives within 48 h; anything else is a broken hand-over."""
    assert Custody().evaluate(shipped(receive_after, receiver, later).history(CASE))[0] is status


# --- not applicable ----------------------------------------------------------------------------

BY_KIND = {
    "egg-cold-chain": "flock",
    "chilled-meat": "egg",
    "drug-withdrawal": "flock",
    "brucellosis": "egg",
    "egg-freshness": "animal",
    "cold-chain-continuity": "flock",
    "custody": "egg (never shipped)",
}


@pytest.mark.parametrize(("contract", "kind"), sorted(BY_KIND.items()))
def test_each_contract_is_not_applicable_outside_its_products(contract: str, kind: str) -> None:
    """Every contract answers not_applicable for a product it does not judge."""
    product = {"flock": FLOCK, "egg": CASE, "animal": COW}[kind.split(" ", maxsplit=1)[0]]
    history = (cattle(30 * DAY) if kind == "animal" else eggs()).history(product)
    results = {r.contract: r for r in evaluate(history, 5)}
    assert results[contract].status is Status.NOT_APPLICABLE, results[contract].reasons
