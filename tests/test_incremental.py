"""Incremental sources on real runs: only new files are scored, a failed run's files come back,
no new data is a zero-row success, and SQL sources get {{run_at}} / {{last_run_at}}."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from core import (
    datasets,
    deployments,
    drift,
    execution,
    explain,
    incremental,
    pipeline,
    results,
    runs,
    scheduler,
)
from core.entities import Deployment, Run
from core.errors import PipelineError
from core.store import Store

WORKER = "incremental-test"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("linear", actor="ana")


def drop(store: Store, name: str, rows: int, seed: int) -> str:
    """A new file of served rows in incoming/; returns its workspace-relative path."""
    path = store.workspace.home / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    datasets.churn_frame(n_rows=rows, seed=seed).drop(columns=["churn"]).to_parquet(
        path, index=False
    )
    return str(path.relative_to(store.workspace.home))


def execute(store: Store, name: str, **enqueue: Any) -> Run:
    queued = runs.enqueue_run(store, name, **{"actor": "tester", **enqueue})
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None and claimed.id == queued.id
    return execution.execute_run(store, claimed, WORKER)


def set_source(store: Store, d: Deployment, source: dict[str, Any], **changes: Any) -> None:
    deployments.update_pipeline(
        store, d.name, {**d.pipeline, "source": source, "sinks": [], **changes}, actor="tester"
    )


def scored_files(store: Store, run_id: str) -> list[str]:
    return [
        r["path"]
        for r in store.query("SELECT path FROM run_files WHERE run_id = ? ORDER BY path", [run_id])
    ]


# ---------------------------------------------------------------------------- files
def test_only_files_not_scored_by_a_succeeded_run_are_scored(
    trained_store: Store, deployed: Deployment
) -> None:
    drop(trained_store, "a.parquet", 30, 1)
    drop(trained_store, "b.parquet", 20, 2)
    set_source(
        trained_store, deployed, {"kind": "file", "path": "incoming/*.parquet", "incremental": True}
    )
    first = execute(trained_store, deployed.name)
    assert (first.status, first.rows_out) == ("succeeded", 50), first.error
    assert first.summary["incremental"]["files"] == 2
    assert any("First incremental run" in n for n in first.summary["notes"])
    assert scored_files(trained_store, first.id) == ["incoming/a.parquet", "incoming/b.parquet"]

    drop(trained_store, "c.parquet", 7, 3)
    second = execute(trained_store, deployed.name)
    assert (second.status, second.rows_out) == ("succeeded", 7)
    info = second.summary["incremental"]
    assert (info["files"], info["skipped_files"]) == (1, 2)
    assert info["last_run_at"] == first.queued_at.isoformat()
    assert scored_files(trained_store, second.id) == ["incoming/c.parquet"]

    # A file rewritten in place (new size and time) is new data again.
    drop(trained_store, "a.parquet", 11, 4)
    third = execute(trained_store, deployed.name)
    assert (third.status, third.rows_out) == ("succeeded", 11)


def test_no_new_file_is_a_zero_row_success_that_says_so(
    trained_store: Store, deployed: Deployment
) -> None:
    drop(trained_store, "a.parquet", 25, 1)
    set_source(
        trained_store, deployed, {"kind": "file", "path": "incoming/*.parquet", "incremental": True}
    )
    first = execute(trained_store, deployed.name)
    empty = execute(trained_store, deployed.name)
    assert (empty.status, empty.rows_out, empty.error) == ("succeeded", 0, None)
    note = empty.summary["incremental"]["no_new_data"]
    assert note.startswith("No new data since ") and "all 1 file(s)" in note
    assert f"{incremental.run_times(trained_store, empty)[1]:%Y-%m-%d %H:%M:%S}" in note
    assert first.queued_at.strftime("%Y-%m-%d %H:%M:%S") in note
    assert note in empty.summary["notes"] and not empty.summary["results_written"]
    # The steps after a run cope with zero rows: no files, no error, nothing raised.
    explain.after_run(trained_store, empty)
    drift.after_run(trained_store, empty)
    assert not runs.results_dir(trained_store.workspace, empty.id).exists()
    assert results.summary(trained_store, empty.id)["rows"] == 0
    assert drift.drift_report(trained_store, deployed.name).run_ids == (first.id,)


def test_a_glob_matching_nothing_is_no_new_data(trained_store: Store, deployed: Deployment) -> None:
    (trained_store.workspace.home / "incoming").mkdir()
    drop(trained_store, "a.parquet", 5, 1)
    set_source(
        trained_store, deployed, {"kind": "file", "path": "incoming/*.parquet", "incremental": True}
    )
    (trained_store.workspace.home / "incoming" / "a.parquet").unlink()
    done = execute(trained_store, deployed.name)
    assert (done.status, done.rows_out) == ("succeeded", 0)
    assert "no file matches 'incoming/*.parquet'" in done.summary["incremental"]["no_new_data"]


def test_a_failed_runs_files_are_scored_again(trained_store: Store, deployed: Deployment) -> None:
    path = drop(trained_store, "a.parquet", 10, 1)
    set_source(
        trained_store,
        deployed,
        {"kind": "file", "path": "incoming/*.parquet", "incremental": True},
        sinks=[{"kind": "folder", "path": "exports/out", "format": "csv"}],
    )
    (trained_store.workspace.home / "exports").write_text("a file where the folder should be")
    failed = execute(trained_store, deployed.name)
    assert failed.status == "failed" and "Sink 1" in (failed.error or "")
    assert scored_files(trained_store, failed.id) == [path]  # recorded, but not counted
    (trained_store.workspace.home / "exports").unlink()
    again = execute(trained_store, deployed.name)
    assert (again.status, again.rows_out) == ("succeeded", 10)


def test_two_runs_in_flight_never_take_the_same_file(
    trained_store: Store, deployed: Deployment
) -> None:
    path = drop(trained_store, "a.parquet", 10, 1)
    set_source(
        trained_store, deployed, {"kind": "file", "path": "incoming/*.parquet", "incremental": True}
    )

    def claim_and_plan(worker: str, lease: float | None = None) -> incremental.Plan:
        runs.enqueue_run(trained_store, deployed.name, actor="tester")
        run = execution.claim_next_run(trained_store, worker, lease)
        assert run is not None
        source = pipeline.validate_pipeline(
            execution.effective_pipeline(run), trained_store.workspace
        )["source"]
        return incremental.plan_run(trained_store, run, source)

    first = claim_and_plan("w1", lease=0.001)  # a worker that is about to die
    assert [f.path for f in first.files] == [path]
    second = claim_and_plan("w2")  # another worker, while the first run is still running
    assert second.files == [] and second.nothing_new is not None
    assert second.nothing_new.endswith("(or are being scored by a run in flight).")
    time.sleep(0.01)
    runs.expire_leases(trained_store)  # the first run fails: its file is free again
    third = claim_and_plan("w3")
    assert [f.path for f in third.files] == [path]


def test_an_incremental_flag_must_be_a_boolean(trained_store: Store, deployed: Deployment) -> None:
    drop(trained_store, "a.parquet", 5, 1)
    with pytest.raises(PipelineError, match="incremental must be true or false"):
        set_source(
            trained_store,
            deployed,
            {"kind": "file", "path": "incoming/a.parquet", "incremental": "yes"},
        )
    with pytest.raises(PipelineError, match="unknown field"):
        set_source(
            trained_store,
            deployed,
            {"kind": "upload", "path": "uploads/x.csv", "incremental": True},
        )


def test_file_identity_is_path_size_and_mtime(trained_store: Store) -> None:
    path = drop(trained_store, "a.parquet", 5, 1)
    full = trained_store.workspace.home / path
    os.utime(full, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    [seen] = incremental._stat_files(trained_store.workspace, "incoming/*.parquet")
    assert seen == incremental.SeenFile(path, full.stat().st_size, 1_700_000_000_000_000_000)


# ---------------------------------------------------------------------------- SQL parameters
def test_render_sql_formats_our_own_timestamp_literals() -> None:
    at = datetime(2026, 3, 1, 6, 30, 0, 250)
    sql = "SELECT * FROM t WHERE ts > {{ last_run_at }} AND ts <= {{run_at}}"
    assert incremental.render_sql(sql, {"run_at": at, "last_run_at": incremental.EPOCH}) == (
        "SELECT * FROM t WHERE ts > TIMESTAMP '1970-01-01 00:00:00.000000' AND ts <= "
        "TIMESTAMP '2026-03-01 06:30:00.000250'"
    )
    assert incremental.placeholders(sql) == ["last_run_at", "run_at"]


def test_an_unknown_placeholder_names_it_and_the_valid_ones(
    trained_store: Store, deployed: Deployment
) -> None:
    with pytest.raises(PipelineError) as info:
        incremental.render_sql("SELECT {{today}}", incremental.default_params())
    assert "{{today}}" in info.value.message
    assert "{{run_at}}, {{last_run_at}}" in info.value.hint
    with pytest.raises(PipelineError, match=r"unknown parameter \{\{since\}\}"):
        set_source(trained_store, deployed, {"kind": "sql", "sql": "SELECT {{since}} AS x"})


def sql_source(store: Store) -> dict[str, str]:
    """Served rows stamped with a time column: only rows after the last run are new."""
    frame = datasets.churn_frame(n_rows=40, seed=5).drop(columns=["churn"])
    frame["arrived_at"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(
        [0] * 30 + [3650 * 3] * 10, unit="D"
    )  # 30 old rows, 10 in 2050
    path = store.workspace.home / "incoming" / "stamped.parquet"
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    return {
        "kind": "sql",
        "sql": "SELECT * FROM read_parquet('incoming/stamped.parquet')"
        " WHERE arrived_at > {{last_run_at}}"
        " AND arrived_at <= {{run_at}} + INTERVAL 100 YEAR",
    }


def test_sql_parameters_select_new_rows_and_say_the_first_run(
    trained_store: Store, deployed: Deployment
) -> None:
    set_source(trained_store, deployed, sql_source(trained_store))
    assert (
        "{{last_run_at}}"
        in deployments.get_deployment(trained_store, deployed.name).pipeline["source"]["sql"]
    )  # stored as written
    first = execute(trained_store, deployed.name)
    assert (first.status, first.rows_out) == ("succeeded", 40), first.error
    assert first.summary["incremental"]["last_run_at"] is None
    assert any("1970-01-01 00:00:00 UTC" in n for n in first.summary["notes"])
    # The last run is now (2026): only the 2050 rows are newer.
    second = execute(trained_store, deployed.name)
    assert (second.status, second.rows_out) == ("succeeded", 10)
    assert second.summary["incremental"]["last_run_at"] == first.queued_at.isoformat()


def test_a_sql_source_with_no_new_rows_succeeds_with_zero(
    trained_store: Store, deployed: Deployment
) -> None:
    source = sql_source(trained_store)
    set_source(
        trained_store,
        deployed,
        {
            **source,
            "sql": source["sql"].replace(
                "arrived_at > {{last_run_at}}", "arrived_at > {{last_run_at}} + INTERVAL 200 YEAR"
            ),
        },
    )
    done = execute(trained_store, deployed.name)
    assert (done.status, done.rows_out) == ("succeeded", 0)
    assert done.summary["incremental"]["no_new_data"] == (
        "No new data since the start (no earlier succeeded run): the source gave no rows."
    )


def test_a_scheduled_run_at_is_its_slot(trained_store: Store, deployed: Deployment) -> None:
    set_source(trained_store, deployed, sql_source(trained_store))
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    schedule = scheduler.get_schedule(trained_store, deployed.name)
    [slot] = scheduler.next_times(
        schedule.cron, schedule.timezone, 1, after=datetime.fromisoformat(schedule.since)
    )
    slot = slot.astimezone(scheduler.get_zone("UTC")).replace(tzinfo=None)
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=5))
    run = runs.get_run(trained_store, decision.run_id)
    assert incremental.run_times(trained_store, run) == (slot, None)
    manual = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    assert incremental.run_times(trained_store, manual)[0] == manual.queued_at


def test_preview_renders_parameters_with_now_and_the_last_run(
    trained_store: Store, deployed: Deployment
) -> None:
    set_source(trained_store, deployed, sql_source(trained_store))
    d = deployments.get_deployment(trained_store, deployed.name)
    before = incremental.preview_params(trained_store, d.id)
    assert before["last_run_at"] == incremental.EPOCH
    shown = pipeline.preview(trained_store.workspace, d.pipeline, None, rows=100, params=before)
    assert len(shown.stages[0].frame) == 40
    first = execute(trained_store, deployed.name)
    after = incremental.preview_params(trained_store, d.id)
    assert after["last_run_at"] == first.queued_at
    shown = pipeline.preview(trained_store.workspace, d.pipeline, None, rows=100, params=after)
    assert len(shown.stages[0].frame) == 10
    # Without parameters (no store at hand) it renders with now and no earlier run.
    assert (
        len(pipeline.preview(trained_store.workspace, d.pipeline, None, rows=100).stages[0].frame)
        == 40
    )
