"""The field vocabulary: every signed data field reads as labelled words in zh and en."""

from __future__ import annotations

import re

import pytest

from traceapi.i18n import LANGUAGES, Lang
from traceapi.summary import _Context
from traceapi.vocabulary import (
    FIELDS,
    STEPS,
    Row,
    data_rows,
    event_name,
    mentioned_parties,
    pick,
    sensor_name,
    term,
)
from tracecore.verdict import Story

# What the simulator's scenarios and docs/protocol.md put into ``data``.
FEED = {
    "feed": {
        "ration": "玉米青贮+苜蓿 corn silage + alfalfa",
        "kg_per_head": 22.5,
        "additive": "monensin",
        "withdrawal_days": 0,
    }
}
TEST = {
    "test": {
        "disease": "brucellosis",
        "result": "negative",
        "lab": "gansu-vet-lab",
        "method": "RBPT + cELISA",
        "report": "BR0001",
        "sample": "01/06901234570037/21/S262060200101001",
    }
}
LOT_KEY = "01/06901234567892/10/L1"
PROGRAMMING = re.compile(r"[{}\[\]]|': |\": |\bTrue\b|\bFalse\b|\bNone\b")


def _text(rows: list[Row]) -> str:
    return "\n".join(f"{r.label}: {r.value}" for r in rows)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_nested_maps_become_labelled_rows(lang: Lang) -> None:
    """A feeding record reads as rows with units, never as a dict."""
    rows = data_rows(lang, FEED)
    assert [r.depth for r in rows] == [0, 1, 1, 1, 1]
    assert PROGRAMMING.search(_text(rows)) is None
    if lang == "zh":
        assert rows[0].label == "饲喂"
        assert ("饲料", "玉米青贮+苜蓿") in [(r.label, r.value) for r in rows]
        assert ("每头日喂量", "22.5 kg") in [(r.label, r.value) for r in rows]
        assert ("添加剂", "莫能菌素") in [(r.label, r.value) for r in rows]
        assert ("休药期", "0 天") in [(r.label, r.value) for r in rows]
    else:
        assert ("Ration", "corn silage + alfalfa") in [(r.label, r.value) for r in rows]
        assert ("Withdrawal period", "0 days") in [(r.label, r.value) for r in rows]


def test_lab_results_link_the_lab_and_the_sample() -> None:
    """Party ids and product keys in data become links through the linker."""
    rows = data_rows("en", TEST, lambda kind, value: (f"{kind}:{value}", f"/{kind}/{value}"))
    by_label = {r.label: r for r in rows}
    assert by_label["Result"].value == "Negative (not detected)"
    assert by_label["Disease"].value == "Brucellosis"
    assert by_label["Laboratory"].href == "/party/gansu-vet-lab"
    assert by_label["Sample"].href == "/product/01/06901234570037/21/S262060200101001"
    assert mentioned_parties(TEST) == {"gansu-vet-lab"}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"sealed": True, "notes": None}, "Sealed: yes\nNotes: —"),
        ({"doses": [1, 2.5]}, "Doses: 1, 2.5"),
        ({"crateCount": 12000}, "Crate Count: 12,000"),
        ({"log": [{"t": 1, "ok": False}]}, "Log: T: 1; Ok: no"),
        ({"blob": b"\x01\xff"}, "Blob: 01ff"),
    ],
)
def test_unknown_keys_still_read_as_words(value: dict[str, object], text: str) -> None:
    """Keys nobody labelled show as "Label: value" rows, in words, not code."""
    assert _text(data_rows("en", value)) == text


def test_bilingual_device_text_shows_one_language() -> None:
    """ "京红1号 Jinghong 1" is 京红1号 on the zh page and Jinghong 1 on the en page."""
    assert pick("zh", "京红1号 Jinghong 1") == "京红1号"
    assert pick("en", "京红1号 Jinghong 1") == "Jinghong 1"
    assert pick("en", "GB/T 39438-2020") == "GB/T 39438-2020"
    assert pick("zh", "牛腩") == "牛腩"
    assert term("zh", "Gallus gallus domesticus") == "家鸡（蛋鸡）"
    assert term("en", "西门塔尔牛 Simmental cattle") == "Simmental cattle"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_event_has_a_name(lang: Lang) -> None:
    """Every CBV step has a localized name and no event reads "Other record"."""
    for step in STEPS:
        assert event_name(lang, step, None)
    other = {"en": "Record", "zh": "记录"}[lang]
    assert event_name(lang, "other", None) == other
    assert event_name(lang, "other", FEED) == {"en": "Feeding record", "zh": "饲喂记录"}[lang]
    assert event_name(lang, "inspecting", TEST) == {"en": "Test result", "zh": "检测结果"}[lang]
    assert sensor_name(lang, "Temperature") == {"en": "Temperature", "zh": "温度"}[lang]


def test_every_field_has_both_labels() -> None:
    """No field label is missing or left untranslated."""
    for key, field in FIELDS.items():
        assert re.search("[\u4e00-\u9fff]", field.zh), key
        assert re.fullmatch("[A-Z][A-Za-z .()]*", field.en), key


@pytest.mark.parametrize(
    "value", ["//evil.example/x", "javascript:alert(1)", "../../v1/admin", "01/123/10/L1"]
)
def test_device_text_never_becomes_a_foreign_link(value: str) -> None:
    """A product or party field holding anything but a well-formed key is shown, not linked."""
    story = Story(
        product=LOT_KEY,
        owner=None,
        created=None,
        owners={},
        heads={},
        events=(),
        readings=(),
        parents={},
        devices={},
        recalls=(),
    )
    summary_link = _Context("en", story, {}, {}).link
    for kind in ("product", "party"):
        assert summary_link(kind, value) == (value, None)
    text, href = summary_link("product", "01/06901234567892/10/L1")
    assert (text, href) == ("lot L1", "/01/06901234567892/10/L1?lang=en")
