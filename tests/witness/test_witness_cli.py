"""`agritrace witness`: the command starts a witness that prints its vkey and cosigns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from toylog import ORIGIN, ToyLog

from agritrace.cli import main
from tracecore.keys import SignerKey, VerifierKey, read_key_file
from tracecore.note import append_signatures, cosigner_verifier, verify_note
from tracecore.tlog_witness import AddCheckpointRequest

LOG_KEY = SignerKey("log", bytes(range(32)))
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_witness_command_prints_its_vkey_and_cosigns(tmp_path: Path) -> None:
    """The command creates keys/w1.key, prints the 0x04 vkey, serves add-checkpoint."""
    port = _free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from agritrace.cli import main; sys.exit(main(sys.argv[1:]))",
        "--data-dir",
        str(tmp_path),
        "witness",
        "--port",
        str(port),
        "--log-vkey",
        str(LOG_KEY.verifier),
        "--origin",
        ORIGIN,
        "--name",
        "w1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        vkey = VerifierKey.parse(process.stdout.readline())
        assert vkey == cosigner_verifier(read_key_file(tmp_path / "keys", "w1"))
        log = ToyLog(LOG_KEY, size=4)
        body = AddCheckpointRequest(0, (), log.checkpoint()).format()
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/add-checkpoint", content=body)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the witness did not start"
                time.sleep(0.05)
        assert response.status_code == 200
        cosigned = append_signatures(log.checkpoint(), [response.text.strip()])
        assert verify_note(cosigned, [vkey]) == ("w1",)
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert (tmp_path / "witness-w1.db").exists()


def test_witness_command_refuses_a_bad_log_vkey(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --log-vkey fails with exit 1 and a message, before serving."""
    argv = ["--data-dir", str(tmp_path), "witness", "--log-vkey", "log+00000000+AAAA"]
    assert main(argv) == 1
    assert "vkey" in capsys.readouterr().err
