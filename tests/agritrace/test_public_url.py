"""The public URL follows the address the API binds unless AGRITRACE_PUBLIC_URL is configured."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agritrace.address import local_url, serving_settings
from tracecore.settings import load_settings

KEY = "01/06901234567892/10/L1/21/C0001"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 9000, "http://127.0.0.1:9000"),
        ("0.0.0.0", 9001, "http://127.0.0.1:9001"),  # noqa: S104 (a bind address under test)
        ("", 9002, "http://127.0.0.1:9002"),
        ("::", 9003, "http://[::1]:9003"),
        ("::1", 9004, "http://[::1]:9004"),
        ("[::1]", 9005, "http://[::1]:9005"),
        ("2001:db8::7", 9006, "http://[2001:db8::7]:9006"),
        ("192.0.2.4", 80, "http://192.0.2.4:80"),
        ("trace.local", 8080, "http://trace.local:8080"),
    ],
)
def test_local_url_is_where_a_client_here_connects(host: str, port: int, url: str) -> None:
    """Wildcards become loopback of their family; IPv6 literals get brackets; names stay."""
    assert local_url(host, port) == url


def test_unset_public_url_follows_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AGRITRACE_PUBLIC_URL (or with it empty) the served port is in the URL."""
    monkeypatch.delenv("AGRITRACE_PUBLIC_URL", raising=False)
    assert serving_settings(load_settings(), "0.0.0.0", 9000).public_url == (  # noqa: S104
        "http://127.0.0.1:9000"
    )
    monkeypatch.setenv("AGRITRACE_PUBLIC_URL", "")
    assert serving_settings(load_settings(), "::", 9001).public_url == "http://[::1]:9001"


def test_configured_public_url_stays_authoritative(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public URL from the environment is kept, whatever host and port are bound."""
    monkeypatch.setenv("AGRITRACE_PUBLIC_URL", "https://trace.gansu.example")
    settings = serving_settings(load_settings(), "127.0.0.1", 9000)
    assert settings.public_url == "https://trace.gansu.example"


@pytest.mark.parametrize("public", [None, "https://trace.gansu.example"])
def test_api_qr_codes_carry_the_served_port(
    tmp_path: Path, zbarimg: str, public: str | None
) -> None:
    """`agritrace api --port P`: QR codes and the scan answer's bundle URL use port P, or the
    configured public URL."""
    port = _free_port()
    env = {**os.environ, "AGRITRACE_DATA_DIR": str(tmp_path), "AGRITRACE_DB_URL": ""}
    env.pop("AGRITRACE_PUBLIC_URL", None)
    if public is not None:
        env["AGRITRACE_PUBLIC_URL"] = public
    expected = public or f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    with log.open("wb") as sink:
        api = subprocess.Popen(  # noqa: S603 (this interpreter, our CLI)
            [sys.executable, "-m", "agritrace", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        png = httpx.get(f"{base}/qr/{KEY}.png", timeout=10)
        assert png.status_code == 200
        image = tmp_path / "code.png"
        image.write_bytes(png.content)
        decoded = subprocess.run(  # noqa: S603 (a fixed program on a file this test wrote)
            [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        assert decoded == [f"{expected}/{KEY}"]
        svg = httpx.get(f"{base}/qr/{KEY}.svg", timeout=10)
        assert f"{expected}/{KEY}" in svg.text
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(60)
