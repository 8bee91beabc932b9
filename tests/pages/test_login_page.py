"""The login page, sessions resolved on every rerun, and the Account page (AppTest)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import access, users
from core.store import Store
from tests.pages.conftest import ADMIN, APP, log_in, start_session

OpenPage = Callable[..., AppTest]
LOGIN_TITLE = ["Log in to ModelDeck"]
PASSWORD = "first password 1"


def html(at: AppTest) -> str:
    return "\n".join(str(e.proto.body) for e in at.get("html"))


def test_no_session_shows_only_the_login_form(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/deployments.py", as_user=None)
    assert not at.exception
    assert [t.value for t in at.title] == LOGIN_TITLE
    form = html(at)
    assert 'method="post" action="/auth/login"' in form and 'name="password"' in form
    assert not at.sidebar.caption, "no workspace path or sidecar status for strangers"
    assert not at.error


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"login": "failed"}, "Wrong username or password."),
        ({"login": "wait", "seconds": "8"}, "Too many failed logins. Try again in 8 s."),
        ({"login": "disabled"}, "This account is disabled. Ask an admin to enable it."),
    ],
)
def test_login_page_says_what_went_wrong(
    store: Store, open_page: OpenPage, query: dict[str, str], message: str
) -> None:
    at = open_page("pages/home.py", as_user=None, **query)
    assert [e.value for e in at.error] == [message]


def test_a_logged_in_page_shows_the_user_and_a_logout_form(
    store: Store, open_page: OpenPage
) -> None:
    at = open_page("pages/home.py")
    assert [t.value for t in at.title] == ["Overview"]
    assert (
        "tester" in at.sidebar.markdown[0].value
        and "instance admin" in at.sidebar.markdown[0].value
    )
    assert 'action="/auth/logout"' in html(at)


@pytest.mark.parametrize("how", ["logout", "idle"])
def test_an_ended_or_idle_session_leads_to_the_login_page(
    store: Store, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = log_in(AppTest.from_file(APP, default_timeout=120)).run()
    assert [t.value for t in at.title] == ["Overview"]
    if how == "logout":
        users.end_session(store, at.session_state["modeldeck_session"])
    else:
        monkeypatch.setenv("MODELDECK_SESSION_IDLE_MINUTES", "0")
    at.run()
    assert [t.value for t in at.title] == LOGIN_TITLE
    assert "Your session has ended. Log in again." in [e.value for e in at.error]
    assert "modeldeck_user" not in at.session_state


def test_account_page_changes_the_password_and_ends_other_sessions(store: Store) -> None:
    users.create_user(store, "pat", password=PASSWORD, actor=access.BOOTSTRAP)
    here = users.login(store, "pat", PASSWORD).token
    elsewhere = users.login(store, "pat", PASSWORD).token
    at = log_in(AppTest.from_file(APP, default_timeout=120), "pat", token=here)
    at.switch_page("pages/account.py")
    at.run()
    assert [t.value for t in at.title] == ["Account"]
    at.text_input(key="pw_current").input(PASSWORD)
    at.text_input(key="pw_new").input("second password 2")
    at.text_input(key="pw_again").input("second password 2")
    next(b for b in at.button if b.label == "Change password").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [s.value for s in at.success] == [
        "Password changed. 1 other session ended; this one stays logged in."
    ]
    assert users.resolve_session(store, elsewhere) is None
    assert users.resolve_session(store, here) is not None
    assert [t.value for t in at.title] == ["Account"]  # still logged in
    assert users.login(store, "pat", "second password 2").user.username == "pat"


def test_account_page_refuses_a_mistyped_new_password(store: Store) -> None:
    users.create_user(store, "pat", password=PASSWORD, actor=access.BOOTSTRAP)
    at = log_in(AppTest.from_file(APP, default_timeout=120), "pat")
    at.switch_page("pages/account.py")
    at.run()
    at.text_input(key="pw_current").input(PASSWORD)
    at.text_input(key="pw_new").input("second password 2")
    at.text_input(key="pw_again").input("second password 3")
    next(b for b in at.button if b.label == "Change password").click().run()
    assert any("The two new passwords differ." in e.value for e in at.error)
    assert users.login(store, "pat", PASSWORD).user.username == "pat"


def test_admins_add_users_with_a_password_shown_once(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/people.py")
    at.text_input(key="new_user_name").input("nina")
    at.text_input(key="new_user_display").input("Nina N")
    next(b for b in at.button if b.label == "Add user").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [shown] = [c.value for c in at.code]
    assert users.login(store, "nina", shown).user.display_name == "Nina N"
    at.run()
    assert not at.code, "the password is shown once"
    at.selectbox(key="people_user").set_value("nina").run()
    next(b for b in at.button if b.label == "Disable").click().run()
    assert users.get_user(store, "nina").disabled
    next(b for b in at.button if b.label == "Enable").click().run()
    next(b for b in at.button if b.label == "Make admin").click().run()
    assert (
        users.get_user(store, "nina").role == "admin" and not users.get_user(store, "nina").disabled
    )


def test_a_new_tab_reuses_the_session_read_by_another_until_the_store_changes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new browser tab is a new Streamlit session: the session and its roles read for the
    first tab serve it while nothing was written (no store read on its first run); a logout
    in between is a write, so the next tab reads again and gets the login page."""
    reads: list[str] = []
    read = users.session_view

    def counted(store: Store, token: str | None) -> users.SessionView | None:
        reads.append(str(token))
        return read(store, token)

    monkeypatch.setattr(users, "session_view", counted)
    token = start_session(ADMIN, store)
    first = log_in(AppTest.from_file(APP, default_timeout=120), token=token)
    assert [t.value for t in first.run().title] == ["Overview"]
    while store.version() is None:  # within the racy seconds after a write nothing is kept
        time.sleep(0.2)
    log_in(AppTest.from_file(APP, default_timeout=120), token=token).run()
    reads.clear()
    tab = log_in(AppTest.from_file(APP, default_timeout=120), token=token).run()
    assert [t.value for t in tab.title] == ["Overview"] and reads == []
    users.end_session(store, token)
    while store.version() is None:
        time.sleep(0.2)
    tab = log_in(AppTest.from_file(APP, default_timeout=120), token=token).run()
    assert [t.value for t in tab.title] == LOGIN_TITLE and reads == [token]
