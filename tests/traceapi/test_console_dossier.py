"""The console's product dossier, lineage graph and recall (docs/inspection.md), over HTTP.

One pages world per module (``console_world``): the tests that change it add products of their
own (a large lineage, a key with markup) or recall a product nothing else here looks at (the
egg world's first lot, ``LOT``), and run after the tests that read what they change.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import col, select
from trace_kit import (
    ADMIN,
    CARCASS,
    CARTON,
    COLLECT,
    CUTS,
    EGG_CASE,
    EGG_CASE_2,
    EGG_FLOCK,
    EGG_LOT,
    GTIN,
    LOG,
    LOT,
    ORIGIN,
    RECALLED_CUTS,
    STEER,
    TAMPERED_CASE,
    TAMPERED_LOT,
    TREATED_STEER,
)
from vnu_kit import html_problems

from traceapi.access import noted_parties
from traceapi.app import create_app
from traceapi.console.session import csrf_token
from tracecore.identifiers import ProductKey
from tracecore.logentry import Recall, parse_any_entry
from tracecore.message import Event
from tracecore.settings import Settings
from tracecore.storage import LogEntry, Product, session_scope
from tracecore.storage.console import open_session
from tracecore.storage.registry import lookup_token

SVG = "{http://www.w3.org/2000/svg}"
BIG_FLOCK = ProductKey.parse("01/06901234560008/10/F9BIG")
BIG_LOT = ProductKey.from_parts(GTIN, lot="L26BIG")
BIG_CARTONS = [ProductKey.from_parts(GTIN, lot="L26BIG", serial=f"B{n:04d}") for n in range(150)]
#: A registered lot whose code holds every markup character a lot may hold (GS1 AI 82).
MARKUP = ProductKey.from_parts(GTIN, lot="<i>\"&'1")


def _dossier(client: httpx.Client, key: ProductKey | str, **query: str) -> httpx.Response:
    path = key.path if isinstance(key, ProductKey) else key
    return client.get(f"/console/products/{path}", params={"lang": "en", **query})


def _verdict(page: httpx.Response) -> str:
    found = re.search(r'id="verdict" data-verdict="([a-z_]+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def _graph(page: httpx.Response) -> ET.Element:
    """The lineage graph of a dossier, parsed as XML (so anything unescaped fails)."""
    found = re.search(
        r'<svg xmlns="http://www.w3.org/2000/svg" class="lineage".*?</svg>', page.text
    )
    assert found, "no lineage graph"
    return ET.fromstring(found.group(0))  # noqa: S314 (our own server's output)


def _name(graph: ET.Element, element: ET.Element) -> str:
    """An element's accessible name from ``aria-labelledby`` (texts joined by spaces)."""
    texts = {e.get("id"): "".join(e.itertext()) for e in graph.iter() if e.get("id")}
    return " ".join(texts[ident] for ident in element.attrib["aria-labelledby"].split())


def _linked(graph: ET.Element) -> dict[str, str]:
    """The products the graph links to (canonical key -> accessible name)."""
    found = {}
    for link in graph.iter(f"{SVG}a"):
        href = link.attrib["href"]
        if href.startswith("/console/products/"):
            key = urlsplit(href).path.removeprefix("/console/products/")
            found[key] = _name(graph, link)
    return found


