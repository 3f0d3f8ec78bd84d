"""The examples in README.md and docs/ run and give what they show."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_WITH_EXAMPLES = sorted(
    path
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    if ">>> " in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("path", DOCS_WITH_EXAMPLES, ids=lambda p: p.name)
def test_doc_examples_run(path: Path) -> None:
    """Every `>>>` example in the document gives the output printed under it."""
    result = doctest.testfile(
        str(path), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) in {path.name} failed (see above)"


def test_readme_links_resolve() -> None:
    """Every docs/ file the README links to exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in {part.split(")")[0] for part in text.split("](docs/")[1:]}:
        assert (ROOT / "docs" / name).exists(), f"README links to missing docs/{name}"
