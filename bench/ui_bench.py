"""The UI in a real browser: how long each page takes to be ready, and each common action.

Run: `.venv/bin/python bench/ui_bench.py [--home DIR] [--app-dir DIR] [--repeat 3] [--runs 20]
[--traffic [--days 30] [--per-hour 1389]] [--only cold in-app section action]`.

Builds (in `--home` when it is missing, else in a temporary folder deleted afterwards) a demo
workspace (`modeldeck demo`) with the
churn experiment deployed to staging with a challenger and `--runs` succeeded runs, executed by
`worker.run_once`. With `--traffic`, the deployment's prediction log also gets a month of hourly
API traffic (issue 18: 30 days x 24 h x 1,389 requests, about 1M, and their challenger
records), written by bench/monitoring_bench.py's builder so that it ends now (once per
workspace). Then starts `streamlit run core/ui/server.py` (`app.py` in a checkout from
before logins) from `--app-dir` (default: this checkout; its .streamlit/config.toml applies, as
under `modeldeck ui`; point it at an export of an older commit to measure the same workspace
before a change) on a free port and drives Debian's Chromium (1400 px wide), as tests/e2e does:

- cold load: a fresh browser context opens each deep link (every page, the deployment page's
  sections, a run's results) and waits until Streamlit's app root reads CONNECTED and
  notRunning, no skeleton is left and every chart has drawn its marks (tests/e2e's DRAWN),
  i.e. everything a user reads, charts included ("cold load"). "Cold paint" is also printed:
  the first moment the app root read CONNECTED and notRunning with no skeleton, the text,
  metrics and tables drawn (a chart's Vega code may still be loading then; checkouts from
  before Vega-Lite charts left a placeholder per chart for a second run). Both are taken in
  the page (performance.now(), from the navigation's start). Mostly Streamlit's frontend
  starting (its JS, the websocket, the session's first run), once per browser tab;
- floor: in the same rounds, the cold load of a bare Streamlit app served beside it (no
  ModelDeck code, trivial data) whose page has ModelDeck's chrome (sidebar links, a title, a
  select box, section buttons, metrics) and then nothing, a table, a chart, or a table and
  three charts: what Streamlit's own frontend needs on this machine for those elements, no
  target;
- warm-context load and paint: the same, in a new tab of one browser context that has opened
  the app before (its HTTP cache and V8's code cache hold Streamlit's JavaScript, Vega's
  included), as when a user opens a shared link in the browser they use ModelDeck in;
- in-app: in one loaded app, a click on each sidebar link until that page has settled, as a
  user moves between pages (the websocket and the JS stay);
- section: on an open deployment page, a click on each section's button in turn (from General,
  back to General at the end) until it has settled (issue 18: <= 1 s, with --traffic);
- widget action: on an open page, one user action (typing a cron expression, picking a drift
  feature, Preview, switching section, toggling a results column, the next results page) until
  the rerun it caused has finished and the page has settled.

Every browser context carries the session cookie of the demo owner (olivia), logged in once
as the login form would. Also measured in this process: what the session costs a rerun
(`users.session_view`, the session and its roles in one read, after a write to the store;
`Store.version`, the check that a kept view still holds), in ms.

Prints the median and the worst of `--repeat` tries per line, in seconds. Issue 13's targets on
a quiet box: every page ready in <= 1.5 s, every widget action <= 0.5 s; issue 18's: any
section in <= 1 s. Not a test: nothing is asserted, the figures depend on the machine and its
load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The e2e harness's browser and "page settled" conditions, so the bench waits as tests do.
from tests.e2e.conftest import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    DRAWN,
    RENDERED,
    SETTLED,
    SKELETON,
    WATCH,
    free_port,
)

TIMEOUT_MS = 120_000
USER = "olivia"  # the demo's owner of project Demo (core/demo.py)
COOKIES: list[dict[str, object]] = []  # the session cookie every browser context carries
TARGET_PAGE_S = 1.5
TARGET_ACTION_S = 0.5
TARGET_SECTION_S = 1.0  # issue 18: any section, with a month of hourly traffic logged
# The deployment page's sections as pages/deployment.py orders them: (URL value, button title).
SECTIONS = (
    ("general", "General"),
    ("monitoring", "Monitoring"),
    ("predictions", "Predictions"),
    ("versions", "Versions"),
    ("usage", "Usage"),
    ("pipeline", "Pipeline"),
    ("runs", "Runs"),
    ("schedule", "Schedule"),
    ("validation", "Validation"),
    ("challenger", "Challenger"),
    ("drift", "Drift"),
    ("audit", "Audit log"),
)
# The sidebar's pages a user clicks through in one loaded app (title of the sidebar link).
NAV_PAGES = (
    "Datasets",
    "Train",
    "Models",
    "Model",
    "Import a model",
    "Deployments",
    "Deployment",
    "Run results",
    "Account",
    "Overview",
)
NAV_LINK = '[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]'


# ---------------------------------------------------------------------------- workspace
def build(home: Path, n_runs: int) -> tuple[str, str]:
    """The demo workspace plus a churn staging deployment with `n_runs` runs; (name, run)."""
    from core import deployments, registry, runs
    from core.store import Store
    from core.worker import loop as worker

    if not (home / "modeldeck.duckdb").exists():
        subprocess.run(
            [sys.executable, "-m", "core.cli", "--home", str(home), "demo"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    store = Store.open(home)
    churn = [m for m in registry.list_models(store) if m.experiment == "Customer churn"]
    found = deployments.list_deployments(store)
    staging = next(
        (
            d
            for d in found
            if d.experiment_id == churn[0].experiment_id and d.environment == "staging"
        ),
        None,
    )
    if staging is None:
        staging = deployments.deploy(
            store, churn[0].id, "staging", challenger_id=churn[1].id, actor=USER
        )
    done = runs.list_runs(store, staging.name, limit=1000)
    for _ in range(n_runs - len(done)):
        runs.enqueue_run(store, staging.name, actor=USER)
        worker.run_once(store)
    last = runs.list_runs(store, staging.name, limit=1)[0]
    return staging.name, last.id


def fill_traffic(home: Path, name: str, days: int, per_hour: int) -> int:
    """A month of hourly API traffic in the prediction log of deployment `name`, ending now
    (bench/monitoring_bench.py's log: one compacted Parquet file a day and an open segment);
    once per workspace. Returns the requests logged (0 when already there)."""
    from bench import monitoring_bench
    from core import deployments, prediction_log
    from core.store import Store, utcnow

    store = Store.open(home)
    if any((prediction_log.folder(store.workspace) / "compacted").glob("day=*/bench.parquet")):
        return 0
    end = utcnow().replace(minute=0, second=0, microsecond=0)
    deployed = deployments.get_deployment(store, name)
    return monitoring_bench.write_log(
        store, deployed, days, per_hour, 10_000, start=end - timedelta(days=days)
    )


# ---------------------------------------------------------------------------- server
def serve(app_dir: Path, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "core/ui/server.py" if (app_dir / "core/ui/server.py").exists() else "app.py",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
    ]  # otherwise .streamlit/config.toml of --app-dir, as `modeldeck ui` serves it
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=app_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODELDECK_HOME": str(home), "PYTHONPATH": str(app_dir)},
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"streamlit did not start:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------------------- floor
# A bare Streamlit app (no ModelDeck code, trivial data) with the element kinds of ModelDeck's
# pages: a sidebar of page links, a title, a select box, a row of section buttons and metrics;
# then nothing more, a table (st.dataframe: Streamlit loads 1.6 MB of grid and Arrow code for
# it), one Vega-Lite chart (vega-embed, 0.8 MB), or a table and three charts. Its cold loads,
# taken beside ModelDeck's in the same run, are what Streamlit itself needs on this machine.
FLOOR_KINDS = {
    "metrics": "",
    "metrics + table": "table",
    "metrics + chart": "chart",
    "metrics + table + 3 charts": "table chart chart chart",
}
FLOOR_APP = """
import streamlit as st


def floor() -> None:
    kinds = st.query_params.get("kinds", "").split()
    st.title("Floor")
    st.selectbox("Deployment", ["churn (staging)", "churn (production)"])
    st.segmented_control("Section", [f"Section {i}" for i in range(12)], default="Section 0")
    for col, label in zip(st.columns(5), ("Environment", "Created", "Version", "Status", "Access")):
        col.metric(label, label.lower())
    rows = [{"run": f"run_{i}", "rows": 1000 + i, "status": "succeeded"} for i in range(10)]
    for n, kind in enumerate(kinds):
        if kind == "table":
            st.dataframe(rows, hide_index=True)
        else:
            values = [{"run": i, "share": 0.9 + i / 100 + n / 50} for i in range(10)]
            st.vega_lite_chart(
                {
                    "title": f"Chart {n}",
                    "data": {"values": values},
                    "mark": {"type": "line", "point": True},
                    "encoding": {
                        "x": {"field": "run", "type": "ordinal"},
                        "y": {"field": "share", "type": "quantitative"},
                    },
                },
                use_container_width=True,
            )


def other() -> None:
    st.title("Other")


pages = [st.Page(floor, title="Floor", url_path="floor", default=True)]
pages += [st.Page(other, title=f"Page {i}", url_path=f"page{i}") for i in range(12)]
st.navigation({"Build": pages[:6], "Deploy": pages[6:10], "You": pages[10:]}).run()
"""


def serve_floor(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The floor app (FLOOR_APP) served from `folder`, as `serve` serves ModelDeck."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(FLOOR_APP)
    return serve(folder, folder, folder / "streamlit.log")


# ---------------------------------------------------------------------------- timing
# Notes in the page the first moment its text is drawn (CONNECTED, notRunning, no skeleton;
# charts may still be loading their code) and the first moment everything is (DRAWN), in
# ms from the navigation's start; installed before any of the page's own scripts.
TIMES = f"""(() => {{
  const drawn = {DRAWN};
  const check = () => {{
    const app = document.querySelector('[data-testid="stApp"]');
    if (window.__mdPaint === undefined && app
        && app.dataset.testConnectionState === 'CONNECTED'
        && app.dataset.testScriptState === 'notRunning'
        && !document.querySelector('[data-testid="stSkeleton"]')) {{
      window.__mdPaint = performance.now();
    }}
    if (window.__mdPaint !== undefined && drawn()) {{
      window.__mdDrawn = performance.now();
      observer.disconnect();
    }}
  }};
  const observer = new MutationObserver(check);
  observer.observe(document, {{subtree: true, childList: true, attributes: true}});
}})()"""


def settle(page: Page) -> None:
    page.wait_for_selector(RENDERED, state="attached")
    page.wait_for_function(DRAWN)


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    if COOKIES:
        context.add_cookies(COOKIES)  # type: ignore[arg-type]
    context.add_init_script(TIMES)
    return context


def open_in(context: BrowserContext, url: str) -> tuple[Page, float, float]:
    """A new tab of `context` on `url`: (page, seconds to its first paint, to all drawn)."""
    page = context.new_page()
    page.goto(url)
    settle(page)
    page.wait_for_function("() => window.__mdDrawn !== undefined")
    paint, drawn = page.evaluate("[window.__mdPaint, window.__mdDrawn]")
    return page, paint / 1000, drawn / 1000


def open_page(browser: Browser, url: str) -> tuple[Page, float]:
    """`url` in a fresh browser context: (page, seconds until everything is drawn)."""
    page, _, drawn = open_in(new_context(browser), url)
    return page, drawn


def act(page: Page, action: Callable[[Page], None]) -> float:
    """Seconds from the action until the rerun it caused has finished and the page settled."""
    page.evaluate(WATCH)
    started = time.perf_counter()
    action(page)
    page.wait_for_function(SETTLED)
    page.wait_for_selector(SKELETON, state="detached")
    return time.perf_counter() - started


def section_button(page: Page, title: str) -> Locator:
    return page.locator('[data-testid="stButtonGroup"] button', has_text=title)


def go_to_section(page: Page, title: str) -> None:
    """The section's button (sections) or tab (the earlier all-tabs page), then settle."""
    button = section_button(page, title)
    if button.count():
        if button.first.get_attribute("aria-checked") != "true":
            act(page, lambda p: button.first.click())
    else:
        page.get_by_role("tab", name=title).click()


def click_nav(page: Page, title: str) -> None:
    """The sidebar link to a page, as a user clicks it (the app stays loaded)."""
    page.locator(NAV_LINK, has_text=title).filter(
        has=page.locator(f'span[label="{title}"]')
    ).first.click()


def type_cron(page: Page) -> None:
    box = page.get_by_label("Cron expression (minute hour day-of-month month day-of-week)")
    box.fill("30 7 * * 1-5")
    box.press("Enter")


def pick_drift_feature(page: Page) -> None:
    chips = page.locator('[data-testid="stButtonGroup"]', has_text="tenure")
    if chips.count():  # few features: one click on its chip
        chips.locator("button", has_text="tenure").first.click()  # tenure_months
        return
    box = page.get_by_role("combobox", name="Feature", exact=True)
    box.click()
    box.press_sequentially("tenure")  # the selectbox filters as one types; Enter picks
    box.press("Enter")


def toggle_column(page: Page) -> None:
    page.locator('[data-testid="stMultiSelect"]', has_text="Input columns").locator(
        'button[aria-label^="Remove"]'
    ).first.click()


def next_page(page: Page) -> None:
    page.locator('[data-testid="stNumberInput"]', has_text="Page").get_by_test_id(
        "stNumberInputStepUp"
    ).click()


# ---------------------------------------------------------------------------- bench
def deep_links(name: str, run_id: str, model_id: str) -> dict[str, str]:
    return {
        "overview": "",
        "datasets": "datasets",
        "train": "train",
        "models": "models",
        "model": f"model?id={model_id}",
        "import_model": "import_model",
        "deployments": "deployments",
        "results": f"results?run={run_id}",
        **{f"deployment · {s}": f"deployment?name={name}&section={s}" for s, _ in SECTIONS},
    }


GROUPS = ("cold", "warm-context", "in-app", "section", "action")


def measure(
    browser: Browser,
    url: str,
    name: str,
    run_id: str,
    model_id: str,
    repeat: int,
    groups: tuple[str, ...] = GROUPS,
    floor_url: str | None = None,
) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}

    def add(label: str, seconds: float) -> None:
        figures.setdefault(label, []).append(seconds)
        print(f"  {label}: {seconds:.2f} s", file=sys.stderr, flush=True)

    actions: list[tuple[str, str, str | None, Callable[[Page], None]]] = [
        ("type a cron expression", f"deployment?name={name}", "Schedule", type_cron),
        ("pick a drift feature", f"deployment?name={name}", "Drift", pick_drift_feature),
        (
            "Preview the pipeline",
            f"deployment?name={name}",
            "Pipeline",
            lambda p: p.get_by_role("button", name="Preview").click(),
        ),
        (
            "switch section General → Runs",
            f"deployment?name={name}",
            None,
            lambda p: go_to_section(p, "Runs"),
        ),
        ("toggle a results column", f"results?run={run_id}", None, toggle_column),
        ("next results page", f"results?run={run_id}", None, next_page),
    ]
    for _ in range(repeat):
        for label, path in deep_links(name, run_id, model_id).items() if "cold" in groups else ():
            page, paint, drawn = open_in(new_context(browser), url + path)
            add(f"cold paint: {label}", paint)
            add(f"cold load: {label}", drawn)
            page.context.close()
        for label, kinds in FLOOR_KINDS.items() if floor_url else ():
            query = urllib.parse.urlencode({"kinds": kinds})
            page, paint, drawn = open_in(new_context(browser), f"{floor_url}?{query}")
            add(f"floor cold load: {label}", drawn)
            page.context.close()
        if "warm-context" in groups:
            context = new_context(browser)  # a browser that has used the app, charts included
            for path in ("", f"deployment?name={name}", f"deployment?name={name}"):
                open_in(context, url + path)[0].close()  # the 2nd load keeps V8's code cache
            for label, path in deep_links(name, run_id, model_id).items():
                page, paint, drawn = open_in(context, url + path)
                add(f"warm-context paint: {label}", paint)
                add(f"warm-context load: {label}", drawn)
                page.close()
            context.close()
        if "in-app" in groups:
            page, _ = open_page(browser, url)  # one loaded app, clicked through as a user does
            for title in NAV_PAGES:
                add(f"in-app: {title}", act(page, lambda p, t=title: click_nav(p, t)))
            page.context.close()
        if "section" in groups:
            page, _ = open_page(browser, url + f"deployment?name={name}")
            for _, title in (*SECTIONS[1:], SECTIONS[0]):  # from General, then back to it
                add(f"section: {title}", act(page, lambda p, t=title: section_button(p, t).click()))
            page.context.close()
        for label, path, section, action in actions if "action" in groups else ():
            page, _ = open_page(browser, url + path)
            if section:
                go_to_section(page, section)
            if (
                label.startswith("switch")
                and not page.locator('[data-testid="stButtonGroup"]').count()
            ):
                page.context.close()
                continue  # the all-tabs page switches tabs in the browser, without a rerun
            try:
                add(f"action: {label}", act(page, action))
            except PlaywrightError as exc:  # a missing widget: say so, measure the rest
                print(f"action '{label}' failed: {str(exc).splitlines()[0]}", flush=True)
            page.context.close()
    return figures


