"""``agritrace ingest`` and ``agritrace serve``: the ingest service, alone or with the API.

Both run in one event loop: the embedded amqtt broker when ``AGRITRACE_MQTT_URL`` is unset, the
database migrated to the newest schema, the log key from ``DATA_DIR/keys/log.key`` (created on
first use), the ingest TaskGroup with the log checkpointer as a companion task, and for
``serve`` the trace API (uvicorn) too. SIGTERM or SIGINT stops everything cleanly: ingest
finishes and commits the batch in hand and publishes its receipts, the API finishes its
requests, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine

from agritrace.serving import server_options
from ingest import (
    IngestConfig,
    IngestStats,
    Processor,
    ServiceOptions,
    run_checkpointer,
    run_ingest,
    settle_garbage_collector,
    stop_on_signals,
)
from ingest.checkpointer import wall_clock_ms
from ingest.contracting import run_contract_evaluator
from ingest.witnessing import CheckpointCosigner, WitnessConfig, parse_witnesses
from traceapi import create_app
from traceapi.health import create_health_app
from tracecore.backoff import Backoff
from tracecore.bundle import Policy
from tracecore.errors import ConfigError, DatabaseUnavailable
from tracecore.keys import SignerKey, load_or_create_log_key
from tracecore.mqtt import DEFAULT_EMBEDDED, BrokerAddress, embedded_broker
from tracecore.settings import Settings
from tracecore.storage import make_engine, upgrade
from tracecore.storage.engine import durability_problems

__all__ = [
    "Companion",
    "configure_logging",
    "migrate_when_available",
    "quiet_server",
    "run_service",
    "serve_until_stopped",
]

#: An extra task run beside ingest and the API: called with the engine and the stop event.
Companion = Callable[[Engine, asyncio.Event], Awaitable[None]]

_log = logging.getLogger(__name__)


def run_service(
    settings: Settings,
    *,
    api: tuple[str, int] | None = None,
    embedded: BrokerAddress = DEFAULT_EMBEDDED,
    companions: Mapping[str, Companion] | None = None,
    settle_gc: bool = False,
) -> int:
    """Run ingest (and the API on ``api = (host, port)``) until SIGTERM/SIGINT; return 0.

    ``embedded`` is where the embedded broker listens when ``AGRITRACE_MQTT_URL`` is unset.
    ``companions`` run in the same TaskGroup once the API (if any) is up; any of them may set
    the stop event to end the whole service. ``settle_gc`` tunes this process's garbage
    collector for ingest once start-up is done (:func:`ingest.settle_garbage_collector`): the
    commands that own their process pass it, callers inside a larger process do not.
    """
    configure_logging()
    if api is not None:
        _check_port_free(*api)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The log key is named after the origin (C2SP), kept in DATA_DIR/keys/log.key. A present
    # but unreadable or unsafe file is an error, never a reason for a new key: every receipt
    # and checkpoint already issued depends on the old one.
    log_key, created = load_or_create_log_key(settings.keys_dir, settings.log_origin)
    if created:
        _log.warning("created a new log key in %s: %s", settings.keys_dir, log_key.verifier)
    witnesses = parse_witnesses(settings.witnesses)
    try:
        return asyncio.run(
            _main(
                settings,
                log_key,
                witnesses=witnesses,
                api=api,
                embedded=embedded,
                companions=companions or {},
                settle_gc=settle_gc,
            )
        )
    except* ConfigError as group:
        # Found after start (the database's durability, say): the CLI reports it in one line.
        raise group.exceptions[0] from None


async def _main(
    settings: Settings,
    log_key: SignerKey,
    *,
    witnesses: list[WitnessConfig],
    api: tuple[str, int] | None,
    embedded: BrokerAddress,
    companions: Mapping[str, Companion],
    settle_gc: bool,
) -> int:
    stop = asyncio.Event()
    stats = IngestStats()
    with stop_on_signals(stop):
        async with _broker(settings, embedded) as broker, _engine(settings) as engine:
            server = None
            app = None
            if api is not None:
                # The API comes up at once, database or not: it answers 503 (with Retry-After)
                # for what needs the database until ingest below has migrated it.
                app = create_app(settings, engine, migrate=False, ingest=stats)
                server = quiet_server(app, *api, **server_options(settings))
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    _stop_when_done(
                        _ingest(
                            settings,
                            engine=engine,
                            log_key=log_key,
                            witnesses=witnesses,
                            broker=broker,
                            stop=stop,
                            stats=stats,
                            app=app,
                            settle_gc=settle_gc,
                        ),
                        stop,
                    ),
                    name="ingest",
                )
                if server is None and settings.ingest_health_port is not None:
                    # A stand-alone ingest: its own small health server (no database needed).
                    server = quiet_server(
                        create_health_app(stats),
                        settings.ingest_health_host,
                        settings.ingest_health_port,
                    )
                if server is not None:
                    tasks.create_task(serve_until_stopped(server, stop), name="api")
                for name, companion in companions.items():
                    tasks.create_task(
                        _after_start(server, stats, stop, companion(engine, stop)), name=name
                    )
    return 0


async def _ingest(
    settings: Settings,
    *,
    engine: Engine,
    log_key: SignerKey,
    witnesses: list[WitnessConfig],
    broker: BrokerAddress,
    stop: asyncio.Event,
    stats: IngestStats,
    app: Any,
    settle_gc: bool = False,
) -> None:
    """Wait for the database, migrate it, check it keeps commits, then run ingest until stop."""
    if not await migrate_when_available(engine, stop):
        return
    if app is not None:
        app.state.schema_ready = True
    problems = await asyncio.to_thread(durability_problems, engine)
    if problems:
        # A receipt tells a device to forget its message: it must not outlive the commit.
        raise ConfigError(
            "the database does not keep commits through a power loss: "
            + "; ".join(problems)
            + ' (docs/operations.md, "Durability")'
        )
    options = ServiceOptions(
        broker=broker,
        client_id=settings.ingest_client_id,
        shared=settings.ingest_shared,
        batch_size=settings.batch_size,
        linger_ms=settings.linger_ms,
        # The embedded amqtt broker speaks MQTT 3.1.1 only (docs/ingest.md, "The MQTT client").
        protocol=5 if settings.mqtt_url and settings.ingest_mqtt_version == "5" else 4,
    )
    processor = Processor(
        engine,
        log_key,
        IngestConfig(
            batch_size=settings.batch_size,
            linger_ms=settings.linger_ms,
            park_ms=round(settings.park_hours * 3_600_000),
            verify_threads=settings.verify_threads,
            signature_processes=settings.signature_processes,
            max_message_bytes=settings.max_message_bytes,
        ),
    )
    try:
        async with httpx.AsyncClient() as http:
            # The log checkpointer runs as a companion task of ingest (same TaskGroup, same
            # stop event); each new checkpoint goes to the witnesses of AGRITRACE_WITNESSES.
            cosigner = CheckpointCosigner(engine, witnesses, http, wall_clock_ms)
            checkpointer = functools.partial(
                run_checkpointer,
                engine,
                log_key,
                settings.log_origin,
                settings.checkpoint_seconds,
                on_checkpoint=cosigner if witnesses else None,
                index_seconds=settings.index_seconds,
            )
            # Contracts of changed products run beside ingest, on what a checkpoint covers.
            policy = Policy(log_key.verifier, {w.name: w.vkey for w in witnesses}, 0)
            evaluator = functools.partial(
                run_contract_evaluator, engine, policy, settings.contract_seconds
            )
            if settle_gc:
                settle_garbage_collector()
            await run_ingest(
                processor,
                options,
                stop,
                companions={"log-checkpointer": checkpointer, "contract-evaluator": evaluator},
                stats=stats,
            )
    finally:
        processor.close()


async def migrate_when_available(
    engine: Engine, stop: asyncio.Event, *, initial_s: float = 0.5, cap_s: float = 10.0
) -> bool:
    """Migrate the schema, waiting (capped, jittered backoff) while the database is unavailable.

    Returns True once migrated, False when ``stop`` was set first. Errors other than an
    unavailable database (a refused migration step, a bad URL) propagate.
    """
    backoff = Backoff(initial=initial_s, cap=cap_s)
    while not stop.is_set():
        try:
            await asyncio.to_thread(upgrade, engine)
        except DatabaseUnavailable as exc:
            delay = backoff.next_delay()
            if backoff.failures == 1 or backoff.failures % 10 == 0:
                _log.warning("database unavailable (%s); trying again in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            continue
        if backoff.failures:
            _log.warning("database available again; schema migrated")
        return True
    return False


@contextlib.asynccontextmanager
async def _broker(settings: Settings, embedded: BrokerAddress) -> AsyncIterator[BrokerAddress]:
    """The configured broker, or the embedded one on ``embedded`` for the block's duration."""
    if settings.mqtt_url:
        yield BrokerAddress.parse(settings.mqtt_url)
        return
    async with embedded_broker(embedded):
        yield embedded


