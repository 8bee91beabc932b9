"""core.ui.tables: small read-only tables drawn as Markdown text, longer ones as a dataframe."""

from __future__ import annotations

import math

from streamlit.testing.v1 import AppTest

from core.ui import tables
from tests.pages.conftest import markdown_tables

# what users' data and error messages hold: Markdown, Streamlit's directives, LaTeX, HTML,
# table bars, decomposed non-ASCII, line breaks
AWKWARD = [
    "a|b",
    "*not italic* _nor this_",
    ":red[not red] :material/home:",
    "$x^2$ costs $5",
    "<b>not bold</b> &amp;",
    "[not a link](http://example.com)",
    "# not a heading",
    "cafe\u0301 \u00e9t\u00e9",
    "two\nlines",
    "back\\slash `code`",
]


def test_a_cell_shows_every_character_as_typed() -> None:
    rows = [{"value": text} for text in AWKWARD]
    [read] = _read(tables.markdown_table(rows))
    # as typed, but for an invisible word joiner that keeps ":material/home:" from an icon
    shown = [v.replace("\u2060", "") for v in read["value"]]
    assert shown == [" ".join(t.split()) for t in AWKWARD]
    assert tables.cell(":material/home:") == "\\:\u2060material/home\\:"
    assert "\n" not in tables.cell("two\nlines")


def test_numbers_are_written_by_their_column_format() -> None:
    rows = [
        {"feature": "age", "PSI": 0.123456, "share": 0.25, "rows": 1234567, "p": 3.2e-7},
        {"feature": "plan", "PSI": None, "share": math.nan, "rows": 0, "p": True},
    ]
    formats = {"PSI": ".3f", "share": "percent", "rows": ",", "p": ".2g"}
    [read] = _read(tables.markdown_table(rows, formats))
    assert read.iloc[0].tolist() == ["age", "0.123", "25.0%", "1,234,567", "3.2e-07"]
    # missing values are empty cells; a boolean is not a number
    assert read.iloc[1].tolist() == ["plan", "", "", "0", "True"]


def test_a_float_without_a_format_is_a_plain_number() -> None:
    written = [
        tables.plain(v) for v in (42390.5, 0.8734527346, -0.5, 1234567.89, 1e-5, 0.0, math.inf, 3.0)
    ]
    assert written == ["42390.5", "0.873453", "-0.5", "1234568", "1e-05", "0", "inf", "3"]
    assert tables.cell(0.8734527346) == "0\\.873453"  # the dot escaped, shown as a dot


def _page(count: int) -> None:
    from core.ui import tables

    rows = [{"feature": f"f{i}", "PSI": i / 7, "share": i / 100} for i in range(count)]
    tables.small_table(rows, formats={"PSI": ".3f", "share": "percent"}, key="t")


def test_a_small_table_is_text_and_a_long_one_a_dataframe_with_the_same_formats() -> None:
    small = AppTest.from_function(_page, args=(tables.SMALL_ROWS,)).run()
    assert not small.exception and not small.dataframe
    [read] = markdown_tables(small)
    assert len(read) == tables.SMALL_ROWS and read["PSI"].iloc[1] == "0.143"
    assert read["share"].iloc[3] == "3.0%"
    long = AppTest.from_function(_page, args=(tables.SMALL_ROWS + 1,)).run()
    assert not long.exception and not markdown_tables(long)
    [frame] = long.dataframe
    assert len(frame.value) == tables.SMALL_ROWS + 1
    config = frame.proto.columns  # the column config Streamlit sends, as JSON
    assert '"%.3f"' in config and '"percent"' in config


def test_no_rows_draws_nothing() -> None:
    at = AppTest.from_function(_page, args=(0,)).run()
    assert not at.exception and not at.markdown and not at.dataframe


def _read(markdown: str) -> list:
    """markdown_tables' reading of one Markdown string."""
    at = AppTest.from_function(_show, args=(markdown,)).run()
    return markdown_tables(at)


def _show(markdown: str) -> None:
    import streamlit as st

    st.markdown(markdown)
