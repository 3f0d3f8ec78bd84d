"""bench/devices.py runs end to end at a small size, without ingest (a smoke test: not timed)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.devices import main
from tracecore.mqtt import BrokerAddress


@pytest.mark.mosquitto
def test_devices_benchmark_counts_what_50_devices_send(
    mosquitto: BrokerAddress, tmp_path: Path
) -> None:
    """50 devices, one message a second for 3 s: 150 messages, all waiting in the outbox."""
    out = io.StringIO()
    result = main(
        [
            "--devices", "50", "--period", "1", "--duration", "3", "--no-ingest",
            "--dir", str(tmp_path), "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}",
        ],
        out=out,
    )  # fmt: skip
    report = result.report
    # Every device has one phase in [0, 1 s): it sends at phase, phase + 1 and phase + 2.
    assert report["sent"] == 150
    assert 0 < report["published"] <= 150
    assert report["receipted"] == 0
    assert report["backlog"] == 150  # nothing receipts them: all stay in the outbox
    assert report["bad_receipts"] == 0
    assert report["send_rate"] == pytest.approx(50, rel=0.1)
    assert result.usage["peak_rss_mb"] >= result.usage["rss_mb"] > 0
    assert result.baseline["rss_mb"] > 0
    assert "per device" in out.getvalue()
