"""Settings of every agritrace part, read from ``AGRITRACE_*`` environment variables.

Only the edges (the CLI, the service entry points) read the environment; the core takes the values
it needs as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracecore.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_EMBEDDED_BROKER = "mqtt://127.0.0.1:1883"


class Settings(BaseSettings):
    """Configuration shared by the agritrace services (design.md, "Storage and configuration")."""

    model_config = SettingsConfigDict(env_prefix="AGRITRACE_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path("data"), description="keys, SQLite file, outboxes")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; unset: SQLite file")
    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; unset: embedded")
    public_url: str = Field(default="http://127.0.0.1:8000", description="base of QR URIs")
    public_mqtt_url: str | None = Field(
        default=None,
        description="mqtt://host:port a gateway reaches, for provisioning files; unset: mqtt_url",
    )
    log_origin: str = Field(default="agritrace.localhost/log", description="checkpoint origin")
    admin_token: SecretStr | None = Field(default=None, description="bearer token of the admin")
    witnesses: str = Field(default="", description="space-separated 'URL=vkey' pairs")
    checkpoint_seconds: float = Field(
        default=2.0,
        gt=0,
        description="checkpointer: at most one new signed checkpoint per this many seconds",
    )
    index_seconds: float = Field(
        default=30.0,
        ge=0,
        description="checkpointer: at least this many seconds between product-index roots",
    )
    ingest_shared: bool = Field(
        default=False,
        description="ingest: MQTT 5 shared subscription $share/ingest/... (scale-out)",
    )
    ingest_mqtt_version: Literal["5", "3.1.1"] = Field(
        default="5",
        description="ingest: the MQTT version it speaks to AGRITRACE_MQTT_URL (the embedded "
        "broker: always 3.1.1)",
    )
    ingest_client_id: str = Field(
        default="agritrace-ingest",
        min_length=1,
        max_length=64,
        description="ingest: fixed MQTT client id of the persistent session (one per worker)",
    )
    ingest_health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="ingest: serve /healthz and /metrics of `agritrace ingest` on this port",
    )
    ingest_health_host: str = Field(
        default="127.0.0.1", description="ingest: the address of that health server"
    )
    park_hours: float = Field(
        default=24.0, gt=0, description="ingest: how long a message waits for its product"
    )
    batch_size: int = Field(default=500, ge=1, le=10_000, description="ingest: messages per commit")
    linger_ms: int = Field(
        default=50, ge=0, le=10_000, description="ingest: longest wait to fill a batch"
    )
    verify_threads: int = Field(
        default=2, ge=1, le=64, description="ingest: threads checking signatures (0 processes)"
    )
    signature_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description="ingest: worker processes checking signatures and signing receipts "
        "(0: threads in the ingest process)",
    )
    max_message_bytes: int = Field(
        # At least the protocol's 16 KiB message limit (docs/protocol.md §4), so no valid
        # message is ever refused; larger payloads are refused as too_large, unread.
        default=64 * 1024,
        ge=16384,
        le=256 * 1024 * 1024,
        description="ingest: larger payloads are refused as too_large without being read",
    )
    contract_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="ingest: how often queued products' contracts run"
    )
    copy_threshold: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="scans: a serial seen by more distinct clients than this is a suspect copy",
    )
    copy_window_hours: float = Field(
        default=24 * 7, gt=0, le=24 * 366, description="scans: the copy-detection window"
    )
    feedback_per_hour: int = Field(
        default=5, ge=1, le=1000, description="feedback: submissions per client and hour"
    )
    console_idle_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="console: a session unused this long ends"
    )
    console_max_hours: int = Field(
        default=12, ge=1, le=24 * 7, description="console: a session ends this long after sign-in"
    )
    sign_in_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="console: failed sign-ins per client within the window; more are refused",
    )
    sign_in_window_minutes: int = Field(
        default=15, ge=1, le=24 * 60, description="console: the window of sign_in_failures"
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="API: largest request body of a JSON route; larger ones are 413, unread",
    )
    request_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="API: a request must arrive whole (line, headers, body) within this",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, le=3600, description="API: an idle keep-alive connection is closed after"
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="API: connections one server process serves; requests on more get 503",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=16,
        description="reverse proxies in front of the API; the client address is the "
        "X-Forwarded-For entry this many places from the right (0: the socket's peer)",
    )
    trust_forwarded: bool = Field(
        default=False,
        description="deprecated: means trusted_proxies=1 when that is 0",
    )

    @property
    def proxy_hops(self) -> int:
        """How many reverse proxies in front of the API append to X-Forwarded-For.

        ``trusted_proxies``; when that is 0, 1 for the deprecated ``trust_forwarded``
        (docs/configuration.md).
        """
        if self.trusted_proxies:
            return self.trusted_proxies
        return 1 if self.trust_forwarded else 0

    @property
    def gateway_broker(self) -> str:
        """The broker URL written into provisioning files (docs/gateway.md), without credentials.

        ``public_mqtt_url`` when set, else ``mqtt_url`` (the broker ingest uses), else the
        embedded broker's ``mqtt://127.0.0.1:1883``. User name and password are dropped: the
        URL of ingest's own connection may carry ingest's login, which no gateway may learn.
        """
        from tracecore.mqtt import BrokerAddress  # noqa: PLC0415 (amqtt only when asked)

        address = BrokerAddress.parse(self.public_mqtt_url or self.mqtt_url or _EMBEDDED_BROKER)
        return str(BrokerAddress(address.host, address.port))

    @property
    def keys_dir(self) -> Path:
        """Directory of the private key files (mode 0700, files 0600)."""
        return self.data_dir / "keys"

    @property
    def database_url(self) -> str:
        """The database URL in force: ``db_url`` or the SQLite file under ``data_dir``."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'agritrace.sqlite3').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, applying ``overrides`` on top.

    Raises :class:`ConfigError` naming the variable when a value is invalid.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid AGRITRACE_* setting: {exc}") from exc
