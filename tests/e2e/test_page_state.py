"""Pages stay true after every action, where only a real browser shows it (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import SETTLED, WATCH

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path(__file__).parent / "screenshots"
RerunAfter = Callable[[Page, Callable[[], None]], None]


def chosen(page: Page, label: str) -> list[str]:
    box = page.locator('[data-testid="stMultiSelect"]', has_text=label)
    return box.locator("[data-tag] span[title]").all_inner_texts()


def remove_first(page: Page, label: str, wait_rendered: Callable[[Page], None]) -> None:
    """Click the first chosen column's Remove in the multiselect `label` and wait for the
    rerun. A click that changed nothing and started no rerun (seen once, in a clean-clone CI
    run, right after the page settled) is made again; one that changed the choice without a
    rerun fails, as it would leave the page untrue."""
    before = chosen(page, label)
    remove = (
        page.locator('[data-testid="stMultiSelect"]', has_text=label)
        .locator('button[aria-label^="Remove"]')
        .first
    )
    for attempt in range(2):
        page.evaluate(WATCH)
        remove.click()
        try:
            page.wait_for_function(SETTLED, timeout=10_000)
            break
        except PlaywrightTimeout:
            assert chosen(page, label) == before, "the choice changed without a rerun"
            if attempt:
                raise
    wait_rendered(page)


def test_results_column_toggles_stick(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
) -> None:
    _, run_id = e2e_run
    page.goto(f"{streamlit_server.url}results?run={run_id}")
    wait_rendered(page)
    for label in ("Input columns", "Prediction columns"):
        before = chosen(page, label)
        for removed in range(1, 3):  # the second change used to be undone
            remove_first(page, label, wait_rendered)
            assert chosen(page, label) == before[removed:], (label, removed)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "state_results_toggles.png"))


def test_deployment_sections_follow_the_url(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: Any,
    rerun_after: RerunAfter,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    name, _ = e2e_run
    page.goto(f"{streamlit_server.url}deployment?name={name}&section=runs")
    wait_rendered(page)
    expect(page.get_by_role("button", name="Run now")).to_be_visible()
    expect(page.get_by_text("Promote to production")).to_have_count(0)  # General: not rendered
    section = page.locator('[data-testid="stButtonGroup"] button', has_text="Schedule")
    rerun_after(page, section.click)
    expect(page).to_have_url(f"{streamlit_server.url}deployment?name={name}&section=schedule")
    save = page.get_by_role("button", name="Save schedule")
    rerun_after(page, save.click)
    # at once, not after a second run: the first settled page already shows the new state
    assert page.get_by_text("Schedule saved").count() == 1
    assert page.get_by_text("Current schedule").count() == 1
    assert page.get_by_text("No schedule").count() == 0
    assert_no_exception(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "state_deployment_schedule.png"))


def test_a_table_row_opens_its_page_in_the_same_tab(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    page.goto(f"{streamlit_server.url}deployments")  # e2e_run: at least one deployment
    wait_rendered(page)
    grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    assert grid is not None
    # the first row's selection box: left of the row, below the header (35 px rows)
    page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 18)
    page.wait_for_url("**/deployment?name=*")
    wait_rendered(page)
    assert len(page.context.pages) == 1  # no new browser tab
    assert_no_exception(page)
