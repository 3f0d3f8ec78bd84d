"""Fixtures of the trace API tests: real uvicorn servers over the egg world and the pages world."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from browser_kit import CHROMIUM_ARGS
from fastapi import FastAPI
from playwright.sync_api import Browser, sync_playwright
from pydantic import SecretStr
from sqlalchemy import Engine
from trace_kit import (
    ADMIN,
    COLLECT,
    ESCAPED,
    LOG,
    ORIGIN,
    PAGE_VARIANTS,
    PENDING,
    PageVariant,
    World,
    make_pages_world,
    populate,
)

from traceapi.app import create_app
from tracecore.message import Event
from tracecore.settings import Settings
from tracecore.storage import create_party, issue_token, make_engine, session_scope, upgrade


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL once it answers."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            # Any answer will do: a server without its database answers 503 and is up.
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory, app_client: Any) -> Iterator[str]:
    """The base URL of a uvicorn server on loopback over the egg world (SQLite)."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    populate(engine, app_client)
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=directory)
    app = create_app(config, engine, log_vkey=LOG.verifier)
    with _serve(app) as base:
        yield base
    engine.dispose()


@dataclass(frozen=True)
class PagesSite:
    """A server over trace_kit's pages world: its base URL and every public page variant."""

    base: str
    variants: dict[str, PageVariant]
    #: A server over a database whose schema is not ready: it serves the ``outage`` variants.
    outage_base: str

    def url(self, variant: str, query: str = "") -> str:
        """The absolute URL of ``variant``'s page, with ``query`` (``lang=fr``) if given."""
        page = self.variants[variant]
        base = self.outage_base if page.outage else self.base
        return f"{base}{page.path}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pages_site(tmp_path_factory: pytest.TempPathFactory, app_client: Any) -> Iterator[PagesSite]:
    """A uvicorn server over the world of every public page variant (SQLite, built once).

    Its clock stays at the world's last moment, so that pages (dates, the producer credit
    window) look the same on every run.
    """
    directory: Path = tmp_path_factory.mktemp("pages")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    with make_pages_world(engine, app_client) as world:
        now = world.now[0]
    config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=directory)
    app = create_app(config, engine, clock=lambda: now, log_vkey=LOG.verifier)
    # Not migrated and never migrating: every database route answers as during an outage.
    empty = make_engine(f"sqlite:///{directory / 'not-migrated.sqlite3'}")
    down = create_app(config, empty, migrate=False, log_vkey=LOG.verifier)
    with _serve(app) as base, _serve(down) as outage_base:
        yield PagesSite(base, dict(PAGE_VARIANTS), outage_base)
    engine.dispose()
    empty.dispose()


@pytest.fixture(scope="session")
def fetch_page(pages_site: PagesSite) -> Callable[[str, str], httpx.Response]:
    """A factory: ``fetch_page(variant, language)`` GETs the variant's page as a browser would
    ask for it in that language (Accept-Language)."""

    def fetch(variant: str, language: str) -> httpx.Response:
        headers = {"Accept": "text/html,*/*;q=0.8", "Accept-Language": language}
        return httpx.get(pages_site.url(variant), headers=headers, timeout=30)

    return fetch


@dataclass(frozen=True)
class ApiSite:
    """A server over a pages world of its own: its base URL, its world (tokens, products)."""

    base: str
    world: World

    def auth(self, who: str) -> dict[str, str]:
        """The Authorization header of ``who``: ``admin``, ``farm``, ``packer``, ``inspector``."""
        return self.world.auth(who)


