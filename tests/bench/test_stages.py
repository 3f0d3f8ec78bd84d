"""bench.stages sums a py-spy profile by ingest stage, the innermost stage rule first."""

from __future__ import annotations

import io
from pathlib import Path

from bench.stages import OTHER, classify, main

_PROCESS = "Processor.process (ingest/processor.py:461)"
_VERIFY = "crypto_sign_open (nacl/bindings/crypto_sign.py:120)"
_EXECUTE = "DefaultDialect.do_executemany (sqlalchemy/engine/default.py:940)"


def test_a_signature_check_inside_the_processor_counts_as_the_check() -> None:
    """The processor calls the check; the sample is the check's."""
    assert classify(["Thread._bootstrap (threading.py:1002)", _PROCESS, _VERIFY]) == (
        "Ed25519 verify"
    )
    assert classify([_PROCESS, _EXECUTE]) == "database"
    assert classify([_PROCESS, "_Run._sequence (ingest/processor.py:1282)"]) == (
        "processor (Python)"
    )
    assert classify(["<module> (x.py:1)"]) == OTHER


def test_the_table_converts_samples_to_microseconds_per_message(tmp_path: Path) -> None:
    """250 samples at 250 Hz over 1,000 messages is 1,000 us per message."""
    profile = tmp_path / "p.txt"
    profile.write_text(f"{_PROCESS};{_VERIFY} 200\n{_PROCESS};{_EXECUTE} 50\n", encoding="utf-8")
    out = io.StringIO()
    table = main([str(profile), "--messages", "1000", "--rate", "250"], out)
    assert table.us_per_message("Ed25519 verify") == 800
    assert table.us_per_message("database") == 200
    assert table.total_us == 1000
    assert "Ed25519 verify" in out.getvalue()
