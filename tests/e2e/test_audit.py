"""Every page of the demo workspace, and every section of a deployment, as a reader sees it
(issue 18, item 9): no exception or error box, no `None`/`nan` or raw dict in the text, charts
with a title and axis titles, table headers in words."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from core.ui import PAGES
from core.ui.deployment import SECTION_TITLES
from tests.e2e.conftest import StreamlitServer

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots" / "audit"
MAIN = '[data-testid="stMain"]'
ERROR_BOX = f'{MAIN} [data-testid="stAlertContentError"]'
# Words a reader should never see: Python's and pandas' placeholders, and a dict's repr.
RAW = re.compile(r"\bNone\b|\bnan\b|\bNaN\b|\{'")
# Every chart of the main area (Vega-Lite, drawn as SVG: Streamlit switches to a canvas only
# past 2,000 rows) with its title and each axis (one with labels; grid lines are axes too) with
# its title: [orientation, title].
FIGURES = """() => [...document.querySelectorAll(
  '[data-testid="stMain"] [data-testid="stVegaLiteChart"]')].map(el => {
    const text = (root, sel) => [...root.querySelectorAll(sel)].map(t => t.textContent).join(' ');
    const axes = [...el.querySelectorAll('g.role-axis')]
      .filter(a => a.querySelector('.role-axis-label'))
      .map(a => [(a.getAttribute('aria-label') || 'axis').split(' ')[0],
                 text(a, '.role-axis-title text')]);
    return {title: text(el, '.role-title-text'), axes};
  })"""
# The header cells of every table: dataframes (glide-data-grid keeps an accessible table beside
# its canvas) and the small tables drawn as Markdown (core.ui.tables).
HEADERS = """() => [...document.querySelectorAll(
  '[data-testid="stMain"] [data-testid="stDataFrame"] [role="columnheader"],'
  + '[data-testid="stMain"] [data-testid="stMarkdown"] table th')]
  .map(th => th.textContent.trim()).filter(Boolean)"""
SNAKE = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")
# Headers that may be identifiers: a metric by its scikit-learn name, and the results files'
# own columns (a download has the same names); the users' data columns are added per workspace.
KEPT_HEADERS = {"roc_auc", "input_quality", "challenger_prediction", "challenger_confidence"}
KEPT_PREFIXES = ("proba_", "challenger_proba_")


def routes(run: tuple[str, str], model_id: str) -> list[tuple[str, str]]:
    """(slug, path) of every page and section, with the parameters they need to show data."""
    name, run_id = run
    params = {
        "deployment": f"name={name}",
        "results": f"run={run_id}",
        "form": f"name={name}",
        "model": f"id={model_id}",
    }
    found = []
    for spec in PAGES:  # test_smoke checks the pages that need no parameter
        if spec.url_path == "deployment":
            found += [
                (f"deployment-{s}", f"deployment?name={name}&section={s}") for s in SECTION_TITLES
            ]
        elif spec.url_path in params:
            found.append((spec.url_path, f"{spec.url_path}?{params[spec.url_path]}"))
    return found


def problems(page: Page, data_columns: set[str], seen: dict[str, int]) -> list[str]:
    """What a reader should not see on the page as it stands (`seen` counts what was read)."""
    found = []
    errors = page.locator(ERROR_BOX)
    found += [f"error box: {t}" for t in errors.all_inner_texts()]
    text = page.locator(MAIN).inner_text()
    found += [
        f"raw value {m.group()!r} in: …{text[max(0, m.start() - 60) : m.end() + 60]!r}…"
        for m in RAW.finditer(text)
    ]
    figures = page.evaluate(FIGURES)
    seen["charts"] += len(figures)
    for figure in figures:
        if not figure["title"]:
            found.append(f"a chart without a title (axes {figure['axes']})")
        found += [
            f"chart {figure['title']!r}: {axis} has no title"
            for axis, title in figure["axes"]
            if not title
        ]
    headers = page.evaluate(HEADERS)
    seen["headers"] += len(headers)
    for header in headers:
        kept = header in KEPT_HEADERS | data_columns or header.startswith(KEPT_PREFIXES)
        if SNAKE.match(header) and not kept:
            found.append(f"table header {header!r} is an identifier, not words")
    return found


@pytest.fixture(scope="module")
def model_id(e2e_home: Path) -> str:
    from core import registry
    from core.store import Store

    return registry.list_models(Store.open(e2e_home))[0].id


def test_every_page_reads_well(
    e2e_run: tuple[str, str],
    model_id: str,
    data_columns: set[str],
    page: Page,
    streamlit_server: StreamlitServer,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    seen = {"charts": 0, "headers": 0}
    for slug, path in routes(e2e_run, model_id):
        page.goto(streamlit_server.url + path)
        wait_rendered(page)
        assert_no_exception(page)
        page.screenshot(path=SCREENSHOTS / f"{slug}.png")
        found = problems(page, data_columns, seen)
        if found:
            report[slug] = found
    assert seen["charts"] > 5 and seen["headers"] > 10, seen  # the checks read something
    assert not report, "\n".join(f"{slug}: {p}" for slug, ps in report.items() for p in ps)