@pytest.fixture(scope="module")
def api_site(tmp_path_factory: pytest.TempPathFactory, app_client: Any) -> Iterator[ApiSite]:
    """A uvicorn server over a fresh pages world (SQLite) with the ``ESCAPED`` carton and the
    ``PENDING`` lot (commissioned after the last checkpoint), for the tests of one module that
    change what it holds (parties, devices, recalls, feedback).

    The clock stays at the world's last moment, as for :func:`pages_site`.
    """
    directory: Path = tmp_path_factory.mktemp("site")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    with make_pages_world(engine, app_client) as world:
        world.send(
            COLLECT,
            lambda seq, time: Event(COLLECT.name, seq, time, (ESCAPED,), "commissioning"),
        )
        world.checkpoint()
        world.send(
            COLLECT,
            lambda seq, time: Event(COLLECT.name, seq, time, (PENDING,), "commissioning"),
        )
        now = world.now[0]
        config = Settings(admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=directory)
        app = create_app(config, engine, clock=lambda: now, log_vkey=LOG.verifier)
        with _serve(app) as base:
            yield ApiSite(base, world)
    engine.dispose()


@dataclass(frozen=True)
class ConsoleSite:
    """A server with an empty registry but for an inspection agency: its URL and tokens."""

    base: str
    inspector: str
    admin: str


@pytest.fixture(scope="module")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    """A uvicorn server for console tests (SQLite), with an inspector token of ``gansu-amr``."""
    directory: Path = tmp_path_factory.mktemp("console")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    now = time.time_ns() // 1_000_000  # the server runs on the wall clock
    with session_scope(engine) as session:
        create_party(session, "gansu-amr", "甘肃省市场监管局", "inspector", now)
        issued = issue_token(session, "gansu-amr", now)
    # Every browser test mistypes a token once; the limit itself is tested without a browser.
    config = Settings(
        admin_token=SecretStr(ADMIN), log_origin=ORIGIN, data_dir=directory, sign_in_failures=100
    )
    app = create_app(config, engine, log_vkey=LOG.verifier)
    with _serve(app) as base:
        yield ConsoleSite(base, issued.token, ADMIN)
    engine.dispose()


def console_client(base: str, token: str) -> httpx.Client:
    """An HTTP client signed in to the console at ``base`` with ``token`` (cookies kept).

    Its ``csrf`` attribute holds the session's CSRF token for the console's forms.
    """
    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/console/sign-in", params={"lang": "en"})
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, form.text
    signed = client.post(
        "/console/sign-in", data={"csrf": found.group(1), "token": token, "lang": "en"}
    )
    assert signed.status_code == 303, signed.text
    home = client.get("/console/")
    found = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert found, home.text
    client.csrf = found.group(1)  # type: ignore[attr-defined]
    return client


@dataclass(frozen=True)
class ConsoleWorld:
    """A server over a pages world of its own for console tests: its URL, its world, its engine.

    Tokens: ``world.tokens`` (``farm``, ``packer``, ``inspector``, ...) and the admin token.
    """

    base: str
    world: World
    engine: Engine

    def client(self, who: str) -> contextlib.closing[httpx.Client]:
        """A console client signed in as ``who`` (``admin`` or a token name of the world), to
        use in a ``with`` block, which closes it."""
        token = ADMIN if who == "admin" else self.world.tokens[who]
        return contextlib.closing(console_client(self.base, token))


@pytest.fixture(scope="module")
def console_world(
    tmp_path_factory: pytest.TempPathFactory, app_client: Any
) -> Iterator[ConsoleWorld]:
    """A uvicorn server over a fresh pages world (SQLite) for the console's tests (the clock
    stays at the world's last moment, as for :func:`pages_site`; sign-in failures unlimited)."""
    directory: Path = tmp_path_factory.mktemp("console-world")
    engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    with make_pages_world(engine, app_client) as world:
        now = world.now[0]
        config = Settings(
            admin_token=SecretStr(ADMIN),
            log_origin=ORIGIN,
            data_dir=directory,
            sign_in_failures=100,
        )
        app = create_app(config, engine, clock=lambda: now, log_vkey=LOG.verifier)
        with _serve(app) as base:
            yield ConsoleWorld(base, world, engine)
    engine.dispose()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """One headless Chromium for a module of browser tests."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
