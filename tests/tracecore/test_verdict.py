"""Downsampling keeps every excursion; verdicts follow their order of strength."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracecore.bundle import Check
from tracecore.verdict import RecallNotice, SensorPoint, Story, Verdict, decide, downsample


def _points(values: list[float]) -> list[SensorPoint]:
    return [
        SensorPoint(i, 1_000 * i, "d", ("p",), "Temperature", v, "CEL")
        for i, v in enumerate(values)
    ]


@given(
    st.lists(st.floats(-40, 60, allow_nan=False), min_size=1, max_size=3_000), st.integers(2, 300)
)
def test_downsample_keeps_extremes_and_order(values: list[float], limit: int) -> None:
    """At most ``limit`` points, in time order, with the series' minimum and maximum kept."""
    kept = downsample(_points(values), limit)
    assert len(kept) <= max(limit, 2)
    assert [p.time for p in kept] == sorted(p.time for p in kept)
    assert max(p.value for p in kept) == max(values)
    assert min(p.value for p in kept) == min(values)


def test_a_single_spike_survives_a_long_series() -> None:
    """One 9 °C reading among 10,000 at 4 °C is on the chart."""
    values = [4.0] * 10_000
    values[6_543] = 9.0
    kept = downsample(_points(values), 240)
    assert any(p.value == 9.0 and p.index == 6_543 for p in kept)


def _story(*, recalled: bool) -> Story:
    recalls = (RecallNotice(1, 0, "admin", "test", ("p",)),) if recalled else ()
    return Story(
        product="p",
        owner="farm",
        created=0,
        owners={"p": "farm"},
        heads={"p": 1},
        events=(),
        readings=(),
        parents={},
        devices={},
        recalls=recalls,
    )


def test_verdict_order() -> None:
    """A failed check beats a recall, a recall beats a copy suspicion, which beats verified."""
    ok, bad = Check("chains", ok=True, detail=""), Check("chains", ok=False, detail="broken")
    assert decide([ok], _story(recalled=False), suspect_copy=False) is Verdict.VERIFIED
    assert decide([ok], _story(recalled=False), suspect_copy=True) is Verdict.SUSPECT_COPY
    assert decide([ok], _story(recalled=True), suspect_copy=True) is Verdict.RECALLED
    assert decide([ok, bad], _story(recalled=True), suspect_copy=True) is Verdict.INTEGRITY_FAILURE
    assert decide([ok], None, suspect_copy=False) is Verdict.INTEGRITY_FAILURE
