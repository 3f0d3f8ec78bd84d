"""Tests of `agritrace demo`: it runs for real, and a second run reuses its data."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from agritrace.cli import main
from tracecore.cose import parse_message
from tracecore.keys import read_key_file


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(data: Path, capsys: pytest.CaptureFixture[str]) -> str:
    args = ["--data-dir", str(data), "demo", "--no-serve", "--port", str(_free_port())]
    assert main(args) == 0
    return capsys.readouterr().out


def test_demo_registers_signs_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo registers parties and devices, signs verifiable messages, and resumes its data."""
    monkeypatch.delenv("AGRITRACE_ADMIN_TOKEN", raising=False)
    first = _run(tmp_path, capsys)
    assert len(re.findall(r"  registered\b", first)) == 4
    assert "refused: bad_signature" in first
    assert (tmp_path / "admin-token").stat().st_mode & 0o077 == 0

    second = _run(tmp_path, capsys)
    assert len(re.findall(r"  found again\b", second)) == 4
    assert not re.search(r"  registered\b", second)
    assert "seq 2:" in second

    # The saved messages verify under the device key files the demo created.
    saved = sorted((tmp_path / "demo-messages").glob("*.cbor"))
    assert len(saved) == 4
    for path in saved:
        signed = parse_message(path.read_bytes())
        device_key = read_key_file(tmp_path / "keys", signed.message.device)
        signed.verify(device_key.public_key)
        assert re.fullmatch(rf"{signed.message.device}-{signed.message.seq}\.cbor", path.name)


def test_demo_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With its port taken the demo exits 1 and says which port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--data-dir", str(tmp_path), "demo", "--port", str(port)]) == 1
    assert f"127.0.0.1:{port} is in use" in capsys.readouterr().err
