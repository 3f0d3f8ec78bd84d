"""Settings of every agritrace part, read from ``AGRITRACE_*`` environment variables.

Only the edges (the CLI, the service entry points) read the environment; the core takes the values
it needs as arguments.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracecore.errors import ConfigError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Configuration shared by the agritrace services (design.md, "Storage and configuration")."""

    model_config = SettingsConfigDict(env_prefix="AGRITRACE_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path("data"), description="keys, SQLite file, outboxes")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL; unset: SQLite file")
    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; unset: embedded")
    public_url: str = Field(default="http://127.0.0.1:8000", description="base of QR URIs")
    log_origin: str = Field(default="agritrace.localhost/log", description="checkpoint origin")
    admin_token: SecretStr | None = Field(default=None, description="bearer token of the admin")
    witnesses: str = Field(default="", description="space-separated 'URL=vkey' pairs")

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
