"""Every public page variant in a real headless Chromium: both languages, phone and desktop.

The variants are those of trace_kit's pages world (``PAGE_VARIANTS``): a clean egg case, a beef
cut lot with warm readings on its chart, cuts from a recalled animal, a case whose stored bytes
were edited, an unregistered code and a malformed one. Each page must answer its status, log no
console error, fit the screen's width, and pass axe-core's WCAG 2.1 A and AA rules without a
serious or critical violation; on a phone, what a buyer needs first is above the fold. A
screenshot of every page goes to ``$AGRITRACE_ARTIFACTS`` (default ``build/test-artifacts``),
named ``pages-{variant}-{language}-{width}.png`` (and the phone's first screen as
``first-screen-{variant}-{language}.png``), for a person to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser_kit import ARTIFACTS, axe_violations
from playwright.sync_api import Browser, ConsoleMessage, Error, Page
from trace_kit import PAGE_LANGUAGES, PAGE_VARIANTS

pytestmark = pytest.mark.slow

PHONE = (390, 844)
DESKTOP = (1280, 800)
#: What a buyer sees on a phone before scrolling, by variant: the verdict banner first, then
#: what the product is, where it comes from, the producer's credit, the dates that matter and
#: the cold chain and compliance in one line each; what to do when something is wrong.
ABOVE_THE_FOLD = {
    "clean-egg": ["verdict", "what", "origin", "credit", "dates", "coldchain", "compliance"],
    "short-code": ["verdict", "what", "origin", "credit", "dates", "coldchain", "compliance"],
    "beef-cut": ["verdict", "what", "origin", "credit", "dates", "coldchain", "compliance"],
    "recalled": ["verdict", "advice", "what"],
    "integrity-failure": ["verdict", "advice"],
    "wrong-lot": ["verdict", "match", "advice"],
    "unknown": ["verdict", "advice"],
    "malformed": ["verdict", "advice"],
    "stall": ["name", "credit"],
    "unavailable": ["verdict", "advice"],
}

# What sticks out sideways (for the failure message).
WIDER_THAN_SCREEN = """(width) => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > width + 1)
  .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' '
            + (e.textContent || '').trim().slice(0, 50))
  .slice(0, 10)"""
BOXES = """(ids) => {
  window.scrollTo(0, 0);
  return ids.map(id => {
    const element = document.getElementById(id);
    if (element === null) return [id, null];
    const box = element.getBoundingClientRect();
    return [id, {top: box.top, bottom: box.bottom, height: box.height,
                 verdict: element.getAttribute('data-verdict')}];
  });
}"""


@dataclass
class Visit:
    """A page loaded in Chromium: the answer's status and media type, what went wrong in it."""

    page: Page
    url: str
    status: int
    content_type: str
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def visit(browser: Browser, pages_site: Any) -> Iterator[Callable[..., Visit]]:
    """A factory: ``visit(variant, language, (width, height), query="")`` loads the variant's
    page in a fresh browser context with that locale and screen; all are closed afterwards."""
    contexts = []

    def load(variant: str, language: str, screen: tuple[int, int], query: str = "") -> Visit:
        width, height = screen
        context = browser.new_context(
            locale=language,
            viewport={"width": width, "height": height},
            device_scale_factor=2 if width < 600 else 1,
        )
        contexts.append(context)
        page = context.new_page()
        url = pages_site.url(variant, query)
        problems: list[str] = []

        def console(message: ConsoleMessage) -> None:
            # Chromium reports any 4xx/5xx document as a failed resource: expected for a 404
            # (unknown code) or 503 (database down) page.
            status = variant_status(variant)
            own = message.location.get("url") == url and f"status of {status}" in message.text
            if message.type == "error" and not (own and status >= 400):
                problems.append(f"console error: {message.text}")

        def failed(error: Error) -> None:
            problems.append(f"page error: {error}")

        page.on("console", console)
        page.on("pageerror", failed)
        response = page.goto(url, wait_until="load")
        assert response is not None, url
        media = response.headers.get("content-type", "")
        return Visit(page, url, response.status, media, problems)

    yield load
    for context in contexts:
        context.close()


