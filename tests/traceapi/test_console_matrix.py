"""The console's authorization matrix: every console route x {no session, a forged cookie,
an inspector, the admin, the owning farm}, and every form without its CSRF token.

A console route without a row here fails :func:`test_matrix_covers_every_console_route`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlmodel import select
from trace_kit import EGG_LOT, FARM

from traceapi.console import ROUTERS
from tracecore.storage import Device, Product, Token, session_scope

PRINCIPALS = ("none", "forged", "inspector", "admin", "owner")
_SIGN_IN = "sign-in"  # a 303 to the sign-in page

#: Expected answer per route for each principal, in the order of PRINCIPALS.
MATRIX: dict[str, tuple[int | str, ...]] = {
    "GET /console": (308, 308, 308, 308, 308),
    "GET /console/": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    # Signed in, the sign-in page sends one on to the console.
    "GET /console/sign-in": (200, 200, 303, 303, 303),
    "POST /console/sign-in": (403, 403, 403, 403, 403),  # no sign-in form cookie, no CSRF token
    "POST /console/sign-out": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF token
    "GET /console/access": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/products": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/products/{key:path}": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/parties": (_SIGN_IN, _SIGN_IN, 200, 200, 403),
    "GET /console/export/kde.csv": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/export/epcis.json": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/recall": (_SIGN_IN, _SIGN_IN, 200, 200, 403),
    "POST /console/recall": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF token
    "GET /console/rejections": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    # The owning farm (the party of EGG_LOT and of the device) sees its own; it never recalls.
    # The world has no refused message: who may look gets 404, not a sign-in page.
    "GET /console/rejections/{rejection_id}": (_SIGN_IN, _SIGN_IN, 404, 404, 404),
    "GET /console/rejections/{rejection_id}/raw": (_SIGN_IN, _SIGN_IN, 404, 404, 404),
    "GET /console/rejections/devices/{device_id}": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    # The producer console (docs/farms.md): everyone reads its pages, each its own share.
    "GET /console/devices": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/complaints": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "POST /console/complaints/{complaint_id}/answer": (_SIGN_IN, _SIGN_IN, 403, 403, 403),
    "GET /console/credit": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "GET /console/tokens": (_SIGN_IN, _SIGN_IN, 200, 200, 200),
    "POST /console/tokens": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF token
    "POST /console/tokens/{token_id}/revoke": (_SIGN_IN, _SIGN_IN, 403, 403, 403),
    # A farm registers and revokes its own devices (the admin any); inspectors never do.
    "GET /console/devices/new": (_SIGN_IN, _SIGN_IN, 403, 200, 200),
    "POST /console/devices/new": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF token
    "POST /console/devices/provisioning": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF token
    "GET /console/devices/{device_id}/revoke": (_SIGN_IN, _SIGN_IN, 403, 200, 200),
    "POST /console/devices/{device_id}/revoke": (_SIGN_IN, _SIGN_IN, 403, 403, 403),  # no CSRF
}


def _console_routes() -> set[str]:
    return {
        f"{method} {route.path}"
        for console_router in ROUTERS
        for route in console_router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_matrix_covers_every_console_route() -> None:
    """The matrix lists every console route, and nothing else."""
    assert _console_routes() == set(MATRIX)


@pytest.fixture(scope="module")
def callers(console_world: Any) -> Iterator[dict[str, httpx.Client]]:
    """An HTTP client per principal (the signed-in ones through the sign-in form)."""
    with (
        console_world.client("inspector") as inspector,
        console_world.client("admin") as admin,
        console_world.client("farm") as owner,
    ):
        none = httpx.Client(base_url=console_world.base, timeout=30)
        forged = httpx.Client(
            base_url=console_world.base,
            timeout=30,
            cookies={"agritrace_console": "A" * 43},
        )
        try:
            yield {
                "none": none,
                "forged": forged,
                "inspector": inspector,
                "admin": admin,
                "owner": owner,
            }
        finally:
            none.close()
            forged.close()


def _request(route: str, engine: Any) -> tuple[str, str, dict[str, str] | None]:
    method, template = route.split(" ", 1)
    with session_scope(engine) as session:
        device = session.exec(select(Device.id).where(Device.party_id == FARM)).first()
    path = (
        template.replace("{key:path}", EGG_LOT.path)
        .replace("{rejection_id}", "1")
        .replace("{device_id}", str(device))
        .replace("{complaint_id}", "1")
        .replace("{token_id}", "1")
    )
    if route == "GET /console/recall":
        path += f"?product={EGG_LOT.path}"
    if route.endswith(("/export/kde.csv", "/export/epcis.json")):
        path += f"?owner={FARM}"
    form = (
        {"product": EGG_LOT.path, "reason": "matrix", "token": "x", "answer": "x", "days": "30"}
        if method == "POST"
        else None
    )
    return method, path, form


def test_console_authorization_matrix(callers: dict[str, httpx.Client], console_world: Any) -> None:
    """Every console route answers each principal as the matrix says; none changes anything."""
    mismatches = []
    for route, expected in MATRIX.items():
        method, path, form = _request(route, console_world.engine)
        for principal, want in zip(PRINCIPALS, expected, strict=True):
            answer = callers[principal].request(method, path, data=form, follow_redirects=False)
            got: int | str = answer.status_code
            if got == 303 and answer.headers["location"].startswith("/console/sign-in?"):
                got = _SIGN_IN
            if got != want:
                mismatches.append((route, principal, want, got))
            if got != 308:  # ``/console`` is ``/console/``, for anyone
                assert "no-store" in answer.headers.get("cache-control", ""), (route, principal)
    assert mismatches == []
    # Nothing above recalled anything, revoked a token or issued one: every POST lacked its
    # CSRF token.
    lot = console_world.world.client.get(f"/{EGG_LOT.path}", headers={"Accept": "application/json"})
    assert lot.json()["verdict"] != "recalled"
    with session_scope(console_world.engine) as session:
        tokens = session.exec(select(Token)).all()
    assert all(token.revoked_ms is None for token in tokens)
    assert len(tokens) == len(console_world.world.tokens)


def test_an_inspector_never_sees_the_admins_trail(
    callers: dict[str, httpx.Client], console_world: Any
) -> None:
    """The admin's reads, and the admin's filter form, stay out of an inspector's trail page."""
    callers["admin"].get(f"/console/products/{EGG_LOT.path}")
    inspector = callers["inspector"].get("/console/access", params={"who": "admin", "lang": "en"})
    assert inspector.status_code == 200
    assert 'name="who"' not in inspector.text  # no filter form
    assert _who(inspector.text) == {"gansu-amr"}
    admin = callers["admin"].get("/console/access", params={"who": "admin", "lang": "en"})
    assert _who(admin.text) == {"admin"}


def _who(html: str) -> set[str]:
    """Who made the accesses of a trail page (the party id above the role in each row)."""
    return set(re.findall(r'<span class="mono">([^<]+)</span><br><span class="muted small">', html))


def test_a_party_sees_nothing_of_another_partys(
    callers: dict[str, httpx.Client], console_world: Any
) -> None:
    """The farm's session: another party's product and device are refused, its search and
    exports hold its own products only."""
    owner = callers["owner"]
    with session_scope(console_world.engine) as session:
        other_product = session.exec(
            select(Product.key).where(Product.owner_party_id != FARM)
        ).first()
        other_device = session.exec(select(Device.id).where(Device.party_id != FARM)).first()
    assert other_product is not None
    assert other_device is not None
    assert owner.get(f"/console/products/{other_product}").status_code == 403
    assert (
        owner.get(f"/console/rejections/devices/{other_device}").status_code == 404
    )  # not even whether it exists
    found = owner.get("/console/products", params={"owner": "", "lang": "en"})
    assert found.status_code == 200
    assert other_product not in found.text
    spreadsheet = owner.get("/console/export/kde.csv")
    assert other_product not in spreadsheet.text
