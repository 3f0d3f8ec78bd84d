"""`agritrace monitor` against a running server: replays the log over HTTP, keeps its state."""

from __future__ import annotations

from pathlib import Path

import pytest
from trace_kit import LOG

from agritrace.cli import main as cli
from tracecore.keys import SignerKey


def test_monitor_command_replays_a_served_log(
    live_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over HTTP: MONITOR OK, the checkpoint kept, and a second run checks the log grew."""
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {LOG.verifier}\nquorum 0\n")
    state = tmp_path / "seen.txt"
    assert cli(["monitor", live_api, "--policy", str(policy), "--state", str(state)]) == 0
    first = capsys.readouterr().out
    assert first.endswith("MONITOR OK\n"), first
    assert "ok   index      " in first
    assert state.read_text().startswith(LOG.name)
    assert cli(["monitor", live_api, "--policy", str(policy), "--state", str(state)]) == 0
    assert "ok   growth     the log at" in capsys.readouterr().out


def test_monitor_command_refuses_a_checkpoint_of_another_key(
    live_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy naming another log key: exit 1 with the reason, nothing monitored."""
    policy = tmp_path / "policy.txt"
    impostor = SignerKey(LOG.name, bytes(32))
    policy.write_text(f"log {impostor.verifier}\n")
    code = cli(["monitor", live_api, "--policy", str(policy)])
    assert code == 1
    assert "signature" in capsys.readouterr().err