def variant_status(variant: str) -> int:
    """The HTTP status the variant's page must answer."""
    return PAGE_VARIANTS[variant].status


@pytest.mark.parametrize("screen", [PHONE, DESKTOP], ids=["390x844", "1280x800"])
@pytest.mark.parametrize("language", PAGE_LANGUAGES)
@pytest.mark.parametrize("variant", list(PAGE_VARIANTS))
def test_page_in_chromium(
    axe_js: Path, visit: Callable[..., Visit], variant: str, language: str, screen: tuple[int, int]
) -> None:
    """The page answers its status, logs no errors, fits the width and passes axe (A and AA)."""
    width = screen[0]
    loaded = visit(variant, language, screen)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    loaded.page.screenshot(
        path=str(ARTIFACTS / f"pages-{variant}-{language}-{width}.png"), full_page=True
    )
    failures = []
    if loaded.status != variant_status(variant):
        failures.append(f"status {loaded.status}, expected {variant_status(variant)}")
    if not loaded.content_type.startswith("text/html"):
        failures.append(f"answered {loaded.content_type!r}, not an HTML page")
    scroll_width = loaded.page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        wide = loaded.page.evaluate(WIDER_THAN_SCREEN, width)
        failures.append(f"{scroll_width} px wide on a {width} px screen; sticking out: {wide}")
    failures += axe_violations(loaded.page, axe_js)
    failures += loaded.problems
    assert not failures, f"{loaded.url} ({language}, {width} px):\n" + "\n".join(failures)


@pytest.mark.parametrize("language", PAGE_LANGUAGES)
@pytest.mark.parametrize("variant", list(PAGE_VARIANTS))
def test_first_screen_on_a_phone(visit: Callable[..., Visit], variant: str, language: str) -> None:
    """On a 390x844 phone the verdict and the facts of the variant show without scrolling."""
    loaded = visit(variant, language, PHONE)
    assert loaded.status == variant_status(variant), f"{loaded.url}: status {loaded.status}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    loaded.page.screenshot(path=str(ARTIFACTS / f"first-screen-{variant}-{language}.png"))
    wanted = ABOVE_THE_FOLD[variant]
    boxes = dict(loaded.page.evaluate(BOXES, wanted))
    missing = [name for name in wanted if boxes[name] is None]
    hidden = [name for name in wanted if boxes[name] is not None and boxes[name]["height"] <= 0]
    below = {
        name: round(box["bottom"])
        for name, box in boxes.items()
        if box is not None and box["bottom"] > PHONE[1]
    }
    assert not missing, f"{loaded.url} ({language}) has no element with id {missing}"
    assert not hidden, f"{loaded.url} ({language}): {hidden} take no room on the screen"
    assert not below, f"{loaded.url} ({language}): below the {PHONE[1]} px fold: {below}"
    if "verdict" in wanted:
        assert boxes["verdict"]["verdict"] == PAGE_VARIANTS[variant].verdict


@pytest.mark.parametrize("language", PAGE_LANGUAGES)
@pytest.mark.parametrize("asked", ["fr", "xx"])
def test_unsupported_language_gives_the_page(
    visit: Callable[..., Visit], asked: str, language: str
) -> None:
    """``?lang=`` of a language the pages do not speak gives the page in the browser's language."""
    loaded = visit("clean-egg", language, PHONE, query=f"lang={asked}")
    assert loaded.status == 200, f"{loaded.url}: {loaded.status} {loaded.page.content()[:300]}"
    assert loaded.content_type.startswith("text/html"), loaded.content_type
    shown = loaded.page.evaluate("document.documentElement.lang")
    assert shown[:2] == language[:2], f"page language {shown!r}"
    assert loaded.problems == []
