"""The OpenAPI document of the trace API (``/openapi.json``), as other people's tools need it.

FastAPI describes each route from its signature; this module finishes that description in one
place, so that a linter accepts the document and a client generated from it works
(docs/registry-api.md, "OpenAPI"):

* **Product keys and tile paths as path templates.** Routes that take a product key or a tile
  path read it from the raw path (``{key:path}``, :mod:`traceapi.paths`), which OpenAPI cannot
  describe: a generated client would percent-encode the slashes of one ``key`` parameter. The
  document has one path per GS1 Digital Link form instead (``…/01/{gtin}/10/{lot}``,
  ``…/01/{gtin}/21/{serial}``, ``…/01/{gtin}/10/{lot}/21/{serial}``; docs/identifiers.md) and
  one per C2SP tlog-tiles index length (``…/tile/{level}/x{n1}/{n2}[.p/{width}]``). The served
  routes are unchanged: each templated path is a URL they already answer.
* **Bearer security per operation**: the operations whose route depends on
  :func:`traceapi.auth.authenticate` require the ``bearerAuth`` scheme and document 401 (with
  ``WWW-Authenticate``) and 403; every other operation declares that it needs none.
* **Every status a route answers**: each route declares its own errors (:func:`errors`); the
  answers every route of a kind shares are added here: 503 with ``Retry-After`` while the
  database is unavailable (:mod:`traceapi.availability`: every route but
  :data:`~traceapi.availability.WITHOUT_DATABASE`), 400 and 413 of the body limit
  (:mod:`traceapi.limits`) for operations with a request body, FastAPI's 422 as this app
  sends it (``{"detail": "..."}``), and what ``agritrace serve`` answers before a route runs:
  408 to a request that does not arrive in time, 503 (text/plain) beyond its connection limit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel

from traceapi.auth import authenticate
from traceapi.availability import RETRY_AFTER_S, WITHOUT_DATABASE
from tracecore.tiles import MAX_LEVEL, TILE_WIDTH

__all__ = [
    "BEARER",
    "GTIN_PATTERN",
    "KEY_FORMS",
    "MAX_INDEX_ELEMENTS",
    "VALUE_PATTERN",
    "ErrorOut",
    "build_openapi",
    "errors",
]

#: The name of the bearer security scheme in the document.
BEARER: Final = "bearerAuth"

#: The GS1 Digital Link forms of a product key (docs/identifiers.md), by operation id suffix.
KEY_FORMS: Final[Mapping[str, str]] = {
    "by_lot": "01/{gtin}/10/{lot}",
    "by_serial": "01/{gtin}/21/{serial}",
    "by_lot_serial": "01/{gtin}/10/{lot}/21/{serial}",
}
_FORM_NAMES: Final = {
    "by_lot": "GTIN and lot",
    "by_serial": "GTIN and serial",
    "by_lot_serial": "GTIN, lot and serial",
}

#: C2SP tlog-tiles index lengths described: a log of at most 2**63 entries has at most
#: 2**63 / 256 tiles a level, an index of 17 digits: 6 three-digit path elements.
MAX_INDEX_ELEMENTS: Final = 6

# docs/identifiers.md. GTIN (AI 01): 8, 12, 13 or 14 digits (GS1 GenSpecs §3.3.2); the check
# digit (§7.9.1) is checked by the server (422). Lot (AI 10) and serial (AI 21): 1-20
# characters of GS1 AI encodable character set 82 (GenSpecs Figure 7.11-1: ! " % & ' ( ) * + ,
# - . / 0-9 : ; < = > ? A-Z _ a-z; "%-?" is the ASCII run 0x25-0x3F), never "." or ".."
# (RFC 3986 §5.2.4). In the path a value is percent-encoded like any path parameter.
GTIN_PATTERN: Final = r"^([0-9]{8}|[0-9]{12,14})$"
VALUE_PATTERN: Final = r'^(?!\.\.?$)[!"%-?A-Z_a-z]{1,20}$'

_PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "Gtin": {
        "name": "gtin",
        "in": "path",
        "required": True,
        "description": (
            "GTIN (AI 01): 8, 12, 13 or 14 digits with a valid GS1 check digit; the canonical "
            "form is the GTIN-14 (docs/identifiers.md)"
        ),
        "schema": {"type": "string", "pattern": GTIN_PATTERN, "examples": ["06901234567892"]},
    },
    "Lot": {
        "name": "lot",
        "in": "path",
        "required": True,
        "description": (
            "lot (AI 10): 1-20 characters of GS1 AI encodable character set 82, percent-encoded "
            "in the path (a lot A/B is sent as A%2FB)"
        ),
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 20,
            "pattern": VALUE_PATTERN,
            "examples": ["L2611"],
        },
    },
    "Serial": {
        "name": "serial",
        "in": "path",
        "required": True,
        "description": (
            "serial (AI 21): 1-20 characters of GS1 AI encodable character set 82, "
            "percent-encoded in the path"
        ),
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 20,
            "pattern": VALUE_PATTERN,
            "examples": ["C0042"],
        },
    },
    "TileWidth": {
        "name": "width",
        "in": "path",
        "required": True,
        "description": "the number of hashes (or entries) of a partial tile (C2SP tlog-tiles)",
        "schema": {"type": "integer", "minimum": 1, "maximum": TILE_WIDTH - 1},
    },
}


class ErrorOut(BaseModel):
    """An error answer: one readable message (docs/registry-api.md, "Errors")."""

    detail: str


_ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorOut"}
_JSON_ERROR: Final = {"application/json": {"schema": _ERROR_REF}}


def errors(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """Return ``responses=`` for a route: each status, its description and a JSON ``ErrorOut``.

    JSON even on a route whose answer is a page or an image: its errors are JSON
    (traceapi.app). (FastAPI would put a ``model`` under the route's own media type.)
    """
    return {
        code: {"description": text, "content": copy.deepcopy(_JSON_ERROR)}
        for code, text in described.items()
    }


def _error(description: str, header: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """An error answer (``ErrorOut``), with a header ``(name, header object)`` if given."""
    answer: dict[str, Any] = {"description": description, "content": copy.deepcopy(_JSON_ERROR)}
    if header is not None:
        answer["headers"] = dict([header])
    return answer


def _header(description: str, *, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


def _unavailable(*, pages: bool) -> dict[str, Any]:
    """The 503 of :mod:`traceapi.availability` (a bilingual page for a browser on ``pages``)."""
    retry = _header(
        f"seconds to wait ({RETRY_AFTER_S}); sent while the database is unavailable",
        required=False,
        schema={"type": "integer", "minimum": 0},
    )
    answer = _error(
        "the database is unavailable, or the schema is not migrated yet: retry later",
        ("Retry-After", retry),
    )
    if pages:
        answer["content"]["text/html"] = {"schema": {"type": "string"}}
    return answer


def _uses(dependant: Dependant, call: Callable[..., Any]) -> bool:
    """True if ``call`` is among the dependencies of ``dependant``, at any depth."""
    return any(
        dependency.call is call or _uses(dependency, call) for dependency in dependant.dependencies
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """What the document needs of a route: its path (``{key:path}``), the path FastAPI
    documents it under (``{key}``), its name (the operation id) and its dependencies."""

    path: str
    documented: str
    name: str
    methods: frozenset[str]
    dependant: Dependant

    @classmethod
    def of(cls, context: RouteContext) -> _Route:
        """The route of ``context`` (an APIRoute's, possibly of an included router)."""
        path, documented, name = context.path, context.path_format, context.name
        if path is None or documented is None or name is None:
            raise RuntimeError(f"a route without a path or a name: {context!r}")
        return cls(path, documented, name, frozenset(context.methods or ()), context.dependant)


def _complete(route: _Route, operation: dict[str, Any]) -> None:
    """Add what every route of its kind answers, its security, its id."""
    operation["operationId"] = route.name
    responses: dict[str, Any] = operation["responses"]
    if _uses(route.dependant, authenticate):
        operation["security"] = [{BEARER: []}]
        challenge = _header(
            "the Bearer challenge (RFC 6750 §3)",
            required=True,
            schema={"type": "string", "pattern": "^Bearer"},
        )
        responses.setdefault(
            "401",
            _error(
                "no token, or a malformed, unknown, expired or revoked one",
                ("WWW-Authenticate", challenge),
            ),
        )
        responses.setdefault("403", _error("the token does not allow this"))
    else:
        operation["security"] = []
    if "requestBody" in operation:
        responses.setdefault("400", _error("an invalid Content-Length"))
        responses.setdefault("413", _error("the body is larger than the route's limit"))
    # agritrace serve (agritrace/serving.py): a request must arrive whole in time, and one
    # process serves a bounded number of connections; uvicorn answers beyond it in plain text.
    responses.setdefault(
        "408",
        _error(
            "the request line and headers did not arrive within "
            "AGRITRACE_REQUEST_TIMEOUT_SECONDS; the connection is closed"
        ),
    )
    if route.path not in WITHOUT_DATABASE:
        pages = route.path.startswith(("/01", "/p/"))
        responses.setdefault("503", _unavailable(pages=pages))
    busy = responses.setdefault("503", {"description": "the server is busy: retry later"})
    busy.setdefault("content", {})["text/plain"] = {"schema": {"type": "string"}}
    busy["description"] += " (text/plain: the server is at AGRITRACE_MAX_CONNECTIONS)"
    for code, answer in responses.items():
        # FastAPI documents its own 422 body (a list of errors); this app answers every error,
        # validation included, with one message (traceapi.app._validation_error).
        content = answer.get("content", {}).get("application/json", {})
        if content.get("schema") == {"$ref": "#/components/schemas/HTTPValidationError"}:
            content["schema"] = copy.deepcopy(_ERROR_REF)
            answer["description"] = "the request breaks a rule; the detail names each"
        if code == "422" and "content" not in answer:
            answer["content"] = copy.deepcopy(_JSON_ERROR)


def _without(parameters: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters if not (p.get("in") == "path" and p.get("name") == name)]


def _key_paths(
    template: str, operation: dict[str, Any], name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """One operation per Digital Link form for a route whose ``template`` has ``{key}``."""
    for suffix, form in KEY_FORMS.items():
        copied = copy.deepcopy(operation)
        copied["operationId"] = f"{operation['operationId']}_{suffix}"
        copied["summary"] = f"{operation.get('summary', '')} (by {_FORM_NAMES[suffix]})".strip()
        params = [{"$ref": "#/components/parameters/Gtin"}]
        if "{lot}" in form:
            params.append({"$ref": "#/components/parameters/Lot"})
        if "{serial}" in form:
            params.append({"$ref": "#/components/parameters/Serial"})
        copied["parameters"] = params + _without(copied.get("parameters", []), name)
        yield template.replace("{key}", form), copied


def _tile_paths(prefix: str, operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One operation per C2SP tlog-tiles index length, full and partial (``.p/{width}``)."""
    for count in range(1, MAX_INDEX_ELEMENTS + 1):
        names = [f"n{i}" for i in range(1, count + 1)]
        index = "/".join([*(f"x{{{n}}}" for n in names[:-1]), f"{{{names[-1]}}}"])
        elements = [
            {
                "name": n,
                "in": "path",
                "required": True,
                "description": (
                    f"element {i} of {count} of the tile index: 3 digits, most significant "
                    "first (c2sp.org/tlog-tiles: 1234067 is x001/x234/067)"
                ),
                "schema": {"type": "string", "pattern": "^[0-9]{3}$"},
            }
            for i, n in enumerate(names, start=1)
        ]
        for partial in (False, True):
            copied = copy.deepcopy(operation)
            tail = ".p/{width}" if partial else ""
            copied["operationId"] = f"{operation['operationId']}_{count}" + (
                "_partial" if partial else ""
            )
            kind = "partial tile" if partial else "full tile"
            copied["summary"] = f"{operation.get('summary', '')} ({kind}, {count}-element index)"
            copied["parameters"] = [
                *_without(copied.get("parameters", []), "rest"),
                *elements,
                *([{"$ref": "#/components/parameters/TileWidth"}] if partial else []),
            ]
            yield prefix + index + tail, copied


def _expand(route: _Route, operation: dict[str, Any]) -> list[tuple[str, Any]]:
    """The documented paths of one route: itself, or one per key form or tile index length."""
    if route.path == "/01{rest:path}":  # the scan route: the whole path is the key
        return list(_key_paths("/{key}", operation, "rest"))
    if "{key:path}" in route.path:
        return list(_key_paths(route.path.replace("{key:path}", "{key}"), operation, "key"))
    if route.path.startswith("/v1/log/tile/") and route.path.endswith("{rest:path}"):
        return list(_tile_paths(route.path.removesuffix("{rest:path}"), operation))
    if ":path}" in route.path:
        # A new raw-path route must be described here, or generated clients cannot call it.
        raise RuntimeError(f"no OpenAPI description for the path parameter of {route.path}")
    return [(route.documented, operation)]


def _tile_level(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == "level":
            parameter["description"] = "the tile level, 0-63 (c2sp.org/tlog-tiles)"
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": MAX_LEVEL}


def _distinct_names(document: dict[str, Any]) -> None:
    """Give models of the same class name in two modules names of their own.

    FastAPI keys them ``traceapi__views__LineageOut`` and ``traceapi__routes__inspect__LineageOut``
    but leaves both titled ``LineageOut``, which generators name classes after (one clashes).
    They become ``ViewsLineageOut`` and ``InspectLineageOut``: the module, then the class.
    """
    schemas: dict[str, Any] = document["components"]["schemas"]
    renamed: dict[str, str] = {}
    for key in [key for key in schemas if "__" in key]:
        *modules, name = key.split("__")
        new = modules[-1].title() + name
        if new in schemas or new in renamed.values():
            raise RuntimeError(f"two OpenAPI schemas would be named {new}")
        renamed[key] = new
    for old, new in renamed.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    refs = {
        f"#/components/schemas/{old}": f"#/components/schemas/{new}" for old, new in renamed.items()
    }

    def rewrite(node: object) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in refs:
                node["$ref"] = refs[node["$ref"]]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(document)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``app`` (see the module docstring)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary="Farm-to-fork traceability: product scans, evidence, the log, the registry",
        description=(
            "The agritrace trace API. Product keys are GS1 Digital Link paths "
            "(docs/identifiers.md); operations that need a token declare the `bearerAuth` "
            'scheme (docs/registry-api.md); every error body is `{"detail": "..."}`.'
        ),
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        servers=[{"url": "/", "description": "the server that serves this document"}],
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorOut"] = ErrorOut.model_json_schema()
    components["parameters"] = copy.deepcopy(_PARAMETERS)
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "the admin token (AGRITRACE_ADMIN_TOKEN), or a party or inspector token issued "
                "by POST /v1/parties/{party_id}/tokens (docs/registry-api.md)"
            ),
        }
    }
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    described = document["paths"]
    # FastAPI >= 0.165 keeps included routers as such; their routes come out of this iterator.
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        route = _Route.of(context)
        if route.name in seen:
            raise RuntimeError(f"two routes are named {route.name}: operation ids must differ")
        seen.add(route.name)
        item = described[route.documented]
        for method in sorted(route.methods):
            operation = item[method.lower()]
            _complete(route, operation)
            _tile_level(operation)
            for path, expanded in _expand(route, operation):
                paths.setdefault(path, {})[method.lower()] = expanded
    document["paths"] = paths
    _distinct_names(document)
    return document
