"""The deployment page's Monitoring, Usage and Predictions sections on live traffic (issue 18
items 2, 3 and 5): what the API and the form logged, and the processes' samples, on a real
store and a real prediction log."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest

from core import deployments, prediction_log, registry, usage
from core.store import Store, utcnow
from core.ui import charts
from tests.pages.conftest import chart_specs, markdown_tables

OpenPage = Callable[..., AppTest]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def traffic(trained_store: Store) -> str:
    """A deployment with a challenger, three API calls (one refused) in the last minutes, a form
    call two days ago, the challenger's answers; and one usage sample."""
    main, challenger = (m.id for m in registry.list_models(trained_store))
    d = deployments.deploy(trained_store, main, "staging", challenger_id=challenger, actor="tester")
    log = prediction_log.PredictionLog(trained_store.workspace)
    now = utcnow()
    calls = [  # (when, source, rows, status, predictions)
        (now - timedelta(minutes=2), "api", 2, 200, [1, 0]),
        (now - timedelta(minutes=3), "api", 1, 422, None),
        (now - timedelta(days=2), "form", 1, 200, [1]),
        (now - timedelta(minutes=1), "api", 3, 200, ["0", "1", "1"]),
    ]
    for i, (when, source, rows, status, predictions) in enumerate(calls):
        base = {
            "logged_at": when.isoformat(),
            "request_id": f"r{i}",
            "deployment": d.name,
            "deployment_id": d.id,
            "version": 1,
            "source": source,
            "rows": rows,
            "status": status,
            "latency_ms": 2.0 + i,
            "cpu_ms": 1.0,
            "inputs": {"plan": ["é"] * rows},
            "error": None if status == 200 else "missing column: âge",
        }
        log.write(base | {"kind": "main", "outputs": {"predictions": predictions}})
        if predictions:
            log.write(base | {"kind": "challenger", "outputs": {"predictions": [0] * rows}})
    log.close()
    sampler = usage.Sampler(trained_store.workspace, "api", every=60)
    sampler.writer.write(sampler.sample())
    sampler.writer.close()
    return d.name


def test_monitoring_counts_calls_by_source_and_compares_predictions(
    traffic: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=traffic, section="monitoring")
    assert not at.exception and not at.error
    assert metric(at, "Requests and runs") == "2"  # the 422 is not traffic
    assert metric(at, "Rows predicted") == "5"
    specs = chart_specs(at)
    assert len(specs) == 3
    assert all(charts.title_of(s) and charts.axis_title(s, "x") for s in specs)
    counts = [s for s in specs if charts.title_of(s).startswith(("Requests per", "Rows per"))]
    assert len(counts) == 2  # whole numbers on the count axis, never 0.2 of a request
    assert all(s["encoding"]["y"]["axis"]["tickMinStep"] == 1 for s in counts)
    assert all(s["encoding"]["y"]["axis"]["format"] == ",d" for s in counts)
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Traffic from")).set_value(
        "form"
    ).run()
    assert any("No traffic in this window" in i.value for i in at.info)  # the form: 2 days ago
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Window")).set_value(
        "last 7 days"
    ).run()
    assert metric(at, "Requests and runs") == "1" and metric(at, "Rows predicted") == "1"


def test_monitoring_says_what_to_do_without_traffic(
    trained_store: Store, open_page: OpenPage
) -> None:
    main = registry.list_models(trained_store)[0].id
    d = deployments.deploy(trained_store, main, "staging", actor="tester")
    at = open_page("pages/deployment.py", name=d.name, section="monitoring")
    assert not at.exception
    assert any("No traffic in this window" in i.value for i in at.info)
    at = open_page("pages/deployment.py", name=d.name, section="usage")
    assert metric(at, "Requests answered") == "0" and metric(at, "Latency p50") == "no calls"
    assert any("No usage samples" in i.value for i in at.info)


def test_usage_shows_the_deployments_figures_and_the_processes(
    traffic: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=traffic, section="usage")
    assert not at.exception and not at.error
    assert metric(at, "Requests answered") == "2"  # in the last 24 hours, answered
    assert metric(at, "Rows predicted") == "5"
    assert metric(at, "CPU in predict") == "0.00 s"
    assert metric(at, "Latency p50") == "3.5 ms"  # 2 and 5 ms: the refused call is left out
    assert len(at.get("vega_lite_chart")) == 2  # CPU and memory
    assert any("Models in memory" in c.value for c in at.caption)


