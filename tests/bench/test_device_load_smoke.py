"""loadtests/devices.py drives real devices against `agritrace serve` (a smoke test: nothing is
timed here)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tracecore.mqtt import BrokerAddress

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-token-for-the-device-load-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.mosquitto
@pytest.mark.slow
def test_locust_devices_get_their_receipts(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """Five locust device users publish signed readings; every reading is receipted, none fails."""
    port = _free_port()
    broker = f"mqtt://{mosquitto.host}:{mosquitto.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGRITRACE_")}
    env |= {
        "AGRITRACE_DATA_DIR": str(tmp_path / "data"),
        "AGRITRACE_MQTT_URL": broker,
        "AGRITRACE_ADMIN_TOKEN": ADMIN,
        "AGRITRACE_INGEST_CLIENT_ID": f"load-ingest-{port}",
        "AGRITRACE_CHECKPOINT_SECONDS": "1",
    }
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            [sys.executable, "-m", "agritrace", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        load_env = env | {
            "AGRITRACE_LOAD_API": base,
            "AGRITRACE_LOAD_ADMIN_TOKEN": ADMIN,
            "AGRITRACE_LOAD_BROKER": broker,
            "AGRITRACE_LOAD_DEVICE_WAIT": "0.5",
            "PYTHONPATH": str(ROOT),
        }
        prefix = tmp_path / "devices"
        subprocess.run(  # noqa: S603 (the venv's locust, fixed arguments)
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "devices.py"),
             "--headless", "-u", "5", "-r", "5", "-t", "10s", "--stop-timeout", "15",
             "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "DeviceUser"],
            env=load_env,
            check=False,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        with (tmp_path / "devices_stats.csv").open(newline="") as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
        receipts = rows["receipt"]
        assert int(receipts["Request Count"]) >= 20
        assert int(receipts["Failure Count"]) == 0
    finally:
        server.terminate()
        server.wait(60)
