"""``GET /01/...``: what a buyer sees after scanning a product's QR code (design.md).

The path is a GS1 Digital Link path (``/01/{gtin}/10/{lot}``, ``/01/{gtin}/21/{serial}`` or
``/01/{gtin}/10/{lot}/21/{serial}``). The answer is an HTML page by default and JSON
(:class:`traceapi.views.ScanOut`) when the client prefers ``application/json``.

* A non-canonical spelling (a GTIN-13, lowercase escapes) is redirected (308) to the
  canonical path, so every product has one URL.
* A code that is not a product key, or names no registered product, is 404 with verdict
  ``unknown``: the page tells the buyer the code is not registered and may be counterfeit.
* A serialized code names its item by GTIN + serial (GS1 General Specifications §3.5.2,
  :mod:`tracecore.storage.items`): ``/01/{gtin}/21/{serial}`` answers for the product
  registered as ``/01/{gtin}/10/{lot}/21/{serial}`` and the other way round, with ``scanned``
  set. A code whose lot is not the registered product's lot is ``unknown`` (404), never the
  other lot's product; so is a code without a lot that several products registered before
  serials had to be unique share.
* Otherwise the product's evidence is rebuilt from the stored raw bytes and verified now
  (:func:`tracecore.storage.trace.assess_product`); the verdict and every check behind it are
  in the answer.
* A scan of a serialized code is logged with a keyed hash of the client address and an
  optional coarse ``place`` the client gives; more distinct clients than
  ``AGRITRACE_COPY_THRESHOLD`` within ``AGRITRACE_COPY_WINDOW_HOURS`` make it ``suspect_copy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import Engine
from sqlmodel import Session

from traceapi.chart import COLOURS, ChartText, hourly_table, temperature_svg
from traceapi.i18n import Lang, choose_language, text
from traceapi.openapi import errors
from traceapi.pages import format_time, render
from traceapi.paths import raw_path
from traceapi.state import client_address, scan_policy, scan_salt
from traceapi.summary import (
    Summary,
    chart_series,
    duration,
    origin_party,
    story_parties,
    summarise,
)
from traceapi.views import CreditOut, ScanOut, build_view, party_credit, unknown_view
from traceapi.vocabulary import event_name, pick
from tracecore.bundle import Policy
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope, statistics_scope
from tracecore.storage.items import Match, find_product
from tracecore.storage.trace import (
    PartyInfo,
    ProductAssessment,
    ScanStats,
    assess_product,
    children_of,
    client_hash,
    device_places,
    party_profiles,
    record_scan,
    scan_stats,
)
from tracecore.verdict import MAX_CHART_POINTS, Story

__all__ = [
    "Evidence",
    "Page",
    "product_view",
    "read_evidence",
    "router",
    "story_context",
    "wants_json",
]

router = APIRouter(tags=["trace"])

_HOUR_MS: Final = 3_600_000
#: The window of the producer credit score shown on pages.
CREDIT_DAYS: Final = 90
_PLACE_MAX: Final = 64

#: Responses of the scan route for the OpenAPI document.
_HTML: Final = {"text/html": {"schema": {"type": "string"}}}
_RESPONSES: Final[dict[int | str, dict[str, object]]] = {
    200: {
        "model": ScanOut,
        "description": "the verdict and the story: a page, or JSON on Accept: application/json",
        "content": _HTML,
    },
    308: {
        "description": "a non-canonical spelling (a GTIN-13, lowercase escapes): to the canonical",
        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
    },
    404: {
        "model": ScanOut,
        "description": "not a product code, nobody registered it, or a serialized code whose "
        "lot is not the registered item's (verdict unknown)",
        "content": _HTML,
    },
    **errors({422: "a bad query parameter"}),
}


def wants_json(accept: str | None) -> bool:
    """True when ``Accept`` ranks ``application/json`` above ``text/html`` (RFC 9110 §12.5.1)."""
    best = {"application/json": 0.0, "text/html": 0.0}
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media in best:
            best[media] = max(best[media], quality)
    return best["application/json"] > best["text/html"]


@router.get(
    # "/01" and anything after it, so that every malformed code still gets the unknown answer.
    "/01{rest:path}",
    response_model=ScanOut,
    responses=_RESPONSES,
    summary="Scan a product (GS1 Digital Link)",
)
def scan(
    rest: str,  # noqa: ARG001 (the raw path is parsed instead: escapes like %2F stay intact)
    request: Request,
    lang: Annotated[
        str | None,
        Query(
            max_length=16,
            description="page language: zh or en; anything else falls back to Accept-Language",
        ),
    ] = None,
    place: Annotated[
        str | None,
        Query(max_length=_PLACE_MAX, description="coarse place of the scan, e.g. a city"),
    ] = None,
    feedback: Annotated[str | None, Query(max_length=16, include_in_schema=False)] = None,
) -> Response:
    """The product's verdict and story: HTML by default, JSON on ``Accept: application/json``."""
    as_json = wants_json(request.headers.get("accept"))
    language = choose_language(lang, request.headers.get("accept-language"))
    raw = raw_path(request)
    try:
        key = ProductKey.parse(raw)
    except IdentifierError as exc:
        return _answer(unknown_view(f"not a product code: {exc}"), 404, as_json, language, request)
    if "/" + key.path != raw:
        target = "/" + key.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(target, status_code=status.HTTP_308_PERMANENT_REDIRECT)
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    policy = scan_policy(request)
    with session_scope(engine) as session:
        found = find_product(session, key)
        product = found.product
        # Device places name chart series on the page only: a JSON scan does not read them.
        evidence = (
            None
            if product is None
            else read_evidence(session, product, policy, now, places=not as_json)
        )
        if product is None or evidence is None:
            view = unknown_view(found.detail or f"{key.path} is not registered")
            return _answer(view, 404, as_json, language, request, match=found.match)
    stats = None
    if product.serial is not None:
        # A transaction of its own, as short as can be, whose commit does not wait for the
        # disk: on SQLite the scan's write holds the database's one write lock, which every
        # other API process and ingest wait for (docs/operations.md, "Durability"). Counted
        # for the registered product, whichever form of its code was scanned: copies of one
        # item's code are one item's scans.
        client = client_hash(scan_salt(request), client_address(request))
        with statistics_scope(engine) as session:
            record_scan(session, product.path, client, (place or "").strip() or None, now)
            window_ms = int(settings.copy_window_hours * _HOUR_MS)
            stats = scan_stats(session, product.path, now - window_ms)
    view = product_view(evidence, settings, stats, language)
    if found.match is Match.ITEM:
        view.scanned = key.path
    page = evidence.page(found.unconfirmed_lot)
    return _answer(view, 200, as_json, language, request, page=page, feedback=feedback)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a scan reads about a registered product besides its scans: the product's checked
    evidence, the registry's profiles and places, the products made from it, the producer's
    credit."""

    assessment: ProductAssessment
    profiles: Mapping[str, PartyInfo]
    places: Mapping[str, tuple[str | None, str | None]]
    children: list[str]
    credit: CreditOut | None

    def page(self, unconfirmed_lot: str | None = None) -> Page:
        """What the HTML page needs beyond the view."""
        return Page(
            self.assessment.story, self.profiles, self.places, self.children, unconfirmed_lot
        )


def read_evidence(
    session: Session, product: ProductKey, policy: Policy, now_ms: int, *, places: bool
) -> Evidence | None:
    """Read and check ``product``'s evidence as a scan does (None for an unknown product).

    ``places``: read the places of the devices too (pages name chart series after them).
    """
    assessment = assess_product(session, product, policy)
    if assessment is None:
        return None
    story = assessment.story
    profiles = party_profiles(session, set() if story is None else story_parties(story))
    found = {} if not places or story is None else device_places(session, set(story.devices))
    children = children_of(session, product.path)
    credit = None
    producer = None if story is None else origin_party(story)
    if producer is not None and assessment.ok:
        credit = party_credit(session, producer, now_ms, CREDIT_DAYS)
    return Evidence(assessment, profiles, found, children, credit)


def product_view(
    evidence: Evidence, settings: Settings, stats: ScanStats | None, language: Lang
) -> ScanOut:
    """The scan answer for ``evidence`` with the product's scan statistics ``stats``."""
    view = build_view(
        evidence.assessment,
        public_url=settings.public_url,
        names={party: info.name for party, info in evidence.profiles.items()},
        children=evidence.children,
        scans=stats,
        threshold=settings.copy_threshold,
        window_hours=settings.copy_window_hours,
        step_label=lambda step, data: event_name(language, step, data),
    )
    view.producer_credit = evidence.credit
    return view


