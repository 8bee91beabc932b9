"""The story a user lives, clicked in Chromium on its own workspace with the three processes
(issue 18, item 8): log in, upload a CSV, train, deploy to staging, set the source, preview,
run, open the results (hide and show columns, sort, page), explain a row and the whole run,
validate, promote through the gate, schedule, create an API key and call the API with it, see
the call on Monitoring and Usage, submit the prediction form as another user, roll back and
delete the staging deployment.

Each step saves tests/e2e/screenshots/story/NN-name.png; with MODELDECK_DOCS_IMAGES=docs/images
the steps the README shows are also written there (1280 px wide PNGs).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.e2e.conftest import (
    RENDER_TIMEOUT_MS,
    StreamlitServer,
    copy_workspace,
    demo_password,
    free_port,
    serve,
    sidecar,
)
from tests.e2e.test_audit import problems

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots" / "story"
ROOT = Path(__file__).resolve().parents[2]
# The README's images: the steps named here, written under $MODELDECK_DOCS_IMAGES too.
DOCS_IMAGES = {
    "login",
    "dataset-registered",
    "trained",
    "pipeline-preview",
    "results",
    "explain-row",
    "validated",
    "promoted",
    "schedule",
    "api-key",
    "monitoring",
    "form",
    "rolled-back",
}
WORK_MS = 120_000  # a step the worker does (a run, a validation, explanations) on a busy box
HEADING = '[data-testid="stMain"] [data-testid="stHeading"] h1'
MAIN = '[data-testid="stMain"]'
LOGIN_FORM = "form.md-login"
PLANS = ("basic", "plus", "pro")


# ---------------------------------------------------------------------------- the data
def customers(n: int, seed: int, labelled: bool) -> str:
    """A churn table as users bring it: an id, numbers with gaps, a text category, a yes/no
    label last."""
    rnd = random.Random(seed)
    lines = [
        "customer_id,tenure_months,monthly_fee,plan,support_calls"
        + (",churned" if labelled else "")
    ]
    for i in range(n):
        tenure = rnd.randint(1, 72)
        fee = round(rnd.uniform(10, 120), 2)
        plan = rnd.choice(PLANS)
        calls = rnd.randint(0, 9)
        risk = calls / 9 + (1 - tenure / 72) + (0.3 if plan == "basic" else 0) + rnd.gauss(0, 0.3)
        fee_text = "" if rnd.random() < 0.05 else str(fee)  # some fees are missing
        row = f"C{seed}{i:05d},{tenure},{fee_text},{plan},{calls}"
        lines.append(row + (f",{'yes' if risk > 1.1 else 'no'}" if labelled else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the processes
@dataclass(frozen=True)
class Story:
    home: Path
    server: StreamlitServer
    api: str  # the API's base URL
    files: Path  # the CSVs the user uploads


@pytest.fixture(scope="module")
def story(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """A copy of the demo workspace served by the app, the API and a worker of its own."""
    base = tmp_path_factory.mktemp("story")
    home = copy_workspace(demo_template, base / "home")
    files = base / "files"
    files.mkdir()
    (files / "customers.csv").write_text(customers(400, 1, labelled=True))
    (files / "new_customers.csv").write_text(customers(120, 2, labelled=False))
    (files / "labelled_customers.csv").write_text(customers(150, 3, labelled=True))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with (
        sidecar(home, ["worker", "--executors", "0"], base / "worker.log"),
        sidecar(home, ["api", "--port", str(port)], base / "api.log", ready=f"{api}/health"),
        serve(home, base / "server.log") as server,
    ):
        yield Story(home, server, api, files)


# ---------------------------------------------------------------------------- helpers
class Steps:
    """Numbered screenshots of the story, and the waits every step needs."""

    def __init__(
        self, page: Page, wait: Callable[[Page], None], check: Callable[[Page], None], home: Path
    ):
        self.page, self.wait, self.check, self.number, self.home = page, wait, check, 0, home
        self.seen = {"charts": 0, "headers": 0}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        docs = os.environ.get("MODELDECK_DOCS_IMAGES")
        self.docs = (ROOT / docs) if docs else None

    def shot(self, name: str, page: Page | None = None, focus: Locator | None = None) -> None:
        """The page as it stands, with no exception box, saved as the next step (scrolled to
        `focus`, the part the step is about)."""
        page = page or self.page
        self.wait(page)
        self.check(page)
        # item 9 on every state the story reaches: no error box, raw value or unlabelled chart
        from core import datasets
        from core.store import Store

        columns = {c for d in datasets.list_datasets(Store.open(self.home)) for c in d.column_names}
        assert not problems(page, columns, self.seen), (name, problems(page, columns, self.seen))
        if focus is not None:
            focus.scroll_into_view_if_needed()
        self.number += 1
        path = SCREENSHOTS / f"{self.number:02d}-{name}.png"
        page.screenshot(path=path, full_page=True)
        if self.docs is not None and name in DOCS_IMAGES:
            self.docs.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=self.docs / f"{name}.png", full_page=True)

    def section(self, title: str) -> None:
        self.page.locator('[data-testid="stButtonGroup"] button', has_text=title).click()
        self.page.wait_for_url(re.compile(rf"section={title.lower().split()[0]}"))
        self.wait(self.page)


def select(page: Page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`, as a user does."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def upload(page: Page, label: str, path: Path) -> None:
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text=label)
    uploader.locator('input[type="file"]').set_input_files(str(path))
    expect(uploader.get_by_role("button", name=f"Remove {path.name}")).to_be_visible()


def chosen(page: Page, label: str) -> list[str]:
    box = page.locator('[data-testid="stMultiSelect"]', has_text=label)
    return box.locator("[data-tag] span[title]").all_inner_texts()


def grid_click_row(grid: Locator, row: int) -> None:
    """Tick the selection box of a row (0-based) of a dataframe: 35 px rows under the header."""
    box = grid.bounding_box()
    assert box is not None
    grid.page.mouse.click(box["x"] + 18, box["y"] + 35 * (row + 1) + 18)


def call_api(url: str, key: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {key}"} if key else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def logged_in_context(browser: Browser, home: Path, user: str) -> Page:
    """A page of a new browser context logged in as `user` (the cookie the login form sets)."""
    from core import users
    from core.store import Store

    token = users.login(Store.open(home), user, demo_password(user), client="e2e").token
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(RENDER_TIMEOUT_MS)
    context.add_cookies(
        [{"name": "modeldeck_session", "value": token, "domain": "127.0.0.1", "path": "/"}]
    )
    return context.new_page()


# ---------------------------------------------------------------------------- the story
def test_the_whole_story(
    story: Story,
    browser: Browser,
    wait_rendered: Callable[[Page], None],
    rerun_after: Callable[[Page, Callable[[], None]], None],
    assert_no_exception: Callable[[Page], None],
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(RENDER_TIMEOUT_MS)
    page = context.new_page()
    steps = Steps(page, wait_rendered, assert_no_exception, story.home)
    url = story.server.url

    # 1. log in
    page.goto(url)
    wait_rendered(page)
    expect(page.locator(LOGIN_FORM)).to_be_visible()
    steps.shot("login")
    page.fill(f"{LOGIN_FORM} input[name=username]", "olivia")
    page.fill(f"{LOGIN_FORM} input[name=password]", demo_password("olivia"))
    page.click(f"{LOGIN_FORM} button[type=submit]")
    expect(page.locator(HEADING).first).to_contain_text("Overview")
    wait_rendered(page)
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("Olivia")
    steps.shot("overview")

    # 2. upload a CSV
    page.goto(url + "datasets")
    wait_rendered(page)
    upload(page, "CSV or Parquet file", story.files / "customers.csv")
    rerun_after(page, page.get_by_role("button", name="Register upload").click)
    expect(page.get_by_text(re.compile(r"Registered customers.* \(400 rows\)"))).to_be_visible()
    steps.shot("dataset-registered")

    # 3. train
    page.get_by_role("link", name=re.compile("Train on customers")).click()
    page.wait_for_url("**/train?dataset=*")
    wait_rendered(page)
    expect(page.get_by_text("is the prediction key: carried through to results")).to_be_visible()
    page.get_by_role("button", name="Train", exact=True).click()
    expect(page.get_by_text("Trained version 1 of customers")).to_be_visible(timeout=WORK_MS)
    wait_rendered(page)
    expect(page.get_by_text("Leaderboard", exact=True)).to_be_visible()
    steps.shot("trained")

    # 4. deploy to staging
    rerun_after(page, page.get_by_role("button", name="Deploy to staging").click)
    expect(
        page.get_by_text(re.compile(r"Deployed as version 1 of customers-staging"))
    ).to_be_visible()
    steps.shot("deployed")
    page.get_by_role("link", name="Open customers-staging").click()
    page.wait_for_url("**/deployment?name=customers-staging*")
    wait_rendered(page)
    expect(page.get_by_text("Promote to production").first).to_be_visible()

    # 5. set the source, preview and save
    steps.section("Pipeline")
    expect(page.get_by_text("Run now scores the training data")).to_be_visible()
    upload(page, "Upload a file to score", story.files / "new_customers.csv")
    wait_rendered(page)
    path = page.get_by_label("Path or glob (inside the workspace)")
    expect(path).to_have_value(re.compile(r"new_customers\.csv$"))
    rerun_after(page, page.get_by_role("button", name="Preview").click)
    expect(page.get_by_text("The output fits the model's schema")).to_be_visible()
    steps.shot("pipeline-preview")
    rerun_after(page, page.get_by_role("button", name="Save pipeline").click)
    expect(page.get_by_text("Pipeline saved. It applies to the next run.")).to_be_visible()

    # 6. run
    page.get_by_role("link", name="Run it now in the Runs section").click()
    page.wait_for_url("**section=runs*")
    wait_rendered(page)
    expect(page.get_by_text("Run now scores the training data")).to_have_count(0)
    rerun_after(page, page.get_by_role("button", name="Run now").click)
    expect(page.get_by_text(re.compile(r"Queued run \w+"))).to_be_visible()
    steps.shot("run-queued")

    # 7. open the results: hide and show a column, sort, page
    page.get_by_role("link", name=re.compile(r"Open run \w+")).click()
    page.wait_for_url("**/results?run=*")
    expect(page.get_by_text("120 rows match · page 1 of 3")).to_be_visible(timeout=WORK_MS)
    wait_rendered(page)
    steps.shot("results")
    inputs = chosen(page, "Input columns")
    assert inputs == ["tenure_months", "monthly_fee", "plan", "support_calls"], inputs
    remove = page.locator('[data-testid="stMultiSelect"]', has_text="Input columns").locator(
        'button[aria-label="Remove plan"]'
    )
    rerun_after(page, remove.click)
    assert chosen(page, "Input columns") == ["tenure_months", "monthly_fee", "support_calls"]
    box = page.locator('[data-testid="stMultiSelect"]', has_text="Input columns")
    box.locator("input").click()
    rerun_after(page, page.get_by_role("option", name="plan", exact=True).click)
    page.keyboard.press("Escape")
    assert "plan" in chosen(page, "Input columns")
    rerun_after(page, lambda: select(page, "Sort by", "tenure_months"))
    rerun_after(page, page.get_by_text("Descending").click)
    rerun_after(page, lambda: select(page, "Rows per page", "25"))
    expect(page.get_by_text("120 rows match · page 1 of 5")).to_be_visible()
    number = page.get_by_label("Page", exact=True)
    number.fill("5")
    rerun_after(page, lambda: number.press("Enter"))
    expect(page.get_by_text("120 rows match · page 5 of 5")).to_be_visible()
    steps.shot("results-sorted-paged")

    # 8. explain a row, and the whole run
    grid = page.locator('[data-testid="stDataFrame"]').first
    rerun_after(page, lambda: grid_click_row(grid, 0))
    expect(page.get_by_text("Select a row in the table")).to_have_count(0)
    chart = page.locator(f'{MAIN} [data-testid="stVegaLiteChart"]').first
    expect(chart).to_be_visible()
    steps.shot("explain-row", focus=chart)
    page.get_by_text("Global explainability").click()  # its content runs once it is open
    found = page.get_by_text(re.compile(r"on [\d,]+ sampled rows"))
    expect(found).to_be_visible(timeout=WORK_MS)
    steps.shot("explain-run", focus=found)

    # 9. validate on labelled data
    page.goto(url + "deployment?name=customers-staging&section=validation")
    wait_rendered(page)
    upload(page, "Upload a labelled file", story.files / "labelled_customers.csv")
    expect(page.get_by_label("Label column", exact=True)).to_have_value("churned")
    rerun_after(page, page.get_by_role("button", name="Validate", exact=True).click)
    expect(
        page.get_by_text(re.compile(r"Validation \w+ queued; the worker runs it\."))
    ).to_be_visible()
    expect(page.get_by_text("Single-row p50")).to_be_visible(timeout=WORK_MS)
    expect(page.get_by_text(re.compile(r"150 rows, label 'churned'"))).to_be_visible()
    expect(page.get_by_text("queued", exact=False)).to_have_count(0)  # the picker too
    steps.shot("validated", focus=page.get_by_text("Single-row p50"))
    # this box's p99 varies with its load: give the gate a budget it keeps (a user's choice)
    page.get_by_text("Promotion gate thresholds").click()  # an expander: no rerun
    page.get_by_label("Latency budget p99 (ms)").fill("5000")
    rerun_after(page, page.get_by_role("button", name="Save thresholds").click)
    expect(
        page.get_by_text(re.compile(r"Gate thresholds saved: .* at most 5000 ms"))
    ).to_be_visible()

    # 10. promote through the gate
    steps.section("General")
    expect(page.get_by_text("❌")).to_have_count(0)  # every gate check passes
    rerun_after(page, page.get_by_role("button", name="Promote to production").click)
    expect(page.get_by_text("customers-production now serves version 1.")).to_be_visible()
    steps.shot("promoted")
    page.get_by_role("link", name="Open customers-production").click()
    page.wait_for_url("**/deployment?name=customers-production*")
    wait_rendered(page)

    # 11. a schedule, and its next run times
    steps.section("Schedule")
    expect(
        page.get_by_text("No schedule: runs start only when someone queues them.")
    ).to_be_visible()
    cron = page.get_by_label(re.compile(r"^Cron expression"))
    cron.fill("30 7 * * 1-5")
    rerun_after(page, lambda: cron.press("Enter"))
    expect(
        page.get_by_text(re.compile(r"Next runs: (\w{3} \d{4}-\d\d-\d\d 07:30 UTC, ){4}"))
    ).to_be_visible()
    rerun_after(page, page.get_by_role("button", name="Save schedule").click)
    expect(page.get_by_text(re.compile(r"Schedule saved: .*\(UTC\)"))).to_be_visible()
    expect(page.get_by_text("Current schedule")).to_be_visible()
    expect(page.get_by_text("30 7 * * 1-5").first).to_be_visible()
    steps.shot("schedule")

    # 12. an API key, and a call with it from here
    steps.section("General")
    # an expander whose content runs once it is open
    rerun_after(page, page.get_by_text("Call it over the API: API keys").click)
    page.get_by_label("What will use it").fill("story test")
    rerun_after(page, page.get_by_role("button", name="Create key").click)
    expect(
        page.get_by_text("Created the key 'story test', for customers-production only.")
    ).to_be_visible()
    expect(page.get_by_text("Copy your new key now")).to_be_visible()
    secret = page.locator('[data-testid="stCode"] code').first.inner_text().strip()
    steps.shot("api-key")
    invocations = f"{story.api}/v1/deployments/customers-production/invocations"
    rows = {
        "dataframe_records": [
            {
                "customer_id": "A1",
                "tenure_months": 3,
                "monthly_fee": 99.5,
                "plan": "basic",
                "support_calls": 8,
            },
            {
                "customer_id": "A2",
                "tenure_months": 60,
                "monthly_fee": 20.0,
                "plan": "pro",
                "support_calls": 0,
            },
        ]
    }
    assert call_api(invocations, None, rows)[0] == 401
    status, answer = wait_for_answer(invocations, secret, rows)
    assert status == 200, answer
    assert len(answer["predictions"]) == 2, answer

    # 13. the call on Monitoring and Usage
    steps.section("Monitoring")
    expect(page.get_by_text("Rows predicted")).to_be_visible()
    sources = page.locator('[data-testid="stMetric"]', has_text="Sources")
    expect(sources).to_contain_text("API")
    charts = page.locator(f'{MAIN} [data-testid="stVegaLiteChart"]')
    expect(charts.first).to_be_visible()
    steps.shot("monitoring")
    steps.section("Usage")
    answered = page.locator('[data-testid="stMetric"]', has_text="Requests answered")
    expect(answered).to_contain_text("1")
    expect(page.locator('[data-testid="stMetric"]', has_text="Rows predicted")).to_contain_text("2")
    steps.shot("usage")

    # 14. the prediction form, as another user (the project's editor)
    other = logged_in_context(browser, story.home, "eddie")
    other.goto(url + "form?name=customers-production")
    wait_rendered(other)
    expect(other.locator('[data-testid="stSidebar"]')).to_contain_text("Eddie")
    rerun_after(other, other.get_by_role("button", name="Predict").click)
    expect(other.get_by_text(re.compile(r"likely churned ="))).to_be_visible()
    steps.shot("form", other)
    other.context.close()

    # 15. roll back: make another model live, then the first version current again
    steps.section("Versions")
    expect(page.get_by_text("v1 (current)")).to_be_visible()
    rerun_after(page, lambda: select_another(page, "Main model (answers every call)"))
    rerun_after(page, page.get_by_role("button", name="Make these live").click)
    expect(page.get_by_text(re.compile(r"Version v2 is live: main"))).to_be_visible()
    expect(page.get_by_text("v2 (current)")).to_be_visible()
    rerun_after(page, page.get_by_role("button", name="Make current").click)
    expect(
        page.get_by_text(re.compile(r"Version v1 of customers-production is current again"))
    ).to_be_visible()
    expect(page.get_by_text("v1 (current)")).to_be_visible()
    steps.shot("rolled-back")

    # 16. delete the staging deployment
    page.goto(url + "deployment?name=customers-staging&section=general")
    wait_rendered(page)
    rerun_after(page, page.get_by_text("Delete this deployment").click)  # runs once open
    confirm = page.get_by_label("Type 'customers-staging' to confirm")
    confirm.fill("customers-staging")
    rerun_after(page, lambda: confirm.press("Enter"))
    page.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url("**/deployments")
    wait_rendered(page)
    expect(
        page.get_by_text(
            re.compile(r"Deleted customers-staging\. Its runs and their results are kept")
        )
    ).to_be_visible()
    steps.shot("deleted")
    context.close()


def select_another(page: Page, label: str) -> None:
    """Choose an option other than the current one in the selectbox labelled `label`."""
    box = page.get_by_role("combobox", name=label, exact=True)
    current = box.input_value()
    box.click()
    page.get_by_role("option").filter(has_not_text=current).first.click()


def wait_for_answer(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The API's answer once it knows the new key (it re-reads keys on a change marker)."""
    deadline = time.monotonic() + 30
    while True:
        status, answer = call_api(url, key, body)
        if status != 401 or time.monotonic() > deadline:
            return status, answer
        time.sleep(0.2)
