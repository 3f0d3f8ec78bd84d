"""Stall pages (一摊一码): a party's public page, its QR code and its printable label."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from trace_kit import ABATTOIR, BEEF_FARM, FARM, RECALLED_CUTS, RETAILER

JSON = {"Accept": "application/json"}


def _get(site: Any, path: str, **headers: str) -> httpx.Response:
    return httpx.get(site.base + path, headers=headers, timeout=30)


def test_stall_page_shows_who_sells_here(pages_site: Any) -> None:
    """The retailer's page: name, place, credit, and its recent products with verdicts."""
    page = _get(pages_site, f"/p/{RETAILER}?lang=en")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Lanzhou Huimin Supermarket" in page.text
    assert "Lanzhou, Gansu" in page.text
    assert f'src="/p/{RETAILER}/qr.svg"' in page.text
    zh = _get(pages_site, f"/p/{RETAILER}", **{"Accept-Language": "zh-CN"})
    assert "兰州惠民超市" in zh.text
    assert "Lanzhou Huimin Supermarket" not in zh.text


def test_stall_json_lists_recent_products_with_their_verdicts(pages_site: Any) -> None:
    """The shop handled the recalled cuts: that product is listed as recalled, checked now."""
    body = _get(pages_site, f"/p/{RETAILER}", **JSON).json()
    assert body["id"] == RETAILER
    assert body["url"].endswith(f"/p/{RETAILER}")
    verdicts = {p["key"]: p["verdict"] for p in body["products"]}
    assert verdicts[RECALLED_CUTS.path] == "recalled"
    assert "verified" in verdicts.values()
    assert 0 < len(body["products"]) <= 12
    assert all(p["what"] for p in body["products"] if p["verdict"] != "integrity_failure")


def test_credit_deductions_are_explained(pages_site: Any) -> None:
    """The farm whose animal was recalled loses points, and the page says for what."""
    body = _get(pages_site, f"/p/{BEEF_FARM}", **JSON).json()
    credit = body["credit"]
    assert credit["score"] == 100 - sum(d["points"] for d in credit["deductions"])
    kinds = {d["kind"] for d in credit["deductions"]}
    assert kinds, "the recalled animal's farm has a deduction"
    page = _get(pages_site, f"/p/{BEEF_FARM}?lang=zh").text
    assert 'id="deductions"' in page
    if "recall" in kinds:
        assert "产品召回" in page


@pytest.mark.parametrize("party", [FARM, ABATTOIR])
def test_stall_licence_and_place_are_shown(pages_site: Any, party: str) -> None:
    """Registry profile fields reach the page when they are set."""
    body = _get(pages_site, f"/p/{party}", **JSON).json()
    page = _get(pages_site, f"/p/{party}?lang=zh").text
    for field in ("place", "licence"):
        if body[field]:
            assert body[field] in page


def test_unknown_stall_is_404_with_advice(pages_site: Any) -> None:
    """An unknown or malformed party id is a 404 page telling the buyer what to do."""
    for path in ("/p/no-such-stall", "/p/NOT%20AN%20ID"):
        page = _get(pages_site, path + "?lang=en")
        assert page.status_code == 404
        assert 'id="advice"' in page.text
    assert _get(pages_site, "/p/no-such-stall", **JSON).status_code == 404
    assert _get(pages_site, "/p/no-such-stall/qr.svg").status_code == 404


def test_stall_qr_decodes_to_the_stall_page(pages_site: Any, zbarimg: str, tmp_path: Path) -> None:
    """The printed code (zbar) opens the stall page, and the label shows the same code."""
    reply = _get(pages_site, f"/p/{RETAILER}/qr.png?scale=6")
    assert reply.status_code == 200
    image = tmp_path / "stall.png"
    image.write_bytes(reply.content)
    out = subprocess.run(  # noqa: S603 (a fixed program on a file this test wrote)
        [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    url = out.stdout.strip()
    assert url.endswith(f"/p/{RETAILER}")
    assert _get(pages_site, urlsplit(url).path).status_code == 200
    label = _get(pages_site, f"/p/{RETAILER}/label?lang=zh").text
    assert "<svg" in label
    assert "兰州惠民超市" in label


def test_stall_feedback_form_rates_one_of_its_products(pages_site: Any) -> None:
    """The form posts a rating for a listed product and comes back to the stall with thanks."""
    body = _get(pages_site, f"/p/{RETAILER}", **JSON).json()
    product = body["products"][0]["key"]
    page = _get(pages_site, f"/p/{RETAILER}?lang=en").text
    assert f'action="/p/{RETAILER}/feedback"' in page
    assert f'<option value="{product}">' in page
    form = {"product": product, "rating": "4", "complaint": "", "lang": "en"}
    sent = httpx.post(f"{pages_site.base}/p/{RETAILER}/feedback", data=form, timeout=30)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/p/{RETAILER}?lang=en&feedback=thanks"
    # A product the stall does not show is refused: feedback counts against its owner's credit.
    other = {**form, "product": "01/06901234567892/10/L999999"}
    refused = httpx.post(f"{pages_site.base}/p/{RETAILER}/feedback", data=other, timeout=30)
    assert refused.status_code == 422
    thanks = _get(pages_site, f"/p/{RETAILER}?lang=en&feedback=thanks").text
    assert "Thank you" in thanks


@pytest.mark.parametrize("path", [f"/p/{RETAILER}", f"/p/{RETAILER}/label"])
def test_unsupported_language_falls_back_to_the_browsers(pages_site: Any, path: str) -> None:
    """``?lang=fr`` on a stall page or label is the page in Accept-Language's language."""
    page = _get(pages_site, path + "?lang=fr", **{"Accept-Language": "en-GB,en;q=0.9"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text
