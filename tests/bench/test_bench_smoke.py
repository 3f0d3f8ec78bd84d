"""bench/ingest.py runs end to end at a small size (a smoke test: nothing is timed here)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from bench.ceilings import CEILINGS, parse_ceilings
from bench.ingest import main
from tracecore.mqtt import BrokerAddress


@pytest.mark.mosquitto
def test_ingest_benchmark_runs_at_2000_messages(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """Every ceiling and ingest see every message; ingest commits and receipts each once."""
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
    assert [c.name for c in result.ceilings] == list(CEILINGS)
    assert all(c.received == 2000 and c.seconds > 0 for c in result.ceilings)
    receipts = {c.name: c.published for c in result.ceilings}
    assert receipts == {"aiomqtt": 0, "paho": 0, "hot": 0, "hot-receipts": 2000}
    aiomqtt = result.ceilings[0]
    assert (result.bare_seconds, result.bare_received) == (aiomqtt.seconds, aiomqtt.received)
    report = out.getvalue()
    assert "ratio ingest / bare" in report
    for label in ("bare aiomqtt subscriber:", "paho in a thread:", "ingest/mqtt, receive only:"):
        assert label in report
    assert "of paho thread" in report
    assert "WARNING" not in report


@pytest.mark.mosquitto
def test_ingest_benchmark_with_two_shared_workers(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """Two shared workers commit every message once; --ceilings runs only the ones named."""
    out = io.StringIO()
    result = main(
        [
            "--messages", "2000", "--devices", "50", "--dir", str(tmp_path), "--workers", "2",
            "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}", "--ceilings", "paho,hot",
        ],
        out=out,
    )  # fmt: skip
    assert result.ingest_accepted == 2000
    assert result.receipts_published == 2000
    assert result.entries == 2000
    assert [(c.name, c.received) for c in result.ceilings] == [("paho", 2000), ("hot", 2000)]
    assert (result.bare_received, result.bare_rate) == (0, 0.0)
    assert "bare aiomqtt subscriber:" not in out.getvalue()
    assert "bare receive (not run)" in out.getvalue()
    assert "of ingest/mqtt" in out.getvalue()


def test_ceilings_flag_orders_names_and_refuses_unknown_ones() -> None:
    """--ceilings keeps the report's order, drops repeats, and names an unknown ceiling."""
    assert parse_ceilings("hot-receipts, paho,paho") == ("paho", "hot-receipts")
    assert parse_ceilings("none") == ()
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown ceiling.*mosquitto"):
        parse_ceilings("hot,mosquitto")
