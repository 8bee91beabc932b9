"""The Validation tab and the promotion gate's checks on the deployment page (AppTest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import audit, datasets, deployments, registry, validation
from core.engine.profiles import plain_number
from core.entities import Deployment
from core.store import Store
from core.ui.charts import axis_title, rows_of
from core.ui.monitoring_charts import confusion_figure, residual_figure
from core.worker import loop as worker

OpenPage = Callable[..., AppTest]


@pytest.fixture
def staging(trained_store: Store) -> Deployment:
    by = {m.algorithm: m.id for m in registry.list_models(trained_store)}
    return deployments.deploy(trained_store, by["gradient_boosting"], "staging", actor="tester")


def labelled(store: Store, drop_label: bool = False) -> str:
    frame = datasets.churn_frame(n_rows=400, seed=3)
    path = store.workspace.home / "labelled" / ("plain.csv" if drop_label else "val.csv")
    path.parent.mkdir(exist_ok=True)
    (frame.drop(columns=["churn"]) if drop_label else frame).to_csv(path, index=False)
    return str(path.relative_to(store.workspace.home))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def texts(at: AppTest) -> str:
    return " ".join(
        e.value for kind in (at.info, at.error, at.success, at.markdown, at.caption) for e in kind
    )


def test_the_tab_queues_a_validation_and_shows_its_report(
    trained_store: Store, staging: Deployment, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=staging.name, section="validation")
    assert not at.exception
    assert (
        f"No validation yet. Give a labelled file above, or run `modeldeck validate "
        f"{staging.name} --data PATH`." in texts(at)
    )
    at.text_input(key=f"val_path_{staging.id}").set_value(labelled(trained_store)).run()
    button(at, "Validate").click().run()
    assert not at.exception and "queued; the worker runs it" in texts(at)
    [queued] = validation.list_validations(trained_store, staging.name)
    assert queued.status == "queued" and queued.label_column == "churn"
    assert "shows the report by itself when it is done" in texts(at)  # it polls: no Refresh
    assert not any(b.label == "Refresh" for b in at.button)
    assert worker.run_once(trained_store)
    at.run()  # the same session, as the poll's redraw: the report, not a stale "queued"
    assert not at.exception and not [e.value for e in at.error if "alidation" in e.value], [
        e.value for e in at.error
    ]
    assert [m.label for m in at.metric if "Single-row" in m.label] == [
        "Single-row p50",
        "Single-row p99",
    ]
    assert "Error analysis" in texts(at) and "400 rows, label 'churn'" in texts(at)
    before = [e.value for e in at.error]  # other tabs' notes (e.g. no run for the challenger)
    assert any(c.value.startswith("Select a worst row") for c in at.caption)
    rows = {"rows": [0], "columns": [], "cells": []}
    at.session_state[f"val_{queued.id}_worst"] = {"selection": rows}  # select the first row
    at.run()  # its local explanation, computed on demand
    assert not at.exception and [e.value for e in at.error] == before
    explained = trained_store.workspace.runs_dir / queued.run_id / "explanations"
    assert len(list(explained.glob("main-*.json"))) == 1
    assert any("likely churn = " in m.value for m in at.markdown)


def test_a_validation_without_the_label_column_is_refused_on_the_page(
    trained_store: Store, staging: Deployment, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=staging.name, section="validation")
    at.text_input(key=f"val_path_{staging.id}").set_value(
        labelled(trained_store, drop_label=True)
    ).run()
    button(at, "Validate").click().run()
    assert any("The validation data has no label column 'churn'." in e.value for e in at.error)
    assert validation.list_validations(trained_store, staging.name) == []


def test_promote_stays_disabled_until_a_reason_is_typed(
    trained_store: Store, staging: Deployment, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=staging.name)
    assert "❌ **validation**: No validation yet of version v1." in texts(at)
    assert (
        f"How to fix: Validate '{staging.name}' on a labelled file. "
        f"Start one in the Validation section of '{staging.name}'."
    ) in texts(at)
    assert button(at, "Promote to production").disabled
    at.text_area(key=f"gate_override_{staging.id}").set_value("hotfix agreed with ops").run()
    assert not button(at, "Promote to production").disabled
    button(at, "Promote to production").click().run()
    assert any("churn-production now serves version 1" in s.value for s in at.success)
    entry = audit.list_entries(trained_store, "churn-production")[0]
    assert (entry.action, entry.reason) == ("promote", "hotfix agreed with ops")


def test_figures_show_the_report_numbers() -> None:
    confusion = {"labels": ["no", "yes"], "matrix": [[50, 5], [8, 20]]}
    fig = confusion_figure(confusion, "main")
    cells = {(c["true"], c["predicted"]): c["count"] for c in rows_of(fig)}
    labels = confusion["labels"]
    assert [[cells[(t, p)] for p in labels] for t in labels] == confusion["matrix"]
    assert fig["encoding"]["x"]["sort"] == fig["encoding"]["y"]["sort"] == ["no", "yes"]
    fig = residual_figure({"prediction": [1.0, 2.0], "residual": [0.5, -0.25]}, "main")
    assert [r["residual"] for r in rows_of(fig)] == [0.5, -0.25]
    assert axis_title(fig, "y") == "label - prediction"


def test_numbers_read_plainly() -> None:
    from core.ui.validation import _worst_row

    assert [plain_number(x) for x in (42390.2, 4.2e-05, 0.123456, -1234.5, 0.0)] == [
        "42,390",
        "0.000042",
        "0.1235",
        "-1,234",
        "0",
    ]
    row = {
        "row": 7,
        "key": None,
        "label": 151.0,
        "prediction": 147.12345678901234,
        "confidence": None,
        "error": 3.876543,
    }
    assert _worst_row(row, has_key=False) == {
        "row": 7,
        "label": "151",
        "prediction": "147.1",
        "confidence": "",
        "error": "3.877",
    }
