"""Adding a gateway and revoking a lost one in Chromium: phone and laptop widths, both
languages, keyboard only, axe-core clean.

A farm signs in, fills the add-device form with the keyboard, submits it, sees the fingerprint
and the QR code, downloads the provisioning file, then opens the revoke page of one of its
devices with a preview of what it would untrust. Screenshots go to ``$AGRITRACE_ARTIFACTS`` as
``console-onboard-{page}-{language}-{width}.png``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from browser_kit import shot
from playwright.sync_api import Browser, Page
from trace_kit import CLIMATE

from tracecore.keys import device_fingerprint, generate_signer
from tracecore.provisioning import Provisioning

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
LANGUAGES = {"zh-CN": "zh", "en": "en"}
MAX_TABS = 200


def _tab_to(page: Page, selector: str) -> None:
    """Press Tab until the focused element matches ``selector``."""
    page.locator("body").focus()
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def _type_into(page: Page, selector: str, value: str) -> None:
    _tab_to(page, selector)
    page.keyboard.type(value)


@pytest.mark.parametrize(
    "view", [(language, screen) for language in LANGUAGES for screen in SCREENS], ids="-".join
)
def test_a_farm_adds_a_gateway_and_previews_a_revocation_with_the_keyboard(
    browser: Browser, console_world: Any, axe_js: Path, view: tuple[str, str]
) -> None:
    """Form, fingerprint and QR code, the one download, the revoke page with its preview."""
    language, screen = view
    lang = LANGUAGES[language]
    width, height = SCREENS[screen]
    device = f"gw-{lang}-{screen}"
    key = generate_signer(device)
    context = browser.new_context(
        locale=language, viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    base = console_world.base
    try:
        page.goto(f"{base}/console/devices/new")
        assert "/console/sign-in" in page.url
        page.locator("#token").focus()
        page.keyboard.type(console_world.world.tokens["farm"])
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == f"{base}/console/devices/new"
        shot(page, axe_js, f"console-onboard-new-{lang}-{screen}")

        _type_into(page, "#device", device)
        _type_into(page, "#place", "鸡舍一号")
        _type_into(page, "#place_en", "hen house 1")
        _type_into(page, "#public_key", base64.b64encode(key.public_key).decode())
        _tab_to(page, "#register")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#fingerprint").inner_text() == device_fingerprint(key.public_key)
        assert page.locator("#qr svg").is_visible()
        shot(page, axe_js, f"console-onboard-added-{lang}-{screen}")

        _tab_to(page, "#download")
        with page.expect_download() as download:
            page.keyboard.press("Enter")
        assert download.value.suggested_filename == f"provisioning-{device}.json"
        document = Provisioning.parse(Path(download.value.path()).read_bytes())
        assert document.device == device
        assert document.fingerprint == device_fingerprint(key.public_key)

        # From a time before the world began: every message of the device is in the preview.
        page.goto(
            f"{base}/console/devices/{CLIMATE.name}/revoke?lang={lang}&since=2010-01-01T00:00"
        )
        _tab_to(page, "#preview")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#impact-products a").count() > 0
        shot(page, axe_js, f"console-onboard-revoke-{lang}-{screen}")
    finally:
        context.close()
