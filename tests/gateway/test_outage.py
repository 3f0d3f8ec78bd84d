"""The gateway rides out an hour without its broker: nothing lost, every message receipted once.

A real mosquitto of the test's own (persistence on, as deploy/mosquitto.conf) and the real
``agritrace ingest`` in its own process, driven by the outage benchmark's scenario
(bench/outage.py): 4 sensors commission their lots, then mosquitto is stopped and stays down
while they make an hour of readings at 1 reading/s (14,400, device times one second apart), then
it starts again on the same port with its sessions.

Time is scaled by 100: the hour of readings is produced in 36 s, and the fleet's resend policy
(30 s doubling to 1 h, docs/protocol.md §8) and reconnect backoff (up to 30 s) are divided by
100 too. mosquitto and ingest work at their real speed, so the backlog takes 100 times more
resend timeouts to drain than the real hour's would: harder on duplicates, never easier.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from mqtt_kit import check_exactly_once

from bench.outage import OutageConfig, run
from gateway.outbox import Outbox
from tracecore.cose import parse_message
from tracecore.receipt import parse_receipt
from tracecore.storage import make_engine

_log = logging.getLogger(__name__)

SENSORS = 4
OUTAGE_S = 3600  # device seconds: one reading per sensor per second
SCALE = 100.0  # device time / real time, also dividing the resend and reconnect waits

# method="thread": a timeout raised as a signal can be swallowed by an aiomqtt callback.
pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(900, method="thread")]


def test_an_hour_without_the_broker_loses_nothing_and_repeats_little(
    mosquitto_programs: tuple[str, str], tmp_path: Path
) -> None:
    """14,400 readings made while the broker is down: each logged once and receipted."""
    config = OutageConfig(sensors=SENSORS, outage_s=OUTAGE_S, scale=SCALE, baseline=False)
    out = io.StringIO()
    result = run(config, tmp_path, out)
    (phase,) = result.phases
    _log.warning("broker outage: %s", out.getvalue())
    print(out.getvalue())  # the figures, for -s and the CI log

    messages = SENSORS * OUTAGE_S
    assert phase.messages == messages
    assert len(result.sent) == SENSORS * (1 + OUTAGE_S)  # with each lot's commissioning
    # Lost nothing: every message is in the log once with its exact bytes, seq 1..3601 each.
    engine = make_engine(result.db_url)
    try:
        check_exactly_once(engine, result.sent, 1 + OUTAGE_S)
    finally:
        engine.dispose()
    # Each has a verified receipt matching its bytes in the outbox, and the outbox is empty.
    with Outbox(result.outbox_path) as outbox:
        assert outbox.pending_count() == 0
        receipts = outbox.receipts()
    assert {(r.device_id, r.seq) for r in receipts} == set(result.sent)
    for stored in receipts:
        receipt = parse_receipt(stored.raw)
        receipt.verify(result.log_public_key)
        assert receipt.matches(parse_message(result.sent[stored.device_id, stored.seq]))
    # Ingest's counters add up: each message accepted once, every other arrival a duplicate.
    assert phase.arrivals - phase.duplicates == messages
    assert result.fleet_connects >= 2  # it did lose the broker and come back
    # The goal (below 1.1 arrivals per message) is measured by `python -m bench.outage`
    # (docs/benchmarks.md). Here a bound that machine load does not reach, but that resending
    # the whole backlog at once on a fixed timer did (5.6 to 6.2 arrivals per message here).
    assert phase.arrivals_per_message < 1.5
