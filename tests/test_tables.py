"""Tables for people: Markdown-shaped text, numbers right-aligned, no crash on an empty table, wrapping on demand."""

from __future__ import annotations

from freshet import tables


def test_a_table_is_markdown_with_numbers_right_aligned() -> None:
    tab = tables.table(["dataset", "files", "champion"], [["shop", "1", "none"], ["retail_sales", "120", "v3"]],
                       right=["files"])
    assert tables.render(tab) == (
        "| dataset      | files | champion |\n"
        "|--------------|------:|----------|\n"
        "| shop         |     1 | none     |\n"
        "| retail_sales |   120 | v3       |"
    )


def test_an_empty_table_is_its_header() -> None:
    """No rows (e.g. no dataset yet) is a header and its rule, not a crash."""
    assert tables.render(tables.table(["dataset", "files"], [], right=["files"])) == (
        "| dataset | files |\n"
        "|---------|------:|"
    )


def test_a_long_cell_wraps_to_the_width_asked_and_stays_whole_without_one() -> None:
    reason = "not promoted: the new model's WAPE 0.231 does not beat the champion's 0.229 by 1%"
    tab = tables.table(["dataset", "last training"], [["shop", reason]])
    assert max(len(line) for line in tables.render(tab, width=50).splitlines()) <= 50
    assert reason in tables.render(tab)
