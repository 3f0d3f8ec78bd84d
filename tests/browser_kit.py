"""What every browser test needs: how to start Debian's Chromium here, and axe-core's check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from playwright.sync_api import Page

__all__ = ["ARTIFACTS", "AXE_TAGS", "CHROMIUM_ARGS", "axe_violations", "check_page", "shot"]

# Chromium as root in a sandbox-less container, and without the background services that
# call Google's hosts (refused on a closed network, noisily).
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where browser tests save their screenshots (CI keeps them).
ARTIFACTS: Final = Path(os.environ.get("AGRITRACE_ARTIFACTS", "build/test-artifacts"))
#: axe-core's rule tags of WCAG 2.1 levels A and AA.
AXE_TAGS: Final = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_AXE_RUN: Final = """(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})"""


def axe_violations(page: Page, axe_js: Path) -> list[str]:
    """Run axe-core's WCAG 2.1 A/AA rules; describe every serious or critical violation."""
    page.add_script_tag(path=str(axe_js))
    results: dict[str, Any] = page.evaluate(_AXE_RUN, AXE_TAGS)
    return [
        f"axe {v['impact']} {v['id']}: {v['help']} ({v['helpUrl']}); nodes: "
        + "; ".join(" ".join(map(str, node["target"])) for node in v["nodes"][:10])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_page(page: Page, axe_js: Path, screenshot: Path) -> None:
    """Save a full-page screenshot of ``page`` at ``screenshot``, then assert that the page fits
    its viewport's width (no sideways scrolling) and passes axe."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width, screenshot.name
    problems = axe_violations(page, axe_js)
    assert not problems, f"{screenshot.name}:\n" + "\n".join(problems)


def shot(page: Page, axe_js: Path, name: str) -> None:
    """:func:`check_page` with the screenshot saved as ``ARTIFACTS/{name}.png``."""
    check_page(page, axe_js, ARTIFACTS / f"{name}.png")
