"""The product dossier and the recall in Chromium: phone and laptop widths, both languages.

An inspector opens dossiers (verified, failed, recalled) and the recall form, each fitting the
width and axe-core clean; then, keyboard only, follows the lineage graph two generations back,
recalls the flock, and sees the public scan page say recalled after the next checkpoint.
Screenshots go to ``$AGRITRACE_ARTIFACTS`` as ``console-{page}-{language}-{width}.png`` (the
whole page), ``…-view.png`` (what the screen shows first) and the dossiers' ``…-top.png`` (down
to the lineage graph).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_kit import ARTIFACTS, shot
from playwright.sync_api import Browser, Page
from trace_kit import EGG_CASE, EGG_FLOCK, EGG_LOT, RECALLED_CUTS, TAMPERED_CASE

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
LANGUAGES = {"zh-CN": "zh", "en": "en"}


def _check(page: Page, axe_js: Path, name: str) -> None:
    """:func:`shot`, and what the screen shows first as ``{name}-view.png``."""
    shot(page, axe_js, name)
    page.screenshot(path=str(ARTIFACTS / f"{name}-view.png"))


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/sign-in")
    page.locator("#token").focus()
    page.keyboard.type(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{base}/console/"


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_dossiers_and_the_recall_form_fit_and_pass_axe(
    browser: Browser, console_world: Any, axe_js: Path, screen: str, language: str
) -> None:
    """A lot with a flock behind and cases ahead, a failed case, recalled cuts, a recall form."""
    width, height = SCREENS[screen]
    lang = LANGUAGES[language]
    context = browser.new_context(locale=language, viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        _sign_in(page, console_world.base, console_world.world.tokens["inspector"])
        pages = {
            "dossier": EGG_LOT,
            "dossier-flock": EGG_FLOCK,
            "dossier-failed": TAMPERED_CASE,
            "dossier-recalled": RECALLED_CUTS,
        }
        for name, key in pages.items():
            page.goto(f"{console_world.base}/console/products/{key.path}")
            assert page.locator("#verdict").is_visible()
            if screen == "390":
                # The graph is wider than a phone: it scrolls inside its box, the page does not,
                # and a link scrolls it to the product of the page.
                box = page.locator(".graph-box")
                assert box.evaluate("b => b.scrollWidth > b.clientWidth"), name
            _check(page, axe_js, f"console-{name}-{lang}-{screen}")
            # The top of the page down to the lineage graph (docs/img/console-dossier-*.png).
            top = {"x": 0, "y": 0, "width": width, "height": height + 360}
            page.screenshot(
                path=str(ARTIFACTS / f"console-{name}-{lang}-{screen}-top.png"),
                clip=top,
                full_page=True,
            )
            if screen == "390" and key == EGG_LOT:
                box = page.locator(".graph-box")
                assert box.evaluate("b => b.scrollLeft") == 0
                page.locator(".to-current a").click()
                assert box.evaluate("b => b.scrollLeft") > 0
                assert page.locator("#lineage-current").is_visible()
        page.goto(f"{console_world.base}/console/products/{EGG_LOT.path}#lineage")
        page.screenshot(path=str(ARTIFACTS / f"console-lineage-{lang}-{screen}-view.png"))
        page.goto(f"{console_world.base}/console/recall?product={EGG_LOT.path}")
        assert page.locator("#reason").is_visible()
        _check(page, axe_js, f"console-recall-{lang}-{screen}")
    finally:
        context.close()


def _tab_to(page: Page, href_part: str, limit: int = 300) -> None:
    """Press Tab until the focused element is a link whose href contains ``href_part``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        href = page.evaluate(
            "() => { const e = document.activeElement; return e && (e.getAttribute('href') || '') }"
        )
        if href_part in href:
            return
    pytest.fail(f"no focusable link to {href_part} within {limit} tabs")


def test_follow_the_lineage_by_keyboard_then_recall(
    browser: Browser, console_world: Any, axe_js: Path
) -> None:
    """Keyboard only: from a case to its lot to its flock through the graph, recall the flock,
    and the flock's public scan page says recalled once a checkpoint is signed."""
    base = console_world.base
    context = browser.new_context(locale="en", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        _sign_in(page, base, console_world.world.tokens["inspector"])
        page.goto(f"{base}/console/products/{EGG_CASE.path}")
        for key in (EGG_LOT, EGG_FLOCK):
            _tab_to(page, f"/console/products/{key.path}?")
            name = page.evaluate(
                "() => document.activeElement.getAttribute('aria-labelledby').split(' ')"
                ".map(id => document.getElementById(id).textContent).join(' ')"
            )
            assert name.endswith("verified"), name
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.url.startswith(f"{base}/console/products/{key.path}?")
            assert page.url.endswith("#lineage-current")
            assert page.locator("#lineage-current").is_visible()
        _check(page, axe_js, "console-followed-en-1280")
        page.locator("#recall-button").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "/console/recall?" in page.url
        assert page.locator("#reach-count").inner_text().startswith("The recall reaches")
        page.locator("#reason").focus()
        page.keyboard.type("禽流感抽检阳性 Avian influenza found in flock samples")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "confirm"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.startswith(f"{base}/console/products/{EGG_FLOCK.path}?")
        assert page.locator("#recall-notice").is_visible()
        _check(page, axe_js, "console-recalled-en-1280")
        console_world.world.checkpoint()
        for key in (EGG_FLOCK, EGG_CASE):
            page.goto(f"{base}/{key.path}?lang=en")
            assert page.locator("#verdict").get_attribute("data-verdict") == "recalled"
            assert "Avian influenza found in flock samples" in page.inner_text("#advice")
        _check(page, axe_js, "console-recall-public-en-1280")
    finally:
        context.close()
