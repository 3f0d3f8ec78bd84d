"""No public page shows a buyer programming syntax: device data reads as words, not as a dict.

Devices sign free-form ``data`` maps (``feed: {ration, kg_per_head, ...}``); a page must show
them as labelled values in the reader's language, never as Python or JSON (``{'ration': ...}``,
``["a", "b"]``, ``True``, ``null``). The visible text of every variant's page in both languages
(tags stripped with the standard library's HTML parser; scripts, styles and the head left out)
is searched for such syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import httpx
import pytest
from trace_kit import PAGE_LANGUAGES, PAGE_VARIANTS

#: Syntax of a Python or JSON value, and what each pattern catches.
SYNTAX = {
    "a map with a quoted key": re.compile(r"\{\s*['\"]"),
    "a map with a bare key": re.compile(r"\{\s*[\w-]+\s*:"),
    "a quoted key and its colon": re.compile(r"['\"]\s*:\s"),
    "a list of quoted strings": re.compile(r"\[\s*['\"]"),
    "an empty map or list": re.compile(r"\{\s*\}|\[\s*\]"),
    # Not "None of the readings ...": a word followed by more prose is English.
    "a Python constant": re.compile(r"(?<![\w-])(?:True|False|None)(?![\w-])(?! [a-z])"),
    "a JSON constant as a value": re.compile(r"[:=]\s*(?:true|false|null)\b"),
    "a Python object repr": re.compile(r"\b[A-Z]\w*\(\w+="),
}
#: Findings listed in a failure message (the rest are counted).
SHOWN = 12
#: Elements whose text is not shown on the page.
HIDDEN = frozenset({"head", "script", "style", "template"})


class _VisibleText(HTMLParser):
    """Collects the text a browser shows: everything outside :data:`HIDDEN` elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hidden = 0
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, _attrs: list[tuple[str, str | None]]) -> None:
        if tag in HIDDEN:
            self.hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN and self.hidden:
            self.hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.chunks.append(data)


def visible_text(html: str) -> str:
    """The page's visible text, runs of whitespace made one space."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.chunks).split())


def syntax_in(text: str) -> list[str]:
    """Each piece of programming syntax in ``text``, named, with some text around it."""
    found = []
    for name, pattern in SYNTAX.items():
        for match in pattern.finditer(text):
            around = text[max(0, match.start() - 40) : match.end() + 40]
            found.append(f"{name}: …{around}…")
    return found


def test_the_check_knows_python_and_json() -> None:
    """The check catches a map printed by Python or JSON and lets ordinary prose through."""
    old_page = "饲料 feed: {'ration': '玉米青贮', 'kg_per_head': 22.5, 'withdrawal_days': 0}"
    assert len(syntax_in(visible_text(f"<p>{old_page}</p>"))) >= 3
    assert syntax_in(visible_text('<div>test: {"result": "negative", "retest": null}</div>'))
    assert syntax_in("drugs: ['oxytetracycline'] · sold: True · lab: None")
    prose = (
        "<p>None of the 12 readings was above 4 °C. 饲料 玉米青贮 · 每头 22.5 kg</p>"
        "<script>const x = {'a': 1};</script><style>p { color: red; }</style>"
    )
    assert syntax_in(visible_text(prose)) == []


@pytest.mark.parametrize("language", PAGE_LANGUAGES)
@pytest.mark.parametrize("variant", list(PAGE_VARIANTS))
def test_no_programming_syntax_on_the_page(
    fetch_page: Callable[[str, str], httpx.Response], variant: str, language: str
) -> None:
    """The page's visible text holds no Python or JSON syntax for the device data."""
    response = fetch_page(variant, language)
    assert response.status_code == PAGE_VARIANTS[variant].status
    found = syntax_in(visible_text(response.text))
    more = f"\n… and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    shown = "\n".join(found[:SHOWN]) + more
    assert not found, f"{PAGE_VARIANTS[variant].path} ({language}), {len(found)} found:\n{shown}"
