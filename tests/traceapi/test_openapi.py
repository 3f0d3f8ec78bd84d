"""The served OpenAPI document (``/openapi.json``) as other people's tools read it.

Redocly CLI lints it with the repository's redocly.yaml; openapi-core checks live calls against
it, every operation with good and error answers, over a server with real data; a client that
openapi-python-client generates from it fetches evidence bundles by GTIN, lot and serial.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import json_loads, plain_loads
from openapi_core.exceptions import OpenAPIError
from pydantic import SecretStr
from sqlalchemy import create_engine
from trace_kit import (
    ADMIN,
    COLLECT,
    CUTS,
    EGG_CASE,
    EGG_FLOCK,
    EGG_LOT,
    ESCAPED,
    FARM,
    GTIN,
    LOG,
    PACKER,
    PENDING,
    RETAILER,
    STEER,
    signer,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

from traceapi.app import create_app
from traceapi.openapi import (
    BEARER,
    GTIN_PATTERN,
    KEY_FORMS,
    MAX_INDEX_ELEMENTS,
    VALUE_PATTERN,
)
from tracecore.errors import IdentifierError
from tracecore.identifiers import AI82_CHARACTERS, ProductKey
from tracecore.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
#: A key of each Digital Link form, by the operation id suffix of that form.
FORMS = {"by_lot": EGG_LOT, "by_serial": STEER, "by_lot_serial": EGG_CASE}
#: Well-formed keys nobody registered, and one with a wrong GTIN check digit.
UNKNOWN = ProductKey.from_parts(GTIN, lot="L999999")
BAD_CHECK_DIGIT = f"01/{GTIN[:-1]}3/10/L1"
# Operation ids of one route differ by these suffixes (traceapi.openapi).
_FAMILY = re.compile(r"_(by_lot_serial|by_lot|by_serial|\d(_partial)?)$")


def _family(operation_id: str) -> str:
    return _FAMILY.sub("", operation_id)


@pytest.fixture(scope="module")
def spec(api_site: Any) -> dict[str, Any]:
    """The OpenAPI document as the server serves it."""
    response = httpx.get(f"{api_site.base}/openapi.json", timeout=30)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=AI82_CHARACTERS + " ~\n中.", max_size=22))
def test_the_lot_and_serial_pattern_is_the_servers_rule(value: str) -> None:
    """The documented pattern of a lot or serial accepts exactly the values a key may hold."""
    # JSON Schema patterns are ECMA-262 regexes: "$" ends the input (Python's fullmatch).
    documented = re.fullmatch(VALUE_PATTERN, value) is not None
    try:
        ProductKey.from_parts(GTIN, lot=value)
    except IdentifierError:
        accepted = False
    else:
        accepted = True
    assert documented == accepted, value


@given(st.text(alphabet="0123456789", min_size=1, max_size=15))
def test_every_gtin_the_server_takes_fits_the_documented_pattern(gtin: str) -> None:
    """A GTIN the server accepts fits the pattern (which leaves the check digit to it)."""
    try:
        ProductKey.from_parts(gtin, lot="L1")
    except IdentifierError:
        return
    assert re.fullmatch(GTIN_PATTERN, gtin), gtin


def test_redocly_finds_no_problem(
    redocly: tuple[str, Path], spec: dict[str, Any], tmp_path: Path
) -> None:
    """Redocly's recommended rules: no error, no warning but those the ignore file justifies."""
    for name in ("redocly.yaml", ".redocly.lint-ignore.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "openapi.json").write_text(json.dumps(spec), encoding="utf-8")
    node, cli = redocly
    linted = subprocess.run(  # noqa: S603 (a fixed program on a file this test wrote)
        [node, str(cli), "lint", "openapi.json", "--format", "json"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "REDOCLY_TELEMETRY": "off", "HOME": str(tmp_path)}
        | {"REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(linted.stdout)
    problems = [
        f"{p['ruleId']} {p['severity']}: {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
    ]
    assert report["totals"]["errors"] == 0, "\n".join(problems)
    assert report["totals"]["warnings"] == 0, "\n".join(problems)
    # Every excuse in the ignore file still excuses something: none is left over.
    ignore = (ROOT / ".redocly.lint-ignore.yaml").read_text(encoding="utf-8")
    assert report["totals"]["ignored"] == ignore.count("- '#/"), linted.stdout
    assert linted.returncode == 0, linted.stderr


# -- live calls checked by openapi-core ------------------------------------------------------


@dataclass
class _Request:
    """An httpx request as openapi-core reads one (``openapi_core.protocols.Request``).

    The path is the raw one: percent-escapes stay, so a lot ``A/B`` (``A%2FB``) is one path
    parameter, as the server reads it (traceapi.paths).
    """

    request: httpx.Request
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        query = parse_qsl(self.request.url.query.decode("ascii"), keep_blank_values=True)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=Headers(list(self.request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode('ascii')}"

    @property
    def path(self) -> str:
        return self.request.url.raw_path.decode("ascii").split("?", 1)[0]

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        return self.request.headers.get("content-type", "")


@dataclass
class _Response:
    """An httpx response as openapi-core reads one (``openapi_core.protocols.Response``)."""

    response: httpx.Response

    @property
    def data(self) -> bytes:
        return self.response.content

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "")

    @property
    def headers(self) -> Headers:
        return Headers(list(self.response.headers.multi_items()))


def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


@dataclass
class Recorder:
    """Sends calls, checks each against the document, remembers which operations answered."""

    spec: dict[str, Any]
    #: An httpx.Client, or conftest's AppClient (an app in this process): request() as httpx's.
    client: Any
    tokens: dict[str, str]
    api: OpenAPI = field(init=False)
    answers: dict[str, set[int]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # openapi-core reads JSON, plain text and HTML bodies; these are JSON or text as well.
        text = {"image/svg+xml": plain_loads, "text/csv": plain_loads}
        config = Config(extra_media_type_deserializers={"application/ld+json": json_loads, **text})
        self.api = OpenAPI.from_dict(self.spec, config=config)

    def operation(self, method: str, raw_path: str) -> dict[str, Any]:
        """The operation of the document a request goes to: the match with fewest variables."""
        matches = sorted(
            (path.count("{"), path)
            for path, item in self.spec["paths"].items()
            if method in item and _template(path).match(raw_path)
        )
        assert matches, f"{method.upper()} {raw_path} is not in the document"
        assert len(matches) == 1 or matches[0][0] < matches[1][0], matches
        operation: dict[str, Any] = self.spec["paths"][matches[0][1]][method]
        return operation

    def call(
        self,
        method: str,
        url: str,
        status: int,
        *,
        who: str | None = None,
        conforms: bool = True,
        accept: str = "application/json",
        **send: Any,
    ) -> httpx.Response:
        """Send one call; check its status, and the request and answer against the document.

        ``conforms`` says whether the request is one the document allows (an error call may
        break its parameter rules on purpose: the document must then refuse it too).
        """
        headers = {"Accept": accept, **send.pop("headers", {})}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        response = self.client.request(method, url, headers=headers, **send)
        label = f"{method} {url} ({who or 'no token'}) -> {response.status_code}"
        if response.status_code != status:
            self.problems.append(f"{label}, expected {status}: {response.text[:200]}")
        request, answer = _Request(response.request), _Response(response)
        operation = self.operation(method.lower(), request.path)
        self.answers.setdefault(operation["operationId"], set()).add(response.status_code)
        if response.status_code == 401 and operation.get("security") != [{BEARER: []}]:
            self.problems.append(f"{label}: a 401 from an operation without bearer security")
        try:
            self.api.validate_request(request)
        except OpenAPIError as exc:
            if conforms:
                cause = f" ({exc.__cause__!r:.300})" if exc.__cause__ else ""
                self.problems.append(f"{label}: the document refuses the request: {exc!r}{cause}")
            else:
                self.refused.append(label)
        else:
            if not conforms:
                self.problems.append(f"{label}: the document allows a request it should refuse")
        try:
            self.api.validate_response(request, answer)
        except OpenAPIError as exc:
            cause = f" ({exc.__cause__!r:.300})" if exc.__cause__ else ""
            self.problems.append(f"{label}: the answer is not in the document: {exc!r}{cause}")
        return response


@pytest.fixture
def recorder(api_site: Any, spec: dict[str, Any]) -> Iterator[Recorder]:
    """A :class:`Recorder` over the server of :func:`api_site`."""
    world = api_site.world
    tokens = {"admin": ADMIN, **world.tokens}
    with httpx.Client(base_url=api_site.base, timeout=30, follow_redirects=False) as client:
        yield Recorder(spec, client, tokens)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _registry_calls(r: Recorder) -> None:
    """Parties, tokens, devices, keys: each route's answer and its errors."""
    party = {"id": "openapi-farm", "name": "OpenAPI 农场", "kind": "farm"}
    r.call("POST", "/v1/parties", 201, who="admin", json=party)
    r.call("POST", "/v1/parties", 409, who="admin", json=party)
    r.call("POST", "/v1/parties", 401, json=party, conforms=False)
    r.call("POST", "/v1/parties", 403, who="farm", json=party)
    r.call("POST", "/v1/parties", 422, who="admin", json={"id": "x"}, conforms=False)
    # A Content-Length over AGRITRACE_MAX_BODY_BYTES (64 KiB) is refused before a byte is read.
    big = {**party, "padding": "x" * 70_000}
    r.call("POST", "/v1/parties", 413, who="admin", json=big, conforms=False)
    r.call("PATCH", f"/v1/parties/{FARM}", 200, who="farm", json={"name_en": "Linxia Hens"})
    r.call("PATCH", f"/v1/parties/{PACKER}", 403, who="farm", json={"name_en": "x"})
    r.call("PATCH", "/v1/parties/nobody-here", 404, who="admin", json={"name_en": "x"})
    r.call("PATCH", f"/v1/parties/{FARM}", 401, json={"name_en": "x"}, conforms=False)
    issued = r.call("POST", "/v1/parties/openapi-farm/tokens", 201, who="admin").json()
    r.call("POST", "/v1/parties/nobody-here/tokens", 404, who="admin", json={"lifetime_days": 1})
    r.call("POST", "/v1/parties/openapi-farm/tokens", 401, conforms=False)
    r.call("GET", "/v1/tokens", 200, who="farm")
    r.call("GET", f"/v1/tokens?party={PACKER}", 403, who="farm")
    r.call("GET", "/v1/tokens?party=nobody-here", 404, who="admin")
    r.call("GET", "/v1/tokens", 401, headers={"Authorization": "Bearer at_unknown"})
    r.call("POST", f"/v1/tokens/{issued['id']}/revoke", 200, who="admin")
    r.call("POST", "/v1/tokens/999999/revoke", 404, who="admin")
    r.call("POST", f"/v1/tokens/{issued['id']}/revoke", 403, who="packer")
    r.call("POST", f"/v1/tokens/{issued['id']}/revoke", 401, conforms=False)
    first, second = signer("openapi-dev-1"), signer("openapi-dev-1b")
    device = {"id": "openapi-dev-1", "party": FARM, "public_key": _b64(first.public_key)}
    r.call("POST", "/v1/devices", 201, who="farm", json=device)
    r.call("POST", "/v1/devices", 409, who="farm", json=device)
    r.call("POST", "/v1/devices", 404, who="admin", json={**device, "party": "nobody-here"})
    r.call("POST", "/v1/devices", 422, who="admin", json={**device, "public_key": "AAAA"})
    r.call("POST", "/v1/devices", 401, json=device, conforms=False)
    rotated = {"public_key": _b64(second.public_key)}
    r.call("POST", "/v1/devices/openapi-dev-1/keys", 201, who="farm", json=rotated)
    r.call("POST", "/v1/devices/openapi-dev-1/keys", 409, who="farm", json=rotated)
    r.call("POST", "/v1/devices/nobody-dev/keys", 404, who="admin", json=rotated)
    r.call("POST", "/v1/devices/openapi-dev-1/keys", 403, who="packer", json=rotated)
    r.call("POST", "/v1/devices/openapi-dev-1/keys", 401, json=rotated, conforms=False)
    r.call("POST", "/v1/devices/openapi-dev-1/revoke", 200, who="farm", json={"reason": "lost"})
    r.call("POST", "/v1/devices/nobody-dev/revoke", 404, who="admin", json={"reason": "x"})
    r.call("POST", "/v1/devices/openapi-dev-1/revoke", 403, who="packer", json={"reason": "x"})
    r.call("POST", "/v1/devices/openapi-dev-1/revoke", 401, json={"reason": "x"}, conforms=False)
    r.call("GET", "/v1/devices/openapi-dev-1", 200, who="farm")
    r.call("GET", "/v1/devices/openapi-dev-1", 403, who="packer")
    r.call("GET", "/v1/devices/nobody-dev", 404, who="admin")
    r.call("GET", "/v1/devices/openapi-dev-1", 401, conforms=False)


def _operations_calls(r: Recorder) -> None:
    r.call("GET", "/healthz", 200)
    r.call("GET", "/metrics", 200, accept="text/plain")
    r.call("GET", "/v1/admin/rejections?limit=5", 200, who="admin")
    r.call("GET", "/v1/admin/rejections", 403, who="farm")
    r.call("GET", "/v1/admin/rejections?limit=0", 422, who="admin", conforms=False)
    r.call("GET", "/v1/admin/rejections", 401, conforms=False)
    r.call("GET", f"/v1/devices/{COLLECT.name}/gaps", 200, who="farm")
    r.call("GET", f"/v1/devices/{COLLECT.name}/gaps", 403, who="packer")
    r.call("GET", "/v1/devices/nobody-dev/gaps", 404, who="admin")
    r.call("GET", f"/v1/devices/{COLLECT.name}/gaps", 401, conforms=False)


def _log_calls(r: Recorder) -> None:
    text = "text/plain"
    r.call("GET", "/v1/log/vkey", 200, accept=text)
    r.call("GET", "/v1/log/policy", 200, accept=text)
    checkpoint = r.call("GET", "/v1/log/checkpoint", 200, accept=text).text
    size = int(checkpoint.split("\n")[1])
    r.call("GET", f"/v1/log/proof/inclusion?index=0&size={size}", 200)
    r.call("GET", f"/v1/log/proof/inclusion?index={size}&size={size}", 400)
    r.call("GET", "/v1/log/proof/inclusion?index=0", 400)
    r.call("GET", f"/v1/log/proof/consistency?old=1&new={size}", 200)
    r.call("GET", "/v1/log/proof/consistency?old=0&new=1", 400)
    r.call("GET", "/v1/log/entries/0", 200)
    r.call("GET", f"/v1/log/entries/{size}", 400)
    r.call("GET", "/v1/log/entries/x1", 400)
    # The first tile of level 0 and the first entry bundle: partial below 256 entries.
    first = "000" if size >= 256 else f"000.p/{size}"
    octets = "application/octet-stream"
    r.call("GET", f"/v1/log/tile/0/{first}", 200, accept=octets)
    r.call("GET", f"/v1/log/tile/entries/{first}", 200, accept=octets)
    # Every index length, full and partial: tiles far beyond this log's checkpoint.
    for count in range(1, MAX_INDEX_ELEMENTS + 1):
        index = "/".join([*(["x001"] * (count - 1)), "999"])
        for tail in ("", ".p/1"):
            r.call("GET", f"/v1/log/tile/1/{index}{tail}", 404, accept=octets)
            r.call("GET", f"/v1/log/tile/entries/{index}{tail}", 404, accept=octets)
    r.call("GET", "/v1/log/tile/0/x000/000", 400, accept=octets)  # not the canonical index
    r.call("GET", "/v1/log/tile/64/000", 400, accept=octets, conforms=False)
    r.call("GET", "/v1/log/tile/0/000.p/256", 400, accept=octets, conforms=False)


def _product_calls(r: Recorder) -> None:
    """Every product-key route in every Digital Link form, and its errors."""
    for key in [*FORMS.values(), ESCAPED]:
        r.call("GET", f"/v1/bundle/{key.path}", 200)
        r.call("GET", f"/{key.path}", 200)
        r.call("GET", f"/qr/{key.path}.svg", 200, accept="image/svg+xml")
        r.call("GET", f"/qr/{key.path}.png?scale=2", 200, accept="image/png")
        r.call("GET", f"/qr/{key.path}/labels", 200, accept="text/html")
        r.call("GET", f"/v1/lineage/{key.path}?depth=all", 200, who="inspector")
        r.call("GET", f"/v1/export/epcis/{key.path}", 200, who="inspector", accept="*/*")
        r.call("POST", f"/v1/feedback/{key.path}", 201, json={"rating": 5})
    r.call("GET", f"/v1/bundle/{EGG_LOT.path}?previous=1", 200)
    r.call("GET", f"/v1/bundle/{EGG_LOT.path}?previous=99999999", 400)
    r.call("GET", f"/v1/bundle/{UNKNOWN.path}", 404)
    r.call("GET", f"/v1/bundle/{PENDING.path}", 404)  # in no checkpoint yet
    r.call("GET", f"/v1/bundle/{BAD_CHECK_DIGIT}", 422)
    r.call("GET", f"/{EGG_CASE.path}?place=Lanzhou", 200, accept="text/html")
    r.call("GET", f"/{UNKNOWN.path}", 404)
    r.call("GET", f"/{UNKNOWN.path}", 404, accept="text/html")
    r.call("GET", "/01/12345/10/L1", 404, conforms=False)  # not a GTIN: unknown, as scanned
    r.call("GET", f"/01/{GTIN[1:]}/10/{EGG_LOT.lot}", 308)  # a GTIN-13: to the canonical path
    r.call("GET", f"/{EGG_LOT.path}?lang={'x' * 17}", 422, conforms=False)
    r.call("GET", f"/qr/{BAD_CHECK_DIGIT}.svg", 422, accept="image/svg+xml")
    r.call("GET", f"/qr/{EGG_LOT.path}.png?scale=0", 422, accept="image/png", conforms=False)
    r.call("GET", f"/qr/{EGG_LOT.path}/labels?serials=C0001,C0002", 200, accept="text/html")
    r.call("GET", f"/qr/{STEER.path}/labels?serials=C1", 400, accept="text/html")
    r.call("GET", f"/v1/lineage/{UNKNOWN.path}", 404, who="inspector")
    r.call("GET", f"/v1/lineage/{EGG_LOT.path}", 403, who="packer")
    r.call("GET", f"/v1/lineage/{EGG_LOT.path}", 401, conforms=False)
    r.call("GET", f"/v1/export/epcis/{PENDING.path}", 409, who="inspector")
    r.call("GET", f"/v1/export/epcis/{UNKNOWN.path}", 404, who="inspector")
    r.call("GET", f"/v1/export/epcis/{BAD_CHECK_DIGIT}", 422, who="inspector")
    r.call("GET", f"/v1/export/epcis/{EGG_LOT.path}", 401, conforms=False)


def _feedback_calls(r: Recorder, stall_product: str) -> None:
    """After the 4 JSON posts of _product_calls: the hourly limit of 5 is reached here."""
    r.call("POST", f"/v1/feedback/{UNKNOWN.path}", 404, json={"rating": 5})
    r.call("POST", f"/v1/feedback/{EGG_LOT.path}", 422, json={"rating": 9}, conforms=False)
    r.call("POST", f"/v1/feedback/{BAD_CHECK_DIGIT}", 422, json={"rating": 5})
    r.call("POST", f"/v1/feedback/{EGG_LOT.path}", 413, content=b"x" * 20_000, conforms=False)
    form = {"rating": "4", "complaint": "蛋壳有裂纹", "lang": "zh"}
    r.call("POST", f"/v1/feedback/{EGG_LOT.path}", 303, data=form)
    stall_form = {"product": stall_product, "rating": "5", "lang": "en"}
    r.call("POST", f"/p/{RETAILER}/feedback", 422, data={**stall_form, "product": UNKNOWN.path})
    r.call("POST", "/p/nobody-here/feedback", 404, data=stall_form)
    r.call("POST", f"/v1/feedback/{EGG_LOT.path}", 429, json={"rating": 5})
    r.call("POST", f"/p/{RETAILER}/feedback", 303, data=stall_form)  # "limited", as a page says
    r.call("GET", "/v1/feedback?complaints=true", 200, who="inspector")
    r.call("GET", f"/v1/feedback?product={EGG_LOT.path}", 200, who="farm")
    r.call("GET", "/v1/feedback?party=Not_An_Id", 422, who="inspector")
    r.call("GET", f"/v1/feedback?party={PACKER}", 403, who="farm")
    r.call("GET", "/v1/feedback", 401, conforms=False)


def _inspection_calls(r: Recorder) -> None:
    r.call("GET", "/v1/products?step=shipping&limit=5", 200, who="inspector")
    r.call("GET", "/v1/products?step=bogus", 422, who="inspector")
    r.call("GET", f"/v1/products?party={PACKER}", 403, who="farm")
    r.call("GET", "/v1/products", 401, conforms=False)
    r.call("GET", "/v1/export/kde.csv", 200, who="inspector", accept="text/csv")
    r.call("GET", "/v1/export/kde.csv?party=Not_An_Id", 422, who="inspector", accept="text/csv")
    r.call("GET", f"/v1/export/kde.csv?party={PACKER}", 403, who="farm", accept="text/csv")
    r.call("GET", "/v1/export/kde.csv", 401, conforms=False, accept="text/csv")
    r.call("GET", f"/v1/parties/{FARM}/credit?days=30", 200, who="inspector")
    r.call("GET", "/v1/parties/nobody-here/credit", 404, who="inspector")
    r.call("GET", f"/v1/parties/{PACKER}/credit", 403, who="farm")
    r.call("GET", f"/v1/parties/{FARM}/credit", 401, conforms=False)
    recall = {"product": CUTS.path, "reason": "抽检不合格 failed a sample test"}
    r.call("POST", "/v1/recalls", 201, who="inspector", json=recall)
    r.call("POST", "/v1/recalls", 404, who="inspector", json={**recall, "product": UNKNOWN.path})
    r.call("POST", "/v1/recalls", 403, who="farm", json=recall)
    r.call("POST", "/v1/recalls", 401, json=recall, conforms=False)
    r.call("GET", "/v1/access?limit=3", 200, who="farm")
    r.call("GET", f"/v1/access?who={FARM}", 200, who="admin")
    r.call("GET", f"/v1/access?party={PACKER}", 403, who="farm")
    r.call("GET", "/v1/access?party=Not_An_Id", 422, who="admin")
    r.call("GET", "/v1/access", 401, conforms=False)


def _stall_calls(r: Recorder) -> str:
    """The stall routes; returns a product the stall lists (for its feedback form)."""
    stall = r.call("GET", f"/p/{RETAILER}", 200).json()
    r.call("GET", f"/p/{RETAILER}?lang=en", 200, accept="text/html")
    r.call("GET", "/p/nobody-here", 404)
    r.call("GET", "/p/nobody-here", 404, accept="text/html")
    r.call("GET", f"/p/{RETAILER}/qr.svg", 200, accept="image/svg+xml")
    r.call("GET", f"/p/{RETAILER}/qr.png?border=2", 200, accept="image/png")
    r.call("GET", "/p/nobody-here/qr.svg", 404, accept="image/svg+xml")
    r.call("GET", "/p/nobody-here/qr.png", 404, accept="image/png")
    r.call("GET", f"/p/{RETAILER}/qr.svg?scale=99", 422, accept="image/svg+xml", conforms=False)
    r.call("GET", f"/p/{RETAILER}/label", 200, accept="text/html")
    r.call("GET", "/p/nobody-here/label", 404, accept="text/html")
    r.call("GET", f"/p/{RETAILER}/label?lang={'x' * 17}", 422, conforms=False)
    product: str = stall["products"][0]["key"]
    return product


def test_live_calls_match_the_document(recorder: Recorder) -> None:
    """Every operation, good and error answers: requests and answers are as documented."""
    _registry_calls(recorder)
    _operations_calls(recorder)
    _log_calls(recorder)
    _product_calls(recorder)
    _feedback_calls(recorder, _stall_calls(recorder))
    _inspection_calls(recorder)
    assert not recorder.problems, f"{len(recorder.problems)} problem(s):\n" + "\n".join(
        recorder.problems
    )
    spec = recorder.spec
    operations = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    assert set(recorder.answers) == set(operations), set(operations) - set(recorder.answers)
    # Each route answered well at least once, and each route that needs a token said 401.
    by_route: dict[str, set[int]] = {}
    for operation_id, statuses in recorder.answers.items():
        by_route.setdefault(_family(operation_id), set()).update(statuses)
    no_success = sorted(name for name, got in by_route.items() if not got & set(range(200, 400)))
    assert no_success == [], no_success
    secured = {_family(i) for i, op in operations.items() if op["security"] == [{BEARER: []}]}
    assert {name for name in secured if 401 not in by_route[name]} == set()
    assert {name for name, got in by_route.items() if 401 in got} == secured
    statuses = set().union(*by_route.values())
    assert {400, 401, 403, 404, 409, 413, 422, 429} <= statuses


def test_answers_while_the_database_is_not_ready_match_the_document(
    app_client: Any, tmp_path: Path
) -> None:
    """503 with Retry-After, as JSON or as a buyer's page, is what the document says."""
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    settings = Settings(admin_token=SecretStr(ADMIN), data_dir=tmp_path)
    app = create_app(settings, engine, migrate=False, log_vkey=LOG.verifier)
    with app_client(app) as client:
        recorder = Recorder(app.openapi(), client, {"admin": ADMIN})
        for call in (
            ("GET", f"/v1/bundle/{EGG_LOT.path}", "application/json", None),
            ("GET", f"/{EGG_LOT.path}", "text/html", None),
            ("GET", f"/{EGG_LOT.path}", "application/json", None),
            ("GET", "/v1/tokens", "application/json", "admin"),
            ("GET", f"/p/{RETAILER}", "text/html", None),
        ):
            method, url, accept, who = call
            response = recorder.call(method, url, 503, who=who, accept=accept)
            assert response.headers["retry-after"] == "10"
        recorder.call("GET", "/healthz", 503)
        recorder.call("GET", "/v1/log/vkey", 200, accept="text/plain")
    engine.dispose()
    assert not recorder.problems, "\n".join(recorder.problems)


# -- a client generated from the document ----------------------------------------------------


def _fetch_bundles(client: Any, base: str) -> None:
    """Each Digital Link form's bundle through the generated client: the direct route's bytes."""
    for suffix, key in [*FORMS.items(), ("by_lot_serial", ESCAPED)]:
        module = importlib.import_module(f"agritrace_client.api.log.get_bundle_{suffix}")
        parts = {"gtin": key.gtin, "lot": key.lot, "serial": key.serial}
        form = KEY_FORMS[suffix]
        got = module.sync_detailed(
            client=client, **{name: v for name, v in parts.items() if f"{{{name}}}" in form}
        )
        direct = httpx.get(f"{base}/v1/bundle/{key.path}", timeout=30)
        assert direct.status_code == 200, direct.text
        assert (int(got.status_code), got.content) == (200, direct.content), key.path
        assert json.loads(got.content)["product"] == key.path


#: openapi-python-client's configuration: no formatter run on the output, and the image types
#: (which it has no class for) read as bytes, as application/octet-stream is.
CLIENT_CONFIG = """\
post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  image/svg+xml: application/octet-stream
"""


def test_a_generated_client_fetches_bundles_by_gtin_lot_and_serial(
    openapi_client_gen: Path, api_site: Any, spec: dict[str, Any], tmp_path: Path
) -> None:
    """A client generated from the document, without a warning, gets per Digital Link form the
    bytes of the direct bundle route, and with a token the inspection routes."""
    (tmp_path / "openapi.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "config.yaml").write_text(CLIENT_CONFIG, encoding="utf-8")
    command = ["generate", "--path", "openapi.json", "--config", "config.yaml"]
    generated = subprocess.run(  # noqa: S603 (a fixed program on a file this test wrote)
        [str(openapi_client_gen), *command, "--output-path", "client"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    said = generated.stdout + generated.stderr
    assert generated.returncode == 0, said
    assert "warning" not in said.lower(), said
    sys.path.insert(0, str(tmp_path / "client"))
    try:
        package = importlib.import_module("agritrace_client")
        token = api_site.world.tokens["inspector"]
        # Generated clients hold an httpx client (a connection) until closed: use them in with.
        with (
            package.Client(base_url=api_site.base, raise_on_unexpected_status=True) as client,
            package.AuthenticatedClient(base_url=api_site.base, token=token) as inspector,
        ):
            _fetch_bundles(client, api_site.base)
            lineage = importlib.import_module("agritrace_client.api.inspection.get_lineage_by_lot")
            trace = lineage.sync(client=inspector, gtin=EGG_LOT.gtin, lot=EGG_LOT.lot)
            assert (trace.product, trace.back) == (EGG_LOT.path, [EGG_FLOCK.path])
            refused = lineage.sync_detailed(client=client, gtin=EGG_LOT.gtin, lot=EGG_LOT.lot)
            assert int(refused.status_code) == 401
    finally:
        sys.path.remove(str(tmp_path / "client"))
        for name in [m for m in sys.modules if m.split(".")[0] == "agritrace_client"]:
            del sys.modules[name]
