"""The verifier benchmark runs (not timed: benchmarks measure, tests check they work)."""

from __future__ import annotations

import io

from bench.verify import build, main, measure


def test_verify_benchmark_runs_and_counts() -> None:
    """A small run prints one table row with the entry count; the bundle verifies."""
    out = io.StringIO()
    assert main(["--entries", "120", "--runs", "1"], out=out) == 0
    assert "| 120 |" in out.getvalue()


def test_generated_bundle_verifies() -> None:
    """The generated bundle passes every check (measure() stops on a failed report)."""
    result = measure(build(60), runs=1)
    assert result.entries == 60
    assert result.baseline_s > 0
