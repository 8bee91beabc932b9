"""Small read-only tables drawn as text.

`st.dataframe` draws a canvas grid whose frontend code (the grid and Arrow's, about 1.6 MB of
JavaScript) a browser loads, compiles and runs before the table shows: measured in Chromium on
2 cores, a page's cold load took 0.25 s longer with one two-row dataframe than with the same
rows as a Markdown table (bench/ui_bench.py's floor shows the same for bare Streamlit). A summary
of a few rows reads as well as text, so `small_table` draws up to SMALL_ROWS rows as a Markdown
table (HTML, nothing to load) and a longer one as a dataframe, which scrolls and sorts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

SMALL_ROWS = 30
# Every ASCII character Markdown (and Streamlit's :color[...] and $math$) may read as syntax,
# escaped with a backslash: CommonMark shows any escaped ASCII punctuation as itself (checked
# in Chromium, tests/pages/test_small_tables.py's AWKWARD).
_SYNTAX = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&])")
# How a column's numbers are written: a format spec of format() (".3f", ".2g", ","), or
# "percent" (0.25 -> 25.0%).
Formats = Mapping[str, str]


def cell(value: Any, spec: str | None = None) -> str:
    """One value as a Markdown cell: written with `spec` when it is a number (else a float as
    `plain` writes it), "" for None and NaN, on one line, with nothing in it read as
    Markdown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec is not None and number:
        text = f"{value:.1%}" if spec == "percent" else format(value, spec)
    elif isinstance(value, float):
        text = plain(value)
    else:
        text = str(value)
    # Streamlit draws ":material/name:" as an icon even when its colons are escaped; an
    # invisible word joiner after the first colon keeps it text
    text = " ".join(text.split()).replace(":material/", ":\u2060material/")
    return _SYNTAX.sub(r"\\\1", text)


def plain(value: float) -> str:
    """A float with no format of its own: at most 6 significant digits, and between 1e-4 and
    1e15 never in scientific notation (42390.5, not 4.24e+04; 0.873453, not 0.8734527346)."""
    if value == 0 or not math.isfinite(value) or not 1e-4 <= abs(value) < 1e15:
        return "0" if value == 0 else repr(value)
    decimals = max(0, 5 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], formats: Formats | None = None) -> str:
    """`rows` (dicts of the same keys, in column order) as a GitHub Markdown table."""
    columns = list(rows[0]) if rows else []
    specs = formats or {}
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(r.get(c), specs.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def small_table(
    rows: Sequence[Mapping[str, Any]], *, formats: Formats | None = None, key: str | None = None
) -> None:
    """`rows` as a Markdown table when there are at most SMALL_ROWS, else as a dataframe with
    the same number formats."""
    if not rows:
        return
    if len(rows) <= SMALL_ROWS:
        st.markdown(markdown_table(rows, formats))
        return
    st.dataframe(list(rows), hide_index=True, key=key, column_config=number_columns(formats))


def number_columns(formats: Formats | None) -> dict[str, Any]:
    """The same formats as a dataframe's column config (st.column_config.NumberColumn), for a
    table too long for text or one whose rows open a page."""
    return {
        name: st.column_config.NumberColumn(format=_printf(spec))
        for name, spec in (formats or {}).items()
    }


def _printf(spec: str) -> str:
    """A format spec of `cell` as st.column_config.NumberColumn writes it."""
    if spec == "percent":
        return "percent"
    return "localized" if "," in spec else f"%{spec}"
