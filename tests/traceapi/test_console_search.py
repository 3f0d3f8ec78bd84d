"""The console's product search, its exports and the parties page, over HTTP (pages world).

docs/inspection.md, "Searching and exporting". Expected results come from the database or from
the public scan, never from the search itself.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import epcis_kit
import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col
from trace_kit import (
    ABATTOIR,
    BEEF_FARM,
    COLLECT,
    CUTS,
    EGG_LOT,
    FARM,
    GTIN,
    RECALLED_CUTS,
    STEER,
    TAMPERED_CASE,
    TREATED_STEER,
)
from vnu_kit import html_problems

from traceapi.console import search as console_search
from traceapi.console.search_form import PAGE_SIZE, read_search
from tracecore.bundle import parse_message_cached
from tracecore.identifiers import ProductKey
from tracecore.message import DeviceMessage, Event
from tracecore.storage import ChainLink, LogEntry, Product, session_scope
from tracecore.storage.models import ContractResult

CST = timezone(timedelta(hours=8))
#: Cartons of an extra lot, so that a search has more than one page.
EXTRA = 64


@pytest.fixture(scope="module")
def site(console_world: Any) -> Any:
    """The console world with a lot packed into 64 more cartons (a search of pages)."""
    world = console_world.world
    lot = ProductKey.from_parts(GTIN, lot="L261140")
    world.send(
        COLLECT,
        lambda seq, time: Event(
            COLLECT.name, seq, time, (lot,), "commissioning", parents=(EGG_LOT,)
        ),
    )
    cartons = tuple(
        ProductKey.from_parts(GTIN, lot=lot.lot, serial=f"P{n:03d}") for n in range(EXTRA)
    )
    world.send(
        COLLECT,
        lambda seq, time: Event(COLLECT.name, seq, time, cartons, "commissioning", parents=(lot,)),
    )
    world.checkpoint()
    return console_world


@pytest.fixture
def inspector(site: Any) -> Iterator[httpx.Client]:
    """A console client signed in as the world's inspector."""
    with site.client("inspector") as client:
        yield client


def _products(engine: Any) -> list[Product]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Product)).all())


_KEY = re.compile(r'<td class="key mono"><a href="/console/products/([^"?]+)\?lang=')


def _keys(page: httpx.Response) -> list[str]:
    """The product keys of a result page, in its order."""
    assert page.status_code == 200, page.text
    return _KEY.findall(page.text)


def _link(page: httpx.Response, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page.text)
    return html.unescape(found.group(1)) if found else None


def _everything(client: httpx.Client, **params: str) -> list[str]:
    """Every key a search finds, following its next links."""
    page = client.get("/console/products", params={"lang": "en", **params})
    keys = _keys(page)
    while (after := _link(page, "next")) is not None:
        page = client.get(after)
        keys += _keys(page)
    return keys


def test_a_browser_without_a_session_is_sent_to_sign_in(site: Any) -> None:
    """Search, exports and parties need a session: the browser is sent to sign in, and back."""
    for path in (
        "/console/products",
        "/console/export/kde.csv",
        "/console/export/epcis.json",
        "/console/parties",
    ):
        reply = httpx.get(f"{site.base}{path}?step=shipping", timeout=30)
        assert reply.status_code == 303, path
        target = urlsplit(reply.headers["location"])
        assert target.path == "/console/sign-in"
        assert parse_qs(target.query)["next"] == [path]
        assert "content-disposition" not in reply.headers


