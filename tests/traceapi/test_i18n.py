"""The page language, content negotiation, and the zh/en catalogs."""

from __future__ import annotations

import pytest

from traceapi import i18n
from traceapi.routes.scan import wants_json
from traceapi.vocabulary import event_name


def test_both_catalogs_have_the_same_words() -> None:
    """Every text exists in Chinese and in English, with the same placeholders."""
    zh, en = i18n._ZH, i18n._EN
    assert set(zh) == set(en)
    for key in zh:
        assert sorted(_fields(zh[key])) == sorted(_fields(en[key])), key


def _fields(template: str) -> list[str]:
    return [part.split("}")[0] for part in template.split("{")[1:]]


@pytest.mark.parametrize(
    ("explicit", "header", "expected"),
    [
        (None, None, "zh"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "en;q=0.5,zh;q=0.8", "zh"),
        (None, "fr-FR,en;q=0.3", "en"),
        (None, "fr-FR,de", "zh"),
        (None, "en;q=0,zh;q=0", "zh"),
        (None, "en;q=abc", "zh"),
        ("en", "zh-CN", "en"),
        ("zh", "en", "zh"),
        ("xx", "en", "en"),
    ],
)
def test_choose_language(explicit: str | None, header: str | None, expected: str) -> None:
    """?lang= wins, then the best Accept-Language match by quality, then Chinese."""
    assert i18n.choose_language(explicit, header) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json;q=0.9,text/html;q=0.8", True),
        ("text/html;q=0.5, application/json", True),
        ("application/json;q=0", False),
    ],
)
def test_wants_json(accept: str | None, expected: bool) -> None:
    """JSON only when the client ranks it above HTML (browsers and curl get the page)."""
    assert wants_json(accept) is expected


def test_steps_read_as_words() -> None:
    """A CBV step is named in the page's language; one without a label reads as its words."""
    assert event_name("en", "killing", None) == "Slaughtered"
    assert event_name("zh", "killing", None) == "屠宰"
    assert event_name("en", "future_step", None) == "Future step"


def test_every_contract_has_a_name_in_both_languages() -> None:
    """The page names each contract and each status in Chinese and English."""
    from contracts import CONTRACTS  # noqa: PLC0415 (only this test needs the registry)

    for lang in i18n.LANGUAGES:
        for contract in CONTRACTS:
            assert i18n.text(lang, f"contract.{contract.id}")
        for status in ("pass", "fail", "not_applicable"):
            assert i18n.text(lang, f"contract.{status}")
