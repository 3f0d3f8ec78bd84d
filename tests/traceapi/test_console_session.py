"""Console sign-in, sessions and sign-out (docs/inspection.md, "The console"), on both databases."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from clock_kit import Clock
from pydantic import SecretStr
from sqlalchemy import Engine, text

from traceapi.app import create_app
from tracecore.keys import SignerKey
from tracecore.settings import Settings

ADMIN = "admin-secret-for-console-tests"
NOW = 1_790_000_000_000
MINUTE_MS = 60_000
COOKIE = "agritrace_console"


@dataclass
class Console:
    """A browser on the console: a client that keeps cookies, the app's clock and tokens."""

    client: Any
    engine: Engine
    clock: Clock
    inspector: str
    farm: str

    def sign_in_form(self, path: str = "/console/sign-in") -> tuple[httpx.Response, str]:
        """GET the sign-in page; return it and its form's CSRF token."""
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return page, found.group(1)

    def sign_in(self, token: str, **fields: str) -> httpx.Response:
        """Fill in and send the sign-in form as a browser does."""
        _, csrf = self.sign_in_form()
        form = {"csrf": csrf, "token": token, "lang": "en", **fields}
        return self.client.post("/console/sign-in", data=form)

    def home(self) -> httpx.Response:
        """GET the console's home page."""
        return self.client.get("/console/", params={"lang": "en"})

    def csrf(self) -> str:
        """The CSRF token of the signed-in session's forms (from the home page)."""
        found = re.search(r'name="csrf" value="([^"]+)"', self.home().text)
        assert found is not None
        return found.group(1)


def _admin_call(client: Any, method: str, path: str, body: Any = None) -> Any:
    response = client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"}, json=body)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture
def console(engine_factory: Callable[[], Engine], app_client: Any) -> Iterator[Console]:
    """A console with an inspection agency's token and a farm's token."""
    engine = engine_factory()
    clock = Clock(NOW)
    log_vkey = SignerKey("console.test/log", bytes(32)).verifier
    app = create_app(Settings(admin_token=SecretStr(ADMIN)), engine, clock=clock, log_vkey=log_vkey)
    with app_client(app) as client:
        for party, kind in (("agency-1", "inspector"), ("farm-1", "farm")):
            _admin_call(client, "POST", "/v1/parties", {"id": party, "name": "N", "kind": kind})
        inspector = _admin_call(client, "POST", "/v1/parties/agency-1/tokens")["token"]
        farm = _admin_call(client, "POST", "/v1/parties/farm-1/tokens")["token"]
        yield Console(client, engine, clock, inspector, farm)


def _ended(response: httpx.Response) -> str | None:
    """The reason a redirect to the sign-in page gives (``ended=``), or None if it is not one."""
    if response.status_code != 303:
        return None
    target = urlsplit(response.headers["location"])
    if target.path != "/console/sign-in":
        return None
    return parse_qs(target.query).get("ended", [""])[0]


def test_every_console_page_requires_a_session(console: Console) -> None:
    """Without a session the home page sends the browser to sign in, and back afterwards."""
    response = console.home()
    assert _ended(response) == "required"
    assert "next=%2Fconsole%2F" in response.headers["location"]
    sign_out = console.client.post("/console/sign-out", data={"csrf": "x"})
    assert _ended(sign_out) == "required"


def test_inspector_signs_in_with_a_hardened_cookie(console: Console) -> None:
    """An inspector's token opens a session: an HttpOnly, SameSite=Strict cookie, no token in it."""
    response = console.sign_in(console.inspector)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert console.inspector not in cookie
    home = console.home()
    assert home.status_code == 200
    assert "inspector" in home.text
    assert "agency-1" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    with console.engine.connect() as connection:
        stored = connection.execute(text("SELECT secret_hash FROM console_sessions")).scalar_one()
    assert console.client.cookies[COOKIE].encode() not in bytes(stored)


