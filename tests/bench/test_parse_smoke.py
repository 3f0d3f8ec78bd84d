"""The parsing benchmark runs (not timed: benchmarks measure, tests check they work)."""

from __future__ import annotations

import io

from bench.parse import main, messages
from tracecore.cose import _parse_message_fast


def test_parse_benchmark_prints_a_row_per_message() -> None:
    """A tiny run prints one row for each typical message."""
    out = io.StringIO()
    assert main(["--number", "5", "--rounds", "1"], out=out) == 0
    for name in messages():
        assert f"| {name} |" in out.getvalue()


def test_benchmark_messages_take_the_fast_path() -> None:
    """The benchmark times the fast path, not a fallback."""
    assert all(_parse_message_fast(raw) is not None for raw in messages().values())
