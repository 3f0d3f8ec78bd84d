"""Shared fixtures: real services (PostgreSQL, mosquitto) and databases on both engines.

``db_url`` is parametrized over ``sqlite`` (a file under tmp_path) and ``postgres`` (marked
``postgres``; a fresh database created on the server named by ``AGRITRACE_TEST_PG_URL`` and
dropped after the test). Without that variable the postgres case is skipped, unless
``AGRITRACE_REQUIRE_SERVICES=1``, in which case it fails loudly.

The same goes for the real tools some tests drive: programs on ``PATH`` (zbarimg, chromium,
java, node) and the checkers scripts/test-tools.sh installs: axe-core's ``axe.min.js`` and the
Nu Html Checker's ``vnu.jar`` (``AGRITRACE_AXE_JS`` and ``AGRITRACE_VNU_JAR``), Redocly CLI
(``AGRITRACE_REDOCLY``) and openapi-python-client (``AGRITRACE_OPENAPI_CLIENT_GEN``), by default
under ``build/tools``.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tracecore.mqtt import BrokerAddress
from tracecore.storage.engine import make_engine
from tracecore.storage.migrate import upgrade

__all__: list[str] = []

PG_URL_ENV = "AGRITRACE_TEST_PG_URL"
MQTT_URL_ENV = "AGRITRACE_TEST_MQTT_URL"
REQUIRE_ENV = "AGRITRACE_REQUIRE_SERVICES"
AXE_ENV = "AGRITRACE_AXE_JS"
VNU_ENV = "AGRITRACE_VNU_JAR"
REDOCLY_ENV = "AGRITRACE_REDOCLY"
CLIENT_GEN_ENV = "AGRITRACE_OPENAPI_CLIENT_GEN"
#: Where scripts/test-tools.sh installs the npm checkers (axe-core, vnu-jar, @redocly/cli).
TOOLS = Path(__file__).resolve().parents[1] / "build" / "tools" / "node_modules"

EngineFactory = Callable[[], Engine]


def _service_url(env: str) -> str:
    """Return the URL of a real test service, or skip / fail (in CI) when it is not configured."""
    url = os.environ.get(env)
    if url:
        return url
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {env} is not set", pytrace=False)
    pytest.skip(f"{env} is not set")


def require_program(name: str) -> str:
    """Return the path of the program ``name``; skip, or fail in CI, when it is not installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {name} is not installed", pytrace=False)
    pytest.skip(f"{name} is not installed (scripts/test-services.sh installs it)")


def require_file(env: str, default: Path, what: str) -> Path:
    """Return the file named by ``env`` (else ``default``); skip, or fail in CI, when missing."""
    path = Path(os.environ.get(env) or default)
    if path.is_file():
        return path
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {what} is not at {path} (set {env})", pytrace=False)
    pytest.skip(f"{what} is not at {path} (scripts/test-tools.sh installs it; or set {env})")


@pytest.fixture
def pg_ctl() -> Path:
    """PostgreSQL's pg_ctl (newest installed server), for tests that run a cluster of their own."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    default = found[-1] if found else Path("/usr/lib/postgresql/bin/pg_ctl")
    return require_file("AGRITRACE_TEST_PG_CTL", default, "PostgreSQL's pg_ctl")


@pytest.fixture
def mosquitto_programs() -> tuple[str, str]:
    """The paths of mosquitto and mosquitto_passwd (Debian package mosquitto)."""
    return require_program("mosquitto"), require_program("mosquitto_passwd")


@pytest.fixture
def zbarimg() -> str:
    """The path of zbarimg (zbar-tools), the QR decoder the QR tests use."""
    return require_program("zbarimg")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's headless Chromium, for the browser tests."""
    return require_program("chromium")


@pytest.fixture(scope="session")
def axe_js() -> Path:
    """axe-core's ``axe.min.js`` (npm axe-core 4.x), the accessibility rules run in Chromium."""
    return require_file(AXE_ENV, TOOLS / "axe-core" / "axe.min.js", "axe-core (axe.min.js)")


