"""bench/proofs.py runs end to end at a small size (a smoke test: nothing is timed here)."""

from __future__ import annotations

import io
from pathlib import Path

from bench.proofs import main


def test_proof_benchmark_runs_at_1000_leaves(tmp_path: Path) -> None:
    """The benchmark fills, integrates, proves, spot-checks and prints one table row."""
    out = io.StringIO()
    results = main(["--sizes", "1000", "--samples", "5", "--dir", str(tmp_path)], out=out)
    assert [r.size for r in results] == [1000]
    assert results[0].proof_hashes == 10
    assert "1,000" in out.getvalue()
