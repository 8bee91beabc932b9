"""The drift panels rendered by AppTest on a real run with injected drift (plotly is not
rendered by AppTest: the figures themselves are checked in tests/test_drift.py). The banner's
page link needs the app's navigation, so it is checked on the deployment page once wired."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core import drift
from core.store import Store
from tests.pages.conftest import log_in
from tests.test_drift import deployed, score, served

__all__ = ["deployed"]


def panel(name: str) -> None:
    import streamlit as st

    from core import deployments, ui
    from core.ui import drift as ui_drift

    store = ui.get_store()
    d = deployments.get_deployment(store, name)
    ui_drift.drift_headline(d, ui_drift.over_time(store, d))
    _general, drift_tab = st.tabs(["General", "Drift"])
    with drift_tab:
        ui_drift.drift_tab(store, d)


def test_drift_tab_and_thresholds(trained_store: Store, deployed) -> None:
    at = log_in(AppTest.from_function(panel, args=(deployed.name,), default_timeout=60)).run()
    assert not at.exception
    assert not at.error and "once a run has succeeded" in at.info[0].value  # nothing served yet
    score(trained_store, deployed.name, served(shifted=True))
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["feature"][:3]) and set(table["feature"][:3]) == {
        "age",
        "monthly_charges",
        "contract",
    }  # sorted by PSI, highest first
    assert at.metric[0].value == "3 of 7"
    assert at.selectbox(key=f"drift_feature_{deployed.id}").value == table["feature"][0]
    inputs = {n.label: n for n in at.number_input}
    inputs["Moderate from"].set_value(5.0)
    inputs["Drifted from"].set_value(50.0)
    at.button[0].click().run()
    assert drift.drift_report(trained_store, deployed.name).thresholds.drifted == 50.0
    assert at.metric[0].value == "0 of 7"
