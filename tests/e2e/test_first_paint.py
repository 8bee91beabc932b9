"""A new browser tab paints a page's text before its charts (issue 13: a cold deep link ready
in <= 1.5 s): plotly's JavaScript (4.7 MB) loads only in the second run, which the page's own
script starts once the first run has painted (core.ui.chart)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import CHART_LATER, SETTLED, WATCH, StreamlitServer
from tests.e2e.test_audit import FIGURES

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots" / "first_paint"
MAIN = '[data-testid="stMain"]'
PLOTLY = f"{MAIN} .js-plotly-plot"
# What the page shows the first moment it reads CONNECTED and notRunning with no skeleton
# left (the first paint), noted by a MutationObserver installed before the page's scripts.
FIRST_PAINT = """(() => {
  const observer = new MutationObserver(() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.dataset.testConnectionState !== 'CONNECTED'
        || app.dataset.testScriptState !== 'notRunning'
        || document.querySelector('[data-testid="stSkeleton"]')) return;
    observer.disconnect();
    const main = document.querySelector('[data-testid="stMain"]');
    window.__firstPaint = {
      text: main ? main.innerText : '',
      charts: document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot').length,
      waiting: [...document.querySelectorAll('[class*="st-key-md_chart_later_"]')]
        .map(el => el.innerText.trim()),
    };
  });
  observer.observe(document, {subtree: true, childList: true, attributes: true});
})()"""
# Whether Streamlit's plotly chunk was fetched, from the page's resource timings.
PLOTLY_FETCHED = """() => performance.getEntriesByType('resource')
  .some(e => /PlotlyChart\\.[^/]*\\.js$/.test(e.name))"""


def test_a_new_tab_paints_the_text_first_then_draws_the_charts(
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
    # The first paint: the section's text is there, each chart is a box with its title.
    assert "Current version" in first["text"], first["text"][:500]
    assert first["charts"] == 0
    waiting = first["waiting"]
    assert waiting and all(t.endswith("drawing the chart…") for t in waiting), waiting
    wait_rendered(page)  # then the second run draws them, with nothing left waiting
    assert_no_exception(page)
    assert page.evaluate(PLOTLY_FETCHED)
    later = page.locator(CHART_LATER)
    expect(later).to_have_count(0)
    # Streamlit's theme draws titles in bold (<b>…</b>); the placeholder says them in words.
    titles = [re.sub(r"<[^>]+>", "", f["title"]) for f in page.evaluate(FIGURES)]
    assert [f"{t} · drawing the chart…" for t in titles] == waiting
    page.locator(PLOTLY).first.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS / "general-charts-drawn.png")

    # Later runs of the same tab draw their charts at once: a click is not a new tab.
    page.evaluate(WATCH)
    page.locator('[data-testid="stButtonGroup"] button', has_text="Drift").click()
    page.wait_for_function(SETTLED)
    expect(later).to_have_count(0)
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.locator(PLOTLY).first).to_be_visible()
