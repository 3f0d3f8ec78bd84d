"""The console's product search, its exports and the parties (docs/inspection.md, "Searching
and exporting").

* ``GET /console/products?owner=&step=&place=&from=&to=&contract=&result=&recalled=``
  ``&sort=&order=&page=``: the search form and one page of results
  (:mod:`traceapi.console.search_form` reads it; :mod:`tracecore.storage.search` answers it).
  A bad value is a message next to its field, status 422.
* ``GET /console/export/kde.csv?<filters>``, ``GET /console/export/epcis.json?<filters>``: every
  product of the search (up to :data:`KDE_CAP` and :data:`EPCIS_CAP`) as the key data elements
  spreadsheet or as one EPCIS 2.0 document, built as the inspector API builds them
  (:mod:`traceapi.exports`).
  Over the cap the search page says so (413), rather than a file that silently lacks products.
  (Paths outside ``/console/products/``, where product dossiers live.)
* ``GET /console/parties?q=&page=``: parties by part of their name or id, with their credit
  score, each linked to a search of its products.

A session that may see one party's data only (a party's) is held to that party's products and
refused the parties; today only inspectors and the admin sign in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine

from contracts import CONTRACTS
from traceapi.access import note_parties
from traceapi.console.pages import HEADERS, LangQuery, page, page_language
from traceapi.console.search_form import (
    MAX_PAGE,
    PAGE_SIZE,
    RECALL_CHOICES,
    Errors,
    SearchForm,
    plain_text,
    read_page,
    read_search,
)
from traceapi.console.session import ConsoleUser, current_user
from traceapi.exports import (
    MAX_EXPORT_ROWS,
    ExportTooLarge,
    attachment,
    epcis_body,
    export_story,
    kde_csv,
    kde_entries_of,
    kde_rows,
)
from traceapi.i18n import Lang, text
from traceapi.pages import DISPLAY_TZ
from traceapi.state import scan_policy
from traceapi.views import party_credit
from traceapi.vocabulary import STEPS, pick
from tracecore.epcis import epcis_collection
from tracecore.identifiers import ProductKey
from tracecore.message import BUSINESS_STEPS
from tracecore.storage.engine import session_scope
from tracecore.storage.search import (
    CONTRACT_STATUSES,
    PRODUCT_SORTS,
    PartyQuery,
    count_products,
    matching_products,
    search_parties,
    search_products,
)

__all__ = ["CREDIT_DAYS", "EPCIS_CAP", "KDE_CAP", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)

#: The most products one spreadsheet of a search holds (and at most MAX_EXPORT_ROWS rows).
KDE_CAP: Final = 10_000
#: The most products one EPCIS document of a search holds: each product's evidence is checked
#: as a scan checks it (about 4 ms each on a laptop), so 2,000 take some 8 s.
EPCIS_CAP: Final = 2_000
#: The window of the credit scores the parties page shows (as ``GET /v1/parties/{id}/credit``).
CREDIT_DAYS: Final = 90

#: Why an export was not made: an i18n key and the values of its placeholders.
Problem = tuple[str, dict[str, object]]


def _own(user: ConsoleUser) -> str | None:
    """The one party whose data ``user`` may see, or None for inspectors and the admin."""
    if user.role in ("inspector", "admin"):
        return None
    return user.party_id or ""  # a session of no party sees no products


def _name(lang: Lang, name: str | None, name_en: str | None) -> str | None:
    """A party's registered name in ``lang`` (its Chinese name when it has no English one)."""
    if name is None:
        return None
    return name_en if lang == "en" and name_en else pick(lang, name)


def _options(lang: Lang) -> dict[str, list[tuple[str, str]]]:
    """The choices of the form's lists, as (value, label in ``lang``)."""
    column = 0 if lang == "zh" else 1
    steps = [(s, f"{STEPS[s][column]} ({s})" if s in STEPS else s) for s in sorted(BUSINESS_STEPS)]
    return {
        "step": steps,
        "contract": [(c.id, text(lang, f"contract.{c.id}")) for c in CONTRACTS],
        "result": [(s, text(lang, f"console.search.result.{s}")) for s in CONTRACT_STATUSES],
        "recalled": [(r, text(lang, f"console.search.recalled.{r}")) for r in RECALL_CHOICES],
    }


