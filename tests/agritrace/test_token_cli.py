"""`agritrace token create|list|revoke`: the operator's token commands, on the data directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agritrace.cli import main
from tracecore.storage import create_party, find_token, make_engine, session_scope

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated SQLite database in ``tmp_path`` with the farm farm-1 and the agency agency-1."""
    monkeypatch.delenv("AGRITRACE_DB_URL", raising=False)
    assert main(["--data-dir", str(tmp_path), "migrate"]) == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'agritrace.sqlite3'}")
    try:
        with session_scope(engine) as session:
            create_party(session, "farm-1", "Farm", "farm", 0)
            create_party(session, "agency-1", "Agency", "inspector", 0)
    finally:
        engine.dispose()
    return tmp_path


def run(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `agritrace --data-dir DATA_DIR token ARGS…`; return the status, stdout and stderr."""
    capsys.readouterr()
    status = main(["--data-dir", str(data_dir), "token", *args])
    out, err = capsys.readouterr()
    return status, out, err


def accepted(data_dir: Path, token: str) -> bool:
    """True if the database accepts ``token`` now."""
    engine = make_engine(f"sqlite:///{data_dir / 'agritrace.sqlite3'}")
    try:
        with session_scope(engine) as session:
            return find_token(session, token, time.time_ns() // 1_000_000) is not None
    finally:
        engine.dispose()


def test_create_list_revoke_round_trip(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create prints the text (stdout) and id (stderr); list never shows a text; revoke holds."""
    before = time.time_ns() // 1_000_000
    status, out, err = run(data_dir, capsys, "create", "farm-1", "--days", "7")
    assert status == 0
    token = out.strip()
    assert token.startswith("at_")
    assert err.startswith("token 1 of farm-1 (party), expires ")
    status, out, _ = run(data_dir, capsys, "create", "agency-1")
    assert status == 0
    inspector = out.strip()
    assert accepted(data_dir, token)

    status, out, _ = run(data_dir, capsys, "list", "--json")
    assert status == 0
    listed = json.loads(out)
    assert [(item["id"], item["party"], item["role"], item["state"]) for item in listed] == [
        (1, "farm-1", "party", "active"),
        (2, "agency-1", "inspector", "active"),
    ]
    first, second = listed
    assert before <= first["created_ms"] <= time.time_ns() // 1_000_000
    assert first["expires_ms"] == first["created_ms"] + 7 * DAY_MS
    assert second["expires_ms"] == second["created_ms"] + 90 * DAY_MS
    assert set(first) == {
        "id",
        "party",
        "role",
        "created_ms",
        "expires_ms",
        "revoked_ms",
        "state",
    }

    status, table, _ = run(data_dir, capsys, "list")
    assert status == 0
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "PARTY", "ROLE", "CREATED", "EXPIRES", "REVOKED", "STATE"]
    assert lines[1].split()[:3] == ["1", "farm-1", "party"]
    assert lines[1].split()[-2:] == ["-", "active"]
    for output in (table, out):
        assert token not in output
        assert token[3:] not in output
        assert inspector[3:] not in output

    status, _, err = run(data_dir, capsys, "revoke", "1")
    assert status == 0
    assert err.startswith("token 1 of farm-1 (party) revoked on ")
    assert not accepted(data_dir, token)
    assert accepted(data_dir, inspector)
    status, out, _ = run(data_dir, capsys, "list", "--party", "farm-1", "--json")
    assert status == 0
    (revoked,) = json.loads(out)
    assert revoked["state"] == "revoked"
    assert revoked["revoked_ms"] is not None


def test_errors_exit_1_with_a_message(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown party or token id, a bad lifetime: exit 1, a message, nothing changed."""
    status, out, err = run(data_dir, capsys, "create", "nobody")
    assert (status, out) == (1, "")
    assert "no party 'nobody'" in err
    status, out, err = run(data_dir, capsys, "create", "farm-1", "--days", "400")
    assert (status, out) == (1, "")
    assert "lifetime" in err
    assert run(data_dir, capsys, "create", "farm-1", "--days", "0")[0] == 1
    status, _, err = run(data_dir, capsys, "revoke", "5")
    assert status == 1
    assert "no token 5" in err
    status, out, _ = run(data_dir, capsys, "list", "--json")
    assert (status, json.loads(out)) == (0, [])


def test_a_database_not_migrated_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token commands never migrate on their own: they say to run `agritrace migrate`."""
    monkeypatch.delenv("AGRITRACE_DB_URL", raising=False)
    status, _, err = run(tmp_path, capsys, "list")
    assert status == 1
    assert "run `agritrace migrate` first" in err


def test_tokens_is_token(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`agritrace tokens list` is `agritrace token list` (docs/operations.md)."""
    assert main(["--data-dir", str(data_dir), "tokens", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