@pytest.fixture(scope="session")
def vnu_jar() -> tuple[str, Path]:
    """The ``java`` program and the Nu Html Checker's ``vnu.jar`` (npm vnu-jar; Java >= 17)."""
    jar = require_file(VNU_ENV, TOOLS / "vnu-jar" / "build" / "dist" / "vnu.jar", "vnu.jar")
    return require_program("java"), jar


@pytest.fixture(scope="session")
def redocly() -> tuple[str, Path]:
    """The ``node`` program and Redocly CLI's ``cli.js`` (npm @redocly/cli 2.x, Node >= 20.19)."""
    cli = require_file(REDOCLY_ENV, TOOLS / "@redocly" / "cli" / "bin" / "cli.js", "Redocly CLI")
    return require_program("node"), cli


@pytest.fixture(scope="session")
def openapi_client_gen() -> Path:
    """openapi-python-client (PyPI), in a virtualenv of its own: it caps httpx below ours."""
    default = TOOLS.parent / "openapi-python-client" / "bin" / "openapi-python-client"
    return require_file(CLIENT_GEN_ENV, default, "openapi-python-client")


def _pg_server_url() -> str:
    return _service_url(PG_URL_ENV)


@pytest.fixture
def mosquitto() -> BrokerAddress:
    """The address of the real mosquitto broker named by ``AGRITRACE_TEST_MQTT_URL``."""
    return BrokerAddress.parse(_service_url(MQTT_URL_ENV))


@pytest.fixture
def pg_database() -> Iterator[str]:
    """Create a fresh, empty PostgreSQL database for one test, yield its URL, then drop it."""
    server = make_url(_pg_server_url())
    if server.drivername in {"postgresql", "postgres"}:
        server = server.set(drivername="postgresql+psycopg")
    name = f"agritrace_t_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("db")
        return f"sqlite:///{directory / 'data' / 'agritrace.sqlite3'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def engine_factory(db_url: str) -> Iterator[EngineFactory]:
    """A factory of engines on the test database (unmigrated); all are disposed after the test."""
    engines: list[Engine] = []

    def factory() -> Engine:
        engine = make_engine(db_url)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(engine_factory: EngineFactory) -> Engine:
    """An engine on a fresh test database migrated to the newest schema."""
    migrated = engine_factory()
    upgrade(migrated)
    return migrated


class AppClient:
    """A synchronous HTTP client for an ASGI app that runs the app's lifespan, like TestClient.

    starlette.testclient needs the httpx2 package (it warns on httpx); this stays on httpx:
    an ``httpx.AsyncClient`` over ``httpx.ASGITransport`` driven from an anyio blocking portal.
    """

    def __init__(self, app: Any, base_url: str = "http://testserver") -> None:
        """Wrap ``app``; use as a context manager to start and stop it."""
        self.app = app
        self._base_url = base_url
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None
        self._client: httpx.AsyncClient | None = None

    def __enter__(self) -> AppClient:
        """Start the event loop thread, run the app's startup, open the HTTP client."""
        portal = self._stack.enter_context(start_blocking_portal())
        self._stack.enter_context(
            portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
        )
        transport = httpx.ASGITransport(app=self.app)
        self._client = self._stack.enter_context(
            portal.wrap_async_context_manager(
                httpx.AsyncClient(transport=transport, base_url=self._base_url)
            )
        )
        self._portal = portal
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client, run the app's shutdown, stop the loop."""
        self._stack.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return the response."""
        assert self._portal is not None, "use AppClient as a context manager"
        assert self._client is not None
        response: httpx.Response = self._portal.call(
            functools.partial(self._client.request, method, url, **kwargs)
        )
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        """The cookies the client keeps between requests, as a browser would."""
        assert self._client is not None, "use AppClient as a context manager"
        return self._client.cookies

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """Send a GET request."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """Send a POST request."""
        return self.request("POST", url, **kwargs)


@pytest.fixture(scope="session")
def app_client() -> type[AppClient]:
    """The :class:`AppClient` class: ``with app_client(app) as client: client.get(...)``."""
    return AppClient
