"""QR codes (pyqrcode): ``GET /qr/{key}.svg``, ``GET /qr/{key}.png`` and label sheets.

Each code encodes the product's GS1 Digital Link URI ``{AGRITRACE_PUBLIC_URL}/{key}`` (design.md,
"Identifiers"), with error correction level M (ISO/IEC 18004: about 15 % of the modules may be
damaged). ``scale`` is the size of one module in pixels, ``border`` the quiet zone in modules
(ISO/IEC 18004 asks for 4).

``GET /qr/{key}/labels`` is a printable HTML sheet: for a lot key, one label per serialized
product of the lot (``?serials=a,b,c`` picks some, or names serials to print before they are
registered); for any other key, one label.
"""

from __future__ import annotations

import io
from typing import Annotated, Any, Final

import pyqrcode
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy import Engine
from sqlmodel import col, select

from traceapi.i18n import choose_language
from traceapi.openapi import errors
from traceapi.pages import render
from traceapi.paths import raw_product_key
from tracecore.identifiers import ProductKey
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Product

__all__ = ["MAX_LABELS", "Border", "Scale", "qr_png", "qr_svg", "router"]

router = APIRouter(tags=["qr"])

#: The most labels one sheet holds.
MAX_LABELS: Final = 500
_ERROR_LEVEL: Final = "M"


def qr_svg(uri: str, *, scale: int, border: int) -> bytes:
    """The QR code of ``uri`` as an SVG document."""
    buffer = io.BytesIO()
    pyqrcode.create(uri, error=_ERROR_LEVEL).svg(
        buffer, scale=scale, quiet_zone=border, xmldecl=True, svgns=True, title=uri
    )
    return buffer.getvalue()


def qr_png(uri: str, *, scale: int, border: int) -> bytes:
    """The QR code of ``uri`` as a PNG image."""
    buffer = io.BytesIO()
    pyqrcode.create(uri, error=_ERROR_LEVEL).png(buffer, scale=scale, quiet_zone=border)
    return buffer.getvalue()


#: The product key in the path of a QR route breaks a rule (docs/identifiers.md).
BAD_KEY: Final = errors({422: "the product key breaks a rule of docs/identifiers.md"})
SVG: Final = {"image/svg+xml": {"schema": {"type": "string"}}}
# OpenAPI 3.1 §4.8.14.3: raw binary content is a media type without a schema.
PNG: Final[dict[str, dict[str, Any]]] = {"image/png": {}}


def _uri(request: Request, key: ProductKey) -> str:
    settings: Settings = request.app.state.settings
    return key.uri(settings.public_url)


Scale = Annotated[int, Query(ge=1, le=40, description="pixels per module")]
Border = Annotated[int, Query(ge=0, le=20, description="quiet zone in modules")]


@router.get(
    "/qr/{key:path}.svg",
    response_class=Response,
    responses={200: {"description": "the QR code", "content": SVG}, **BAD_KEY},
)
def get_qr_svg(key: str, request: Request, scale: Scale = 4, border: Border = 4) -> Response:  # noqa: ARG001 (parsed from the raw path)
    """The product's QR code (SVG) encoding its Digital Link URI."""
    product = raw_product_key(request, "/qr/", ".svg")
    body = qr_svg(_uri(request, product), scale=scale, border=border)
    return Response(body, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@router.get(
    "/qr/{key:path}.png",
    response_class=Response,
    responses={200: {"description": "the QR code", "content": PNG}, **BAD_KEY},
)
def get_qr_png(key: str, request: Request, scale: Scale = 4, border: Border = 4) -> Response:  # noqa: ARG001 (parsed from the raw path)
    """The product's QR code (PNG) encoding its Digital Link URI."""
    product = raw_product_key(request, "/qr/", ".png")
    body = qr_png(_uri(request, product), scale=scale, border=border)
    return Response(body, media_type="image/png", headers={"Cache-Control": "max-age=86400"})


@router.get(
    "/qr/{key:path}/labels",
    response_class=HTMLResponse,
    responses=errors(
        {
            400: f"serials= without a lot key, or more than {MAX_LABELS} labels",
            422: "the product key breaks a rule of docs/identifiers.md",
        }
    ),
)
def get_labels(
    key: str,  # noqa: ARG001 (parsed from the raw path)
    request: Request,
    serials: Annotated[
        str | None, Query(max_length=20_000, description="comma-separated serials of the lot")
    ] = None,
    lang: Annotated[
        str | None, Query(max_length=16, description="zh or en (else Accept-Language)")
    ] = None,
    scale: Scale = 3,
) -> HTMLResponse:
    """A printable sheet of QR labels: one per serial of a lot, or one for the key."""
    product = raw_product_key(request, "/qr/", "/labels")
    keys: list[ProductKey]
    if serials is not None:
        if product.lot is None or product.serial is not None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "serials= needs a lot key")
        names = [s.strip() for s in serials.split(",") if s.strip()]
        keys = [ProductKey.from_parts(product.gtin, product.lot, s) for s in names]
    elif product.lot is not None and product.serial is None:
        prefix = product.path + "/21/"
        engine: Engine = request.app.state.engine
        with session_scope(engine) as session:
            rows = session.scalars(
                select(col(Product.key))
                .where(col(Product.key).startswith(prefix, autoescape=True))
                .order_by(col(Product.key))
                .limit(MAX_LABELS + 1)
            ).all()
        keys = [ProductKey.parse_canonical(row) for row in rows] or [product]
    else:
        keys = [product]
    if len(keys) > MAX_LABELS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"at most {MAX_LABELS} labels a sheet")
    labels = [
        {
            "key": k,
            "uri": _uri(request, k),
            "svg": Markup(  # noqa: S704 (pyqrcode output: an SVG of rectangles and the escaped URI)
                qr_svg(_uri(request, k), scale=scale, border=4).decode("utf-8").split("?>", 1)[-1]
            ),
        }
        for k in keys
    ]
    language = choose_language(lang, request.headers.get("accept-language"))
    html = render("labels.html", lang=language, labels=labels, path=request.url.path)
    return HTMLResponse(html)
