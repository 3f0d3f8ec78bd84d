"""What every console page shares: headers, language, rendering, forms and their CSRF check.

Each section of the console (search, dossiers, rejections, the access trail) is a module of this
package with its own router; they render through :func:`page` so that every answer carries the
same headers, and read POST bodies through :func:`read_form`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from traceapi.console.session import ConsoleUser
from traceapi.i18n import Lang, choose_language
from traceapi.pages import render

__all__ = [
    "FORM_LIMIT",
    "HEADERS",
    "LangQuery",
    "csrf_matches",
    "page",
    "page_language",
    "read_form",
]

#: The largest console form (``traceapi.limits.CONSOLE_MAX_BODY``): a token, a CSRF token, a few
#: short fields, or an answer of 2,000 Chinese characters (18,000 bytes percent-encoded).
FORM_LIMIT: Final = 32_768
#: Every console answer: never cached, never framed by another site (clickjacking).
HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'; form-action 'self'",
    "Referrer-Policy": "same-origin",
}

#: The ``?lang=`` of every console page.
LangQuery = Annotated[str | None, Query(max_length=16)]


def page_language(request: Request, explicit: str | None) -> Lang:
    """The page's language: ``explicit`` if valid, else the browser's choice, else zh."""
    return choose_language(explicit, request.headers.get("accept-language"))


def page(template: str, lang: Lang, status_code: int = 200, **context: object) -> HTMLResponse:
    """Render a console template with the console's headers."""
    html = render(template, lang=lang, **context)
    return HTMLResponse(html, status_code=status_code, headers=dict(HEADERS))


async def read_form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a console POST, first value per field (empty when malformed)."""
    raw = await request.body()
    if len(raw) > FORM_LIMIT:
        return {}
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def csrf_matches(user: ConsoleUser, form: dict[str, str]) -> bool:
    """True if the form carries the session's CSRF token (constant time)."""
    return hmac.compare_digest(user.csrf.encode(), form.get("csrf", "").encode("utf-8"))