@contextlib.asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[Engine]:
    """The database engine of the block (connecting lazily: the database may be down now)."""
    engine = make_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops everything on one event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to :func:`stop_on_signals` (uvicorn would re-raise them at exit)."""
        yield


async def _stop_when_done(work: Awaitable[object], stop: asyncio.Event) -> None:
    """Await ``work``; however it ends, ask the other parts to stop too."""
    try:
        await work
    finally:
        stop.set()


def quiet_server(app: Any, host: str, port: int, **options: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` that leaves signal handling to :func:`stop_on_signals`.

    ``options`` are more :class:`uvicorn.Config` options (:func:`agritrace.serving.server_options`).
    """
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", **options
    )
    return _Server(config)


async def serve_until_stopped(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set (then finish open requests); set ``stop`` if serving ends."""
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_stop_when_done(server.serve(), stop), name="uvicorn")
            await stop.wait()
            server.should_exit = True
    finally:
        # Cancelled (another task of the process failed), uvicorn skips its shutdown and its
        # listening sockets stay open until the garbage collector finds them: close them here.
        for listener in getattr(server, "servers", []):
            listener.close()


async def _after_start(
    server: uvicorn.Server | None,
    stats: IngestStats,
    stop: asyncio.Event,
    work: Awaitable[None],
) -> None:
    """Run ``work`` once ``server`` (if any) accepts connections and ingest is subscribed.

    Ingest subscribes after it has migrated the database, which may come up later than this
    process: a companion (the demo) must find the schema there and its messages heard.
    """
    # uvicorn offers only the ``started`` flag, and ingest its counters: no event to wait on.
    while (server is not None and not server.started) or stats.connects == 0:
        if stop.is_set():
            if isinstance(work, Coroutine):
                work.close()  # never started: stopping before ingest ever ran
            return
        await asyncio.sleep(0.05)
    await work


def _check_port_free(host: str, port: int) -> None:
    with contextlib.closing(socket.socket()) as sock:
        if sock.connect_ex((host, port)) == 0:
            raise ConfigError(f"{host}:{port} is in use; stop what runs there or pass --port")


def freeze_startup_heap() -> None:
    """Exempt the objects alive now (modules, the app) from the cyclic collector's full passes.

    An API process holds about 150,000 such objects, and a full collection walked all of them:
    about 100 ms during which that process answered nothing, the slowest scans of the scan
    benchmark. They live as long as the process, so scanning them finds nothing to free.
    Python documents this use of :func:`gc.freeze` (call it once start-up is done).
    """
    gc.collect()
    gc.freeze()


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level``; the chattiest libraries only from WARNING on."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("amqtt", "transitions", "httpx", "alembic", "uvicorn.error"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_api_workers(host: str, port: int, workers: int) -> int:
    """Run ``workers`` API processes on one port; stop them all on SIGTERM or SIGINT.

    Each child is ``agritrace api --reuse-port`` with this process's environment (so the same
    settings). A child that dies takes the others down: the exit status says so.
    """
    command = [sys.executable, "-m", "agritrace", "api", "--host", host, "--port", str(port)]
    children = [
        subprocess.Popen([*command, "--reuse-port"])  # noqa: S603 (this interpreter, our CLI)
        for _ in range(workers)
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        sys.stderr.write(f"agritrace api: {workers} processes on http://{host}:{port}\n")
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        if not stopping:
            stop(signal.SIGTERM, None)
        codes = [child.wait(30) for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return (
        0 if stopping and all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes) else 1
    )
