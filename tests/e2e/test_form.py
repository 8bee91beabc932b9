"""The prediction form in Chromium: a public form opened and submitted without a login, and the
Deployments list's URL cell opening the form in the same tab."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core import deployments
from core.store import Store
from tests.e2e.conftest import RENDER_TIMEOUT_MS, StreamlitServer

pytestmark = pytest.mark.e2e
URL_X = 200  # pages/deployments.py: the deployment column's width, half the URL column's


@pytest.fixture
def public(e2e_run: tuple[str, str], e2e_home: Path) -> Iterator[str]:
    """The e2e deployment made public for the test, its access restored afterwards."""
    name = e2e_run[0]
    store = Store.open(e2e_home)
    before = deployments.get_deployment(store, name).access
    deployments.set_access(store, name, "public", actor="olivia")
    yield name
    deployments.set_access(store, name, before, actor="olivia")


def test_a_public_form_without_a_login(
    public: str,
    streamlit_server: StreamlitServer,
    anonymous_page: Page,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    page = anonymous_page
    page.goto(f"{streamlit_server.url}form?name={public}")
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.locator("form.md-login")).to_have_count(0)
    expect(page.get_by_text("Workspace:")).to_have_count(0)  # no sidebar status for visitors
    page.get_by_role("button", name="Predict").click()
    expect(page.get_by_text("likely churn =")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    wait_rendered(page)
    assert_no_exception(page)
    page.goto(f"{streamlit_server.url}deployment?name={public}")  # any other page: log in
    wait_rendered(page)
    expect(page.locator("form.md-login")).to_be_visible()


def test_the_url_cell_opens_the_form_in_the_same_tab(
    e2e_run: tuple[str, str],
    streamlit_server: StreamlitServer,
    page: Page,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    page.goto(f"{streamlit_server.url}deployments")
    wait_rendered(page)
    grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    assert grid is not None
    # the first row's URL cell: right of the selection boxes (36 px) and the deployment column
    page.mouse.click(grid["x"] + 36 + URL_X + URL_X / 2, grid["y"] + 35 + 18)
    page.wait_for_url("**/form?name=*")
    wait_rendered(page)
    assert len(page.context.pages) == 1  # no new browser tab
    assert_no_exception(page)
    expect(page.get_by_role("button", name="Predict")).to_be_visible()
