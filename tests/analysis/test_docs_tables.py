"""Every table a docs page shows from committed results is the one its JSON gives."""

from __future__ import annotations

import pytest

from analysis.experiments import docs_tables


def test_the_generated_tables_in_the_docs_are_current() -> None:
    stale = docs_tables.stale(write=False)
    assert not stale, f"regenerate: python -m analysis.experiments.docs_tables ({stale})"


def test_a_block_is_replaced_between_its_markers_only() -> None:
    text = "a\n<!-- generated: t -->\nold\n<!-- end generated: t -->\nb\n"
    assert docs_tables.render(text, "t", "new\n") == "a\n<!-- generated: t -->\nnew\n<!-- end generated: t -->\nb\n"
    with pytest.raises(ValueError, match="no block"):
        docs_tables.render(text, "other", "x")
