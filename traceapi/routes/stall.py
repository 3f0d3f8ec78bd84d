"""``GET /p/{party}``: one stall, one code (一摊一码): the public page of a party.

A buyer at a market stall scans the stall's own QR code and sees who sells there: the name,
registration or licence and place (registry data), the credit score with every deduction
explained, the products the party's devices signed records of most recently with their
verdicts (each checked now, as a scan checks it), and a feedback form: the buyer picks one of
those products, rates it and may complain (``POST /p/{party}/feedback``, stored as feedback on
that product, with the same hourly limit as the product page's form). ``GET /p/{party}/qr.svg``
(and ``.png``) is the code, ``GET /p/{party}/label`` a printable label. JSON on
``Accept: application/json``, as for product scans.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from traceapi.i18n import Lang, choose_language
from traceapi.openapi import errors
from traceapi.pages import render
from traceapi.routes.feedback import read_feedback_form, store_feedback
from traceapi.routes.qr import PNG, SVG, Border, Scale, qr_png, qr_svg
from traceapi.routes.scan import CREDIT_DAYS, wants_json
from traceapi.state import scan_policy
from traceapi.summary import describe
from traceapi.views import CreditOut, party_credit
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey, parse_party_id
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.trace import PartyInfo, assess_product, party_profiles, recent_products
from tracecore.verdict import decide

__all__ = ["StallOut", "StallProductOut", "router"]

router = APIRouter(tags=["trace"])

#: Products shown on a stall page.
RECENT: Final = 12

_HTML: Final = {"text/html": {"schema": {"type": "string"}}}
_NO_PARTY: Final = "no such party"


def _page(description: str) -> dict[str, Any]:
    """An error that is JSON on ``Accept: application/json``, else an HTML page."""
    answer = errors({404: description})[404]
    answer["content"].update(_HTML)
    return answer


LangQuery = Annotated[
    str | None, Query(max_length=16, description="page language: zh or en (else Accept-Language)")
]


class StallProductOut(BaseModel):
    """A product the party handled, with its verdict checked now."""

    key: str
    verdict: str
    what: str | None = Field(description="what it is, in the page's language")
    time_ms: int | None = Field(description="when it was registered (commissioned)")


class StallOut(BaseModel):
    """The public page of a party (a stall, a shop, a farm)."""

    id: str
    kind: str
    name: str
    name_en: str | None
    place: str | None
    place_en: str | None
    licence: str | None
    url: str = Field(description="the address its QR code encodes")
    credit: CreditOut
    products: list[StallProductOut]


def _url(request: Request, party: str) -> str:
    settings: Settings = request.app.state.settings
    return f"{settings.public_url.rstrip('/')}/p/{party}"


def _party(request: Request, party_id: str) -> PartyInfo | None:
    try:
        party_id = parse_party_id(party_id)
    except IdentifierError:
        return None
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        return party_profiles(session, {party_id}).get(party_id)


def _stall(request: Request, info: PartyInfo, language: Lang) -> StallOut:
    engine: Engine = request.app.state.engine
    now: int = request.app.state.clock()
    policy = scan_policy(request)
    products: list[StallProductOut] = []
    with session_scope(engine) as session:
        credit = party_credit(session, info.id, now, CREDIT_DAYS)
        for key in recent_products(session, info.id, RECENT):
            assessment = assess_product(session, ProductKey.parse_canonical(key), policy)
            if assessment is None or assessment.pending is not None:
                continue
            story = assessment.story
            verdict = decide(assessment.checks, story, suspect_copy=False)
            what = None if story is None or not assessment.ok else describe(story, language)[0]
            created = None if story is None else story.created
            products.append(
                StallProductOut(key=key, verdict=verdict.value, what=what, time_ms=created)
            )
    return StallOut(
        id=info.id,
        kind=info.kind,
        name=info.name,
        name_en=info.name_en,
        place=info.place,
        place_en=info.place_en,
        licence=info.licence,
        url=_url(request, info.id),
        credit=credit,
        products=products,
    )


@router.get(
    "/p/{party_id}",
    response_model=StallOut,
    summary="A party's public page (stall)",
    responses={
        200: {"content": _HTML},
        404: _page(_NO_PARTY),
        **errors({422: "a bad query parameter"}),
    },
)
def stall(
    party_id: str,
    request: Request,
    lang: LangQuery = None,
    feedback: Annotated[str | None, Query(max_length=16, include_in_schema=False)] = None,
) -> Response:
    """The stall page: who sells here, their credit and recent products; JSON on Accept."""
    language = choose_language(lang, request.headers.get("accept-language"))
    as_json = wants_json(request.headers.get("accept"))
    headers = {"Vary": "Accept, Accept-Language", "Cache-Control": "no-store"}
    info = _party(request, party_id)
    if info is None:
        if as_json:
            return Response('{"detail": "no such party"}', 404, headers, "application/json")
        html = render("stall_unknown.html", lang=language, path=request.url.path)
        return HTMLResponse(html, status_code=404, headers=headers)
    out = _stall(request, info, language)
    if as_json:
        return Response(out.model_dump_json(), 200, headers, media_type="application/json")
    html = render("stall.html", lang=language, stall=out, path=request.url.path, feedback=feedback)
    return HTMLResponse(html, headers=headers)


@router.post(
    "/p/{party_id}/feedback",
    status_code=status.HTTP_303_SEE_OTHER,
    response_class=RedirectResponse,
    responses={
        303: {
            "description": "back to the stall page",
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
        },
        **errors({404: _NO_PARTY, 422: "a bad rating or complaint, or not a product of the stall"}),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["product", "rating"],
                        "properties": {
                            "product": {
                                "type": "string",
                                "description": "the key of one of the stall's products",
                            },
                            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                            "complaint": {"type": "string", "maxLength": 2000},
                            "lang": {"type": "string", "enum": ["zh", "en"]},
                        },
                    }
                }
            },
        }
    },
)
async def stall_feedback(party_id: str, request: Request) -> Response:
    """The stall page's form: rate one of the stall's recent products (public, rate-limited)."""
    info = _party(request, party_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such party")
    body, lang, form = await read_feedback_form(request)
    key = (form.get("product") or [""])[0]
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        recent = recent_products(session, info.id, RECENT)
    if key not in recent:
        # Only what the stall shows: feedback counts against the product's owner's credit.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "product must be one of the stall's products"
        )
    stored = store_feedback(request, ProductKey.parse_canonical(key), body)
    outcome = "thanks" if stored is not None else "limited"
    return RedirectResponse(
        f"/p/{info.id}?lang={lang}&feedback={outcome}", status.HTTP_303_SEE_OTHER
    )


_STALL_QR_404: Final = {
    "description": _NO_PARTY,
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@router.get(
    "/p/{party_id}/qr.svg",
    response_class=Response,
    responses={
        200: {"description": "the QR code", "content": SVG},
        404: _STALL_QR_404,
        **errors({422: "a bad scale or border"}),
    },
)
def stall_qr_svg(party_id: str, request: Request, scale: Scale = 4, border: Border = 4) -> Response:
    """The stall's QR code (SVG) encoding its page's address."""
    info = _party(request, party_id)
    if info is None:
        return Response("no such party\n", 404, media_type="text/plain")
    body = qr_svg(_url(request, info.id), scale=scale, border=border)
    return Response(body, media_type="image/svg+xml")


@router.get(
    "/p/{party_id}/qr.png",
    response_class=Response,
    responses={
        200: {"description": "the QR code", "content": PNG},
        404: _STALL_QR_404,
        **errors({422: "a bad scale or border"}),
    },
)
def stall_qr_png(party_id: str, request: Request, scale: Scale = 4, border: Border = 4) -> Response:
    """The stall's QR code (PNG) encoding its page's address."""
    info = _party(request, party_id)
    if info is None:
        return Response("no such party\n", 404, media_type="text/plain")
    return Response(
        qr_png(_url(request, info.id), scale=scale, border=border), media_type="image/png"
    )


@router.get(
    "/p/{party_id}/label",
    response_class=HTMLResponse,
    responses={
        404: {"description": _NO_PARTY, "content": _HTML},
        **errors({422: "a bad query parameter"}),
    },
)
def stall_label(party_id: str, request: Request, lang: LangQuery = None) -> HTMLResponse:
    """A printable label with the stall's QR code, name and what scanning it shows."""
    language = choose_language(lang, request.headers.get("accept-language"))
    info = _party(request, party_id)
    if info is None:
        html = render("stall_unknown.html", lang=language, path=request.url.path)
        return HTMLResponse(html, status_code=404)
    svg = qr_svg(_url(request, info.id), scale=6, border=4).decode("utf-8").split("?>", 1)[-1]
    html = render(
        "stall_label.html",
        lang=language,
        info=info,
        url=_url(request, info.id),
        svg=Markup(svg),  # noqa: S704 (pyqrcode output: rectangles and the escaped URI)
        path=request.url.path,
    )
    return HTMLResponse(html)
