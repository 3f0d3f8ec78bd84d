"""One inspector's whole visit in Chromium, and the access trail it leaves.

Sign in, search a farm's products, open a dossier from the results, follow the lineage graph two
generations, recall with the confirmation step, see the public page say recalled, export the
search as a spreadsheet and as EPCIS, read one's own access trail (axe-clean at phone and laptop
width, in both languages), sign out. Then the log holds an ``access`` entry for every page and
download of the visit, the farm's own trail (``GET /v1/access``) lists them, and the admin's
console trail shows them. Screenshots go to ``$AGRITRACE_ARTIFACTS`` as ``console-walk-*.png``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from browser_kit import shot
from playwright.sync_api import Browser, Page
from sqlmodel import col, select
from trace_kit import EGG_CASE, EGG_FLOCK, EGG_LOT, FARM

from tracecore.logentry import Access, parse_any_entry
from tracecore.storage import LogEntry, session_scope

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
LANGUAGES = {"zh-CN": "zh", "en": "en"}


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/products")
    assert "/console/sign-in" in page.url  # every console page needs a session
    page.locator("#token").fill(token)
    with page.expect_navigation():
        page.locator("#token").press("Enter")
    assert page.url.startswith(f"{base}/console/products")


def _accesses(engine: Any, who: str) -> list[tuple[int, Access]]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(LogEntry).where(col(LogEntry.kind) == "access").order_by(col(LogEntry.index))
        ).all()
        found = [(row.index, parse_any_entry(bytes(row.entry))) for row in rows]
    return [(i, a) for i, a in found if isinstance(a, Access) and a.who == who]


def _download_both_exports(page: Page) -> None:
    """Download the search's spreadsheet and EPCIS document; both hold the products found."""
    with page.expect_download() as spreadsheet:
        page.locator("#export-kde").click()
    rows = list(csv.reader(io.StringIO(Path(spreadsheet.value.path()).read_text("utf-8-sig"))))
    assert len(rows) > 1
    with page.expect_download() as epcis:
        page.locator("#export-epcis").click()
    document = json.loads(Path(epcis.value.path()).read_text("utf-8"))
    assert document["type"] == "EPCISDocument"


def _check_the_visit_is_on_the_trail(console_world: Any, before: int) -> None:
    """Every page and download of the visit is an access entry; the farm and the admin see it."""
    world = console_world.world
    visit = _accesses(console_world.engine, "gansu-amr")[before:]
    actions = [access.action for _, access in visit]
    for action in (
        "GET /console/products",
        "GET /console/products/{key:path}",
        "GET /console/recall",
        "POST /console/recall",
        "GET /console/export/kde.csv",
        "GET /console/export/epcis.json",
        "GET /console/access",
        "POST /console/sign-out",
    ):
        assert action in actions, (action, actions)
    assert all(access.role == "inspector" for _, access in visit)
    flock_reads = [
        i for i, a in visit if a.target.startswith(f"/console/products/{EGG_FLOCK.path}")
    ]
    assert flock_reads

    # The farm sees the visit in its own trail; the admin's console trail shows it too.
    farm = world.client.get("/v1/access?limit=1000", headers=world.auth("farm")).json()
    assert set(flock_reads) <= {row["index"] for row in farm}
    with console_world.client("admin") as admin:
        listed = admin.get("/console/access", params={"who": "gansu-amr", "lang": "en"}).text
    assert "POST /console/recall" in listed


def test_an_inspectors_visit_from_sign_in_to_sign_out(
    browser: Browser, console_world: Any, axe_js: Path
) -> None:
    """Search, dossier, lineage two steps back, recall, public page, exports, trail, sign-out."""
    base, world = console_world.base, console_world.world
    before = len(_accesses(console_world.engine, "gansu-amr"))
    context = browser.new_context(
        locale="en", viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    page = context.new_page()
    try:
        _sign_in(page, base, world.tokens["inspector"])
        page.locator("#f-owner").fill(FARM)
        with page.expect_navigation():
            page.locator("#f-owner").press("Enter")
        keys = page.locator("#products td.key a").all_inner_texts()
        assert EGG_CASE.path in keys
        assert all(FARM in row for row in page.locator("#products tbody tr").all_inner_texts())
        search_url = page.url

        with page.expect_navigation():
            page.locator("#products td.key a", has_text=EGG_CASE.path).click()
        assert page.locator("#verdict").is_visible()
        for key in (EGG_LOT, EGG_FLOCK):  # two generations back through the graph
            with page.expect_navigation():
                page.locator(f'svg.lineage a.node[href^="/console/products/{key.path}?"]').click()
            assert page.url.startswith(f"{base}/console/products/{key.path}?")
        shot(page, axe_js, "console-walk-flock-en-1280")

        with page.expect_navigation():
            page.locator("#recall-button").click()
        assert page.locator("#reach-count").is_visible()
        page.locator("#reason").fill("抽检沙门氏菌阳性 Salmonella found in flock samples")
        with page.expect_navigation():
            page.locator("#confirm").click()
        assert page.locator("#recall-notice").is_visible()
        world.checkpoint()
        page.goto(f"{base}/{EGG_CASE.path}?lang=en")  # the buyer's page of a descendant
        assert page.locator("#verdict").get_attribute("data-verdict") == "recalled"

        page.goto(search_url)
        _download_both_exports(page)

        page.goto(f"{base}/console/access?lang=en")
        trail = page.locator("table").inner_text()
        for seen in ("GET /console/products", "POST /console/recall", "GET /console/export"):
            assert seen in trail, seen
        shot(page, axe_js, "console-walk-access-en-1280")

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/console/sign-in*")
        page.goto(f"{base}/console/access")
        assert "/console/sign-in" in page.url
    finally:
        context.close()

    _check_the_visit_is_on_the_trail(console_world, before)


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_the_access_trail_page_fits_and_passes_axe(
    browser: Browser, console_world: Any, axe_js: Path, screen: str, language: str
) -> None:
    """The admin's trail page, with its filters, at phone and laptop width in both languages."""
    width, height = SCREENS[screen]
    context = browser.new_context(locale=language, viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        page.goto(f"{console_world.base}/console/sign-in")
        page.locator("#token").fill(console_world.world.tokens["inspector"])
        with page.expect_navigation():
            page.locator("#token").press("Enter")
        page.goto(f"{console_world.base}/console/products/{EGG_LOT.path}")
        page.goto(f"{console_world.base}/console/access")
        assert page.locator("table tbody tr").count() >= 2
        shot(page, axe_js, f"console-access-{LANGUAGES[language]}-{screen}")
    finally:
        context.close()
