"""The same history gives byte-identical results: run twice, from SQLite and from PostgreSQL,
and from the evidence bundle offline."""

from __future__ import annotations

from typing import Any

import pytest
from history_kit import HOUR, StoryBuilder
from hypothesis import given, settings
from hypothesis import strategies as st
from trace_kit import CARTON, CLIMATE, LOG, World, make_world

from contracts import ChilledMeat, EggColdChain, Status, evaluate, evaluate_story
from contracts.history import centi
from tracecore.bundle import Policy, inspect_bundle, parse_bundle
from tracecore.message import Reading, Sensor
from tracecore.storage import make_engine, session_scope, upgrade
from tracecore.storage.trace import assess_product
from tracecore.verdict import tell_story

T0 = 1_790_000_000_000
LOT, CASE = "01/06901234567892/10/L1", "01/06901234567892/10/L1/21/C1"


def _results_from_database(world: World) -> list[bytes]:
    with session_scope(world.engine) as session:
        assessment = assess_product(session, CARTON, Policy(LOG.verifier, {}, 0))
    assert assessment is not None
    assert assessment.story is not None
    assert assessment.inspection is not None
    results = evaluate_story(assessment.story, assessment.inspection.report.size)
    return [r.to_bytes() for r in results]


def _warm_world(world: World) -> None:
    world.now[0] += 3 * 86_400_000
    for celsius in (6.1, 8.3, 9.75, 5.0):
        world.now[0] += 17 * 60_000
        world.send(
            CLIMATE,
            lambda seq, time, c=celsius: Reading(
                CLIMATE.name, seq, time, (CARTON,), (Sensor("Temperature", c, "CEL"),)
            ),
        )
    world.checkpoint()


@pytest.mark.postgres
def test_results_identical_on_sqlite_postgres_and_offline(
    pg_database: str, tmp_path: Any, app_client: Any
) -> None:
    """The carton's results are the same bytes from both databases and from its bundle."""
    outcomes = []
    for url in (f"sqlite:///{tmp_path / 'a.sqlite3'}", pg_database):
        engine = make_engine(url)
        try:
            upgrade(engine)
            with make_world(engine, app_client) as world:
                _warm_world(world)
                first = _results_from_database(world)
                assert first == _results_from_database(world)  # twice, same bytes
                bundle = parse_bundle(world.client.get(f"/v1/bundle/{CARTON.path}").text)
                inspection = inspect_bundle(bundle, Policy(LOG.verifier, {}, 0))
                offline = evaluate_story(
                    tell_story(CARTON.path, inspection), inspection.report.size
                )
                assert [r.to_bytes() for r in offline] == first
                assert set(bundle.contracts) == set(first)
                outcomes.append(first)
        finally:
            engine.dispose()
    assert outcomes[0] == outcomes[1]
    failed = [r for r in evaluate_story_bytes(outcomes[0]) if r == "egg-cold-chain:fail"]
    assert failed == ["egg-cold-chain:fail"]


def evaluate_story_bytes(results: list[bytes]) -> list[str]:
    """``contract:status`` of encoded results."""
    import cbor2  # noqa: PLC0415

    return [f"{d['contract']}:{d['status']}" for d in map(cbor2.loads, results)]


readings = st.lists(
    st.tuples(st.integers(0, 10 * HOUR), st.floats(-5.0, 30.0, allow_nan=False)),
    min_size=1,
    max_size=60,
)


def _eggs(points: list[tuple[int, float]]) -> StoryBuilder:
    b = StoryBuilder()
    b.event(T0, "commissioning", (LOT,), data={"eggs_per_case": 360})
    b.event(T0 + 1, "commissioning", (CASE,), parents=(LOT,), data={"eggs_per_case": 360})
    for offset, celsius in sorted(points):
        b.reading(T0 + 36 * HOUR + offset, (LOT,), celsius)
    return b


@settings(max_examples=200, deadline=None)
@given(readings)
def test_cold_chain_is_deterministic_and_order_free(points: list[tuple[int, float]]) -> None:
    """Same readings, any insertion order: the same bytes; all at or below 7.2 °C: pass."""
    forward = evaluate(_eggs(points).history(CASE), 9)
    backward = evaluate(_eggs(list(reversed(points))).history(CASE), 9)
    assert [r.to_bytes() for r in forward] == [r.to_bytes() for r in backward]
    status, _, measures = EggColdChain().evaluate(_eggs(points).history(CASE))
    cold = all(centi(c) <= 720 for _, c in points)
    assert (status is Status.PASS) == cold
    assert (measures["centidegree_minutes_above"] == 0) or not cold


@settings(max_examples=200, deadline=None)
@given(readings, st.integers(0, 59), st.floats(0.5, 10.0))
def test_warmer_never_lowers_the_degree_minutes(
    points: list[tuple[int, float]], which: int, warmer: float
) -> None:
    """Raising one reading never lowers the degree-minutes above the limit (monotonic)."""
    index = which % len(points)
    raised = [(t, c + warmer if n == index else c) for n, (t, c) in enumerate(points)]
    before = EggColdChain().evaluate(_eggs(points).history(CASE))[2]["centidegree_minutes_above"]
    after = EggColdChain().evaluate(_eggs(raised).history(CASE))[2]["centidegree_minutes_above"]
    assert after >= before


CUT_KEY, CARCASS_KEY = "01/06901234560039/10/CUT1", "01/06901234560022/21/KA1"


def _cut(points: list[tuple[int, float]]) -> StoryBuilder:
    b = StoryBuilder()
    b.event(
        T0,
        "commissioning",
        (CARCASS_KEY,),
        parents=("01/06901234560015/21/A1",),
        data={"hot_carcass_kg": 250.0},
    )
    b.reading(T0 + 1, (CARCASS_KEY,), 6.0)
    b.event(T0 + HOUR, "commissioning", (CUT_KEY,), parents=(CARCASS_KEY,), data={"cut": "loin"})
    for offset, celsius in sorted(points):
        b.reading(T0 + 2 * HOUR + offset, (CUT_KEY,), celsius)
    return b


@settings(max_examples=200, deadline=None)
@given(readings, st.integers(0, 59), st.floats(0.5, 10.0))
def test_warmer_cuts_never_pass_where_colder_failed(
    points: list[tuple[int, float]], which: int, warmer: float
) -> None:
    """Chilled meat is monotonic: raising a reading never turns a failing cut into a pass."""
    index = which % len(points)
    raised = [(t, c + warmer if n == index else c) for n, (t, c) in enumerate(points)]
    before = ChilledMeat().evaluate(_cut(points).history(CUT_KEY))[0]
    after = ChilledMeat().evaluate(_cut(raised).history(CUT_KEY))[0]
    assert not (before is Status.FAIL and after is Status.PASS)
    if all(centi(c) <= 400 for _, c in points):
        assert before is Status.PASS
