"""bench/ingest.py runs end to end at a small size (a smoke test: nothing is timed here)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.ingest import main
from tracecore.mqtt import BrokerAddress


@pytest.mark.mosquitto
def test_ingest_benchmark_runs_at_2000_messages(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """Both drains see every message; ingest commits and receipts each exactly once."""
    out = io.StringIO()
    result = main(
        [
            "--messages", "2000", "--devices", "50", "--dir", str(tmp_path),
            "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}",
        ],
        out=out,
    )  # fmt: skip
    assert result.messages == 2000
    assert result.bare_received == 2000
    assert result.ingest_accepted == 2000
    assert result.receipts_published == 2000
    assert result.entries == 2000
    assert "ratio ingest / bare" in out.getvalue()


@pytest.mark.mosquitto
def test_ingest_benchmark_with_two_shared_workers(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """Two worker processes on the shared subscription commit every message exactly once."""
    result = main(
        [
            "--messages", "2000", "--devices", "50", "--dir", str(tmp_path), "--workers", "2",
            "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}",
        ],
        out=io.StringIO(),
    )  # fmt: skip
    assert result.ingest_accepted == 2000
    assert result.receipts_published == 2000
    assert result.entries == 2000
