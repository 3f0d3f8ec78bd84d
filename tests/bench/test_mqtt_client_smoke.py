"""The MQTT client benchmark runs (not timed: benchmarks measure, tests check they work)."""

from __future__ import annotations

import io

import pytest

from bench.mqtt_client import main
from tracecore.mqtt import BrokerAddress


@pytest.mark.mosquitto
def test_mqtt_client_benchmark_runs(mosquitto: BrokerAddress) -> None:
    """A small run drains and publishes every message with both clients and prints the table."""
    out = io.StringIO()
    result = main(
        ["--messages", "300", "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}"], out=out
    )
    assert result.messages == 300
    assert min(result.ours_drain_us, result.aiomqtt_drain_us, result.decode_us) > 0
    assert "| drain (receive + PUBACK) |" in out.getvalue()
