"""The console's queries of refused messages and gaps (tracecore/storage/rejections.py) give the
same answers on SQLite and PostgreSQL, over refusals made through the real ingest path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from rejection_kit import DAY_MS, GHOST, ROGUE, add_refusals, cst_day
from sqlalchemy import Engine
from sqlmodel import select
from trace_kit import CLIMATE, FARM, PACKER, make_world

from traceapi.console.rejections import periods
from tracecore.errors import NotFound, RejectReason
from tracecore.storage import session_scope
from tracecore.storage.models import Device
from tracecore.storage.queries import device_gaps, rejection_counts
from tracecore.storage.rejections import (
    NO_PARTY,
    RejectionFilter,
    device_activity,
    device_parties,
    find_rejection,
    gap_counts,
    list_parties,
    reason_totals,
    rejection_list,
    tally,
)


def test_the_queries_on_both_databases(engine: Engine, app_client: Any) -> None:
    """Tallies per day and week, totals, lists, look-ups, gaps and activity agree with what
    was sent and with the API's own queries."""
    with make_world(engine, app_client) as world:
        refusals = add_refusals(world)
    spans = periods(cst_day(refusals.now), None, None, None)
    wanted = RejectionFilter(from_ms=spans.from_ms, to_ms=spans.to_ms)
    with session_scope(engine) as session:
        rows = tally(session, wanted, origin_ms=spans.from_ms, bucket_ms=DAY_MS)
        days: Counter[tuple[str, str]] = Counter()
        for row in rows:
            days[(spans.start(row.bucket).isoformat(), row.reason.value)] += row.messages
        expected = Counter({(day.isoformat(), r): n for (day, r), n in refusals.days.items()})
        assert days == expected
        weeks = periods(cst_day(refusals.now), None, None, "week")
        by_week = tally(
            session,
            RejectionFilter(from_ms=weeks.from_ms, to_ms=weeks.to_ms),
            origin_ms=weeks.from_ms,
            bucket_ms=7 * DAY_MS,
        )
        assert sum(row.messages for row in by_week) == sum(refusals.messages.values())
        totals = reason_totals(session, wanted)
        assert {r.value: m for r, (m, _) in totals.items()} == dict(refusals.messages)
        assert {r.value: a for r, (_, a) in totals.items()} == dict(refusals.arrivals)
        # All time, repeats included, reason_totals agrees with the /metrics counter.
        everything = reason_totals(session, RejectionFilter())
        counted = rejection_counts(session)
        assert {r: a for r, (_, a) in everything.items()} == {r: n for r, n in counted.items() if n}

        unregistered = reason_totals(session, RejectionFilter(party=NO_PARTY))
        assert unregistered == {
            RejectReason.MALFORMED: (1, 1),
            RejectReason.UNKNOWN_DEVICE: (2, 2),
        }
        newest = rejection_list(session, RejectionFilter(), limit=3)
        assert [row.id for row in newest] == sorted(refusals.ids.values(), reverse=True)[:3]
        older = rejection_list(session, RejectionFilter(), limit=100, before_id=newest[-1].id)
        assert len(newest) + len(older) == len(refusals.ids)
        climate = rejection_list(session, RejectionFilter(device=CLIMATE.name), limit=100)
        assert {row.reason.value for row in climate} == {
            "bad_signature",
            "unknown_key",
            "malformed",
        }
        assert {row.party_id for row in climate} == {FARM}

        found, party = find_rejection(session, refusals.ids["bad_signature"])
        assert (found.raw, party) == (refusals.raws["bad_signature"], FARM)
        assert found.received_count == 3
        with pytest.raises(NotFound):
            find_rejection(session, refusals.ids["bad_signature"], PACKER)
        with pytest.raises(NotFound):
            find_rejection(session, 10**12)

        devices = session.exec(select(Device.id)).all()
        searched = {d: sum(b - a + 1 for a, b in device_gaps(session, d)) for d in devices}
        assert {g.device_id: g.missing for g in gap_counts(session)} == {
            d: n for d, n in searched.items() if n
        }
        assert [(g.device_id, g.missing, g.highest_seq) for g in gap_counts(session)] == [
            (ROGUE.name, 3, 5)
        ]
        assert gap_counts(session, reader_party=PACKER) == []
        assert gap_counts(session, device=CLIMATE.name) == []

        activity = device_activity(session, ROGUE.name)
        assert (activity.messages, activity.highest_seq) == (2, 5)
        assert device_activity(session, GHOST.name).last_received_ms is None
        assert device_parties(session, [ROGUE.name, GHOST.name, CLIMATE.name]) == {
            ROGUE.name: FARM,
            CLIMATE.name: FARM,
        }
        assert [p.id for p in list_parties(session)] == [FARM]
        assert list_parties(session, PACKER) == []
