"""HTML run reports on real runs through the real worker step: settings (audited, confined,
copied on promotion), which runs get one, content, escaping, size, copies and the CLI."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core import audit, datasets, deployments, promotion, reports, runs, scheduler
from core.entities import Deployment, Run
from core.errors import InvalidInput, NotFound
from core.store import Store
from core.training import TrainRequest, train
from core.worker import loop as worker
from tests.cli_helpers import run, run_json
from tests.files import source_gone, unfit_source

WORKER = "reports-test"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    """churn-staging: gradient boosting as main, the linear model as challenger."""
    return deploy_churn("gradient_boosting", challenger="linear", actor="ana")


def run_by_worker(store: Store, name: str, **enqueue: object) -> Run:
    """Queue a run and let the worker's own step sequence execute it (reports included)."""
    queued = runs.enqueue_run(store, name, **{"actor": "tester", **enqueue})  # type: ignore[arg-type]
    assert worker.run_next(store, WORKER)
    return runs.get_run(store, queued.id)


def report_of(store: Store, run_id: str) -> str:
    return reports.report_path(store.workspace, run_id).read_text()


# ---------------------------------------------------------------------------- settings
def test_settings_default_off_and_changes_are_audited(
    trained_store: Store, deployed: Deployment
) -> None:
    assert reports.get_report_settings(trained_store, deployed.name) == reports.ReportSettings()
    changed = reports.set_report_settings(
        trained_store,
        deployed.name,
        enabled=True,
        runs="all",
        copy_to="exports/reports",
        actor="ana",
    )
    assert changed == reports.ReportSettings(True, "all", "exports/reports")
    kept = reports.set_report_settings(
        trained_store, deployed.name, runs="scheduled", actor="tester"
    )
    assert kept == reports.ReportSettings(True, "scheduled", "exports/reports")
    cleared = reports.set_report_settings(trained_store, deployed.name, copy_to="", actor="tester")
    assert cleared.copy_to is None
    entry = next(
        e
        for e in audit.list_entries(trained_store, deployed.name)
        if e.action == "report-settings" and e.actor == "ana"
    )
    assert entry.before == {"enabled": False, "runs": "scheduled", "copy_to": None}
    assert entry.after == {"enabled": True, "runs": "all", "copy_to": "exports/reports"}


def test_settings_keep_the_drift_thresholds(trained_store: Store, deployed: Deployment) -> None:
    from core import drift

    drift.set_thresholds(trained_store, deployed.name, 0.2, 0.4, actor="tester")
    reports.set_report_settings(trained_store, deployed.name, enabled=True, actor="tester")
    report = deployments.get_deployment(trained_store, deployed.name).report
    assert report["drift"] == {"moderate": 0.2, "drifted": 0.4} and report["enabled"] is True


def test_bad_settings_are_refused(
    trained_store: Store, deployed: Deployment, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="Unknown report choice 'weekly'"):
        reports.set_report_settings(trained_store, deployed.name, runs="weekly", actor="tester")
    with pytest.raises(InvalidInput, match="outside the workspace") as info:
        reports.set_report_settings(
            trained_store, deployed.name, copy_to=str(tmp_path / "x"), actor="tester"
        )
    assert "MODELDECK_ALLOWED_ROOTS" in info.value.hint
    (trained_store.workspace.home / "afile.txt").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        reports.set_report_settings(
            trained_store, deployed.name, copy_to="afile.txt", actor="tester"
        )
    with pytest.raises(NotFound, match="nope"):
        reports.set_report_settings(trained_store, "nope", enabled=True, actor="tester")
    assert reports.get_report_settings(trained_store, deployed.name) == reports.ReportSettings()


@pytest.mark.parametrize("copy_report", [True, False])
def test_promotion_copies_report_settings_when_asked(
    trained_store: Store, deployed: Deployment, copy_report: bool
) -> None:
    reports.set_report_settings(
        trained_store, deployed.name, enabled=True, runs="all", actor="tester"
    )
    production = promotion.promote(
        trained_store,
        deployed.name,
        copy_report=copy_report,
        override_reason="not validated: a settings test",
        actor="tester",
    )
    copied = reports.get_report_settings(trained_store, production.name)
    expected = reports.ReportSettings(True, "all") if copy_report else reports.ReportSettings()
    assert copied == expected


