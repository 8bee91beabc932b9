"""The Drift and Challenger sections over API and form calls (issue 18 item 7), rendered by
AppTest on a real store and a prediction log written by the serving code: the source opens on
whichever has data, the numbers are core's, an empty window says what to do, and Monitoring
links to both sections."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import audit, deployments
from core.store import Store
from core.traffic_challenger import compare_traffic
from core.traffic_drift import traffic_drift
from tests.conftest import DeployChurn
from tests.pages.conftest import markdown_tables
from tests.test_challenger import score, served
from tests.test_traffic_drift import call, window

OpenPage = Callable[..., AppTest]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def source(at: AppTest):
    return next(s for s in at.segmented_control if s.label == "Traffic from")


@pytest.fixture
def called(trained_store: Store, deploy_churn: DeployChurn) -> str:
    """churn with a challenger, 60 rows in 4 API calls and one form call; no run."""
    d = deploy_churn("gradient_boosting", challenger="linear")
    frame = served(60, seed=3)
    for i in range(4):
        call(trained_store, d.name, frame.iloc[i * 15 : (i + 1) * 15], f"r{i}")
    call(trained_store, d.name, frame.iloc[:2], "f0", source="form")
    return d.name


def test_drift_of_calls_opens_on_the_calls_and_shows_core_numbers(
    trained_store: Store, called: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=called, section="drift")
    assert not at.exception and not at.error
    found = traffic_drift(trained_store, called, window("calls"))
    assert metric(at, "Rows") == "62"
    assert metric(at, "Drifted features") == f"{len(found.report.drifted)} of 7"
    assert metric(at, "Calls and runs") == "5 + 0"
    table, quality = markdown_tables(at)[:2]
    assert set(table["feature"]) == {f.name for f in found.report.features}
    assert list(quality["rows"]) == [f"{q.rows:,}" for q in found.quality]
    assert list(quality["missing"]) == [f"{q.missing / q.rows:.1%}" for q in found.quality]
    # a run as well: "Both" counts it in
    score(trained_store, called, served(40, seed=8))
    source(at).set_value("both").run()
    assert not at.exception and metric(at, "Rows") == "102"
    assert metric(at, "Calls and runs") == "5 + 1"


def test_challenger_of_calls_compares_and_still_swaps(
    trained_store: Store, called: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=called, section="challenger")
    assert not at.exception and not at.error
    found = compare_traffic(trained_store, called, window("calls"))
    assert metric(at, "Agreement") == f"{found.agreement_rate:.1%}"
    assert metric(at, "Rows") == "62"
    assert found.top  # the boosting model and the linear one disagree on some of 62 rows
    top = markdown_tables(at)[0]  # request ids, no page to open: a table of text
    assert list(top["request id"]) == [r["request_id"] for r in found.top]
    assert list(top["confidence"]) == [f"{r['confidence']:.3f}" for r in found.top]
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Swap main and challenger").click().run()
    assert not at.exception and any("Swapped: version 2" in s.value for s in at.success)
    assert audit.list_entries(trained_store, called)[0].action == "swap"


def test_empty_windows_say_what_to_do_and_monitoring_links_here(
    trained_store: Store, deploy_churn: DeployChurn, called: str, open_page: OpenPage
) -> None:
    quiet = deploy_churn("gradient_boosting", challenger="linear", name="quiet")
    at = open_page("pages/deployment.py", name=quiet.name, section="drift")
    assert any("once a run has succeeded" in i.value for i in at.info)  # runs: none
    source(at).set_value("calls").run()
    assert not at.exception
    assert any(
        "No API or form calls in this window" in i.value and "widen the window" in i.value
        for i in at.info
    )
    at = open_page("pages/deployment.py", name=quiet.name, section="challenger")
    source(at).set_value("calls").run()
    assert not at.exception
    assert any("No API or form calls of 'quiet'" in i.value for i in at.info)
    assert deployments.get_deployment(trained_store, called).current is not None
    at = open_page("pages/deployment.py", name=called, section="monitoring")
    links = {link.label for link in at.get("page_link")}
    assert "Input and prediction drift of this traffic (Drift)" in links
    assert "Main vs challenger on these calls (Challenger)" in links