def test_admin_signs_in_and_a_changed_admin_token_ends_it(console: Console) -> None:
    """The admin token opens a session that ends when the configured admin token changes."""
    assert console.sign_in(ADMIN).status_code == 303
    assert "administrator" in console.home().text
    settings: Settings = console.client.app.state.settings
    console.client.app.state.settings = settings.model_copy(
        update={"admin_token": SecretStr("a-new-admin-token")}
    )
    assert _ended(console.home()) == "admin_changed"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("at_no-such-token", "the token is not valid"),
        ("", "the token is not valid"),
    ],
)
def test_a_refused_token_says_why(console: Console, token: str, why: str) -> None:
    """A wrong token or an empty one: 401 and the reason on the page."""
    response = console.sign_in(token)
    assert response.status_code == 401
    assert why in response.text
    assert COOKIE not in console.client.cookies


def test_a_forged_sign_in_form_is_refused(console: Console) -> None:
    """A sign-in form posted without this browser's form cookie (login CSRF) is 403."""
    _, csrf = console.sign_in_form()
    console.client.cookies.clear()
    response = console.client.post(
        "/console/sign-in", data={"csrf": csrf, "token": console.inspector}
    )
    assert response.status_code == 403
    assert COOKIE not in console.client.cookies


def test_failed_sign_ins_are_limited(console: Console) -> None:
    """After 5 failures in 15 min even the right token is refused (429) until the window ends."""
    for _ in range(5):
        assert console.sign_in("at_wrong").status_code == 401
    limited = console.sign_in(console.inspector)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) == 15 * 60
    assert "Try again in 15 minutes" in limited.text
    console.clock.now_ms += 15 * MINUTE_MS
    assert console.sign_in(console.inspector).status_code == 303


def test_sign_out_needs_the_form_token_and_ends_the_session(console: Console) -> None:
    """Sign-out without the CSRF token is 403 and changes nothing; with it the session ends."""
    console.sign_in(console.inspector)
    assert console.client.post("/console/sign-out", data={"csrf": "forged"}).status_code == 403
    assert console.home().status_code == 200
    kept = console.client.cookies[COOKIE]
    out = console.client.post("/console/sign-out", data={"csrf": console.csrf()})
    assert _ended(out) == "signed_out"
    console.client.cookies.set(COOKIE, kept)  # a copy of the cookie taken before
    assert _ended(console.home()) == "signed_out"


def test_idle_and_absolute_lifetimes(console: Console) -> None:
    """A session ends after 30 idle minutes, and 12 hours after sign-in however busy."""
    console.sign_in(console.inspector)
    console.clock.now_ms += 29 * MINUTE_MS
    assert console.home().status_code == 200
    console.clock.now_ms += 30 * MINUTE_MS
    assert _ended(console.home()) == "idle"
    console.sign_in(console.inspector)
    for _ in range(12 * 60 // 20):
        console.clock.now_ms += 20 * MINUTE_MS
        answer = console.home()
        if answer.status_code != 200:
            break
    assert _ended(answer) == "too_old"
    assert console.clock.now_ms - NOW - 59 * MINUTE_MS >= 12 * 60 * MINUTE_MS - 20 * MINUTE_MS


def test_revoking_the_token_ends_its_sessions(console: Console) -> None:
    """A token revoked through the API ends the session it opened at the next request."""
    console.sign_in(console.inspector)
    assert console.home().status_code == 200
    (token,) = _admin_call(console.client, "GET", "/v1/tokens?party=agency-1")
    _admin_call(console.client, "POST", f"/v1/tokens/{token['id']}/revoke")
    assert _ended(console.home()) == "token_revoked"
    page = console.client.get("/console/sign-in?ended=token_revoked&lang=en")
    assert "Your token was revoked" in page.text


def test_next_never_leaves_the_console(console: Console) -> None:
    """After sign-in the browser goes where it was, but never to another site."""
    for target, expected in [
        ("/console/", "/console/"),
        ("//evil.example/", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
    ]:
        console.client.cookies.clear()
        assert console.sign_in(console.inspector, next=target).headers["location"] == expected


def test_a_party_signs_in_to_its_own_console(console: Console) -> None:
    """A farm's token opens the producer console: no parties page, its own trail only."""
    assert console.sign_in(console.farm).status_code == 303
    home = console.home()
    assert home.status_code == 200
    assert "Producer console" in home.text
    assert "/console/parties" not in home.text
    assert console.client.get("/console/parties").status_code == 403
    trail = console.client.get("/console/access", params={"who": "agency-1", "party": "x-1"})
    assert trail.status_code == 200
    assert 'name="who"' not in trail.text