# ---------------------------------------------------------------------------- which runs
def test_scheduled_only_writes_after_scheduled_runs(
    trained_store: Store, deployed: Deployment
) -> None:
    reports.set_report_settings(trained_store, deployed.name, enabled=True, actor="tester")
    manual = run_by_worker(trained_store, deployed.name)
    assert manual.status == "succeeded"
    assert not reports.report_path(trained_store.workspace, manual.id).exists()
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    schedule = scheduler.get_schedule(trained_store, deployed.name)
    assert schedule is not None
    [slot] = scheduler.next_times(
        schedule.cron, schedule.timezone, 1, after=datetime.fromisoformat(schedule.since)
    )
    slot = slot.astimezone(scheduler.get_zone("UTC")).replace(tzinfo=None)
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=2))
    assert worker.run_next(trained_store, WORKER)
    page = report_of(trained_store, decision.run_id)
    assert f"{slot:%Y-%m-%d %H:%M:%S} UTC" in page and "schedule (queued by" in page


def test_reports_off_write_nothing(trained_store: Store, deployed: Deployment) -> None:
    done = run_by_worker(trained_store, deployed.name)
    assert not reports.report_path(trained_store.workspace, done.id).exists()
    assert "report" not in done.summary


# ---------------------------------------------------------------------------- content
def test_a_report_is_self_contained_small_and_complete(
    trained_store: Store, deployed: Deployment
) -> None:
    reports.set_report_settings(
        trained_store,
        deployed.name,
        enabled=True,
        runs="all",
        copy_to="exports/reports",
        actor="tester",
    )
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded", done.error
    page = report_of(trained_store, done.id)
    size = len(page.encode())
    assert size < 200_000, size
    assert "<script" not in page.lower() and not re.search(r"(src|href)\s*=", page)
    assert "http" not in page.replace("http-equiv", "")
    main, challenger = done.summary["main"], done.summary["challenger"]
    for text in (
        "churn-staging (staging)",
        "v1",
        main["model_id"],
        challenger["model_id"],
        "manual (queued by",
        "Rows in / out",
        "succeeded",
        "Prediction distribution",
        "Input quality",
        "Metrics",
        "roc_auc",
        "Drift",
        "features drifted",
        "Challenger",
        f"{challenger['agreement_rate']:.1%}",
        "Global importance",
    ):
        assert text in page, text
    for label in main["class_counts"]:
        assert f"<td>{label}</td>" in page
    copy = (
        trained_store.workspace.home / "exports" / "reports" / f"{done.deployment_name}-"
        f"{done.id}.html"
    )
    assert copy.read_text() == page
    note = runs.get_run(trained_store, done.id).summary["report"]
    assert note["copied_to"] == str(copy) and note["bytes"] == size
    assert "copy_error" not in note


def test_a_failed_runs_report_says_why_and_escapes_it(
    trained_store: Store, deployed: Deployment
) -> None:
    reports.set_report_settings(
        trained_store, deployed.name, enabled=True, runs="all", actor="tester"
    )
    source_gone(trained_store, deployed.name, "incoming/<b>missing</b>.parquet")
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "failed"
    page = report_of(trained_store, done.id)
    assert "Why the run failed:" in page and "does not exist" in page
    assert "&lt;b&gt;missing&lt;/b&gt;" in page and "<b>missing</b>" not in page
    assert "Drift" not in page  # nothing scored, nothing to compare


def test_a_failed_copy_is_noted_and_the_run_stays_succeeded(
    trained_store: Store, deployed: Deployment
) -> None:
    reports.set_report_settings(
        trained_store,
        deployed.name,
        enabled=True,
        runs="all",
        copy_to="exports/reports",
        actor="tester",
    )
    (trained_store.workspace.home / "exports").mkdir()
    (trained_store.workspace.home / "exports" / "reports").write_text("now a file")
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded"
    assert reports.report_path(trained_store.workspace, done.id).exists()
    assert "is a file" in done.summary["report"]["copy_error"]


