"""The console's product search in Chromium: keyboard only, sorting, pages, both downloads.

Phone and laptop widths, both languages, axe-core clean. Screenshots go to
``$AGRITRACE_ARTIFACTS`` as ``console-search-{step}-{language}-{width}.png``; docs/img holds
``console-search-zh.png`` (the phone's) and ``console-search-en.png`` (the laptop's).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_kit import shot
from playwright.sync_api import Browser, Page
from trace_kit import ABATTOIR, COLLECT, EGG_LOT, FARM, GTIN

from tracecore.identifiers import ProductKey
from tracecore.message import Event

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
WORDS = {
    "zh-CN": {"key": "产品编码", "next": "下一页", "prev": "上一页"},
    "en": {"key": "Product code", "next": "Next page", "prev": "Previous page"},
}


@pytest.fixture(scope="module")
def site(console_world: Any) -> Any:
    """The console world with 64 more cartons of the farm's (its search has two pages)."""
    world = console_world.world
    lot = ProductKey.from_parts(GTIN, lot="L261141")
    cartons = tuple(ProductKey.from_parts(GTIN, lot=lot.lot, serial=f"Q{n:03d}") for n in range(64))
    world.send(
        COLLECT,
        lambda seq, time: Event(
            COLLECT.name, seq, time, (lot,), "commissioning", parents=(EGG_LOT,)
        ),
    )
    world.send(
        COLLECT,
        lambda seq, time: Event(COLLECT.name, seq, time, cartons, "commissioning", parents=(lot,)),
    )
    world.checkpoint()
    return console_world


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/products")
    assert "/console/sign-in" in page.url
    page.locator("#token").focus()
    page.keyboard.type(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert urlsplit(page.url).path == "/console/products"


def _tab_to(page: Page, element_id: str) -> None:
    """Press Tab until the element ``element_id`` has the focus, as a keyboard user does."""
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"Tab never reaches #{element_id}")


def _keys(page: Page) -> list[str]:
    return page.locator("#products td.key a").all_inner_texts()


def _search_by_keyboard(page: Page) -> list[str]:
    """Tab to the owner field, type, Enter sends the form; the keys found."""
    _tab_to(page, "f-owner")
    page.keyboard.type(ABATTOIR)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert parse_qs(urlsplit(page.url).query)["owner"] == [ABATTOIR]
    found = _keys(page)
    assert len(found) == 4
    assert page.locator(".badge.recalled").count() == 2
    return found


def _sort_by_key(page: Page, name: str, found: list[str]) -> None:
    """Click the key column's header twice: ascending, then descending, marked by aria-sort."""
    assert page.locator("#products th", has_text=name).get_attribute("aria-sort") is None
    for order, keys in (("ascending", sorted(found)), ("descending", sorted(found)[::-1])):
        with page.expect_navigation():
            page.locator("#products th", has_text=name).get_by_role("link").click()
        assert page.locator("#products th", has_text=name).get_attribute("aria-sort") == order
        assert _keys(page) == keys


def _download_both(page: Page, found: list[str]) -> None:
    """Both export buttons download a file of the products found."""
    with page.expect_download() as csv_download:
        page.locator("#export-kde").click()
    assert csv_download.value.suggested_filename.endswith("-kde.csv")
    text = Path(csv_download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    assert {row["product"] for row in rows} <= set(found)
    with page.expect_download() as epcis_download:
        page.locator("#export-epcis").click()
    assert epcis_download.value.suggested_filename.endswith("-epcis.json")
    document = json.loads(Path(epcis_download.value.path()).read_text(encoding="utf-8"))
    listed = sorted(p["agritrace:product"] for p in document["agritrace:products"])
    assert listed == sorted(found)


def _next_page(page: Page, base: str, words: dict[str, str]) -> None:
    """The farm's 70-odd products: the next page holds the rest, the filters kept."""
    page.goto(f"{base}/console/products?owner={FARM}&sort=key")
    first = _keys(page)
    assert len(first) == 50
    with page.expect_navigation():
        page.get_by_role("link", name=words["next"]).click()
    query = parse_qs(urlsplit(page.url).query)
    assert (query["owner"], query["page"], query["sort"]) == ([FARM], ["2"], ["key"])
    second = _keys(page)
    assert second
    assert max(first) < min(second)
    assert page.get_by_role("link", name=words["prev"]).is_visible()


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("language", list(WORDS))
def test_search_sort_page_and_download_with_the_keyboard(
    browser: Browser, site: Any, axe_js: Path, screen: str, language: str
) -> None:
    """Search by keyboard, sort by a column, go to the next page, download both exports."""
    words = WORDS[language]
    suffix = f"{language}-{screen}"
    width, height = SCREENS[screen]
    context = browser.new_context(
        locale=language, viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    try:
        _sign_in(page, site.base, site.world.tokens["inspector"])
        shot(page, axe_js, f"console-search-form-{suffix}")
        found = _search_by_keyboard(page)
        shot(page, axe_js, f"console-search-{suffix}")
        _sort_by_key(page, words["key"], found)
        _download_both(page, found)
        _next_page(page, site.base, words)
        shot(page, axe_js, f"console-search-page-2-{suffix}")
        page.goto(f"{site.base}/console/products?owner=No!&from=2026-11-28&to=2026-11-27")
        assert page.locator("#errors").is_visible()
        assert page.locator("#f-owner").get_attribute("aria-invalid") == "true"
        shot(page, axe_js, f"console-search-errors-{suffix}")
        page.goto(f"{site.base}/console/parties?q=%E5%85%B0%E5%B7%9E")  # 兰州
        assert page.locator("#parties tbody tr").count() == 3
        shot(page, axe_js, f"console-parties-{suffix}")
    finally:
        context.close()
