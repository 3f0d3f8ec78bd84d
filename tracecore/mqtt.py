"""MQTT broker addresses and the embedded amqtt broker (the zero-setup default).

design.md: with ``AGRITRACE_MQTT_URL`` unset, agritrace starts an embedded amqtt broker on
127.0.0.1:1883; in production it talks to mosquitto (MQTT 5, shared subscriptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from amqtt.broker import Broker

from tracecore.errors import ConfigError

__all__ = ["DEFAULT_EMBEDDED", "BrokerAddress", "embedded_broker"]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where an MQTT broker listens: ``mqtt://[user:password@]host[:port]``."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse an ``mqtt://`` URL; raises :class:`ConfigError` saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "mqtt":
            raise ConfigError(f"MQTT URL {url!r} must start with mqtt://")
        if not parts.hostname:
            raise ConfigError(f"MQTT URL {url!r} has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"MQTT URL {url!r} must be mqtt://host:port, nothing after")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise ConfigError(f"MQTT URL {url!r} has an invalid port") from exc
        return cls(parts.hostname, port, parts.username, parts.password)

    def __str__(self) -> str:
        """The URL without the password."""
        user = f"{self.username}@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


DEFAULT_EMBEDDED = BrokerAddress("127.0.0.1", 1883)
#: Longest wait for the embedded broker's own shutdown.
SHUTDOWN_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def embedded_broker(address: BrokerAddress = DEFAULT_EMBEDDED) -> AsyncIterator[None]:
    """Run the embedded amqtt broker on ``address`` for the duration of the context.

    It listens on that address only (loopback by default) and allows anonymous clients: it is
    the zero-setup default for one machine, not a production broker.
    """
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{address.host}:{address.port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    broker = Broker(config)
    try:
        await broker.start()
    except Exception as exc:  # amqtt raises its own BrokerError or OSError on bind
        raise ConfigError(f"cannot start the embedded MQTT broker on {address}: {exc}") from exc
    log = logging.getLogger(__name__)
    log.info("embedded MQTT broker on %s", address)
    try:
        yield
    finally:
        await _shutdown(broker, address, log)


async def _shutdown(broker: Broker, address: BrokerAddress, log: logging.Logger) -> None:
    """Stop the broker; never hang, and always free the listening port.

    amqtt's shutdown stops every client session before it closes its listeners, and with
    clients still connected it can wait forever on a session (seen with amqtt 0.12). Bound it,
    then close the listeners directly so the port is free for a restart.
    """
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
            await broker.shutdown()
    except TimeoutError:
        log.warning("embedded MQTT broker on %s did not shut down in time; closing it", address)
        # amqtt keeps its listeners in a private mapping; no public call closes them alone.
        for server in list(getattr(broker, "_servers", {}).values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.close_instance()
