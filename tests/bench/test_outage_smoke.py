"""bench/outage.py runs end to end at a small size (a smoke test: nothing is timed here)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.outage import main


@pytest.mark.mosquitto
@pytest.mark.slow
def test_outage_benchmark_counts_both_phases(
    mosquitto_programs: tuple[str, str], tmp_path: Path
) -> None:
    """2 sensors, 2 minutes of device time at time / 20: both phases receipt every reading."""
    out = io.StringIO()
    result = main(
        [
            "--sensors", "2", "--outage-s", "120", "--scale", "20", "--disk-messages", "500",
            "--dir", str(tmp_path),
        ],
        out=out,
    )  # fmt: skip
    assert [phase.name for phase in result.phases] == ["baseline", "outage"]
    for phase in result.phases:
        assert phase.messages == 240
        assert phase.arrivals - phase.duplicates == 240  # each accepted once
        assert phase.arrivals_per_message >= 1.0
    assert result.fleet_connects >= 2
    assert len(result.sent) == 2 * (1 + 2 * 120)
    report = out.getvalue()
    assert "per message" in report
    assert "bytes per unreceipted message" in report
