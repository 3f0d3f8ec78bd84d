"""bench/index.py and the index A/B of bench/ingest.py run end to end at tiny sizes (smoke
tests: nothing is timed here)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.index import main
from bench.ingest import index_ab
from tracecore.mqtt import BrokerAddress


def test_index_benchmark_runs_at_2000_products(tmp_path: Path) -> None:
    """The benchmark fills the map, times each batch size, proves, and measures storage."""
    out = io.StringIO()
    result = main(
        [
            "--products", "2000", "--fill-batch", "512", "--batches", "1", "50",
            "--rounds", "2", "--samples", "20", "--dir", str(tmp_path),
        ],
        out=out,
    )  # fmt: skip
    assert result.products == 2000
    assert [(c.kind, c.batch) for c in result.batches] == [
        ("update", 1), ("update", 50), ("insert", 1), ("insert", 50)
    ]  # fmt: skip
    # One value row per key and at least the leaf's node row; a lone key rewrites its path.
    assert all(c.rows_per_key >= 2 and c.us_per_key > 0 for c in result.batches)
    assert result.batches[0].rows_per_key > result.batches[1].rows_per_key
    # 2,000 random keys: depth about log2(2000) = 11.
    assert 6 <= result.proofs.siblings_median <= 20
    assert result.proofs.json_bytes_median > 44 * result.proofs.siblings_median
    assert result.table_rows["index_values"] == 2000
    # n leaves and, for random keys, about 1.44 n interior nodes.
    assert 2 * 2000 < result.table_rows["index_nodes"] < 3 * 2000
    assert result.bytes_per_product > 100
    assert "rows per product" in out.getvalue()


@pytest.mark.mosquitto
def test_index_ab_runs_both_phases(mosquitto: BrokerAddress, tmp_path: Path) -> None:
    """A phases append no index root, B phases do, and every message is receipted in each."""
    out = io.StringIO()
    # A checkpoint round every 20 ms: phase B must see at least one during its drain, and 600
    # messages take longer than that (about 0.1 s on a quiet 2-core machine, more under load;
    # with 0.2 s a quiet machine finished the drain before the first round).
    result = index_ab(
        [
            "--index-products", "3000", "--messages", "600", "--devices", "20",
            "--pairs", "1", "--checkpoint-seconds", "0.02", "--index-seconds", "0",
            "--workload", "distinct",
            "--dir", str(tmp_path), "--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}",
        ],
        out=out,
    )  # fmt: skip
    assert [p.label for p in result.phases] == ["A", "B"]
    assert all(p.receipted == 600 for p in result.phases)
    a, b = result.phases
    assert a.index_roots == 0
    assert b.index_roots >= 1
    assert result.ratio > 0
    assert "ratio B / A" in out.getvalue()


def test_index_benchmark_without_rowid_stores_less(tmp_path: Path) -> None:
    """The WITHOUT ROWID experiment keeps the same rows in fewer bytes than the migration."""
    argv = ["--products", "2000", "--fill-batch", "512", "--batches", "10", "--rounds", "1"]
    argv += ["--samples", "5", "--dir", str(tmp_path)]
    plain = main(argv, out=io.StringIO())
    clustered = main([*argv, "--without-rowid"], out=io.StringIO())
    assert clustered.table_rows == plain.table_rows
    assert clustered.bytes_per_product < plain.bytes_per_product
