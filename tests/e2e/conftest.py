"""Browser harness: a demo workspace, a real Streamlit server, a headless system Chromium.

The workspace, the server and the browser are session-wide because building the demo and
starting Streamlit take seconds; each test still gets a fresh browser context (no shared cookies
or Streamlit session).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
# Playwright's own browser download is unreachable in CI: drive Debian's chromium instead.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Streamlit marks the app root; "initial" before the first script run, so this cannot match a
# page that has not started rendering yet.
RENDERED = (
    '[data-testid="stApp"][data-test-connection-state="CONNECTED"]'
    '[data-test-script-state="notRunning"]'
)
EXCEPTION = '[data-testid="stException"]'
# Placeholder of an element whose frontend code is still loading (dataframes, page links, ...).
SKELETON = '[data-testid="stSkeleton"]'
# The page as a reader sees it in full: connected, the script done, no element still loading,
# and every chart drawn: a Vega-Lite chart's marks (Streamlit mounts the element, then loads
# vega-embed, 0.8 MB, and draws), and for checkouts from before Vega-Lite (bench/ui_bench.py
# --app-dir), plotly's figures and the placeholders a tab's first run left for a second run.
DRAWN = """() => { const app = document.querySelector('[data-testid="stApp"]');
  const all = (sel, inner) => [...document.querySelectorAll(sel)].every(
    el => el.querySelector(inner));
  return !!app && app.dataset.testConnectionState === 'CONNECTED'
    && app.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-testid="stSkeleton"]')
    && !document.querySelector('[class*="st-key-md_chart_later_"]')
    && all('[data-testid="stVegaLiteChart"]', 'svg.marks, canvas.marks')
    && all('[data-testid="stPlotlyChart"]', '.main-svg'); }"""
# After a user action: WATCH notes any change of the app root's script state (a rerun
# started); SETTLED is true once that rerun has finished.
WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__reran = false;
  if (window.__watch) window.__watch.disconnect();
  window.__watch = new MutationObserver(() => { window.__reran = true; });
  window.__watch.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
SETTLED = """() => window.__reran && document.querySelector('[data-testid="stApp"]')
  .getAttribute('data-test-script-state') === 'notRunning'"""
STARTUP_TIMEOUT_S = 60
RENDER_TIMEOUT_MS = 30_000
LOG_TAIL_LINES = 200


@dataclass(frozen=True)
class StreamlitServer:
    url: str  # with a trailing slash: url + page.url_path is a deep link
    log_path: Path

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace built once by `modeldeck demo`, never served or changed: tests that change a
    workspace get a copy. MODELDECK_E2E_HOME reuses an existing one (built there when missing)."""
    reuse = os.environ.get("MODELDECK_E2E_HOME")
    if reuse and Path(reuse).is_dir():
        return Path(reuse)
    home = Path(reuse) if reuse else tmp_path_factory.mktemp("demo_template") / "home"
    build_demo(home)
    return home


@pytest.fixture(scope="session")
def e2e_home(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workspace the session's server serves (MODELDECK_E2E_HOME: that one itself)."""
    if os.environ.get("MODELDECK_E2E_HOME"):
        return demo_template
    return copy_workspace(demo_template, tmp_path_factory.mktemp("e2e_home") / "home")


def build_demo(home: Path) -> None:
    # A new interpreter, as in production: the demo must not leak state into this process.
    # --home is the CLI's global option, so it goes before the command.
    cmd = [sys.executable, "-m", "core.cli", "--home", str(home), "demo"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )


def copy_workspace(source: Path, target: Path) -> Path:
    """A copy of a workspace no process has open (README: back up and restore): the store
    keeps paths relative to the folder, so the copy works anywhere."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("run", "*.tmp"))
    return target


@pytest.fixture(scope="session")
def data_columns(e2e_home: Path) -> set[str]:
    """The columns of the workspace's datasets: their names are the users', shown as they are."""
    from core import datasets
    from core.store import Store

    return {c for d in datasets.list_datasets(Store.open(e2e_home)) for c in d.column_names}


@pytest.fixture(scope="session")
def streamlit_server(
    e2e_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamlitServer]:
    """The app served for the whole session."""
    with serve(e2e_home, tmp_path_factory.mktemp("streamlit") / "server.log") as server:
        yield server


@pytest.fixture
def cold_streamlit_server(e2e_home: Path, tmp_path: Path) -> Iterator[StreamlitServer]:
    """A server no browser has visited yet, for what only a first request can show."""
    with serve(e2e_home, tmp_path / "server.log") as server:
        yield server


@contextlib.contextmanager
def serve(home: Path, log_path: Path) -> Iterator[StreamlitServer]:
    """The app served as `modeldeck ui` serves it (`streamlit run core/ui/server.py`: Streamlit
    with the login routes) as a new process on a free 127.0.0.1 port, stopped on exit."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", "core/ui/server.py",
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",  # nothing edits sources mid-run; no inotify use
    ]  # fmt: skip
    env = {**os.environ, "MODELDECK_HOME": str(home)}
    # Popen (fork+exec), never a bare fork: DuckDB handles must not be shared (DESIGN traps).
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = StreamlitServer(url=f"http://127.0.0.1:{port}/", log_path=log_path)
    try:
        _wait_healthy(proc, server)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


