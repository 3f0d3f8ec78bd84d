"""The pages world of trace_kit has what the page tests rely on: every verdict, as JSON says it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from trace_kit import PAGE_VARIANTS

JSON = {"Accept": "application/json"}


def _scan(pages_site: Any, variant: str) -> dict[str, Any]:
    response = httpx.get(pages_site.url(variant), headers=JSON, timeout=30)
    assert response.status_code == PAGE_VARIANTS[variant].status, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    "variant", [v for v, page in PAGE_VARIANTS.items() if page.verdict and not page.outage]
)
def test_variant_has_its_verdict(pages_site: Any, variant: str) -> None:
    """Each variant's scan answers the status and verdict the page tests expect of it."""
    assert _scan(pages_site, variant)["verdict"] == PAGE_VARIANTS[variant].verdict


@pytest.mark.parametrize("variant", [v for v, page in PAGE_VARIANTS.items() if page.outage])
def test_outage_scan_says_come_back(pages_site: Any, variant: str) -> None:
    """An app scanning during an outage gets 503 with Retry-After and no verdict at all."""
    response = httpx.get(pages_site.url(variant), headers=JSON, timeout=30)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "verdict" not in response.json()


def test_clean_egg_case_passes_every_contract(pages_site: Any) -> None:
    """The clean egg case passes every contract that applies to eggs, each judged on data."""
    contracts = _scan(pages_site, "clean-egg")["contracts"]
    statuses = {c["id"]: c["status"] for c in contracts if c["status"] != "not_applicable"}
    assert statuses == dict.fromkeys(
        [
            "egg-cold-chain",
            "drug-withdrawal",
            "egg-freshness",
            "cold-chain-continuity",
            "custody",
        ],
        "pass",
    )


def test_beef_cuts_were_warm_within_tolerance(pages_site: Any) -> None:
    """The beef cut lot's chart data has readings above 4 °C, and chilled-meat still passes."""
    body = _scan(pages_site, "beef-cut")
    values = [
        point["value"]
        for series in body["readings"]
        if series["type"] == "Temperature" and series["device"] == "lanzhou-mart-meatcase"
        for point in series["points"]
    ]
    assert [v for v in values if v > 4.0] == [5.2, 4.6]
    contracts = {c["id"]: c["status"] for c in body["contracts"]}
    assert contracts["chilled-meat"] == contracts["brucellosis"] == "pass"
    steps = {e["step"] for e in body["events"]}
    assert {"commissioning", "other", "inspecting", "killing", "shipping", "receiving"} <= steps


def test_recalled_cuts_name_the_recall(pages_site: Any) -> None:
    """The recalled cuts carry the inspector's recall of the treated steer, which was killed
    during its withdrawal period."""
    body = _scan(pages_site, "recalled")
    assert [r["by"] for r in body["recalls"]] == ["gansu-amr"]
    assert "oxytetracycline" in body["recalls"][0]["reason"]
    contracts = {c["id"]: c["status"] for c in body["contracts"]}
    assert contracts["drug-withdrawal"] == "fail"


def test_tampered_case_fails_the_message_check(pages_site: Any) -> None:
    """The edited reading of the tampered case is caught by the messages check."""
    body = _scan(pages_site, "integrity-failure")
    assert "messages" in {c["name"] for c in body["checks"] if not c["ok"]}
