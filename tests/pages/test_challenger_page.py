"""The Challenger and Predictions tabs rendered by AppTest on real runs: comparison, a label
upload with key/label pickers, live metrics, the confirmed swap, and the downloads (AppTest
draws no chart: the specs are checked as objects)."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import audit, challenger, deployments, ground_truth, registry, runs
from core.entities import Deployment
from core.store import Store
from core.ui import charts, monitoring_charts
from tests.pages.conftest import log_in, markdown_tables
from tests.test_challenger import deployed, score, served
from tests.test_ground_truth import truth

__all__ = ["deployed"]


def panel(name: str, tab: str) -> None:
    from core import deployments, ui
    from core.ui import challenger as ui_challenger

    ui.show_flash()  # what an action did, as ui.header shows it on the page
    store = ui.get_store()
    d = deployments.get_deployment(store, name)
    getattr(ui_challenger, tab)(store, d)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_challenger_tab_compares_takes_labels_and_swaps(
    trained_store: Store, deployed: Deployment
) -> None:
    at = log_in(
        AppTest.from_function(panel, args=(deployed.name, "challenger_tab"), default_timeout=60)
    ).run()
    assert not at.exception
    assert "No runs to compare main and challenger on" in at.info[0].value
    done = score(trained_store, deployed.name, served(400))
    at.run()
    assert not at.exception and not at.error
    found = challenger.compare(trained_store, deployed.name)
    assert at.metric[0].value == f"{found.agreement_rate:.1%}"
    # the top rows are a closed expander until opened: the section draws with no grid to load
    assert not at.dataframe
    box = next(e for e in at.expander if e.label.startswith("Top disagreeing rows"))
    assert box.label.startswith(f"Top disagreeing rows ({len(found.top)})")
    at.session_state[f"ch_top_open_{deployed.id}"] = True  # the user opens it
    at.run()
    assert not at.exception
    top = at.dataframe[0].value
    assert set(top["run"]) == {done.id}
    assert len(top) == len(found.top)
    assert "row" in top.columns and "_row" not in top.columns  # a reader's word
    features = markdown_tables(at)[0]
    assert set(features["feature"]) == {f.name for f in found.features}
    assert features["PSI"].tolist() == [f"{f.psi:.3f}" for f in found.features]
    assert any("has no ground truth yet" in i.value for i in at.info)
    # ground truth: upload, pick the columns, add
    labels = truth(400)[:300].rename(columns={"customer_id": "id", "churn": "outcome"})
    at.file_uploader[0].upload("truth.csv", labels.to_csv(index=False).encode(), "text/csv")
    at.run()
    pickers = {s.label: s for s in at.selectbox}
    pickers["Key column"].set_value("id")
    pickers["Label column"].set_value("outcome")
    at.run()
    button(at, "Add labels").click().run()
    assert not at.exception and not at.error
    assert any("300 match a prediction" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    live = ground_truth.live_metrics(trained_store, deployed.name, last=10)
    assert metrics["Labelled predictions"] == "300"
    assert metrics["Predictions without label"] == "100"
    assert metrics["Main accuracy"] == f"{live.overall.main['accuracy']:.4f}"
    assert any("95% CI" in c.value for c in at.caption)
    # swap: refused until confirmed, then a new version
    assert button(at, "Swap main and challenger").disabled
    at.checkbox[0].check().run()
    button(at, "Swap main and challenger").click().run()
    assert not at.exception and any("Swapped: version 2 is current" in s.value for s in at.success)
    current = deployments.get_deployment(trained_store, deployed.name).current
    assert current is not None and current.main_model_id == deployed.current.challenger_model_id
    assert audit.list_entries(trained_store, deployed.name)[0].action == "swap"


def test_challenger_tab_without_a_challenger_says_how_to_add_one(trained_store: Store) -> None:
    alone = deployments.deploy(
        trained_store,
        registry.list_models(trained_store)[0].id,
        "staging",
        name="alone",
        actor="tester",
    )
    score(trained_store, alone.name, served(100))
    at = log_in(
        AppTest.from_function(panel, args=(alone.name, "challenger_tab"), default_timeout=60)
    ).run()
    assert not at.exception
    assert "scored a challenger" in at.info[0].value
    assert "Deploy again with a challenger from the Models page." in at.info[0].value
    assert not [b for b in at.button if b.label == "Swap main and challenger"]


def test_predictions_tab_lists_runs_and_downloads(
    trained_store: Store, deployed: Deployment
) -> None:
    # without runs it links to the Runs section: that needs the app's navigation, so the
    # empty state is checked on the deployment page (test_page_state)
    at = log_in(
        AppTest.from_function(panel, args=(deployed.name, "predictions_tab"), default_timeout=60)
    )
    done = score(trained_store, deployed.name, served(120))
    failed = score(
        trained_store,
        deployed.name,
        served(10),
        "f.parquet",
        transforms=[{"name": "none", "sql": "SELECT * FROM input WHERE false"}],
    )
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == [failed.id, done.id]
    assert list(table["status"]) == ["failed", "succeeded"]
    assert table["main results"][1].endswith("MB") and table["challenger results"][1]
    assert "no rows after transforms" in table["note"][0].lower()
    downloads = [e for e in at.get("download_button")]
    assert len(downloads) == 4  # CSV and Parquet for main and challenger
    assert runs.result_path(trained_store.workspace, done.id, "main").exists()


def test_figures_hold_the_numbers(trained_store: Store, deployed: Deployment) -> None:
    score(trained_store, deployed.name, served(200, seed=1), "a.parquet")
    score(trained_store, deployed.name, served(200, seed=2), "b.parquet")
    found = challenger.compare(trained_store, deployed.name)
    line = charts.rows_of(monitoring_charts.agreement_figure(found))
    assert [r["agreement"] for r in line] == [r.agreement_rate for r in reversed(found.runs)]
    bars = charts.rows_of(monitoring_charts.distribution_figure(found))
    by_role = [[b["rows"] for b in bars if b["series"] == r] for r in ("main", "challenger")]
    assert by_role == [list(found.main), list(found.challenger)]
    ground_truth.add_labels(
        trained_store,
        deployed.name,
        {"kind": "file", "path": _write(trained_store)},
        "customer_id",
        "churn",
        actor="tester",
    )
    live = ground_truth.live_metrics(trained_store, deployed.name)
    points = charts.rows_of(monitoring_charts.live_figure(live))
    assert list(dict.fromkeys(p["series"] for p in points)) == ["main", "challenger"]
    main = [p["value"] for p in points if p["series"] == "main"]
    assert main == [r.main["accuracy"] for r in reversed(live.runs)]


def _write(store: Store) -> str:
    path = store.workspace.home / "truth" / "t.parquet"
    path.parent.mkdir(exist_ok=True)
    truth(200, seed=1).to_parquet(path, index=False)
    return "truth/t.parquet"


def test_the_deployment_page_has_both_sections(
    trained_store: Store, deployed: Deployment, open_page
) -> None:
    score(trained_store, deployed.name, served(100))
    at = open_page("pages/deployment.py", name=deployed.name, section="challenger")
    assert not at.exception
    assert {"Predictions", "Challenger"} <= set(at.get("button_group")[0].options)
    assert any(m.label == "Agreement" for m in at.metric)


def test_bad_labels_show_the_error_and_store_nothing(
    trained_store: Store, deployed: Deployment
) -> None:
    score(trained_store, deployed.name, served(100))
    path = trained_store.workspace.home / "truth" / "dupes.parquet"
    path.parent.mkdir(exist_ok=True)
    pd.concat([truth(100)[:3], truth(100)[:1]]).to_parquet(path, index=False)
    at = log_in(
        AppTest.from_function(panel, args=(deployed.name, "challenger_tab"), default_timeout=60)
    ).run()
    at.radio[1].set_value("sql").run()
    at.text_area[0].input("SELECT * FROM read_parquet('truth/dupes.parquet')").run()
    assert [s.value for s in at.selectbox if s.label == "Key column"] == ["customer_id"]
    {s.label: s for s in at.selectbox}["Label column"].set_value("churn").run()
    button(at, "Add labels").click().run()
    assert not at.exception
    assert any(
        "1 keys appear more than once in 'customer_id': 'C100000' (2x)" in e.value for e in at.error
    )
    assert ground_truth.list_labels(trained_store, deployed.name) == []


def test_labels_keyed_by_request_id_meet_the_api_calls(
    trained_store: Store, deployed: Deployment
) -> None:
    from core import prediction_log
    from core.store import utcnow

    log = prediction_log.PredictionLog(trained_store.workspace)
    for i in range(4):  # two one-row calls and two two-row calls
        n = 1 + i // 2
        log.write(
            {
                "kind": "main",
                "logged_at": utcnow().isoformat(),
                "request_id": f"req-{i}",
                "deployment": deployed.name,
                "deployment_id": deployed.id,
                "version": 1,
                "source": "api",
                "rows": n,
                "status": 200,
                "latency_ms": 1.0,
                "outputs": {"predictions": ["yes"] * n, "probabilities": None},
            }
        )
    log.close()
    at = log_in(
        AppTest.from_function(panel, args=(deployed.name, "challenger_tab"), default_timeout=60)
    ).run()
    labels = pd.DataFrame(
        {
            "request": ["req-0", "req-1", "req-2", "req-2", "req-9"],
            "line": [None, None, 0, 1, None],
            "truth": ["yes", "no", "yes", "yes", "no"],
        }
    )
    at.file_uploader[0].upload("truth.csv", labels.to_csv(index=False).encode(), "text/csv")
    at.run()
    next(r for r in at.radio if r.label == "The labels name").set_value("request").run()
    pickers = {s.label: s for s in at.selectbox}
    pickers["Request id column"].set_value("request")
    pickers["Label column"].set_value("truth")
    pickers["Row in its request (0 = first)"].set_value("line")
    at.run()
    button(at, "Add labels").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("4 match a prediction, 1 match none" in s.value for s in at.success)
    [stored] = ground_truth.list_labels(trained_store, deployed.name)
    assert stored.counts["matched_labels"] == 4


def test_predictions_tab_says_how_long_calls_are_kept(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = log_in(
        AppTest.from_function(panel, args=(deployed.name, "predictions_tab"), default_timeout=60)
    )
    score(trained_store, deployed.name, served(5))  # without runs it links to Runs (the nav)
    monkeypatch.delenv("MODELDECK_LOG_RETENTION_DAYS", raising=False)
    at.run()
    assert any(
        "keeps every day of calls; set `MODELDECK_LOG_RETENTION_DAYS`" in c.value
        for c in at.caption
    )
    monkeypatch.setenv("MODELDECK_LOG_RETENTION_DAYS", "90")
    at.run()
    assert any("keeps the last 90 days of calls" in c.value for c in at.caption)
    monkeypatch.setenv("MODELDECK_LOG_RETENTION_DAYS", "ninety")
    at.run()
    assert not at.exception
    assert "MODELDECK_LOG_RETENTION_DAYS is 'ninety'" in at.error[0].value
