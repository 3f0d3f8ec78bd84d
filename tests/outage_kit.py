"""A PostgreSQL server of a test's own, to stop and start (outage tests).

The shared test server (scripts/test-services.sh) must stay up for every other test, so an
outage test runs its own cluster: ``initdb`` into a temporary directory, ``pg_ctl`` to start and
stop it on a free loopback port. As root (CI), the server runs as the ``postgres`` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mqtt_kit import free_port

__all__ = ["PgCluster"]


class PgCluster:
    """A throwaway PostgreSQL cluster in ``directory``: :meth:`start`, :meth:`stop`, :attr:`url`."""

    def __init__(self, pg_ctl: Path, *, options: str = "") -> None:
        self.bin = pg_ctl.parent
        # Not under pytest's tmp_path: its parents are private to root, and the server may
        # have to run as postgres. The cluster removes its directory in close().
        self.directory = Path(tempfile.mkdtemp(prefix="agritrace-pg-"))
        self.data = self.directory / "pgdata"
        self.port = free_port()
        self.options = options
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "agritrace", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+psycopg://agritrace@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)  # noqa: S603

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 {self.options}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "-t", "120", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as a crash would, without a shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def close(self) -> None:
        """Stop the server if it runs; remove its files."""
        status = subprocess.run(  # noqa: S603
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        if status.returncode == 0:
            self.stop("fast")
        shutil.rmtree(self.directory, ignore_errors=True)
