"""POST /auth/login and /auth/logout over HTTP (Starlette's TestClient on the real routes)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # starlette 1.10 asks for `httpx2` over the `httpx` we install; the client works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from core import access, users
from core.store import Store
from core.ui.auth import COOKIE
from core.ui.login_routes import ROUTES, safe_next

PASSWORD = "correct horse battery"
SAME_SITE = {"origin": "http://testserver"}


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    users.create_user(store, "pat", password=PASSWORD, actor=access.BOOTSTRAP)
    with TestClient(Starlette(routes=ROUTES), follow_redirects=False) as http:
        yield http


def test_login_sets_an_httponly_cookie_and_redirects_without_the_token(
    client: TestClient, store: Store
) -> None:
    response = client.post(
        "/auth/login",
        data={"username": "pat", "password": PASSWORD, "next": "/deployment?name=churn"},
        headers=SAME_SITE,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/deployment?name=churn"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain http here; https (or X-Forwarded-Proto) adds it
    token = response.cookies[COOKIE]
    assert token not in response.headers["location"]
    user = users.resolve_session(store, token)
    assert user is not None and user.username == "pat"


def test_secure_flag_behind_an_https_proxy(client: TestClient) -> None:
    response = client.post(
        "/auth/login",
        data={"username": "pat", "password": PASSWORD},
        headers={**SAME_SITE, "x-forwarded-proto": "https"},
    )
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "http:/evil", "evil", ""],
)
def test_open_redirects_are_refused(client: TestClient, target: str) -> None:
    response = client.post(
        "/auth/login",
        data={"username": "pat", "password": PASSWORD, "next": target},
        headers=SAME_SITE,
    )
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert safe_next(target) == "/"


def test_wrong_password_and_unknown_user_redirect_alike(client: TestClient) -> None:
    wrong = client.post(
        "/auth/login", data={"username": "pat", "password": "x" * 12}, headers=SAME_SITE
    )
    unknown = client.post(
        "/auth/login", data={"username": "nobody", "password": "x" * 12}, headers=SAME_SITE
    )
    assert wrong.status_code == unknown.status_code == 303
    assert wrong.headers["location"] == unknown.headers["location"] == "/?login=failed&next=%2F"
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


def test_throttled_after_five_failures(client: TestClient) -> None:
    for _ in range(users.FREE_FAILURES):
        response = client.post(
            "/auth/login", data={"username": "pat", "password": "y" * 12}, headers=SAME_SITE
        )
        assert "login=failed" in response.headers["location"]
    response = client.post(
        "/auth/login", data={"username": "pat", "password": "y" * 12}, headers=SAME_SITE
    )
    response = client.post(
        "/auth/login", data={"username": "pat", "password": PASSWORD}, headers=SAME_SITE
    )
    location = response.headers["location"]
    assert location.startswith("/?login=wait&seconds=") and "set-cookie" not in response.headers
    assert "pat" not in location and PASSWORD.split()[0] not in location


def test_disabled_account(client: TestClient, store: Store) -> None:
    users.set_disabled(store, "pat", True, actor="tester")
    response = client.post(
        "/auth/login", data={"username": "pat", "password": PASSWORD}, headers=SAME_SITE
    )
    assert response.headers["location"] == "/?login=disabled&next=%2F"


def test_cross_site_posts_are_refused(client: TestClient) -> None:
    form = {"username": "pat", "password": PASSWORD}
    for headers in ({}, {"origin": "https://evil.example"}, {"referer": "http://evil/x"}):
        response = client.post("/auth/login", data=form, headers=headers)
        assert response.status_code == 403 and "set-cookie" not in response.headers
    assert client.post("/auth/logout", headers={"origin": "http://evil"}).status_code == 403


def test_logout_ends_the_session_and_clears_the_cookie(client: TestClient, store: Store) -> None:
    login = client.post(
        "/auth/login", data={"username": "pat", "password": PASSWORD}, headers=SAME_SITE
    )
    token = login.cookies[COOKIE]
    client.cookies.set(COOKIE, token)
    response = client.post("/auth/logout", headers=SAME_SITE)
    assert response.status_code == 303 and response.headers["location"] == "/?login=out"
    cleared = response.headers["set-cookie"]
    assert cleared.startswith(f'{COOKIE}=""') and "Max-Age=0" in cleared and "HttpOnly" in cleared
    assert users.resolve_session(store, token) is None
