"""The product page in a real headless Chromium, in both languages: it renders, no console errors.

Screenshots go to ``$AGRITRACE_ARTIFACTS`` (default ``build/test-artifacts``) so that a person can
look at what a buyer sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Error, sync_playwright
from trace_kit import CARTON, LOT

ARTIFACTS = Path(os.environ.get("AGRITRACE_ARTIFACTS", "build/test-artifacts"))
# Chromium as root in a sandbox-less container, and without the background services that
# call Google's hosts (refused on a closed network, noisily).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# What sticks out of a 390-pixel screen (for the failure message).
WIDER_THAN_SCREEN = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > 391)
  .map(e => e.tagName + ' ' + (e.textContent || '').trim().slice(0, 50))"""


@pytest.mark.parametrize(
    ("locale", "banner", "title"),
    [("zh-CN", "已验证", "产品经历"), ("en-US", "Verified", "The product's story")],
)
@pytest.mark.parametrize("key", [LOT, CARTON], ids=["lot", "carton"])
def test_product_page_in_chromium(  # noqa: PLR0917 (fixtures and parameters)
    live_api: str, chromium: str, locale: str, banner: str, title: str, key: object
) -> None:
    """The page loads on a phone-sized screen, shows the verdict and story, logs no errors."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            context = browser.new_context(
                locale=locale, viewport={"width": 390, "height": 844}, device_scale_factor=2
            )
            page = context.new_page()

            def console(message: ConsoleMessage) -> None:
                if message.type in ("error", "warning"):
                    problems.append(f"console {message.type}: {message.text}")

            def failed(error: Error) -> None:
                problems.append(f"page error: {error}")

            page.on("console", console)
            page.on("pageerror", failed)
            path = getattr(key, "path", "")
            response = page.goto(f"{live_api}/{path}", wait_until="load")
            assert response is not None
            assert response.status == 200
            assert page.locator("#verdict h1").inner_text() == banner
            assert page.get_by_role("heading", name=title).is_visible()
            assert page.locator("svg.chart").count() == 1
            width = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate(WIDER_THAN_SCREEN) if width > 390 else []
            assert width <= 390, f"the page must fit a phone without sideways scrolling: {wide}"
            name = f"product-{'carton' if '/21/' in path else 'lot'}-{locale}.png"
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        finally:
            browser.close()
    assert problems == []