def test_a_zero_row_run_gets_a_report_saying_no_new_data(
    trained_store: Store, deployed: Deployment
) -> None:
    incoming = trained_store.workspace.home / "incoming"
    incoming.mkdir()
    datasets.churn_frame(n_rows=10, seed=3).to_parquet(incoming / "a.parquet", index=False)
    deployments.update_pipeline(
        trained_store,
        deployed.name,
        {
            **deployed.pipeline,
            "source": {"kind": "file", "path": "incoming/*.parquet", "incremental": True},
        },
        actor="tester",
    )
    reports.set_report_settings(
        trained_store, deployed.name, enabled=True, runs="all", actor="tester"
    )
    run_by_worker(trained_store, deployed.name)
    empty = run_by_worker(trained_store, deployed.name)
    assert (empty.status, empty.rows_out) == ("succeeded", 0)
    page = report_of(trained_store, empty.id)
    assert "No new data since" in page and "Prediction distribution" not in page


def test_a_regression_report_draws_an_inline_svg_histogram(store: Store) -> None:
    dataset = datasets.register_frame(
        store,
        datasets.demo_frame("diabetes"),
        name="diabetes",
        kind="upload",
        source="diabetes.csv",
        actor="tester",
    )
    result = train(
        store,
        TrainRequest(dataset_id=dataset.id, target="progression", algorithms=("linear",)),
        actor="tester",
    )
    d = deployments.deploy(store, result.models[0].id, "staging", actor="tester")
    reports.set_report_settings(store, d.name, enabled=True, runs="all", actor="tester")
    done = run_by_worker(store, d.name)
    page = report_of(store, done.id)
    assert "<svg" in page and page.count("<rect") >= 5 and "20 bins from" in page


def test_report_file_writes_a_missing_report_and_refuses_unfinished_runs(
    trained_store: Store, deployed: Deployment
) -> None:
    done = run_by_worker(trained_store, deployed.name)  # reports are off
    path = reports.report_file(trained_store, done.id)
    assert path == reports.report_path(trained_store.workspace, done.id) and path.exists()
    assert reports.report_file(trained_store, done.id) == path  # kept, not rewritten
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    with pytest.raises(InvalidInput, match="still queued"):
        reports.report_file(trained_store, queued.id)
    with pytest.raises(NotFound):
        reports.report_file(trained_store, "run_nope")


def test_after_run_never_raises(
    trained_store: Store, deployed: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    reports.set_report_settings(
        trained_store, deployed.name, enabled=True, runs="all", actor="tester"
    )
    failed = run_by_worker(
        trained_store, deployed.name, source_override=unfit_source(trained_store)
    )
    path = reports.report_path(trained_store.workspace, failed.id)
    path.unlink()
    path.parent.rmdir()
    path.parent.write_text("a file where the run's folder goes")  # the report cannot be written
    reports.after_run(trained_store, failed)
    assert "report of run" in caplog.text and runs.get_run(trained_store, failed.id) == failed


# ---------------------------------------------------------------------------- CLI
def test_cli_report_settings_and_file(
    trained_store: Store, deployed: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = run_json(capsys, "report", deployed.name)
    assert shown == {
        "deployment": deployed.name,
        "enabled": False,
        "runs": "scheduled",
        "copy_to": None,
    }
    changed = run_json(
        capsys, "report", deployed.name, "--on", "--every-run", "--copy-to", "exports/reports"
    )
    assert (changed["enabled"], changed["runs"], changed["copy_to"]) == (
        True,
        "all",
        "exports/reports",
    )
    code, out, _ = run(capsys, "report", deployed.name, "--no-copy", "--scheduled-only")
    assert code == 0 and out.strip() == f"{deployed.name}: reports on, after scheduled runs only"
    done = run_by_worker(trained_store, deployed.name)
    found = run_json(capsys, "report-file", done.id)
    assert Path(found["path"]).exists() and found["bytes"] > 0
    code, out, _ = run(capsys, "report-file", done.id)
    assert (code, out.strip()) == (0, found["path"])


def test_cli_errors_print_message_and_hint(
    trained_store: Store, deployed: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "report", deployed.name, "--copy-to", "/elsewhere/reports")
    assert code == 2 and "outside the workspace" in err and "hint:" in err
    code, _, err = run(capsys, "report-file", "run_nope")
    assert code == 2 and "run_nope" in err
