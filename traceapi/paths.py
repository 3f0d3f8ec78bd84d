"""Product keys from request paths, read from the raw path so that escapes survive.

Starlette decodes ``%2F`` in the path to ``/`` before routing, which would split a lot such as
``A/B`` (sent as ``A%2FB``, design.md "Identifiers") into two segments. Routes that take a
product key therefore parse it from the raw path (ASGI ``raw_path``), between a known prefix
and suffix.
"""

from __future__ import annotations

from fastapi import Request

from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey

__all__ = ["raw_path", "raw_product_key"]


def raw_path(request: Request) -> str:
    """The path as the client sent it, without the query (percent-escapes intact)."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    return path.split("?", 1)[0]


def raw_product_key(request: Request, prefix: str, suffix: str = "") -> ProductKey:
    """Parse the product key between ``prefix`` and ``suffix`` of the raw path.

    Raises :class:`IdentifierError` when the path does not have that shape or the key is bad.
    """
    path = raw_path(request)
    if not path.startswith(prefix) or not path.endswith(suffix):
        raise IdentifierError(f"expected a path {prefix}<product key>{suffix}")
    return ProductKey.parse(path[len(prefix) : len(path) - len(suffix)])
