"""Every public page variant and printable page, in both languages, is valid HTML by the Nu Html
Checker (vnu.jar): no error, and no warning either (a ``<section>`` without a heading is one).

The pages are fetched over HTTP from a server over trace_kit's pages world, written to files and
checked in one run of the checker (a JVM start costs a second or two).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from trace_kit import PAGE_LANGUAGES, PAGE_VARIANTS, PRINTED_PAGES
from vnu_kit import html_problems


def test_every_page_is_valid_html(
    vnu_jar: tuple[str, Path],
    fetch_page: Callable[[str, str], httpx.Response],
    pages_site: Any,
    tmp_path: Path,
) -> None:
    """The checker finds no error and no warning in any page in either language."""
    files = []
    for language in PAGE_LANGUAGES:
        pages = [(variant, fetch_page(variant, language)) for variant in PAGE_VARIANTS]
        for name, path in PRINTED_PAGES.items():
            headers = {"Accept": "text/html", "Accept-Language": language}
            response = httpx.get(f"{pages_site.base}{path}", headers=headers, timeout=30)
            assert response.status_code == 200, (name, response.text)
            pages.append((name, response))
        for name, response in pages:
            assert response.headers["content-type"].startswith("text/html"), (name, language)
            path = tmp_path / f"{name}-{language}.html"
            path.write_bytes(response.content)
            files.append(str(path))
    problems = html_problems(vnu_jar, files)
    assert not problems, f"{len(problems)} HTML problem(s):\n" + "\n".join(problems)