def test_predictions_lists_the_calls_by_day_and_downloads_a_day(
    traffic: str, trained_store: Store, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=traffic, section="predictions")
    assert not at.exception and not at.error
    by_day = at.dataframe[0].value
    assert by_day["calls"].tolist() == [3, 1] and by_day["errors"].tolist() == [1, 0]
    d = deployments.get_deployment(trained_store, traffic)
    today = prediction_log.days(trained_store.workspace, d.id)[0]["day"]
    rows = list(
        csv.DictReader(
            io.StringIO(prediction_log.day_csv(trained_store.workspace, d.id, today).decode())
        )
    )
    assert sorted(r["request_id"] for r in rows if r["kind"] == "main") == ["r0", "r1", "r3"]
    assert sum(r["kind"] == "challenger" for r in rows) == 2
    assert '"é"' in rows[0]["inputs"]  # the inputs, as JSON, non-ASCII kept


def test_general_summarises_the_deployed_models_and_says_what_access_means(
    traffic: str, trained_store: Store, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=traffic)
    assert not at.exception and not at.error
    models = next(t for t in markdown_tables(at) if "role" in t.columns)
    assert models["role"].tolist() == ["main", "challenger"]
    by_id = {m.id: m for m in registry.list_models(trained_store)}
    current = deployments.get_deployment(trained_store, traffic).current
    main = by_id[current.main_model_id]
    column = next(c for c in models.columns if c.startswith("holdout "))
    metric_name = column.removeprefix("holdout ")
    assert models[column].iloc[0] == f"{main.metrics[metric_name]:.4f}"
    created = deployments.get_deployment(trained_store, traffic).created_at
    assert any(
        c.value.startswith(f"Created {created:%Y-%m-%d %H:%M} UTC · API: ") for c in at.caption
    )
    assert [m.label for m in at.metric][:4] == [
        "Environment",
        "Current version",
        "Status",
        "Access",
    ]
    assert any("only the collaborators of the project" in c.value for c in at.caption)
    # each model's status: no API runs here; the log's last 24 h (the form call is older)
    assert models["API"].tolist() == ["not loaded: the API is stopped"] * 2
    assert models["calls (24 h)"].tolist() == ["3 (1 failed)", "2 (0 failed)"]
    main_error, challenger_error = models["last error"].tolist()
    assert main_error.endswith(" UTC: missing column: âge") and challenger_error == "none"


def test_monitoring_and_usage_show_a_call_logged_since_the_last_rerun(
    traffic: str, open_page: OpenPage, trained_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sections keep what they read from the log between reruns (ui.cached_log_read), and
    drop it as soon as the log changes: the next rerun shows the new call."""
    from core import store as store_module

    monkeypatch.setattr(store_module, "RACY_SECONDS", 0)  # keep reads even right after a write
    monitoring = open_page("pages/deployment.py", name=traffic, section="monitoring")
    used = open_page("pages/deployment.py", name=traffic, section="usage")
    assert metric(monitoring, "Requests and runs") == "2"
    assert metric(used, "Requests answered") == "2"
    assert metric(monitoring.run(), "Requests and runs") == "2"  # kept: nothing changed
    d = deployments.get_deployment(trained_store, traffic)
    log = prediction_log.PredictionLog(trained_store.workspace)
    log.write(
        {
            "kind": "main",
            "logged_at": utcnow().isoformat(),
            "request_id": "later",
            "deployment": d.name,
            "deployment_id": d.id,
            "version": 1,
            "source": "api",
            "rows": 4,
            "status": 200,
            "latency_ms": 1.0,
            "cpu_ms": 1.0,
            "outputs": {"predictions": [1, 1, 0, 0]},
        }
    )
    log.close()
    assert metric(monitoring.run(), "Requests and runs") == "3"
    assert metric(monitoring, "Rows predicted") == "9"
    assert metric(used.run(), "Requests answered") == "3"
