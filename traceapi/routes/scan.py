"""``GET /01/...``: what a buyer sees after scanning a product's QR code (design.md).

The path is a GS1 Digital Link path (``/01/{gtin}/10/{lot}``, ``/01/{gtin}/21/{serial}`` or
``/01/{gtin}/10/{lot}/21/{serial}``). The answer is an HTML page by default and JSON
(:class:`traceapi.views.ScanOut`) when the client prefers ``application/json``.

* A non-canonical spelling (a GTIN-13, lowercase escapes) is redirected (308) to the
  canonical path, so every product has one URL.
* A code that is not a product key, or names no registered product, is 404 with verdict
  ``unknown``: the page tells the buyer the code is not registered and may be counterfeit.
* Otherwise the product's evidence is rebuilt from the stored raw bytes and verified now
  (:func:`tracecore.storage.trace.assess_product`); the verdict and every check behind it are
  in the answer.
* A scan of a serialized code is logged with a keyed hash of the client address and an
  optional coarse ``place`` the client gives; more distinct clients than
  ``AGRITRACE_COPY_THRESHOLD`` within ``AGRITRACE_COPY_WINDOW_HOURS`` make it ``suspect_copy``.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import Engine

from traceapi.chart import temperature_svg
from traceapi.i18n import Lang, choose_language, step_label, text
from traceapi.pages import render
from traceapi.paths import raw_path
from traceapi.state import client_address, scan_policy, scan_salt
from traceapi.views import ScanOut, build_view, party_credit, unknown_view
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.trace import (
    assess_product,
    children_of,
    client_hash,
    party_names,
    record_scan,
    scan_stats,
)
from tracecore.verdict import MAX_CHART_POINTS, SensorPoint, Story

__all__ = ["chart_series", "cold_chain_limit", "router", "wants_json"]

router = APIRouter(tags=["trace"])

_HOUR_MS: Final = 3_600_000
#: The window of the producer credit score shown on pages.
CREDIT_DAYS: Final = 90
_PLACE_MAX: Final = 64

#: Responses of the scan route for the OpenAPI document.
_RESPONSES: Final[dict[int | str, dict[str, object]]] = {
    200: {"model": ScanOut, "content": {"text/html": {}}},
    308: {"description": "redirect to the canonical Digital Link path"},
    404: {"model": ScanOut, "description": "unknown code (verdict unknown)"},
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


def cold_chain_limit(story: Story) -> float | None:
    """The temperature limit drawn on the product's chart (°C), by what the product is.

    Only food made from something has one: a flock or a live animal (a product without
    parents) has none. Meat cuts 4 °C and carcasses 7 °C (EU Reg. 853/2004 Annex III §I.VII;
    GB/T 40466-2021 chilled meat), eggs 7.2 °C (US FDA 21 CFR 118.4(e)); None when the evidence
    says neither. Whether the limit was kept is the contracts' verdict, not the chart's.
    """
    if not story.parents.get(story.product):
        return None
    steps = {e.step for e in story.events}
    if "killing" in steps:
        own = [e for e in story.events if story.product in e.products]
        return 4.0 if any("cut" in (e.data or {}) for e in own) else 7.0
    egg_words = {"eggs_per_case", "hens"}
    if "collecting" in steps or any(egg_words & set(e.data or {}) for e in story.events):
        return 7.2
    return None


def chart_series(story: Story) -> dict[str, list[SensorPoint]]:
    """The temperature series (°C) of the chart, one per device.

    They are the readings of the product and of its ancestors that are food themselves (have
    parents): a hen house or a live animal is not held to the food's cold-chain limit.
    """
    food = {story.product} | {a for a in story.ancestors() if story.parents.get(a)}
    series: dict[str, list[SensorPoint]] = {}
    for point in story.readings:
        if point.type == "Temperature" and point.uom == "CEL" and food.intersection(point.products):
            series.setdefault(point.device, []).append(point)
    return series


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
    lang: Annotated[Lang | None, Query(description="page language: zh or en")] = None,
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
        assessment = assess_product(session, key, policy)
        if assessment is None:
            view = unknown_view(f"{key.path} is not registered")
            return _answer(view, 404, as_json, language, request)
        story = assessment.story
        ids = set() if story is None else {*story.devices.values(), *(r.by for r in story.recalls)}
        names = party_names(session, ids)
        children = children_of(session, key.path)
        credit = None
        if story is not None and story.owner is not None and assessment.ok:
            credit = party_credit(session, story.owner, now, CREDIT_DAYS)
    stats = None
    if key.serial is not None:
        # A transaction of its own, as short as can be: on SQLite the scan's write holds the
        # database's one write lock, which every other API process and ingest wait for.
        client = client_hash(scan_salt(request), client_address(request))
        with session_scope(engine) as session:
            record_scan(session, key.path, client, (place or "").strip() or None, now)
            window_ms = int(settings.copy_window_hours * _HOUR_MS)
            stats = scan_stats(session, key.path, now - window_ms)
    view = build_view(
        assessment,
        public_url=settings.public_url,
        names=names,
        children=children,
        scans=stats,
        threshold=settings.copy_threshold,
        window_hours=settings.copy_window_hours,
        step_label=lambda step: step_label(language, step),
    )
    view.producer_credit = credit
    return _answer(view, 200, as_json, language, request, story=story, feedback=feedback)


def _answer(
    view: ScanOut,
    status_code: int,
    as_json: bool,  # noqa: FBT001
    language: Lang,
    request: Request,
    *,
    story: Story | None = None,
    feedback: str | None = None,
) -> Response:
    headers = {"Vary": "Accept, Accept-Language", "Cache-Control": "no-store"}
    if as_json:
        return Response(view.model_dump_json(), status_code, headers, media_type="application/json")
    chart = ""
    counts: dict[str, tuple[int, int]] = {}
    if story is not None:
        series = chart_series(story)
        counts = {
            device: (min(len(points), MAX_CHART_POINTS), len(points))
            for device, points in sorted(series.items())
        }
        chart = temperature_svg(
            series,
            limit=cold_chain_limit(story),
            labels={
                "limit": text(language, "chart.limit"),
                "excursion": text(language, "chart.excursion"),
            },
        )
    html = render(
        "product.html" if view.product is not None else "unknown.html",
        lang=language,
        view=view,
        chart=Markup(chart),  # noqa: S704 (built from numbers and escaped text in chart.py)
        chart_counts=counts,
        feedback=feedback,
        path=request.url.path,
        public_url=request.app.state.settings.public_url.rstrip("/"),
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)
