"""The login and logout routes served beside Streamlit (core/ui/server.py mounts them).

A Streamlit script cannot set an HttpOnly cookie (it runs behind a websocket), and a cookie set
by JavaScript stays readable by any script on the page. So the login form posts here: the
password is checked by `users.login`, the session token goes into `modeldeck_session`
(HttpOnly, SameSite=Strict, Secure over https, Max-Age = the session's absolute limit), and
the browser is sent on with a 303 to the page it came from (a same-site path only). A failure
goes back to the login page with `?login=failed|wait|disabled`, never the name typed. Both
routes refuse a POST whose Origin (else Referer) is another host: SameSite=Strict already keeps
the cookie off cross-site requests, and this also stops login CSRF.
"""

from __future__ import annotations

import urllib.parse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core import users
from core.errors import Forbidden, TooManyAttempts, Unauthorized
from core.store import Store
from core.ui.auth import COOKIE, LOGIN_ROUTE, LOGOUT_ROUTE, base_path


def safe_next(target: str | None) -> str:
    """A same-site path to go to after logging in: anything else (another host, a scheme,
    `//host`, a backslash trick) becomes the app's root, so the form cannot redirect away."""
    root = base_path() + "/"
    if not target or not target.startswith("/") or target.startswith("//"):
        return root
    if "\\" in target or any(ord(c) < 32 for c in target):
        return root
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc:
        return root
    if not parts.path.startswith(root.rstrip("/") or "/"):
        return root
    return target


def _same_origin(request: Request) -> bool:
    """CSRF guard beside SameSite: a POST must come from a page of this host (Origin, else
    Referer); a request carrying neither is refused."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    return urllib.parse.urlsplit(source).netloc == request.headers.get("host", "")


def _login_url(params: dict[str, str]) -> str:
    # The app's root: while nobody is logged in its default (and only) page is the login page.
    return f"{base_path()}/?{urllib.parse.urlencode(params)}"


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


async def login(request: Request) -> Response:
    """POST /auth/login (form: username, password, next): set the session cookie and go to
    `next`; on failure back to the login page saying which kind (never the name typed)."""
    if not _same_origin(request):
        return Response("Cross-site login refused.", status_code=403)
    form = await request.form()
    target = safe_next(str(form.get("next") or ""))
    retry = {"next": target}
    try:
        done = await run_in_threadpool(
            users.login,
            Store.open(),
            str(form.get("username") or ""),
            str(form.get("password") or ""),
            client=_client(request),
        )
    except TooManyAttempts as exc:
        seconds = str(max(1, int(exc.retry_after or 1)))
        return RedirectResponse(
            _login_url({"login": "wait", "seconds": seconds, **retry}), status_code=303
        )
    except Forbidden:
        return RedirectResponse(_login_url({"login": "disabled", **retry}), status_code=303)
    except Unauthorized:
        return RedirectResponse(_login_url({"login": "failed", **retry}), status_code=303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        done.token,
        max_age=int(users.absolute_limit().total_seconds()),
        path=base_path() + "/",
        secure=_is_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


async def logout(request: Request) -> Response:
    """POST /auth/logout: end the server session and clear the cookie."""
    if not _same_origin(request):
        return Response("Cross-site logout refused.", status_code=403)
    await run_in_threadpool(users.end_session, Store.open(), request.cookies.get(COOKIE))
    response = RedirectResponse(_login_url({"login": "out"}), status_code=303)
    response.delete_cookie(
        COOKIE, path=base_path() + "/", secure=_is_https(request), httponly=True, samesite="strict"
    )
    return response


ROUTES = [
    Route(base_path() + LOGIN_ROUTE, login, methods=["POST"]),
    Route(base_path() + LOGOUT_ROUTE, logout, methods=["POST"]),
]