def _columns(form: SearchForm) -> list[dict[str, str | None]]:
    """The sortable columns: each header's link (toggling the order) and its aria-sort."""
    columns = []
    for name in PRODUCT_SORTS:
        current = form.sort == name
        ascending = current and not form.descending
        columns.append(
            {
                "name": name,
                "href": "/console/products?"
                + form.link(sort=name, order="desc" if ascending else "asc", page=1),
                "sort": ("descending" if form.descending else "ascending") if current else None,
                "next": "desc" if ascending else "asc",
            }
        )
    return columns


def _products_page(
    request: Request,
    user: ConsoleUser,
    lang: Lang,
    form: SearchForm,
    *,
    status_code: int = status.HTTP_200_OK,
    export_problem: Problem | None = None,
) -> HTMLResponse:
    """The search form, with its errors or a page of its results."""
    rows: list[dict[str, object]] = []
    has_next, total = False, 0
    if form.query is not None:
        engine: Engine = request.app.state.engine
        with session_scope(engine) as session:
            found = search_products(session, form.query)
            total = count_products(session, form.query)
        has_next = found.has_next
        note_parties(request, *(r.owner for r in found.rows), *(r.holder for r in found.rows))
        rows = [
            {
                "row": r,
                "owner_name": _name(lang, r.owner_name, r.owner_name_en),
                "holder_name": _name(lang, r.holder_name, r.holder_name_en),
            }
            for r in found.rows
        ]
    if form.errors:
        status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    query = form.link(page=form.page)
    return page(
        "console/products.html",
        lang,
        status_code,
        path="/console/products" + (f"?{query}" if query else ""),
        user=user,
        section="products",
        form=form,
        options=_options(lang),
        columns=_columns(form),
        rows=rows,
        has_next=has_next,
        total=total,
        first=(form.page - 1) * PAGE_SIZE + 1,
        caps={"kde": KDE_CAP, "epcis": EPCIS_CAP},
        export_problem=export_problem,
    )


@router.get("/products", response_class=HTMLResponse)
def products(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
) -> Response:
    """The product search: the form, and a page of the products it finds."""
    form = read_search(request.query_params, own=_own(user))
    return _products_page(request, user, page_language(request, lang), form)


def _file_name(request: Request, kind: str) -> str:
    """``products-20261127-1405-{kind}``: the time of the export, China Standard Time."""
    now: int = request.app.state.clock()
    moment = datetime.fromtimestamp(now / 1000, tz=UTC).astimezone(DISPLAY_TZ)
    return f"products-{moment:%Y%m%d-%H%M}-{kind}"


def _too_many(
    request: Request, user: ConsoleUser, lang: Lang, form: SearchForm, problem: Problem
) -> HTMLResponse:
    """The search page, saying why its export was not made (413)."""
    return _products_page(
        request,
        user,
        lang,
        form,
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        export_problem=problem,
    )


def _over_cap(lang: Lang, kind: str, cap: int) -> Problem:
    """An export of ``kind`` (``kde``, ``epcis``) would hold more than ``cap`` products."""
    return "console.search.export.cap", {
        "cap": cap,
        "format": text(lang, f"console.search.export.{kind}"),
    }


@dataclass(frozen=True, slots=True)
class _Export:
    """What an export is of: the search, the page's language, every product found (key,
    owner)."""

    form: SearchForm
    lang: Lang
    found: list[tuple[str, str]]


def _export_of(
    request: Request, user: ConsoleUser, lang: str | None, kind: str, cap: int
) -> _Export | HTMLResponse:
    """The products an export of ``kind`` holds, or the search page saying why there is no
    export: its errors (422), or more than ``cap`` products (413)."""
    language = page_language(request, lang)
    form = read_search(request.query_params, own=_own(user))
    if form.query is None:
        return _products_page(request, user, language, form)
    everything = dataclasses.replace(form.query, sort="key")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        found = matching_products(session, everything, cap + 1)
    if len(found) > cap:
        return _too_many(request, user, language, form, _over_cap(language, kind, cap))
    return _Export(form, language, found)


