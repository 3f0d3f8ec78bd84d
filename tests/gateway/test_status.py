"""The status: receipts counted against the source that sent them; lines and metrics agree."""

from __future__ import annotations

import re

from gateway.status import EARLIER, Status, prometheus_text, status_lines

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="(?:[^"\\]|\\.)*"(,[a-z_]+="(?:[^"\\]|\\.)*")*\})? \d+$')


def _status() -> Status:
    status = Status("henhouse-1")
    status.earlier([("henhouse-1", 1), ("henhouse-1", 2)])
    status.add_source("probes", "tasmota")
    status.add_source('odd"name', "lines")
    status.sent("probes", "henhouse-1", 3)
    status.sent("probes", "henhouse-1", 4)
    status.settled([("henhouse-1", 1), ("henhouse-1", 3), ("other", 9)])
    status.rejected("probes", "not_json", "tele/x/SENSOR: the payload is not JSON")
    return status


def test_receipts_go_to_the_source_that_sent() -> None:
    """An earlier run's message and this run's are told apart; a stranger's is not counted."""
    status = _status()
    assert (status.sources[EARLIER].sent, status.sources[EARLIER].receipted) == (2, 1)
    assert (status.sources["probes"].sent, status.sources["probes"].waiting) == (2, 1)
    status.settled([("henhouse-1", 3)])  # a duplicate receipt
    assert status.sources["probes"].receipted == 1


def test_status_lines() -> None:
    """One line per source with the last rejection; the connection line last."""
    lines = status_lines(_status())
    assert lines[0].startswith("(earlier)  sent 2  receipted 1  waiting 1")
    assert "rejected 1  (last: not_json: tele/x/SENSOR" in lines[1]
    assert lines[-1].startswith("henhouse-1: NOT CONNECTED")


def test_metrics_are_valid_exposition_text() -> None:
    """Every sample line has the Prometheus text form; label values are escaped."""
    text = prometheus_text(_status())
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert 'agritrace_gateway_sent_total{source="odd\\"name"} 0' in text
    assert 'agritrace_gateway_rejected_total{source="probes",reason="not_json"} 1' in text
