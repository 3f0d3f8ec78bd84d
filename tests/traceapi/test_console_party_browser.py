"""The producer console in Chromium: a farm manager's visit, and every page at phone and laptop
width in both languages (axe-clean, no sideways scrolling).

Screenshots go to ``$AGRITRACE_ARTIFACTS`` as ``console-party-*.png`` (docs/farms.md shows some).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_kit import shot
from playwright.sync_api import Browser, Page
from rejection_kit import ROGUE, Refusals, add_refusals
from sqlmodel import select
from trace_kit import EGG_LOT

from tracecore.storage import session_scope
from tracecore.storage.models import ComplaintAnswer, Feedback

pytestmark = pytest.mark.slow

SCREENS = {"390": (390, 844), "1280": (1280, 800)}
LANGUAGES = {"zh-CN": "zh", "en": "en"}
COMPLAINT = "鸡蛋有两枚破损，盒子也压扁了。<b>请处理</b>"


@pytest.fixture(scope="module")
def refusals(console_world: Any) -> Refusals:
    """rejection_kit's refusals (a farm device with a gap and a revoked key) and two complaints."""
    for text in (COMPLAINT, "蛋黄颜色很淡，和描述不符。"):
        sent = console_world.world.client.post(
            f"/v1/feedback/{EGG_LOT.path}", json={"rating": 2, "complaint": text}
        )
        assert sent.status_code == 201
    return add_refusals(console_world.world)


def _sign_in_with_the_keyboard(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/")
    assert "/console/sign-in" in page.url
    page.locator("#token").focus()
    page.keyboard.type(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.startswith(f"{base}/console/")


def _follow(page: Page, name: str) -> None:
    """Open a section of the console's navigation with the keyboard."""
    page.locator("nav.console a", has_text=name).focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_a_farm_managers_visit(
    browser: Browser, console_world: Any, axe_js: Path, refusals: Refusals
) -> None:
    """Sign in, devices, answer a complaint, create and revoke a token, sign out."""
    del refusals
    base = console_world.base
    context = browser.new_context(locale="en", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        _sign_in_with_the_keyboard(page, base, console_world.world.tokens["farm"])

        _follow(page, "Devices")
        rogue = page.locator(f"#device-{ROGUE.name}")
        assert "revoked on" in rogue.locator(".key").inner_text()
        assert "missing" in rogue.locator(".gaps").inner_text()
        assert page.locator("#add-device").get_attribute("href") == "/console/devices/new?lang=en"

        _follow(page, "Complaints")
        with session_scope(console_world.engine) as session:
            complaint = session.exec(
                select(Feedback.id).where(Feedback.complaint == COMPLAINT)
            ).one()
        card = page.locator(f"#complaint-{complaint}")
        assert "<b>请处理</b>" in card.locator("blockquote").inner_text()  # text, not markup
        card.locator("textarea").fill("非常抱歉。我们已更换包装箱供应商，请联系我们补发。")
        card.locator("button").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "The seller replied" in page.locator(f"#complaint-{complaint}").inner_text()
        with session_scope(console_world.engine) as session:
            assert session.get(ComplaintAnswer, complaint) is not None

        _follow(page, "Credit")
        assert page.locator("#score-value").is_visible()

        _follow(page, "Tokens")
        page.locator("#days").fill("30")
        with page.expect_navigation():
            page.locator("#days").press("Enter")
        token = page.locator("#new-token").input_value()
        assert token.startswith("at_")
        issued = page.locator("#issued-h").inner_text().split()[1]
        shot(page, axe_js, "console-party-token-en-1280")
        page.locator(f"#token-{issued} button").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#revoked").is_visible()
        assert page.locator(f"#token-{issued}").get_attribute("data-state") == "revoked"
        assert token not in page.content()

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/console/sign-in*")
        page.goto(f"{base}/console/devices")
        assert "/console/sign-in" in page.url
    finally:
        context.close()


@pytest.mark.parametrize("screen", list(SCREENS))
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_the_producer_pages_fit_and_pass_axe(
    *,
    browser: Browser,
    console_world: Any,
    axe_js: Path,
    refusals: Refusals,
    screen: str,
    language: str,
) -> None:
    """Devices, complaints, credit and tokens of the farm at phone and laptop width."""
    del refusals
    width, height = SCREENS[screen]
    context = browser.new_context(locale=language, viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        _sign_in_with_the_keyboard(page, console_world.base, console_world.world.tokens["farm"])
        for section in ("devices", "complaints", "credit", "tokens"):
            page.goto(f"{console_world.base}/console/{section}")
            assert page.locator("nav.console a[aria-current=page]").count() == 1
            shot(page, axe_js, f"console-party-{section}-{LANGUAGES[language]}-{screen}")
    finally:
        context.close()
