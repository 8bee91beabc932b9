"""The drift panels rendered by AppTest on a real run with injected drift (AppTest draws no
chart: the chart specs themselves are checked in tests/test_drift.py). The banner's
page link needs the app's navigation, so it is checked on the deployment page once wired."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core import drift
from core.store import Store
from tests.pages.conftest import chart_titles, log_in, markdown_tables
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
    assert not at.dataframe, "seven features: a table drawn as text, no grid to load"
    table = markdown_tables(at)[0]
    assert list(table["feature"][:3]) and set(table["feature"][:3]) == {
        "age",
        "monthly_charges",
        "contract",
    }  # sorted by PSI, highest first
    psi = [float(v) for v in table["PSI"] if v]
    assert psi == sorted(psi, reverse=True) and all(len(v.split(".")[1]) == 3 for v in table["PSI"])
    assert any("p-value is for information only" in c.value for c in at.caption)
    assert at.metric[0].value == "3 of 7"
    # seven features: one-click chips, starting on the most drifted one
    chips = at.pills(key=f"drift_feature_{deployed.id}")
    assert chips.value == table["feature"][0] and len(chips.options) == 7
    chips.set_value(table["feature"][2]).run()
    assert not at.exception
    assert at.pills(key=f"drift_feature_{deployed.id}").value == table["feature"][2]
    third = table["feature"][2]
    assert f"{third}: PSI per run" in _chart_titles(at)
    at.pills(key=f"drift_feature_{deployed.id}").set_value(None).run()  # the chosen one again
    assert not at.exception
    assert f"{third}: PSI per run" in _chart_titles(at), "it stays on the choice"
    inputs = {n.label: n for n in at.number_input}
    inputs["Moderate from"].set_value(5.0)
    inputs["Drifted from"].set_value(50.0)
    at.button[0].click().run()
    assert drift.drift_report(trained_store, deployed.name).thresholds.drifted == 50.0
    assert at.metric[0].value == "0 of 7"


def _chart_titles(at: AppTest) -> list[str]:
    return chart_titles(at)


def _picker(count: int) -> None:
    import streamlit as st

    from core.ui.drift import pick_feature

    st.caption(pick_feature([f"f{i}" for i in range(count)], key="pick"))


@pytest.mark.parametrize("count", [3, 13])
def test_few_features_are_chips_and_many_a_select_box_that_filters(count: int) -> None:
    at = AppTest.from_function(_picker, args=(count,)).run()
    assert not at.exception
    chips = [p for p in at.pills if p.key == "pick"]
    boxes = [s for s in at.selectbox if s.key == "pick"]
    assert (len(chips), len(boxes)) == ((1, 0) if count <= 12 else (0, 1))
    assert at.caption[0].value == "f0"  # the first, the most drifted, at first
    (chips or boxes)[0].set_value("f2").run()
    assert at.caption[0].value == "f2"
