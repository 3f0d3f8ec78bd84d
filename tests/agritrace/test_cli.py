"""Tests of the `agritrace` command line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agritrace.cli import _parser, main
from tracecore.keys import VerifierKey, read_key_file


def test_keys_new_writes_a_private_file_and_prints_the_vkey(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agritrace keys new gw-1` writes keys/gw-1.key (0600) and prints its vkey on stdout."""
    assert main(["--data-dir", str(tmp_path), "keys", "new", "gw-1"]) == 0
    out, err = capsys.readouterr()
    vkey = VerifierKey.parse(out.strip())
    key = read_key_file(tmp_path / "keys", "gw-1")
    assert vkey == key.verifier
    assert stat.S_IMODE((tmp_path / "keys" / "gw-1.key").stat().st_mode) == 0o600
    assert f"device kid (hex):    {vkey.kid.hex()}" in err


def test_keys_show_prints_the_same_vkey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`agritrace keys show` prints the vkey of an existing key again."""
    main(["--data-dir", str(tmp_path), "keys", "new", "witness-1"])
    first = capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "keys", "show", "witness-1"]) == 0
    assert capsys.readouterr().out == first


def test_keys_new_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second `keys new` of the same name fails with exit 1 and keeps the first key."""
    main(["--data-dir", str(tmp_path), "keys", "new", "log"])
    before = (tmp_path / "keys" / "log.key").read_bytes()
    assert main(["--data-dir", str(tmp_path), "keys", "new", "log"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "keys" / "log.key").read_bytes() == before


def test_keys_show_of_a_missing_key_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys show` of an unknown name exits 1 and says how to create the key."""
    assert main(["--data-dir", str(tmp_path), "keys", "show", "nope"]) == 1
    assert "agritrace keys new" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`agritrace` without a command prints usage and exits 2."""
    assert main([]) == 2
    assert "usage: agritrace" in capsys.readouterr().err


def test_the_log_key_is_named_after_the_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys new log` writes log.key named after AGRITRACE_LOG_ORIGIN, as checkpoints need."""
    monkeypatch.setenv("AGRITRACE_LOG_ORIGIN", "trace.gansu.example/log")
    assert main(["--data-dir", str(tmp_path), "keys", "new", "log"]) == 0
    vkey = VerifierKey.parse(capsys.readouterr().out.strip())
    assert vkey.name == "trace.gansu.example/log"
    assert (tmp_path / "keys" / "log.key").exists()
    assert main(["--data-dir", str(tmp_path), "keys", "show", "log"]) == 0
    assert capsys.readouterr().out.strip() == str(vkey)


@pytest.mark.parametrize("command", ["api", "serve", "demo", "witness"])
@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "80x", ""])
def test_port_outside_1_to_65535_is_refused(
    command: str, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--port must be a TCP port 1-65535: anything else exits 2 naming the rule."""
    extra = ["--log-vkey", "x"] if command == "witness" else []
    # Parse only: a port that passed would start a server.
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args([command, "--port", port, *extra])
    assert exited.value.code == 2
    assert "argument --port: must be a TCP port 1-65535" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["api", "serve", "demo", "witness"])
@pytest.mark.parametrize("port", [1, 8000, 65535])
def test_ports_1_to_65535_are_accepted(command: str, port: int) -> None:
    """The bounds themselves are valid ports."""
    extra = ["--log-vkey", "x"] if command == "witness" else []
    assert _parser().parse_args([command, "--port", str(port), *extra]).port == port


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agritrace ARGS`` in a fresh process; return its outcome."""
    return subprocess.run(  # noqa: S603 (this interpreter, our CLI)
        [sys.executable, "-m", "agritrace", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["keys", "new", "gw-1"], ["keys", "show", "log"], ["migrate"]])
@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_a_data_dir_that_is_a_file_is_one_line_and_exit_2(
    tmp_path: Path, command: list[str], below: str
) -> None:
    """--data-dir naming a file (or a path below one) exits 2 with one line, no traceback."""
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    data_dir = a_file / below if below else a_file
    result = _run_cli("--data-dir", str(data_dir), *command)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"agritrace: data directory {data_dir} (--data-dir")
    expected = "is not a directory" if data_dir == a_file else f"{a_file} is not a directory"
    assert lines[0].endswith(expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_an_unreadable_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A data directory this user may not read exits 2 saying so."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        result = _run_cli("--data-dir", str(locked), "keys", "show", "log")
    finally:
        locked.chmod(0o700)
    assert result.returncode == 2
    where = f"data directory {locked} (--data-dir or AGRITRACE_DATA_DIR)"
    assert result.stderr.splitlines() == [f"agritrace: {where} is not readable by this user"]
