"""Every page renders from a cold deep link without an exception, and the sidebar navigates."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from core.ui import PAGES
from tests.e2e.test_audit import problems

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots"
# Scoped to the main area: a title in the sidebar must not satisfy the check.
HEADING = '[data-testid="stMain"] [data-testid="stHeading"] h1'
NAV = '[data-testid="stSidebarNav"]'
NAV_LABELS = f'{NAV} [data-testid="stSidebarNavLink"] span[label]'
# Like st.navigation: the page marked default, else the first one.
DEFAULT = next((p for p in PAGES if getattr(p, "default", False)), PAGES[0])


def route(spec: Any) -> str:
    """The page's URL below the server root."""
    # Streamlit serves the default page at "/" only; its url_path answers "Page not found".
    return "" if spec is DEFAULT else spec.url_path


def slug(spec: Any) -> str:
    """A file-name-safe name for the page: its url_path, or its file's stem for the root page."""
    return spec.url_path or Path(spec.path).stem


def assert_app_navigation(page: Page) -> None:
    """The sidebar lists ModelDeck's pages, i.e. app.py ran and called st.navigation."""
    # With a pages/ folder beside app.py, Streamlit serves a deep link by running the file in
    # pages/ without app.py until some session has called st.navigation; its sidebar then
    # lists file names ("app", "datasets", ...) instead of the PAGES titles.
    labels = page.locator(NAV_LABELS).evaluate_all("els => els.map(e => e.getAttribute('label'))")
    unknown = set(labels) - {p.title for p in PAGES}
    assert not unknown, f"sidebar links {sorted(unknown)} are not in core.ui.PAGES: {labels}"


@pytest.mark.parametrize("spec", PAGES, ids=[slug(p) for p in PAGES])
def test_page_renders_from_a_cold_deep_link(
    spec: Any,
    data_columns: set[str],
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    url = streamlit_server.url + route(spec)
    page.goto(url)
    wait_rendered(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{slug(spec)}.png", full_page=True)

    assert_no_exception(page)
    # An unknown path falls back to the main page with a dialog: the deep link did not work.
    not_found = page.get_by_role("dialog").filter(has_text="Page not found")
    expect(not_found, f"{url} is not a page (is it the default page?)").to_have_count(0)
    # Same path; a page may add query parameters (say, the model it selected).
    expect(page).to_have_url(re.compile(re.escape(url) + r"(\?.*)?$"))
    expect(page.locator(HEADING).first).to_contain_text(spec.title)
    assert_app_navigation(page)
    # issue 18 item 9 (test_audit.py): no error box, raw value, unlabelled chart or id header
    found = problems(page, data_columns, {"charts": 0, "headers": 0})
    assert not found, "\n".join(found)


def test_deep_link_as_first_request_runs_app_py(
    cold_streamlit_server: Any,
    page: Page,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    """A bookmark opened right after a restart still goes through app.py (login, navigation)."""
    target = next((p for p in PAGES if p is not DEFAULT), DEFAULT)
    page.goto(cold_streamlit_server.url + route(target))
    wait_rendered(page)
    assert_no_exception(page)
    assert_app_navigation(page)
    expect(page.locator(HEADING).first).to_contain_text(target.title)


def test_sidebar_link_switches_page(
    page: Page,
    streamlit_server: Any,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    target = next((p for p in PAGES if p is not DEFAULT), None)
    if target is None:
        pytest.skip("one page only: Streamlit shows no sidebar navigation")
    page.goto(streamlit_server.url)
    wait_rendered(page)
    expect(page.locator(HEADING).first).to_contain_text(DEFAULT.title)

    page.locator(f'{NAV} a[href$="/{target.url_path}"]').click()
    # The old run also reads "notRunning": wait for the new page's heading before the state.
    page.wait_for_url(streamlit_server.url + target.url_path)
    expect(page.locator(HEADING).first).to_contain_text(target.title)
    wait_rendered(page)
    assert_no_exception(page)
