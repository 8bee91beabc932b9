"""Logging in through the real form, staying logged in across reloads and tabs, logging out."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import RENDER_TIMEOUT_MS, StreamlitServer, demo_password

pytestmark = pytest.mark.e2e

SIDEBAR = '[data-testid="stSidebar"]'
LOGIN_FORM = "form.md-login"
USER = "eddie"  # the demo's editor of project Demo


def log_in(page: Page, username: str, password: str) -> None:
    page.fill(f"{LOGIN_FORM} input[name=username]", username)
    page.fill(f"{LOGIN_FORM} input[name=password]", password)
    page.click(f"{LOGIN_FORM} button[type=submit]")


def test_login_form_reload_new_tab_and_logout(
    streamlit_server: StreamlitServer,
    anonymous_page: Page,
    browser: Browser,
    wait_rendered: Callable[[Page], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    page = anonymous_page
    page.goto(streamlit_server.url + "deployments")
    wait_rendered(page)
    expect(page.locator(LOGIN_FORM)).to_be_visible()
    expect(page.get_by_text("Workspace:")).to_have_count(0)  # nothing shown to strangers

    log_in(page, USER, "not-the-password")
    page.wait_for_url("**/?login=failed*")
    wait_rendered(page)
    expect(page.get_by_text("Wrong username or password.")).to_be_visible()
    assert "not-the-password" not in page.url and USER not in page.url

    log_in(page, USER, demo_password(USER))
    page.wait_for_url("**/deployments")  # back to the page first asked for
    wait_rendered(page)
    assert_no_exception(page)
    expect(page.locator(SIDEBAR)).to_contain_text("Eddie Editor")
    cookie = next(c for c in page.context.cookies() if c["name"] == "modeldeck_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] not in page.url

    page.reload()
    wait_rendered(page)
    expect(page.locator(SIDEBAR)).to_contain_text("Eddie Editor")

    other = page.context.new_page()
    other.goto(streamlit_server.url + "account")
    wait_rendered(other)
    expect(other.locator(SIDEBAR)).to_contain_text("Eddie Editor")
    other.close()

    page.locator(SIDEBAR).get_by_role("button", name="Log out").click()
    page.wait_for_url("**/?login=out*")
    wait_rendered(page)
    expect(page.locator(LOGIN_FORM)).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "modeldeck_session"]

    # The old cookie, replayed by another browser, no longer logs anyone in.
    replay = browser.new_context()
    replay.set_default_timeout(RENDER_TIMEOUT_MS)
    try:
        replay.add_cookies([{**cookie, "domain": "127.0.0.1", "path": "/"}])  # type: ignore[list-item]
        stale = replay.new_page()
        stale.goto(streamlit_server.url)
        wait_rendered(stale)
        expect(stale.locator(LOGIN_FORM)).to_be_visible()
        expect(stale.get_by_text("Eddie Editor")).to_have_count(0)
    finally:
        replay.close()
