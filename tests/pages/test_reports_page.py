"""Report settings on the Schedule tab, the run page's report download, and the pipeline
editor's "Only new data" checkbox (AppTest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import deployments, registry, reports, runs
from core.store import Store
from core.ui.deployment import SECTION_TITLES
from core.worker import loop as worker

OpenPage = Callable[..., AppTest]


@pytest.fixture
def deployed(trained_store: Store) -> str:
    model = registry.list_models(trained_store)[0]
    return deployments.deploy(trained_store, model.id, "staging", actor="tester").name


def by_label(elements, label: str):  # type: ignore[no-untyped-def]
    return next(e for e in elements if e.label == label)


def downloads(at: AppTest) -> list[str]:
    return [e.proto.label for e in at.get("download_button")]


def test_save_report_settings(trained_store: Store, deployed: str, open_page: OpenPage) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    assert not at.exception
    assert any(h.value == "Run reports" for h in at.subheader)
    by_label(at.checkbox, "Write a report after each run").check()
    by_label(at.radio, "Which runs").set_value("all")
    by_label(at.text_input, "Also copy reports to (folder in the workspace, optional)").set_value(
        "exports/reports"
    )
    by_label(at.button, "Save report settings").click().run()
    assert not at.exception
    assert any("Saved: reports on, after every run." in s.value for s in at.success)
    assert reports.get_report_settings(trained_store, deployed) == reports.ReportSettings(
        True, "all", "exports/reports"
    )


def test_a_bad_copy_folder_is_explained_and_not_saved(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    by_label(at.checkbox, "Write a report after each run").check()
    by_label(at.text_input, "Also copy reports to (folder in the workspace, optional)").set_value(
        "/elsewhere/reports"
    )
    by_label(at.button, "Save report settings").click().run()
    assert not at.exception
    assert any("outside the workspace" in e.value for e in at.error)
    assert reports.get_report_settings(trained_store, deployed) == reports.ReportSettings()


def test_the_run_page_offers_the_report(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    reports.set_report_settings(
        trained_store, deployed, enabled=True, runs="all", copy_to="exports/reports", actor="tester"
    )
    queued = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_next(trained_store, "page-test")
    at = open_page("pages/results.py", run=queued.id)
    assert not at.exception
    assert "Download report (HTML)" in downloads(at)
    reports.report_path(trained_store.workspace, queued.id).unlink()
    at = open_page("pages/results.py", run=queued.id)
    assert "Write and download report (HTML)" in downloads(at)


def test_only_new_data_checkbox_saves_an_incremental_source(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    box = by_label(at.checkbox, "Only new data")
    assert box.value is False
    box.check().run()
    save = next(b for b in at.button if b.label.startswith("Save pipeline"))
    save.click().run()
    assert not at.exception
    assert not [e.value for e in at.error if "source" in e.value.lower()]
    source = deployments.get_deployment(trained_store, deployed).pipeline["source"]
    assert source.get("incremental") is True


def zero_row_run(store: Store, deployed: str) -> str:
    """An incremental deployment's second run: no new file, zero rows."""
    from core import datasets

    incoming = store.workspace.home / "incoming"
    incoming.mkdir()
    datasets.churn_frame(n_rows=10, seed=3).to_parquet(incoming / "a.parquet", index=False)
    d = deployments.get_deployment(store, deployed)
    deployments.update_pipeline(
        store,
        deployed,
        {
            **d.pipeline,
            "source": {"kind": "file", "path": "incoming/*.parquet", "incremental": True},
        },
        actor="tester",
    )
    for _ in range(2):
        queued = runs.enqueue_run(store, deployed, actor="tester")
        assert worker.run_next(store, "page-test")
    assert runs.get_run(store, queued.id).rows_out == 0
    return queued.id


def test_the_deployment_page_copes_with_a_zero_row_run(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    zero_row_run(trained_store, deployed)
    for section in SECTION_TITLES:
        at = open_page("pages/deployment.py", name=deployed, section=section)
        assert not at.exception, (section, at.exception)


def test_a_zero_row_run_page_says_no_new_data(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/results.py", run=zero_row_run(trained_store, deployed))
    assert not at.exception, at.exception
    assert any("No new data since" in i.value for i in at.info)
