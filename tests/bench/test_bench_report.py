"""python -m bench writes its tables between markers and keeps the rest of the document."""

from __future__ import annotations

from bench.__main__ import BEGIN, END, Growth, replace_generated


def test_the_report_replaces_only_the_generated_block() -> None:
    """Prose before and after the markers stays; the old tables go."""
    document = f"# Benchmarks\n\nanalysis\n\n{BEGIN}\nold table\n{END}\n\nmore analysis\n"
    updated = replace_generated(document, "new table\n")
    assert updated == f"# Benchmarks\n\nanalysis\n\n{BEGIN}\nnew table\n{END}\n\nmore analysis\n"
    assert replace_generated(updated, "newer\n").count(BEGIN) == 1


def test_a_document_without_markers_gets_them_at_its_end() -> None:
    """The first run adds the block."""
    assert replace_generated("# Benchmarks\n", "t\n") == f"# Benchmarks\n\n{BEGIN}\nt\n{END}\n"


def test_growth_ratio_is_last_segment_over_first() -> None:
    """A rate that halves as the log grows reads 0.5; a flat one 1.0."""
    assert Growth(1000, (2000.0, 1500.0, 1000.0), 100.0).last_over_first == 0.5
    assert Growth(1000, (1000.0, 1000.0), 100.0).last_over_first == 1.0
