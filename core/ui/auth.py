"""Who is logged in: the session cookie resolved on every rerun, the login page, the sidebar's
account box and the logout form.

The login and logout forms are plain HTML forms posting to core/ui/server.py's routes, which
set and clear the HttpOnly cookie: a Streamlit script cannot. AppTest cannot send cookies, so
a test seeds the token in `st.session_state["modeldeck_session"]` instead (session state
lives on the server; no browser can write it).
"""

from __future__ import annotations

import hashlib
import html
import threading
import time
import urllib.parse

import streamlit as st
from streamlit import config

from core import users
from core.entities import User
from core.errors import ModelDeckError
from core.store import Store, utcnow

COOKIE = "modeldeck_session"
TOKEN_KEY = "modeldeck_session"  # a token in session state (AppTest, identity-provider logins)
USER_KEY = "modeldeck_user"
ACCOUNT_KEY = "_modeldeck_account"
ENDED_KEY = "_modeldeck_session_ended"
ROLES_KEY = "_modeldeck_roles"  # {project id: role} of the logged-in user, None: not read yet
LOGIN_PAGE = "login"
LOGIN_ROUTE = "/auth/login"
LOGOUT_ROUTE = "/auth/logout"

LOGIN_MESSAGES = {
    "failed": users.LOGIN_FAILED,
    "disabled": "This account is disabled. Ask an admin to enable it.",
    "out": "You are logged out.",
}


def base_path() -> str:
    """The app's URL prefix from `server.baseUrlPath`: "" or "/prefix"."""
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def session_token() -> str | None:
    """This browser session's token: the cookie sent with the websocket handshake, else one
    kept in session state."""
    for token in (st.context.cookies.get(COOKIE), st.session_state.get(TOKEN_KEY)):
        if isinstance(token, str) and token:  # AppTest's context holds mocks, not strings
            return token
    return None


# Every browser session of this process reads a session's view through here, so a new tab
# (a new Streamlit session) with the same cookie opens no connection for it while the store is
# unchanged: {(workspace, digest of the token): (store version, monotonic time, view)}.
_VIEWS: dict[tuple[str, str], tuple[object, float, users.SessionView | None]] = {}
_VIEWS_LOCK = threading.Lock()
KEPT_VIEWS = 1024  # sessions kept at most; the oldest read goes first


def session_view(store: Store, token: str | None) -> users.SessionView | None:
    """The session and its roles, read again only when the store has changed since (any write
    of any process: Store.version) or TOUCH_SECONDS have passed (the idle timer's refresh);
    whether it is live is decided on every rerun. Kept per process, not per browser session,
    so a new tab of a logged-in browser reads nothing for it."""
    if not token:
        return None
    version = store.version()
    key = (str(store.workspace.home), hashlib.sha256(token.encode()).hexdigest())
    with _VIEWS_LOCK:
        kept = _VIEWS.get(key)
    if (
        kept is None
        or version is None  # written within the last seconds: read again
        or kept[0] != version
        or time.monotonic() - kept[1] >= users.TOUCH_SECONDS
    ):
        kept = (version, time.monotonic(), users.session_view(store, token))
        with _VIEWS_LOCK:
            _VIEWS.pop(key, None)
            _VIEWS[key] = kept  # last in the dict's order: the newest read
            while len(_VIEWS) > KEPT_VIEWS:
                del _VIEWS[next(iter(_VIEWS))]
    view = kept[2]
    return view if view is not None and view.is_live(utcnow()) else None


def current_user(store: Store) -> User | None:
    """Resolve the session on every rerun (so a logout, a disabled account or an expired
    session takes effect at the next click) and remember who acts, and their roles, in
    session state."""
    token = session_token()
    view = session_view(store, token)
    user = view.user if view is not None else None
    st.session_state[ROLES_KEY] = view.roles if view is not None else None
    if user is None and has_identity_provider():
        user = _identity_provider_user(store)
    if user is None:
        st.session_state.pop(USER_KEY, None)
        st.session_state.pop(ACCOUNT_KEY, None)
        if token:
            st.session_state[ENDED_KEY] = True
        return None
    st.session_state[USER_KEY] = user.username
    st.session_state[ACCOUNT_KEY] = user
    return user


def account() -> User:
    """The logged-in user's account as resolved in this run."""
    user = st.session_state.get(ACCOUNT_KEY)
    assert isinstance(user, User), "current_user() runs first, in app.py"
    return user