E2E_USER = "olivia"  # the demo's owner of project Demo (core/demo.py)


def demo_password(username: str) -> str:
    return f"{username}-demo-pass"


@pytest.fixture(scope="session")
def e2e_token(e2e_home: Path) -> str:
    """A session of the demo owner, logged in once as the login form would."""
    from core import users
    from core.store import Store

    return users.login(Store.open(e2e_home), E2E_USER, demo_password(E2E_USER), client="e2e").token


@pytest.fixture
def anonymous_page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context with no cookie: nobody is logged in."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(RENDER_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, e2e_token: str) -> Iterator[Page]:
    """A page in a fresh context (so every test starts a new Streamlit session), logged in as
    the demo owner: the session cookie is added as /auth/login sets it (HttpOnly)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(RENDER_TIMEOUT_MS)
    context.add_cookies(
        [
            {
                "name": "modeldeck_session",
                "value": e2e_token,
                "domain": "127.0.0.1",
                "path": "/",
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def _wait_rendered(page: Page) -> None:
    # No fixed sleep or network-idle wait: both can return before an exception box appears.
    page.wait_for_selector(RENDERED, state="attached")
    # The script has finished, but lazily loaded elements may still be placeholders, and a
    # new tab draws its charts in a second run.
    page.wait_for_function(DRAWN)


def _assert_no_exception(page: Page) -> None:
    boxes = page.locator(EXCEPTION)
    if boxes.count():
        texts = "\n---\n".join(boxes.all_inner_texts())
        pytest.fail(f"{page.url} shows {boxes.count()} exception box(es):\n{texts}")


@pytest.fixture
def wait_rendered() -> Callable[[Page], None]:
    """wait_rendered(page): block until the script run has finished and every element shows."""
    return _wait_rendered


def _rerun_after(page: Page, action: Callable[[], None]) -> None:
    page.evaluate(WATCH)
    action()
    page.wait_for_function(SETTLED)
    _wait_rendered(page)


@pytest.fixture
def rerun_after() -> Callable[[Page, Callable[[], None]], None]:
    """rerun_after(page, action): do the action, then wait until the rerun it caused has
    finished rendering (the previous run also reads notRunning, so wait_rendered alone
    could return at once)."""
    return _rerun_after


@pytest.fixture
def assert_no_exception() -> Callable[[Page], None]:
    """assert_no_exception(page): fail with the text of any Streamlit exception box."""
    return _assert_no_exception


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Attach the server log to any failing test that used a server."""
    report: pytest.TestReport = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, StreamlitServer):
                report.sections.append((f"{name} log (tail)", value.log_tail()))
    return report


def _free_port() -> int:
    """A free 127.0.0.1 port: any (the system picks), or the first free one of
    $MODELDECK_PORTS ("8600-8699") on a box whose users share ranges of ports."""
    low, _, high = os.environ.get("MODELDECK_PORTS", "").partition("-")
    for port in range(int(low), int(high or low) + 1) if low else (0,):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port in MODELDECK_PORTS={os.environ['MODELDECK_PORTS']}")


def _wait_healthy(proc: subprocess.Popen[bytes], server: StreamlitServer) -> None:
    health = f"{server.url}_stcore/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Streamlit exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:  # refused or reset while the server is still starting
            pass
        time.sleep(0.2)
    pytest.fail(f"{health} not ok after {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


DEPLOY_AND_RUN = """
import sys
from core import deployments, registry, runs
from core.worker import loop as worker
from core.store import Store
store = Store.open(sys.argv[1])
churn = [m for m in registry.list_models(store) if m.experiment == "Customer churn"]
deployed = deployments.deploy(
    store, churn[0].id, "staging", challenger_id=churn[1].id, actor="olivia"
)
run = runs.enqueue_run(store, deployed.name, actor="olivia")
assert worker.run_once(store)
print(deployed.name, runs.get_run(store, run.id).id, runs.get_run(store, run.id).status)
"""


@pytest.fixture(scope="session")
def e2e_run(e2e_home: Path) -> tuple[str, str]:
    """(deployment name, run id) of a succeeded churn run in the e2e workspace."""
    result = subprocess.run(
        [sys.executable, "-c", DEPLOY_AND_RUN, str(e2e_home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"deploy and run failed:\n{result.stdout}\n{result.stderr}")
    name, run_id, status = result.stdout.split()
    assert status == "succeeded", result.stdout
    return name, run_id


@contextlib.contextmanager
def sidecar(
    home: Path, args: list[str], log_path: Path, ready: str | None = None
) -> Iterator[None]:
    """`modeldeck <args>` (the API or the worker) as a new process on the workspace, stopped on
    exit; `ready`: a URL to wait for (200) before going on."""
    cmd = [sys.executable, "-m", "core.cli", *args]
    # Usage samples every second, so the Usage section has some a few seconds after the start.
    env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_USAGE_SECONDS": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while ready is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"{' '.join(args)} did not start ({proc.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(ready, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:  # refused while starting, or 503 until its models are warm
                pass
            time.sleep(0.2)
        yield
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not ended 15 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    return _free_port()
