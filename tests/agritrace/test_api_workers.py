"""`agritrace api`: one process, or `--workers 2` on one port; SIGTERM stops them, exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_two_api_processes_share_a_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    """Both processes answer on the port; SIGTERM to the parent ends all of them cleanly."""
    port = _free_port()
    env = {**os.environ, "AGRITRACE_DATA_DIR": str(tmp_path), "AGRITRACE_DB_URL": ""}
    log = tmp_path / "api.log"
    with log.open("wb") as sink:
        parent = subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            [sys.executable, "-m", "agritrace", "api", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        answers = 0
        while time.monotonic() < deadline and answers < 20:
            try:
                # A new connection each time: the kernel spreads them over both sockets.
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    answers += 1
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answers == 20
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        assert len(children) == 2
    finally:
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(60)
    assert code == 0, log.read_text()
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_one_api_process_exits_0_on_sigterm(tmp_path: Path) -> None:
    """`agritrace api` (one process, uvicorn) ends with status 0 on SIGTERM, not 143."""
    port = _free_port()
    env = {**os.environ, "AGRITRACE_DATA_DIR": str(tmp_path), "AGRITRACE_DB_URL": ""}
    log = tmp_path / "api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            [sys.executable, "-m", "agritrace", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, log.read_text()
