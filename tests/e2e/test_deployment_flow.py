"""A deployed model's pages in a real browser: the deployment and a run's results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e
HEADING = '[data-testid="stMain"] [data-testid="stHeading"] h1'


def test_results_page_shows_the_run(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    _, run_id = e2e_run
    page.goto(f"{streamlit_server.url}results?run={run_id}")
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.locator(HEADING).first).to_contain_text("Run results")
    expect(page.get_by_text("5,000 rows match")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    expect(page.get_by_role("button", name="Download CSV")).to_be_visible()


def test_deployment_page_shows_versions_and_runs(
    e2e_run: tuple[str, str],
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    name, _ = e2e_run
    page.goto(f"{streamlit_server.url}deployment?name={name}")
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.get_by_text("Promote to production").first).to_be_visible()
    for section, shown in (
        ("Runs", page.get_by_role("button", name="Run now")),
        ("Versions", page.get_by_text("(current)")),
        ("Audit log", page.locator('[data-testid="stDataFrame"]')),
    ):
        page.locator('[data-testid="stButtonGroup"] button', has_text=section).click()
        expect(shown.first).to_be_visible()  # expect retries until the section has rendered
        wait_rendered(page)
        assert_no_exception(page)