def report(figures: dict[str, list[float]]) -> None:
    print(f"{'what':<48} {'median s':>9} {'worst s':>8}  target")
    for label, values in figures.items():
        target = {
            "cold": TARGET_PAGE_S,
            "warm-context": TARGET_PAGE_S,
            "in-app": TARGET_PAGE_S,
            "section": TARGET_SECTION_S,
            "floor": None,
        }.get(label.split(":")[0].split(" ")[0], TARGET_ACTION_S)
        median = statistics.median(values)
        mark = "-" if target is None else "ok" if median <= target else f"> {target}"
        print(f"{label:<48} {median:>9.2f} {max(values):>8.2f}  {mark}")


def log_in(home: Path, url: str) -> str:
    """A session of USER, as the login form starts one; its cookie goes into every context."""
    from core import users
    from core.store import Store

    token = users.login(Store.open(home), USER, f"{USER}-demo-pass", client="bench").token
    host = url.split("//")[1].split(":")[0]
    COOKIES[:] = [
        {
            "name": "modeldeck_session",
            "value": token,
            "domain": host,
            "path": "/",
            "httpOnly": True,
            "sameSite": "Strict",
        }
    ]
    return token


def session_cost(home: Path, token: str, n: int = 30) -> tuple[float, float]:
    """Median ms of what app.py adds to a rerun for the session: reading it with the user's
    roles (`users.session_view`, one store connection; once after each write to the store),
    and checking that the view a browser session keeps still holds (`Store.version`)."""
    from core import users
    from core.store import Store

    store = Store.open(home)
    read, kept = [], []
    for _ in range(n):
        started = time.perf_counter()
        assert users.session_view(store, token) is not None
        read.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.version()
        kept.append(time.perf_counter() - started)
    return statistics.median(read) * 1000, statistics.median(kept) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="workspace (built when missing)")
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="checkout to serve")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--traffic",
        action="store_true",
        help="first log a month of hourly API traffic for the deployment (issue 18: ~1M "
        "requests), as bench/monitoring_bench.py builds it",
    )
    parser.add_argument("--days", type=int, default=30, help="of --traffic")
    parser.add_argument("--per-hour", type=int, default=1389, help="requests, of --traffic")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        default=GROUPS,
        help="measure only these groups (cold loads, in-app clicks, sections, widget actions)",
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="ui_bench_"))
    name, run_id = build(home, args.runs)
    if args.traffic:
        started = time.perf_counter()
        logged = fill_traffic(home, name, args.days, args.per_hour)
        print(f"logged {logged:,} requests in {time.perf_counter() - started:.0f} s", flush=True)
    from core import registry
    from core.store import Store

    model_id = registry.list_models(Store.open(home))[0].id
    proc, url = serve(args.app_dir.resolve(), home, home / "ui_bench_streamlit.log")
    floor_dir = Path(tempfile.mkdtemp(prefix="ui_bench_floor_"))
    floor = serve_floor(floor_dir) if "cold" in args.only else None
    token = log_in(home, url)
    read_ms, kept_ms = session_cost(home, token)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            open_page(browser, url)[0].context.close()  # the server's first import, not timed
            if floor is not None:
                open_page(browser, floor[1])[0].context.close()
            figures = measure(
                browser,
                url,
                name,
                run_id,
                model_id,
                args.repeat,
                tuple(args.only),
                floor_url=floor[1] if floor else None,
            )
            browser.close()
    finally:
        for server in (proc, *(floor[:1] if floor else ())):
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(floor_dir, ignore_errors=True)
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)  # built here: not kept
    print(
        f"app {args.app_dir.resolve()} · workspace {home} · {args.runs} runs of {name} · "
        f"{args.repeat} tries · {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"session per rerun: read with roles {read_ms:.1f} ms (after a write), kept view "
        f"{kept_ms:.2f} ms (median of 30)"
    )
    report(figures)


if __name__ == "__main__":
    main()