def _scan(client: httpx.Client, key: ProductKey) -> Any:
    """The public scan's JSON answer for ``key`` (it counts a scan of a serialized code)."""
    answer = client.get(f"/{key.path}?lang=en", headers={"Accept": "application/json"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _row(page: str, index: int) -> str:
    found = re.search(rf'<tr id="entry-{index}".*?</tr>', page, re.DOTALL)
    assert found, f"no history row of entry {index}"
    return unescape(found.group(0))


@pytest.fixture(scope="module")
def inspector(console_world: Any) -> Iterator[httpx.Client]:
    """The inspection agency's console client, for the module."""
    with console_world.client("inspector") as client:
        yield client


def test_the_egg_case_dossier_is_verified_with_its_decoded_history_and_chart(
    console_world: Any, inspector: httpx.Client
) -> None:
    """EGG_CASE: the public scan's verdict and checks, every signed record decoded in the public
    page's words and linked to its inclusion proof, the temperature chart."""
    scan = _scan(inspector, EGG_CASE)
    page = _dossier(inspector, EGG_CASE)
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert _verdict(page) == scan["verdict"] == "verified"
    text = unescape(page.text)
    for check in scan["checks"]:
        assert check["detail"] in text
    checks = re.search(r'<table id="check-table".*?</table>', text, re.DOTALL)
    assert checks
    assert checks.group(0).count("✔ </span>passed") == len(scan["checks"])
    size = scan["checkpoint"]["size"]
    for event in scan["events"]:
        row = _row(page.text, event["index"])
        assert event["label"] in row, event
        assert f'href="/v1/log/proof/inclusion?index={event["index"]}&size={size}"' in row
    packed = next(e for e in scan["events"] if e["data"] and "eggs_per_case" in e["data"])
    assert re.search(r"Per case</dt><dd>360 eggs", _row(page.text, packed["index"]))
    reading = scan["readings"][0]["points"][0]
    assert f"Temperature {reading['value']:g} °C" in _row(page.text, reading["index"])
    proof = inspector.get(f"/v1/log/proof/inclusion?index={packed['index']}&size={size}")
    assert proof.status_code == 200
    assert 'class="chart"' in page.text
    assert "Kept at ≤ 7.2 °C the whole way" in text
    assert 'id="owner">Linxia Hens' in text
    assert 'id="holder">Lanzhou Huimin Supermarket' in text


def test_contract_results_link_the_entries_they_cite(inspector: httpx.Client) -> None:
    """Each stored contract result is listed with its findings, and every log entry a finding
    cites links to that entry's row in the history on the same page."""
    page = _dossier(inspector, EGG_CASE).text
    table = re.search(r'<table id="contract-table".*?</table>', page, re.DOTALL)
    assert table
    cited = re.findall(r'href="#entry-(\d+)"', table.group(0))
    assert len(cited) >= 5
    for index in cited:
        assert f'<tr id="entry-{index}"' in page
    assert "Egg cold chain (≤ 7.2 °C)" in unescape(table.group(0))
    assert "at log size" in table.group(0)


def test_the_tampered_case_shows_the_failing_check(
    console_world: Any, inspector: httpx.Client
) -> None:
    """TAMPERED_CASE: integrity failure, the failed check marked, no chart, unverified history."""
    failed = [c for c in _scan(inspector, TAMPERED_CASE)["checks"] if not c["ok"]]
    page = _dossier(inspector, TAMPERED_CASE)
    assert page.status_code == 200
    assert _verdict(page) == "integrity_failure"
    rows = re.findall(r'<tr class="failed">.*?</tr>', page.text, re.DOTALL)
    assert len(rows) == len(failed) >= 1
    for check, row in zip(failed, rows, strict=True):
        assert unescape(check["detail"]) in unescape(row)
        assert "failed" in row
    assert 'class="chart"' not in page.text
    assert "No chart: a check failed" in page.text
    assert "these records are not verified" in page.text


def test_the_recalled_cuts_show_the_recall_and_the_scans_since(inspector: httpx.Client) -> None:
    """RECALLED_CUTS: recalled, the inspector's recall of the steer it was cut from, the scans
    since (the public scan just made counts)."""
    before = _dossier(inspector, RECALLED_CUTS)
    assert _verdict(before) == "recalled"
    assert "Slaughtered during its oxytetracycline withdrawal period" in before.text
    assert f'href="/console/products/{TREATED_STEER.path}?lang=en"' in before.text
    _scan(inspector, RECALLED_CUTS)  # a lot: not counted (scans count serialized codes)
    counts = re.search(r'<p id="since-counts">(.*?)</p>', before.text)
    assert counts
    assert "of the products made from it (0): 0, by 0 different clients" in counts.group(1)


def test_the_lineage_graph_links_two_generations_each_way(inspector: httpx.Client) -> None:
    """The flock's graph reaches the cases two generations on, the cuts' graph the steer two
    generations back; each node links to its dossier and is named by its verdict."""
    flock = _linked(_graph(_dossier(inspector, EGG_FLOCK)))
    assert set(flock) == {
        EGG_LOT.path,
        TAMPERED_LOT.path,
        EGG_CASE.path,
        EGG_CASE_2.path,
        TAMPERED_CASE.path,
    }
    assert flock[TAMPERED_CASE.path].endswith("integrity failure")
    assert flock[EGG_CASE.path].endswith("verified")
    cuts = _linked(_graph(_dossier(inspector, CUTS)))
    assert set(cuts) == {CARCASS.path, STEER.path}
    current = [
        g
        for g in _graph(_dossier(inspector, CUTS)).iter(f"{SVG}g")
        if g.get("id") == "lineage-current"
    ]
    assert len(current) == 1
    # Following a node opens its dossier with its own graph.
    carcass = inspector.get(
        next(
            a.attrib["href"]
            for a in _graph(_dossier(inspector, CUTS)).iter(f"{SVG}a")
            if CARCASS.path in a.attrib["href"]
        )
    )
    assert carcass.status_code == 200
    # The steer's serum sample is the steer's child, not the carcass's: not drawn from here.
    assert set(_linked(_graph(carcass))) == {STEER.path, CUTS.path}


def test_depth_chooses_the_generations_drawn(inspector: httpx.Client) -> None:
    """?depth=1 draws one generation and marks the ones beyond; nonsense falls back to 3."""
    one = _linked(_graph(_dossier(inspector, EGG_FLOCK, depth="1")))
    assert set(one) == {EGG_LOT.path, TAMPERED_LOT.path}
    assert one[EGG_LOT.path].endswith("more generations not drawn")
    assert set(_linked(_graph(_dossier(inspector, EGG_FLOCK, depth="x")))) == set(
        _linked(_graph(_dossier(inspector, EGG_FLOCK)))
    )
    six = _dossier(inspector, EGG_FLOCK, depth="99")
    assert '<option value="6" selected>' in six.text


def test_the_pages_are_valid_html(
    vnu_jar: tuple[str, Path], inspector: httpx.Client, tmp_path: Path
) -> None:
    """Dossiers (verified, failed, recalled, with a graph), the recall form and a 404 page are
    valid by the Nu Html Checker in both languages: no error, no warning."""
    files = []
    for lang in ("zh", "en"):
        pages = {
            **{
                f"dossier-{k.path}": f"/console/products/{k.path}"
                for k in (EGG_CASE, TAMPERED_CASE, RECALLED_CUTS, EGG_FLOCK)
            },
            "recall": f"/console/recall?product={EGG_LOT.path}",
            "unknown": f"/console/products/01/{GTIN}/10/L999999",
        }
        for name, url in pages.items():
            answer = inspector.get(url, params={"lang": lang})
            path = tmp_path / f"{name.replace('/', '_')}-{lang}.html"
            path.write_bytes(answer.content)
            files.append(str(path))
    problems = html_problems(vnu_jar, files)
    assert not problems, "\n".join(problems)


def test_unknown_and_malformed_keys_are_404_pages(inspector: httpx.Client) -> None:
    """A key nobody registered, and a path that is no key, are console pages saying so."""
    for path in (f"01/{GTIN}/10/L999999", "01/12345/10/L1"):
        page = _dossier(inspector, path)
        assert page.status_code == 404
        assert "No such product" in page.text
        assert 'class="console"' in page.text


def test_another_spelling_redirects_to_the_registered_key(inspector: httpx.Client) -> None:
    """The short form of the case's code (no lot) is the same item: one URL per product."""
    short = inspector.get(f"/console/products/01/{GTIN}/21/{EGG_CASE.serial}?lang=en")
    assert short.status_code == 308
    assert short.headers["location"] == f"/console/products/{EGG_CASE.path}?lang=en"


def test_parties_shown_are_noted_for_the_access_trail(
    console_world: Any, app_client: Any, tmp_path: Path
) -> None:
    """The dossier names the product's owner and holder and the owners in its graph."""
    now = console_world.world.now[0]
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=tmp_path)
    app = create_app(config, console_world.engine, clock=lambda: now, log_vkey=LOG.verifier)
    noted: list[frozenset[str]] = []

    @app.middleware("http")
    async def remember(request: Any, call_next: Any) -> Any:
        answer = await call_next(request)
        noted.append(noted_parties(request))
        return answer

    with app_client(app) as client:
        form = client.get("/console/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        client.post("/console/sign-in", data={"csrf": csrf.group(1), "token": ADMIN})
        assert client.get(f"/console/products/{CUTS.path}").status_code == 200
    with session_scope(console_world.engine) as session:
        rows = [session.get(Product, k.path) for k in (CUTS, CARCASS, STEER)]
        expected = {
            p for row in rows if row for p in (row.owner_party_id, row.holder_party_id) if p
        }
        cuts = session.get(Product, CUTS.path)
        assert cuts is not None
    assert noted[-1] >= expected
    assert cuts.holder_party_id in noted[-1]


def test_a_product_not_in_a_checkpoint_yet_is_pending(
    console_world: Any, inspector: httpx.Client
) -> None:
    """Just commissioned, before the next checkpoint: being recorded, no history yet."""
    fresh = ProductKey.from_parts(GTIN, lot="L26NEW")
    console_world.world.send(
        COLLECT, lambda seq, at: Event(COLLECT.name, seq, at, (fresh,), "commissioning")
    )
    page = _dossier(inspector, fresh)
    assert page.status_code == 200
    assert _verdict(page) == "pending"
    assert "No record is in a signed checkpoint yet" in page.text
    assert 'id="history-table"' not in page.text
    assert _linked(_graph(page)) == {}


@dataclass
class _Party:
    """A console client of a party's token (the party console is not built yet: its session
    is opened in the database, as the sign-in would for it)."""

    client: httpx.Client
    csrf: str


@pytest.fixture
def farm_console(console_world: Any) -> Iterator[_Party]:
    """A console session of the egg farm's token."""
    with session_scope(console_world.engine) as session:
        token = lookup_token(session, console_world.world.tokens["farm"])
        assert token is not None
        opened = open_session(
            session, token_id=token.id, admin_hash=None, now_ms=console_world.world.now[0]
        )
    with httpx.Client(base_url=console_world.base, timeout=30) as client:
        client.cookies.set("agritrace_console", opened.secret)
        yield _Party(client, csrf_token(opened.secret))


def test_a_party_sees_its_own_products_only_and_never_recalls(farm_console: _Party) -> None:
    """Whoever is not an inspector or the admin: own products only, no recall form or action."""
    client = farm_console.client
    assert _dossier(client, EGG_CASE).status_code == 200
    assert _dossier(client, CUTS).status_code == 403
    assert client.get("/console/recall", params={"product": EGG_CASE.path}).status_code == 403
    form = {"csrf": farm_console.csrf, "product": EGG_CASE.path, "reason": "mine"}
    assert client.post("/console/recall", data=form).status_code == 403


@pytest.fixture(scope="module")
def big(console_world: Any) -> list[ProductKey]:
    """A flock made into a lot of 150 cartons and into a lot whose code holds markup."""
    world = console_world.world

    def commission(products: list[ProductKey], parent: ProductKey | None) -> None:
        parents = () if parent is None else (parent,)
        world.send(
            COLLECT,
            lambda seq, at: Event(
                COLLECT.name, seq, at, tuple(products), "commissioning", parents=parents
            ),
        )

    commission([BIG_FLOCK], None)
    commission([BIG_LOT, MARKUP], BIG_FLOCK)
    for start in range(0, len(BIG_CARTONS), 50):
        commission(BIG_CARTONS[start : start + 50], BIG_LOT)
    world.checkpoint()
    return BIG_CARTONS


def test_a_large_lineage_collapses_into_a_list(
    inspector: httpx.Client, big: list[ProductKey]
) -> None:
    """150 cartons of a lot: 8 drawn, one node "and 142 more" linking to the list under the
    graph, which shows 100 and links to all."""
    started = time.perf_counter()
    page = _dossier(inspector, BIG_LOT)
    took = time.perf_counter() - started
    assert page.status_code == 200
    graph = _graph(page)
    cartons = {k for k in _linked(graph) if "/21/" in k}
    assert cartons == {k.path for k in big[:8]}
    more = [a for a in graph.iter(f"{SVG}a") if a.attrib["href"].startswith("#more-")]
    assert len(more) == 1
    assert _name(graph, more[0]) == (
        "and 142 more of the products made from Lot L26BIG: listed below the graph"
    )
    anchor = more[0].attrib["href"][1:]
    listed = re.search(
        rf'<h4 id="{anchor}">(.*?)</h4>\s*<ul class="keys">(.*?)</ul>(.*?)</', page.text, re.DOTALL
    )
    assert listed
    assert "142 more products made from lot L26BIG" in listed.group(1)
    assert listed.group(2).count("<li>") == 100
    assert "lineage=all" in listed.group(3)
    everything = _dossier(inspector, BIG_LOT, lineage="all")
    whole = re.search(
        rf'<h4 id="{anchor}">.*?<ul class="keys">(.*?)</ul>', everything.text, re.DOTALL
    )
    assert whole
    assert whole.group(1).count("<li>") == 142
    assert took < 10, f"the dossier of a 150-carton lot took {took:.1f} s"
    flock = _linked(_graph(_dossier(inspector, BIG_FLOCK)))
    assert {BIG_LOT.path, MARKUP.path} <= set(flock)
    assert sum(1 for k in flock if "/21/" in k) == 8


def test_a_key_with_markup_is_escaped(inspector: httpx.Client, big: list[ProductKey]) -> None:
    """A lot <i>"&'1: its dossier and its flock's graph show it as text, never as markup."""
    assert big
    page = _dossier(inspector, MARKUP)
    assert page.status_code == 200, page.text
    assert "<i>" not in page.text
    assert (
        "lot &lt;i&gt;&#34;&amp;&#39;1" in page.text
        or "lot &lt;i&gt;&quot;&amp;&#39;1" in page.text
    )
    flock = _graph(_dossier(inspector, BIG_FLOCK))
    assert "<i>" not in ET.tostring(flock, encoding="unicode").replace("&lt;i&gt;", "")
    names = _linked(flock)
    assert names[MARKUP.path].startswith("Lot <i>\"&'1")
    unknown = _dossier(inspector, f"01/{GTIN}/10/%3Cscript%3E")
    assert unknown.status_code == 404
    assert "<script>" not in unknown.text


# -- recall: of the egg world's first lot, LOT (its carton CARTON), which no test above reads ----


def _recalls(console_world: Any) -> list[tuple[int, Recall]]:
    with session_scope(console_world.engine) as session:
        rows = session.exec(
            select(col(LogEntry.index), col(LogEntry.entry)).where(col(LogEntry.kind) == "recall")
        ).all()
    found = [(int(i), parse_any_entry(bytes(e))) for i, e in rows]
    return [(i, e) for i, e in found if isinstance(e, Recall)]


def test_the_recall_page_lists_what_the_recall_reaches(inspector: httpx.Client) -> None:
    """The confirmation page: the product, every product made from it, how many were scanned."""
    page = inspector.get("/console/recall", params={"product": LOT.path, "lang": "en"})
    assert page.status_code == 200
    assert f'href="/console/products/{CARTON.path}?lang=en"' in page.text
    assert "the products made from it (1)" in page.text
    assert 'maxlength="1000"' in page.text
    assert 'id="already"' not in page.text
    assert "Scanned by buyers so far: 0 of them" in page.text
    steer = inspector.get("/console/recall", params={"product": TREATED_STEER.path, "lang": "en"})
    assert 'id="already"' in steer.text, "recalled already: said so"
    assert steer.text.count('<li><a href="/console/products/') == 3  # sample, carcass, cuts


def test_a_recall_without_the_form_token_is_refused(
    console_world: Any, inspector: httpx.Client
) -> None:
    """No CSRF token, or another one: 403, and nothing is logged."""
    before = _recalls(console_world)
    for csrf in (None, "forged", csrf_token("another session")):
        form = {"product": LOT.path, "reason": "warm storage", "lang": "en"}
        if csrf is not None:
            form["csrf"] = csrf
        assert inspector.post("/console/recall", data=form).status_code == 403
    assert _recalls(console_world) == before


def test_a_recall_without_a_reason_is_refused(console_world: Any, inspector: httpx.Client) -> None:
    """A reason of blanks: 422 with the form again and a message, nothing logged."""
    before = _recalls(console_world)
    form = {"csrf": inspector.csrf, "product": LOT.path, "reason": "  \n ", "lang": "en"}  # type: ignore[attr-defined]
    answer = inspector.post("/console/recall", data=form)
    assert answer.status_code == 422
    assert 'id="error"' in answer.text
    assert "Please give the reason for the recall" in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert _recalls(console_world) == before


def test_the_api_refuses_a_reason_of_blanks_too(console_world: Any) -> None:
    """POST /v1/recalls shares the rule: a reason of blanks is 422, nothing logged."""
    before = _recalls(console_world)
    answer = httpx.post(
        f"{console_world.base}/v1/recalls",
        json={"product": LOT.path, "reason": "   "},
        headers=console_world.world.auth("inspector"),
        timeout=30,
    )
    assert answer.status_code == 422, answer.text
    assert "reason" in answer.json()["detail"]
    assert _recalls(console_world) == before


def test_a_recall_is_logged_and_reaches_the_descendants_public_page(
    console_world: Any, inspector: httpx.Client
) -> None:
    """The recall is one log entry naming the lot, by the inspector's party; from the next
    checkpoint the carton's public page says recalled, and the lot's dossier counts its scan."""
    before = _recalls(console_world)
    reason = "沙门氏菌检出 Salmonella in lot samples"
    form = {"csrf": inspector.csrf, "product": LOT.path, "reason": reason, "lang": "en"}  # type: ignore[attr-defined]
    answer = inspector.post("/console/recall", data=form)
    assert answer.status_code == 303, answer.text
    added = [r for r in _recalls(console_world) if r not in before]
    assert len(added) == 1
    index, entry = added[0]
    assert [p.path for p in entry.products] == [LOT.path]
    assert (entry.reason, entry.by) == (reason, "gansu-amr")
    target = urlsplit(answer.headers["location"])
    assert target.path == f"/console/products/{LOT.path}"
    assert parse_qs(target.query)["recalled"] == [str(index)]
    dossier = inspector.get(answer.headers["location"])
    assert f"The recall is in the log (entry {index})" in dossier.text
    console_world.world.checkpoint()
    logged = inspector.get(f"/v1/log/entries/{index}").json()
    assert logged["kind"] == "recall"
    assert _scan(inspector, CARTON)["verdict"] == "recalled"
    public = inspector.get(f"/{CARTON.path}", headers={"Accept-Language": "en"})
    assert 'data-verdict="recalled"' in public.text
    assert "Salmonella in lot samples" in public.text
    after = _dossier(inspector, LOT)
    assert _verdict(after) == "recalled"
    counts = re.search(r'<p id="since-counts">(.*?)</p>', after.text)
    assert counts
    assert "of the products made from it (1): 2, by 1 different clients" in counts.group(1)
    again = inspector.get("/console/recall", params={"product": LOT.path, "lang": "en"})
    assert 'id="already"' in again.text
    assert quote(LOT.path, safe="/") in again.text
