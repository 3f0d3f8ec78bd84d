"""The console's rejections and gaps in Chromium: phone and laptop widths, both languages,
keyboard only, axe-core clean.

An inspector signs in, opens the overview, moves with the Tab key to the newest refusal and
opens it, downloads its raw bytes, and goes on to the device that sent it. Screenshots go to
``$AGRITRACE_ARTIFACTS`` as ``console-rejections-{page}-{language}-{width}.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_kit import shot
from playwright.sync_api import Browser, Page
from rejection_kit import Refusals, add_refusals

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
LANGUAGES = {"zh-CN": "zh", "en": "en"}
#: How many Tab presses may lie between the top of a page and the link sought.
MAX_TABS = 300


@pytest.fixture(scope="module")
def refusals(console_world: Any) -> Refusals:
    """The refused messages of rejection_kit, added once for the module."""
    return add_refusals(console_world.world)


def _tab_to(page: Page, selector: str) -> None:
    """Press Tab until the focused element matches ``selector``."""
    page.locator("body").focus()
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


@pytest.mark.parametrize(
    "view", [(language, screen) for language in LANGUAGES for screen in SCREENS], ids="-".join
)
def test_from_the_overview_to_a_refusal_and_its_device_with_the_keyboard(
    browser: Browser, console_world: Any, refusals: Refusals, axe_js: Path, view: tuple[str, str]
) -> None:
    """Overview, the newest refusal opened with the keyboard, its bytes downloaded, its
    device's page."""
    language, screen = view
    lang = LANGUAGES[language]
    width, height = SCREENS[screen]
    context = browser.new_context(
        locale=language, viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    base = console_world.base
    try:
        page.goto(f"{base}/console/rejections")
        assert "/console/sign-in" in page.url
        page.locator("#token").focus()
        page.keyboard.type(console_world.world.tokens["inspector"])
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == f"{base}/console/rejections"
        assert page.locator("#reason-table").is_visible()
        shot(page, axe_js, f"console-rejections-overview-{lang}-{screen}")

        newest = refusals.ids["revoked_key"]
        _tab_to(page, "a.open")
        assert page.evaluate("document.activeElement.textContent") == f"#{newest}"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == f"{base}/console/rejections/{newest}?lang={lang}"
        assert page.locator("#refused-by").is_visible()
        shot(page, axe_js, f"console-rejections-detail-{lang}-{screen}")

        _tab_to(page, "#download")
        with page.expect_download() as download:
            page.keyboard.press("Enter")
        saved = download.value.path()
        assert Path(saved).read_bytes() == refusals.raws["revoked_key"]
        assert download.value.suggested_filename == f"rejection-{newest}.cbor"

        _tab_to(page, "#facts a[href^='/console/rejections/devices/']")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "/console/rejections/devices/hens01-rogue" in page.url
        assert page.locator("#keys").is_visible()
        shot(page, axe_js, f"console-rejections-device-{lang}-{screen}")

        page.goto(f"{base}/console/rejections/{refusals.ids['malformed']}?lang={lang}")
        assert page.locator("pre.dump").first.is_visible()
        shot(page, axe_js, f"console-rejections-malformed-{lang}-{screen}")
    finally:
        context.close()
