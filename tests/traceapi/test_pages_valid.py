"""Every public page variant, in both languages, is valid HTML by the Nu Html Checker (vnu.jar).

The pages are fetched over HTTP from a server over trace_kit's pages world, written to files and
checked in one run of the checker (a JVM start costs a second or two).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from trace_kit import PAGE_LANGUAGES, PAGE_VARIANTS


def test_every_page_is_valid_html(
    vnu_jar: tuple[str, Path], fetch_page: Callable[[str, str], httpx.Response], tmp_path: Path
) -> None:
    """The checker finds no error in any variant's page in either language."""
    files = []
    for variant in PAGE_VARIANTS:
        for language in PAGE_LANGUAGES:
            response = fetch_page(variant, language)
            assert response.headers["content-type"].startswith("text/html"), (variant, language)
            path = tmp_path / f"{variant}-{language}.html"
            path.write_bytes(response.content)
            files.append(str(path))
    java, jar = vnu_jar
    checked = subprocess.run(  # noqa: S603 (a fixed program on files this test wrote)
        [java, "-jar", str(jar), "--errors-only", "--format", "json", "--stdout", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = checked.stdout.strip()
    assert report, f"vnu.jar gave no report (exit {checked.returncode}):\n{checked.stderr}"
    messages = json.loads(report)["messages"]
    errors = [
        f"{Path(unquote(urlparse(m.get('url', '')).path)).name}:{m.get('lastLine', '?')}: "
        f"{m.get('message', '')} [{m.get('extract', '').strip()[:80]}]"
        for m in messages
        if m.get("type") in ("error", "non-document-error")
    ]
    assert not errors, f"{len(errors)} HTML error(s):\n" + "\n".join(errors)
    assert checked.returncode == 0, checked.stderr