@dataclass(frozen=True, slots=True)
class Page:
    """What the HTML page needs beyond the JSON view: the story and the registry's profiles."""

    story: Story | None
    profiles: Mapping[str, PartyInfo]
    places: Mapping[str, tuple[str | None, str | None]]
    children: list[str]
    # The lot printed on the scanned code when the product is registered without one.
    unconfirmed_lot: str | None = None


def _answer(
    view: ScanOut,
    status_code: int,
    as_json: bool,  # noqa: FBT001
    language: Lang,
    request: Request,
    *,
    page: Page | None = None,
    feedback: str | None = None,
    match: Match | None = None,
) -> Response:
    headers = {"Vary": "Accept, Accept-Language", "Cache-Control": "no-store"}
    if as_json:
        return Response(view.model_dump_json(), status_code, headers, media_type="application/json")
    public_url = request.app.state.settings.public_url.rstrip("/")
    context: dict[str, object] = {
        "view": view,
        "feedback": feedback,
        "path": request.url.path,
        "public_url": public_url,
        "match": None if match is None else match.value,
        "unconfirmed_lot": None if page is None else page.unconfirmed_lot,
    }
    if page is not None:
        context.update(story_context(view, page, language))
    html = render(
        "product.html" if view.product is not None else "unknown.html", lang=language, **context
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def story_context(view: ScanOut, page: Page, language: Lang) -> dict[str, object]:
    """The page's summary, temperature chart and recallers' names, in ``language``.

    No summary or chart for a product whose evidence failed a check or waits for a checkpoint:
    their content would vouch for what is not verified.
    """
    context: dict[str, object] = {}
    story = page.story
    if story is not None and view.verdict != "integrity_failure" and not view.pending:
        summary = summarise(
            story,
            lang=language,
            contracts=[(c.id, c.status) for c in view.contracts],
            profiles=page.profiles,
            places=page.places,
            children=page.children,
        )
        context["summary"] = summary
        context.update(_chart_context(story, summary, language))
    context["recall_parties"] = {
        pid: info.name_en if language == "en" and info.name_en else pick(language, info.name)
        for pid, info in page.profiles.items()
    }
    return context


def _chart_context(story: Story, summary: Summary, language: Lang) -> dict[str, object]:
    """The chart, its legend and its table for the page (empty when there are no readings)."""
    series = chart_series(story)
    if not series:
        return {}
    limit = summary.cold_chain.limit
    times = [p.time for points in series.values() for p in points]
    values = {
        "series": len(series),
        "start": format_time(min(times)),
        "end": format_time(max(times)),
        "limit": f"{limit:g}" if limit is not None else "",
    }
    words = ChartText(
        title=text(language, "chart.title"),
        description=text(
            language, "chart.desc" if limit is not None else "chart.desc_nolimit", **values
        ),
        limit=text(language, "chart.limit"),
    )
    svg = temperature_svg(
        series,
        limit=limit,
        names=summary.series_names,
        excursions=[
            (e.start_ms, e.end_ms, duration(language, e.minutes))
            for e in summary.cold_chain.excursions
        ],
        text=words,
    )
    legend = [
        (
            COLOURS[n % len(COLOURS)],
            summary.series_names.get(device, device),
            min(len(points), MAX_CHART_POINTS),  # downsampled to this many (min/max buckets)
            len(points),
        )
        for n, (device, points) in enumerate(sorted(series.items()))
    ]
    return {
        "chart": Markup(svg),  # noqa: S704 (built from numbers and escaped text in chart.py)
        "chart_legend": legend,
        "chart_table": hourly_table(series, summary.series_names),
    }
