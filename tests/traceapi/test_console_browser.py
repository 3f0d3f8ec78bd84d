"""The console's sign-in in Chromium: phone and laptop widths, both languages, axe-core clean.

Walks what an inspector does: opens the console, is sent to sign in, mistypes the token, signs
in with the keyboard only, sees who is signed in, signs out. Screenshots go to
``$AGRITRACE_ARTIFACTS`` as ``console-{step}-{language}-{width}.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_kit import shot
from playwright.sync_api import Browser

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}


SIGN_OUT = {"zh-CN": "退出登录", "en": "Sign out"}


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("language", list(SIGN_OUT))
def test_sign_in_and_out_with_the_keyboard(
    browser: Browser, console_site: Any, axe_js: Path, screen: str, language: str
) -> None:
    """Sign-in page, a refused token, a keyboard-only sign-in, the home page and sign-out."""
    words = SIGN_OUT[language]
    width, height = SCREENS[screen]
    context = browser.new_context(locale=language, viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        page.goto(f"{console_site.base}/console/")
        assert page.url.startswith(f"{console_site.base}/console/sign-in")
        shot(page, axe_js, f"console-sign-in-{language}-{screen}")
        page.fill("#token", "at_this-is-not-a-token")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#error").is_visible()
        shot(page, axe_js, f"console-refused-{language}-{screen}")
        # Keyboard only: the token field has the focus, Enter sends the form.
        page.locator("#token").focus()
        page.keyboard.type(console_site.inspector)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == f"{console_site.base}/console/"
        assert "gansu-amr" in page.inner_text("#who")
        shot(page, axe_js, f"console-home-{language}-{screen}")
        with page.expect_navigation():
            page.get_by_role("button", name=words).click()
        assert "/console/sign-in" in page.url
        assert page.locator("[role=status]").is_visible()
        shot(page, axe_js, f"console-signed-out-{language}-{screen}")
        page.goto(f"{console_site.base}/console/")
        assert "/console/sign-in" in page.url, "signed out means signed out"
    finally:
        context.close()
