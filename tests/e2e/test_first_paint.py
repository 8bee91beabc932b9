"""A new browser tab draws a page's charts in its first run, with the page's text (issue 13: a
cold deep link ready in <= 1.5 s): charts are Vega-Lite (Streamlit's 0.8 MB of Vega code), and
plotly's 4.7 MB chunk, which held a cold page back by ~1 s, is never fetched (core.ui.chart)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import SETTLED, WATCH, StreamlitServer
from tests.e2e.test_audit import FIGURES

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots" / "first_paint"
MAIN = '[data-testid="stMain"]'
CHART = f'{MAIN} [data-testid="stVegaLiteChart"]'
# What the page shows the first moment it reads CONNECTED and notRunning with no skeleton
# left (the first paint), and how many script runs it took, noted by a MutationObserver
# installed before the page's scripts.
FIRST_PAINT = """(() => {
  let runs = 0, running = false;
  const observer = new MutationObserver(() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app) return;
    const state = app.dataset.testScriptState;
    if (state === 'running' && !running) runs += 1;
    running = state === 'running';
    if (app.dataset.testConnectionState !== 'CONNECTED' || state !== 'notRunning'
        || document.querySelector('[data-testid="stSkeleton"]')) return;
    const charts = document.querySelectorAll(
      '[data-testid="stMain"] [data-testid="stVegaLiteChart"]');
    if (!charts.length) return;  // the text alone is not the page yet
    observer.disconnect();
    const main = document.querySelector('[data-testid="stMain"]');
    window.__firstPaint = {text: main ? main.innerText : '', charts: charts.length, runs};
  });
  observer.observe(document, {subtree: true, childList: true, attributes: true});
})()"""
# Whether Streamlit's plotly chunk was fetched, from the page's resource timings.
PLOTLY_FETCHED = """() => performance.getEntriesByType('resource')
  .some(e => /PlotlyChart\\.[^/]*\\.js$/.test(e.name))"""


def test_a_new_tab_draws_its_charts_in_its_first_run_without_plotly(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: StreamlitServer,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name, _ = e2e_run
    # General's chart: the share of drifted features over the runs.
    page.add_init_script(FIRST_PAINT)
    page.goto(streamlit_server.url + f"deployment?name={name}&section=general")
    page.wait_for_function("() => window.__firstPaint !== undefined")
    first = page.evaluate("window.__firstPaint")
    assert "Current version" in first["text"], first["text"][:500]
    assert first["charts"] >= 1 and first["runs"] == 1, first  # one run: text and charts
    wait_rendered(page)
    assert_no_exception(page)
    figures = page.evaluate(FIGURES)
    assert "Share of drifted features per run" in [f["title"] for f in figures], figures
    assert all(title for f in figures for _, title in f["axes"]), figures
    page.locator(CHART).first.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS / "general-charts-drawn.png")

    # Other sections of the tab draw theirs at once too; plotly never loads.
    page.evaluate(WATCH)
    page.locator('[data-testid="stButtonGroup"] button', has_text="Drift").click()
    page.wait_for_function(SETTLED)
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.locator(CHART).first).to_be_visible()
    assert not page.evaluate(PLOTLY_FETCHED)
