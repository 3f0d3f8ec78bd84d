"""Tests of `agritrace demo`: the whole pipeline runs for real, and a second run resumes."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from agritrace.cli import main
from tracecore.bundle import Policy, parse_bundle, verify_bundle


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(data: Path, capsys: pytest.CaptureFixture[str]) -> str:
    args = ["--data-dir", str(data), "demo", "--no-serve", "--port", str(_free_port())]
    assert main(args) == 0
    return capsys.readouterr().out


def _pages(out: str) -> dict[str, tuple[str, str]]:
    """The demo's three product pages: label → (verdict, URL)."""
    found = re.findall(r"^   (excursion|clean|recalled) +(\w+) +(http://\S+)$", out, re.MULTILINE)
    return {label: (verdict, url) for label, verdict, url in found}


def test_demo_runs_the_pipeline_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registration, MQTT traffic with receipts, a cosigned checkpoint, a verified bundle, the
    egg and beef scenarios, a recall and three product pages; twice."""
    monkeypatch.delenv("AGRITRACE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("AGRITRACE_MQTT_URL", raising=False)
    first = _run(tmp_path, capsys)
    assert len(re.findall(r"  registered\b", first)) == 4
    assert "8 messages signed and all receipted" in first
    assert "refused and kept: bad_signature" in first
    assert "— demo-witness " in first
    assert first.rstrip().count("VERIFIED") == 1
    assert (tmp_path / "admin-token").stat().st_mode & 0o077 == 0
    pages = _pages(first)
    assert pages["excursion"][0] == "verified"
    assert pages["clean"][0] == "verified"
    assert pages["recalled"][0] == "recalled"
    assert "/R1" in pages["clean"][1]  # the scenarios' first run

    second = _run(tmp_path, capsys)
    assert len(re.findall(r"  found again\b", second)) == 4
    assert "-2/21/C0001" in second  # a new lot each run
    assert re.search(r"consistency  the log at (\d+) extends the previous checkpoint at 10", second)
    again = _pages(second)
    assert again["recalled"][0] == "recalled"
    assert all("/R2" in url for _, url in again.values())  # this run's products, not the last

    # What the demo saved verifies on its own, as `agritrace verify` would.
    out = tmp_path / "demo"
    policy = Policy.parse((out / "policy.txt").read_text())
    report = verify_bundle(parse_bundle((out / "bundle.json").read_text()), policy)
    assert report.ok, report.render()


def test_demo_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With its port taken the demo exits 1 and says which port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--data-dir", str(tmp_path), "demo", "--port", str(port)]) == 1
    assert f"127.0.0.1:{port} is in use" in capsys.readouterr().err
