"""The Nu Html Checker (vnu.jar) over pages a test saved: what every page-validity test needs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["html_problems"]


def _problem(message: dict[str, Any]) -> bool:
    """An error, or a warning (vnu: type info, subType warning); not a plain info note."""
    kind = message.get("type")
    return kind in ("error", "non-document-error") or message.get("subType") == "warning"


def html_problems(vnu_jar: tuple[str, Path], files: Sequence[str]) -> list[str]:
    """Check ``files`` with vnu.jar; one line per error or warning: file, line, message and the
    start of the offending markup. Fails the test if vnu gives no report, or fails silently."""
    java, jar = vnu_jar
    checked = subprocess.run(  # noqa: S603 (a fixed program on files the test wrote)
        [java, "-jar", str(jar), "--format", "json", "--stdout", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = checked.stdout.strip()
    assert report, f"vnu.jar gave no report (exit {checked.returncode}):\n{checked.stderr}"
    problems = [
        f"{Path(unquote(urlparse(m.get('url', '')).path)).name}:{m.get('lastLine', '?')}: "
        f"{m.get('message', '')} [{m.get('extract', '').strip()[:80]}]"
        for m in json.loads(report)["messages"]
        if _problem(m)
    ]
    assert problems or checked.returncode == 0, checked.stderr
    return problems