@router.get("/export/kde.csv", response_class=Response)
def export_kde(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
) -> Response:
    """The key data elements of every product a search finds, as a CSV spreadsheet."""
    export = _export_of(request, user, lang, "kde", KDE_CAP)
    if not isinstance(export, _Export):
        return export
    wanted = {key for key, _ in export.found}
    signers: set[str] = set()

    def keep(by: str, _to: str, product: ProductKey) -> bool:
        """Rows of the products found; the parties that signed them are shown."""
        if product.path not in wanted:
            return False
        signers.add(by)
        return True

    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        try:
            body = kde_csv(kde_rows(session, kde_entries_of(sorted(wanted)), keep))
        except ExportTooLarge:
            rows: Problem = ("console.search.export.rows", {"rows": MAX_EXPORT_ROWS})
            return _too_many(request, user, export.lang, export.form, rows)
    note_parties(request, *(owner for _, owner in export.found), *signers)
    return attachment(
        body, "text/csv; charset=utf-8", _file_name(request, "kde.csv"), headers=HEADERS
    )


@router.get("/export/epcis.json", response_class=Response)
def export_epcis(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
) -> Response:
    """Every product a search finds, with its verified story, as one EPCIS 2.0 document."""
    export = _export_of(request, user, lang, "epcis", EPCIS_CAP)
    if not isinstance(export, _Export):
        return export
    policy = scan_policy(request)
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        exported = [export_story(session, ProductKey.parse(k), policy) for k, _ in export.found]
    stories = [e for e in exported if e is not None]
    document = epcis_collection(
        [(e.product, e.verdict) for e in stories],
        [e.story for e in stories if e.story is not None],
        created_ms=request.app.state.clock(),
        log_size=max((e.log_size or 0 for e in stories), default=0),
    )
    shown = {owner for _, owner in export.found}
    for e in stories:
        if e.story is not None:
            shown.update(e.story.devices.values())  # the parties whose devices signed
    note_parties(request, *shown)
    return attachment(
        epcis_body(document),
        "application/ld+json",
        _file_name(request, "epcis.json"),
        headers=HEADERS,
    )


def _parties_href(text: str, number: int) -> str:
    """The parties page of ``text``, page ``number`` (no ``lang``)."""
    params = {"q": text} if text else {}
    if number > 1:
        params["page"] = str(number)
    return "/console/parties" + (f"?{urlencode(params)}" if params else "")


@router.get("/parties", response_class=HTMLResponse)
def parties(
    request: Request,
    user: Annotated[ConsoleUser, Depends(current_user)],
    lang: LangQuery = None,
) -> Response:
    """Parties by part of their name or id, with credit scores and links to their products."""
    language = page_language(request, lang)
    params = request.query_params
    typed = params.get("q", "").strip()
    number = read_page(params)
    errors: Errors = {}
    refused = _own(user) is not None  # a party sees no other party's score
    if refused:
        errors["q"] = ("console.parties.error.refused", {})
    elif not plain_text(typed):
        errors["q"] = ("console.parties.error.q", {})
    if number is None:
        errors["page"] = ("console.search.error.page", {"max": MAX_PAGE})
    rows: list[dict[str, object]] = []
    has_next = False
    if not errors and number is not None:
        engine: Engine = request.app.state.engine
        now: int = request.app.state.clock()
        with session_scope(engine) as session:
            found = search_parties(
                session, PartyQuery(typed or None, (number - 1) * PAGE_SIZE, PAGE_SIZE)
            )
            rows = [
                {
                    "row": p,
                    "name": _name(language, p.name, p.name_en),
                    # An inspection agency is not scored: it produces nothing.
                    "credit": None
                    if p.kind == "inspector"
                    else party_credit(session, p.id, now, CREDIT_DAYS).score,
                }
                for p in found.rows
            ]
        has_next = found.has_next
        note_parties(request, *(p.id for p in found.rows))
    code = status.HTTP_422_UNPROCESSABLE_CONTENT if errors else status.HTTP_200_OK
    page_number = number or 1
    return page(
        "console/parties.html",
        language,
        status.HTTP_403_FORBIDDEN if refused else code,
        path=_parties_href(typed, page_number),
        user=user,
        section="parties",
        typed=typed,
        errors=errors,
        rows=rows,
        first=(page_number - 1) * PAGE_SIZE + 1,
        page_number=page_number,
        prev_href=_parties_href(typed, page_number - 1) if page_number > 1 else None,
        next_href=_parties_href(typed, page_number + 1) if has_next else None,
        credit_days=CREDIT_DAYS,
    )
