"""A long history stays light: a 1,000-entry product's page is under 150 KB of HTML and SVG."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from trace_kit import COLLECT, LOT, World, make_world

from traceapi.i18n import Lang, text
from traceapi.summary import STAGE_RECORDS
from tracecore.message import Event
from tracecore.storage import make_engine, upgrade

pytestmark = pytest.mark.slow

#: The budget of a product page on a phone's data plan (HTML with its inline SVG and CSS).
BUDGET = 150_000
READINGS = 700
RECORDS = 297  # with the world's own 3 events and the readings: 1,000 entries of the lot


@pytest.fixture(scope="module")
def long_world(tmp_path_factory: pytest.TempPathFactory, app_client: Any) -> Iterator[World]:
    """The egg world whose lot has 700 readings and 297 feeding and treatment records more."""
    directory = tmp_path_factory.mktemp("weight")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    readings = tuple(4.0 + (n % 50) / 10 for n in range(READINGS))
    with make_world(engine, app_client, readings=readings) as world:
        for n in range(RECORDS):
            data: dict[str, object] = (
                {"feed": {"ration": "玉米青贮+苜蓿 corn silage + alfalfa", "kg_per_head": 0.12}}
                if n % 3
                else {"treatment": {"drug": "oxytetracycline", "dose": 2.5, "withdrawal_days": 7}}
            )
            world.send(
                COLLECT,
                lambda seq, time, data=data: Event(
                    COLLECT.name, seq, time, (LOT,), "other", data=data
                ),
            )
        world.checkpoint()
        yield world
    engine.dispose()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_thousand_entry_page_is_under_150_kb(long_world: World, lang: Lang) -> None:
    """The page of a lot with 1,000 signed entries weighs less than 150 KB."""
    body = long_world.client.get(f"/{LOT.path}", headers={"Accept": "application/json"}).json()
    entries = len(body["events"]) + sum(s["total"] for s in body["readings"])
    assert entries >= 1_000
    page = long_world.client.get(f"/{LOT.path}?lang={lang}")
    assert page.status_code == 200
    size = len(page.content)
    assert size < BUDGET, f"{size:,} bytes"
    # Every record is accounted for: shown, or counted as held by the evidence bundle.
    farm = RECORDS + 2  # the flock's and the lot's commissioning, then the records
    assert text(lang, "journey.records", n=farm) in page.text
    assert text(lang, "journey.hidden", n=farm - STAGE_RECORDS) in page.text