# ---------------------------------------------------------------------------- identity provider
def has_identity_provider() -> bool:
    """True when `.streamlit/secrets.toml` has an `[auth]` section (st.login's OIDC)."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, KeyError):  # no secrets file at all
        return False


def _provider_name() -> str:
    section = st.secrets.get("auth", {})
    named = [k for k, v in section.items() if isinstance(v, dict)]
    return named[0] if named else ""


def _identity_provider_user(store: Store) -> User | None:
    """The ModelDeck user whose e-mail the identity provider vouched for; starts a session kept
    in session state (the provider's own cookie brings the browser back after a reload)."""
    if not st.user.is_logged_in:
        return None
    email = str(st.user.get("email") or "")
    try:
        done = users.login_by_email(store, email, client="oidc")
    except ModelDeckError as exc:
        st.session_state["_modeldeck_oidc_error"] = exc.message
        return None
    st.session_state[TOKEN_KEY] = done.token
    return done.user


# ---------------------------------------------------------------------------- login page
LOGIN_CSS = """<style>
.md-login {display: flex; flex-direction: column; gap: 0.75rem; max-width: 22rem;}
.md-login label {display: flex; flex-direction: column; gap: 0.25rem; font-size: 0.9rem;}
.md-login input {padding: 0.5rem 0.6rem; border: 1px solid #dde0ea; border-radius: 0.5rem;
  font-size: 1rem; background: #fff; color: #1e2233;}
.md-login input:focus {outline: 2px solid #4338ca; border-color: #4338ca;}
.md-login button, .md-logout button {padding: 0.45rem 1rem; border-radius: 0.5rem;
  border: 1px solid #4338ca; background: #4338ca; color: #fff; font-size: 1rem;
  cursor: pointer; width: fit-content;}
.md-logout button {background: #fff; color: #1e2233; border-color: #dde0ea;
  font-size: 0.9rem;}
</style>"""


def next_target() -> str:
    """Where a login from this page should lead: the page the user asked for (a deep link)
    with its query, never back to the login page."""
    ctx_url = st.context.url if isinstance(st.context.url, str) else ""
    parts = urllib.parse.urlsplit(ctx_url)
    path = parts.path or "/"
    query = {k: v for k, v in st.query_params.items() if k not in ("login", "seconds", "next")}
    given = st.query_params.get("next")
    if given:
        return given
    if path.rstrip("/").endswith("/" + LOGIN_PAGE):
        path = path[: -len(LOGIN_PAGE)]
    return path + (f"?{urllib.parse.urlencode(query)}" if query else "")


def login_message() -> str | None:
    """What the previous attempt or session came to, from `?login=` (never the name typed)."""
    kind = st.query_params.get("login")
    if kind == "wait":
        seconds = st.query_params.get("seconds", "")
        wait = f"{seconds} s" if seconds.isdigit() else "a while"
        return f"Too many failed logins. Try again in {wait}."
    if kind in LOGIN_MESSAGES:
        return LOGIN_MESSAGES[kind]
    if st.session_state.pop(ENDED_KEY, False):
        return "Your session has ended. Log in again."
    return None


FORM_LOGIN_NOTE = (
    "This prediction form is not public: it opens once you log in (a form open to a project's "
    "collaborators only also needs you to be one)."
)


def form_login_page() -> None:
    """The login page at a form's address whose deployment is not public (or does not exist:
    a visitor is not told which)."""
    login_page(FORM_LOGIN_NOTE)


def login_page(note: str = "") -> None:
    """The only page while nobody is logged in: a form posting to /auth/login."""
    st.title("Log in to ModelDeck")
    if note:
        st.info(note, icon=":material/lock:")
    message = login_message()
    if message:
        (st.info if st.query_params.get("login") == "out" else st.error)(message)
    oidc_error = st.session_state.pop("_modeldeck_oidc_error", None)
    if oidc_error:
        st.error(f"{oidc_error} Ask an admin to add a user with this e-mail.")
    target = html.escape(next_target(), quote=True)
    action = html.escape(base_path() + LOGIN_ROUTE, quote=True)
    st.html(
        LOGIN_CSS + f'<form class="md-login" method="post" action="{action}">'
        '<label>Username <input name="username" autocomplete="username" required autofocus>'
        "</label>"
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        f'<input type="hidden" name="next" value="{target}">'
        '<button type="submit">Log in</button></form>'
    )
    if has_identity_provider():
        provider = _provider_name()
        st.divider()
        label = f"Log in with {provider.capitalize()}" if provider else "Log in with single sign-on"
        if st.button(label, key="oidc_login"):
            st.login(provider) if provider else st.login()
    st.caption("Forgot your password? An admin can reset it on the People page.")


# ---------------------------------------------------------------------------- sidebar
def sidebar_account(user: User) -> None:
    """Who is logged in, with a logout button (a form POST, which clears the cookie)."""
    with st.sidebar:
        role = "admin" if user.role == "admin" else "member"
        st.markdown(f"**{user.display_name}** · `{user.username}`  \ninstance {role}")
        if st.session_state.get(TOKEN_KEY) and has_identity_provider() and st.user.is_logged_in:
            if st.button("Log out", key="oidc_logout"):
                users.end_session(Store.open(), st.session_state.pop(TOKEN_KEY))
                st.logout()
            return
        action = html.escape(base_path() + LOGOUT_ROUTE, quote=True)
        st.html(
            LOGIN_CSS + f'<form class="md-logout" method="post" action="{action}">'
            '<button type="submit">Log out</button></form>'
        )