def test_each_filter_narrows_to_its_products(site: Any, inspector: httpx.Client) -> None:
    """Owner, step, place, dates, contract result and recall each keep exactly their products."""
    products = _products(site.engine)
    assert sorted(_everything(inspector)) == sorted(p.key for p in products)
    owned = {p.key for p in products if p.owner_party_id == ABATTOIR}
    assert set(_everything(inspector, owner=ABATTOIR)) == owned
    assert set(_everything(inspector, step="killing")) == {STEER.path, TREATED_STEER.path}
    # A device's place (the shop's meat case), and a party's place in either language.
    assert set(_everything(inspector, place="鲜肉冷柜")) == {CUTS.path, RECALLED_CUTS.path}
    wuwei = set(_everything(inspector, place="Wuwei"))
    assert wuwei == set(_everything(inspector, place="武威"))
    with session_scope(site.engine) as session:
        beef_farm_products = set(
            session.scalars(
                select(col(ChainLink.product_key))
                .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
                .where(col(LogEntry.device_id).like("beef01-%"))
            ).all()
        )
        failed = set(
            session.scalars(
                select(col(ContractResult.product_key)).where(
                    col(ContractResult.contract) == "drug-withdrawal",
                    col(ContractResult.status) == "fail",
                )
            ).all()
        )
        shipped = set(
            session.scalars(
                select(col(ChainLink.product_key))
                .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
                .where(col(LogEntry.step) == "shipping")
            ).all()
        )
    assert wuwei == beef_farm_products
    assert failed
    assert set(_everything(inspector, contract="drug-withdrawal", result="fail")) == failed
    both = set(_everything(inspector, owner=BEEF_FARM, step="shipping"))
    assert both == {p.key for p in products if p.owner_party_id == BEEF_FARM} & shipped
    assert STEER.path in both
    # Dates are China Standard Time days, the to date included.
    cut = next(p for p in products if p.key == CUTS.path)
    day = datetime.fromtimestamp(cut.created_ms / 1000, CST).date()
    start = int(datetime.combine(day, datetime.min.time(), CST).timestamp() * 1000)
    same_day = {p.key for p in products if start <= p.created_ms < start + 86_400_000}
    assert (
        set(_everything(inspector, **{"from": day.isoformat(), "to": day.isoformat()})) == same_day
    )
    later = {p.key for p in products if p.created_ms >= start}
    assert set(_everything(inspector, **{"from": day.isoformat()})) == later


def test_recalled_is_what_the_scan_says(site: Any, inspector: httpx.Client) -> None:
    """Recalled products are exactly those whose public scan mentions a recall; both badges."""
    world = site.world
    expected = set()
    for product in _products(site.engine):
        scan = world.client.get(f"/{product.key}", headers={"Accept": "application/json"}).json()
        if scan["recalls"]:
            expected.add(product.key)
    assert {TREATED_STEER.path, RECALLED_CUTS.path} <= expected
    assert set(_everything(inspector, recalled="yes")) == expected
    assert not expected & set(_everything(inspector, recalled="no"))
    page = inspector.get("/console/products", params={"lang": "en", "owner": ABATTOIR})
    rows = page.text.split("<tr>")[2:]
    badges = {_KEY.search(row).group(1) for row in rows if 'class="badge recalled"' in row}
    assert badges == expected & set(_keys(page))
    api = world.client.get("/v1/products?recalled=true&limit=1000", headers=world.auth("inspector"))
    assert {row["key"] for row in api.json()} == expected


def test_the_api_takes_the_new_filters_too(site: Any, inspector: httpx.Client) -> None:
    """GET /v1/products?place=&recalled= answers as the console does; a NUL is refused."""
    world = site.world
    auth = world.auth("inspector")

    def api(query: str) -> set[str]:
        reply = world.client.get(f"/v1/products?limit=1000&{query}", headers=auth)
        assert reply.status_code == 200, reply.text
        return {row["key"] for row in reply.json()}

    meat_case = api("place=%E9%B2%9C%E8%82%89%E5%86%B7%E6%9F%9C")  # 鲜肉冷柜
    assert meat_case == {CUTS.path, RECALLED_CUTS.path}
    assert api("place=MEAT%20display&recalled=false") == {CUTS.path}
    assert api(f"party={BEEF_FARM}&step=shipping&place=wuwei") == set(
        _everything(inspector, owner=BEEF_FARM, step="shipping", place="wuwei")
    )
    refused = world.client.get("/v1/products?place=a%00b", headers=auth)
    assert refused.status_code == 422


