"""bench/scan.py runs end to end at a small size (a smoke test of the locust setup: nothing is
timed here)."""

from __future__ import annotations

import io

import pytest

from bench.scan import main


@pytest.mark.slow
def test_scan_benchmark_runs_with_locust() -> None:
    """Locust drives the real API: every run makes requests and none fails."""
    out = io.StringIO()
    results = main(
        ["--entries", "50", "--users", "5", "--seconds", "3", "--wait", "0.1,0.2"], out=out
    )
    assert set(results) == {
        "scan, think time",
        "page, think time",
        "healthz, think time",
        "scan, no wait",
        "healthz, no wait",
    }
    for label, result in results.items():
        assert result.requests > 0, label
        assert result.failures == 0, label
    assert "throughput ratio scan / healthz" in out.getvalue()
    assert " bytes of HTML and SVG " in out.getvalue()