def test_sort_links_toggle_and_mark_the_sorted_column(site: Any, inspector: httpx.Client) -> None:
    """Each column header links to its sort, toggling the order; aria-sort marks the sorted one."""
    products = _products(site.engine)
    first = inspector.get("/console/products", params={"lang": "en", "owner": ABATTOIR})
    assert re.search(r'<th scope="col" aria-sort="ascending"><a [^>]*>Registered', first.text)
    assert first.text.count("aria-sort=") == 1
    headers = dict(re.findall(r'<th scope="col"[^>]*><a href="([^"]+)">([^<]+)<', first.text))
    by_key = html.unescape(next(href for href, name in headers.items() if name == "Product code"))
    assert parse_qs(urlsplit(by_key).query)["order"] == ["asc"]
    assert parse_qs(urlsplit(by_key).query)["owner"] == [ABATTOIR]  # the filters are kept
    ascending = inspector.get(by_key)
    owned = sorted(p.key for p in products if p.owner_party_id == ABATTOIR)
    assert _keys(ascending) == owned
    assert 'aria-sort="ascending"><a' in ascending.text
    toggle = re.search(r'aria-sort="ascending"><a href="([^"]+)"', ascending.text)
    assert toggle is not None
    descending = inspector.get(html.unescape(toggle.group(1)))
    assert _keys(descending) == owned[::-1]
    assert 'aria-sort="descending"' in descending.text
    for sort, order in (("owner", lambda p: (p.owner_party_id, p.key)), ("holder", None)):
        keys = _everything(inspector, sort=sort, order="desc")
        if order is not None:
            assert keys == [p.key for p in sorted(products, key=order, reverse=True)]
        else:
            held = [p for p in products if p.holder_party_id is not None]
            expected = sorted(held, key=lambda p: (p.holder_party_id, p.key), reverse=True)
            assert keys[: len(held)] == [p.key for p in expected]


def test_pages_of_fifty_keep_the_filters(site: Any, inspector: httpx.Client) -> None:
    """More than 50 products make pages: next and previous links, filters kept, no overlap."""
    farm = sorted(p.key for p in _products(site.engine) if p.owner_party_id == FARM)
    assert len(farm) > PAGE_SIZE
    first = inspector.get("/console/products", params={"lang": "zh", "owner": FARM, "sort": "key"})
    assert _keys(first) == farm[:PAGE_SIZE]
    assert _link(first, "prev") is None
    after = _link(first, "next")
    assert after is not None
    query = parse_qs(urlsplit(after).query)
    assert (query["owner"], query["sort"], query["page"], query["lang"]) == (
        [FARM],
        ["key"],
        ["2"],
        ["zh"],
    )
    second = inspector.get(after)
    assert _keys(second) == farm[PAGE_SIZE:]
    assert _link(second, "next") is None
    back = _link(second, "prev")
    assert back is not None
    assert _keys(inspector.get(back)) == farm[:PAGE_SIZE]
    assert f"共 {len(farm)} 个产品" in second.text


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"owner": "Not An Id"}, "owner", "This is not a party id"),
        ({"step": "flying"}, "step", "no such business step"),
        ({"from": "2026-02-30"}, "from", "year-month-day"),
        ({"to": "27/11/2026"}, "to", "year-month-day"),
        ({"from": "2026-11-28", "to": "2026-11-27"}, "to", "from date is after the to date"),
        ({"place": "x" * 101}, "place", "at most 100 characters"),
        ({"place": "cold\x00store"}, "place", "without control characters"),
        ({"contract": "no-such-check"}, "contract", "no such compliance check"),
        ({"result": "maybe"}, "result", "no such check result"),
        ({"recalled": "perhaps"}, "recalled", "no such recall choice"),
        ({"sort": "price"}, "sort", "cannot be sorted that way"),
        ({"order": "sideways"}, "sort", "cannot be sorted that way"),
        ({"page": "two"}, "page", "whole number from 1"),
        ({"page": "0"}, "page", "whole number from 1"),
        ({"page": "99999999999"}, "page", "whole number from 1"),
    ],
)
def test_bad_input_is_explained_next_to_the_form(
    inspector: httpx.Client, params: dict[str, str], field: str, message: str
) -> None:
    """A bad value is answered 422 with the form, the field marked and its error said."""
    for path in ("/console/products", "/console/export/kde.csv", "/console/export/epcis.json"):
        reply = inspector.get(path, params={"lang": "en", **params})
        assert reply.status_code == 422, (path, reply.text)
        assert reply.headers["content-type"].startswith("text/html")
        assert 'role="alert" id="errors"' in reply.text
        assert f'href="#f-{field}"' in reply.text
        assert message in reply.text
        assert f'id="f-{field}"' in reply.text
        assert 'id="products"' not in reply.text
    if field not in ("sort", "page"):
        assert re.search(
            rf'id="f-{field}" name="{field}" aria-describedby="[^"]*e-{field}" aria-invalid="true"',
            reply.text,
        )


def test_an_empty_result_says_so(inspector: httpx.Client) -> None:
    """No match: a helpful message, no table, nothing to export."""
    reply = inspector.get("/console/products", params={"lang": "en", "place": "Atlantis"})
    assert reply.status_code == 200
    assert "No product matches" in reply.text
    assert 'id="products"' not in reply.text
    assert "/console/export/" not in reply.text


def _rows(reply: httpx.Response) -> list[dict[str, str]]:
    assert reply.status_code == 200, reply.text
    return list(csv.DictReader(io.StringIO(reply.content.decode("utf-8-sig"))))


def test_kde_export_holds_the_rows_of_the_found_products_only(
    site: Any, inspector: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spreadsheet of a search: one row per business event of each product found, no other."""
    noted: list[str] = []
    real = console_search.note_parties
    monkeypatch.setattr(
        console_search, "note_parties", lambda request, *p: (noted.extend(p), real(request, *p))
    )
    params = {"owner": BEEF_FARM, "step": "inspecting"}
    found = set(_everything(inspector, **params))
    assert found
    reply = inspector.get("/console/export/kde.csv", params={"lang": "en", **params})
    assert reply.headers["content-type"].startswith("text/csv")
    disposition = reply.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="products-\d{8}-\d{4}-kde\.csv"', disposition)
    rows = _rows(reply)
    with session_scope(site.engine) as session:
        expected = sorted(
            (int(index), key)
            for key, index in session.execute(
                select(col(ChainLink.product_key), col(ChainLink.log_index))
                .join(LogEntry, col(LogEntry.index) == col(ChainLink.log_index))
                .where(col(ChainLink.product_key).in_(found), col(LogEntry.step).is_not(None))
            ).all()
        )
    assert sorted((int(r["log_index"]), r["product"]) for r in rows) == expected
    assert [r["event_time_utc"] for r in rows] == sorted(r["event_time_utc"] for r in rows)
    owners = {p.owner_party_id for p in _products(site.engine) if p.key in found}
    assert owners <= set(noted)
    assert {r["from_party"] for r in rows} <= set(noted)


def test_epcis_export_is_one_valid_document_of_the_found_products(
    site: Any, inspector: httpx.Client
) -> None:
    """The EPCIS document of a search validates, lists each product found, each event once."""
    params = {"owner": ABATTOIR}
    found = sorted(_everything(inspector, **params))
    reply = inspector.get("/console/export/epcis.json", params={"lang": "en", **params})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/ld+json")
    assert re.fullmatch(
        r'attachment; filename="products-\d{8}-\d{4}-epcis\.json"',
        reply.headers["content-disposition"],
    )
    document = reply.json()
    listed = document["agritrace:products"]
    assert sorted(p["agritrace:product"] for p in listed) == found
    assert {p["agritrace:verdict"] for p in listed} == {"verified", "recalled"}
    with session_scope(site.engine) as session:
        stored = session.execute(select(col(LogEntry.index), col(LogEntry.raw))).all()
        linked = set(
            session.scalars(
                select(col(ChainLink.log_index)).where(col(ChainLink.product_key).in_(found))
            ).all()
        )
    signed: dict[int, DeviceMessage] = {
        int(index): parse_message_cached(raw).message for index, raw in stored if raw is not None
    }
    epcis_kit.check_export(document, signed, epcis_kit.validator())
    events = document["epcisBody"]["eventList"]
    indexes = [e["agritrace:logIndex"] for e in events]
    assert len(indexes) == len(set(indexes))  # the carcasses' and steers' events, once each
    assert linked <= set(indexes)  # every record of every product found (and its ancestors')


def test_epcis_export_of_everything_names_each_verdict(inspector: httpx.Client) -> None:
    """Every product in one document: the tampered case says integrity_failure, events once."""
    document = inspector.get("/console/export/epcis.json").json()
    verdicts = {
        p["agritrace:product"]: p["agritrace:verdict"] for p in document["agritrace:products"]
    }
    assert verdicts[TAMPERED_CASE.path] == "integrity_failure"
    assert verdicts[RECALLED_CUTS.path] == "recalled"
    assert verdicts[CUTS.path] == "verified"
    ids = [e["eventID"] for e in document["epcisBody"]["eventList"]]
    assert len(ids) == len(set(ids))


def test_exports_over_the_cap_say_so_instead_of_a_truncated_file(
    inspector: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More products than an export holds: the page says so (413), and offers no such link."""
    monkeypatch.setattr(console_search, "KDE_CAP", 3)
    monkeypatch.setattr(console_search, "EPCIS_CAP", 2)
    params = {"lang": "en", "owner": ABATTOIR}
    for path, name, cap in (("kde.csv", "KDE CSV", 3), ("epcis.json", "EPCIS", 2)):
        reply = inspector.get(f"/console/export/{path}", params=params)
        assert reply.status_code == 413
        assert reply.headers["content-type"].startswith("text/html")
        assert "content-disposition" not in reply.headers
        assert f"One {name} export holds at most {cap} products" in reply.text
        assert 'id="export-problem"' in reply.text
    page = inspector.get("/console/products", params=params)
    assert 'id="export-kde"' not in page.text
    assert 'id="export-epcis"' not in page.text
    small = inspector.get("/console/products", params={**params, "place": "cutting room"})
    assert len(_keys(small)) == 2
    assert 'id="export-kde"' in small.text
    assert 'id="export-epcis"' in small.text


def test_parties_by_part_of_their_name_with_credit_scores(
    site: Any, inspector: httpx.Client
) -> None:
    """Parties whose name has the text, each with the API's credit score and a products link."""
    world = site.world
    reply = inspector.get("/console/parties", params={"lang": "zh", "q": "兰州"})
    assert reply.status_code == 200
    score = (
        r'<td class="mono">([a-z0-9-]+)</td>\s*<td>(?:<strong>(\d+)</strong>|<span class="muted">—)'
    )
    rows = re.findall(score, reply.text)
    assert [party for party, _ in rows] == ["gansu-pack-01", "lanzhou-abattoir", "lanzhou-mart"]
    for party, score in rows:
        credit = world.client.get(f"/v1/parties/{party}/credit", headers=world.auth("inspector"))
        assert int(score) == credit.json()["score"]
        assert f'href="/console/products?owner={party}&amp;lang=zh"' in reply.text
    english = inspector.get("/console/parties", params={"lang": "en", "q": "CATTLE"})
    assert "Wuwei Cattle Farm" in english.text
    assert re.findall(r'<td class="mono">([a-z0-9-]+)</td>', english.text) == [BEEF_FARM]
    agency = inspector.get("/console/parties", params={"lang": "en", "q": "AMR"})
    assert re.search(r'<td class="mono">gansu-amr</td>\s*<td><span class="muted">—', agency.text)
    nobody = inspector.get("/console/parties", params={"lang": "en", "q": "nobody-at-all"})
    assert "No party has this text" in nobody.text
    assert inspector.get("/console/parties", params={"q": "x" * 101}).status_code == 422
    assert inspector.get("/console/parties", params={"q": "a\x00"}).status_code == 422
    assert inspector.get("/console/parties", params={"page": "next"}).status_code == 422


def test_a_party_session_would_see_its_own_products_only() -> None:
    """The form holds a party's session to its own products (no party signs in yet)."""
    own = read_search({"owner": "", "step": "shipping"}, own=FARM)
    assert own.query is not None
    assert own.query.owner == FARM
    other = read_search({"owner": ABATTOIR}, own=FARM)
    assert other.query is None
    assert other.errors["owner"][0] == "console.search.error.own"
    assert read_search({"owner": ABATTOIR}).query is not None


def test_every_search_page_is_valid_html(
    inspector: httpx.Client, vnu_jar: tuple[str, Path], tmp_path: Path
) -> None:
    """Results, errors, no results and parties, in both languages: no vnu error or warning."""
    pages = {
        "results": ("/console/products", {"owner": ABATTOIR}),
        "errors": ("/console/products", {"owner": "No!", "from": "2026-13-01", "page": "x"}),
        "empty": ("/console/products", {"place": "Atlantis"}),
        "parties": ("/console/parties", {"q": "兰州"}),
        "parties-errors": ("/console/parties", {"page": "x"}),
    }
    files = []
    for language in ("zh", "en"):
        for name, (path, params) in pages.items():
            page = inspector.get(path, params={"lang": language, **params})
            assert page.headers["content-type"].startswith("text/html")
            file = tmp_path / f"{name}-{language}.html"
            file.write_bytes(page.content)
            files.append(str(file))
    problems = html_problems(vnu_jar, files)
    assert problems == []
