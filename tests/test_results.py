"""Results pages, summary, downloads and purge over a real run's Parquet, checked with pandas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from core import audit, deployments, execution, registry, results, runs
from core.entities import Run
from core.errors import Conflict, DamagedResults, InvalidInput, NotFound
from core.store import Store
from core.training import TrainingResult
from tests.files import unfit_source

WORKER = "test-worker"


def execute(store: Store, name: str) -> Run:
    runs.enqueue_run(store, name, actor="tester")
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    return execution.execute_run(store, claimed, WORKER)


def deploy_churn(store: Store) -> str:
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(store)}
    return deployments.deploy(
        store,
        by_algorithm["gradient_boosting"],
        "staging",
        challenger_id=by_algorithm["linear"],
        actor="tester",
    ).name


@pytest.fixture(scope="module")
def finished(
    trained_home: tuple[Path, TrainingResult], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Store, Run, pd.DataFrame]:
    """One succeeded churn run (read-only) and its main results as pandas reads them."""
    home = tmp_path_factory.mktemp("results") / "workspace"
    shutil.copytree(trained_home[0], home)
    store = Store.open(home)
    run = execute(store, deploy_churn(store))
    assert run.status == "succeeded", run.error
    return store, run, pd.read_parquet(runs.result_path(store.workspace, run.id))


def test_the_first_page_is_the_first_rows(finished: tuple[Store, Run, pd.DataFrame]) -> None:
    store, run, expected = finished
    frame, total = results.page(store, run.id)
    assert total == 600 and len(frame) == 50
    pd.testing.assert_frame_equal(frame, expected.head(50), check_dtype=False)
    later, _ = results.page(store, run.id, offset=580, limit=50)
    assert later["_row"].tolist() == list(range(580, 600))
    assert results.columns(store, run.id) == list(expected.columns)
    chosen, _ = results.page(store, run.id, columns=["customer_id", "prediction"], limit=5)
    assert list(chosen.columns) == ["customer_id", "prediction"]
    roles = run.summary["columns"]
    assert (roles["key"], roles["probabilities"], roles["challenger"]) == (
        "customer_id",
        ["proba_no", "proba_yes"],
        ["challenger_prediction"],
    )
    assert [
        "_row",
        roles["key"],
        *roles["prediction"],
        *roles["probabilities"],
        *roles["challenger"],
        *roles["original"],
    ] == list(expected.columns)


@pytest.mark.parametrize(
    ("column", "descending"),
    [("confidence", True), ("confidence", False), ("customer_id", True), ("age", False)],
)
def test_sorting_matches_pandas(
    finished: tuple[Store, Run, pd.DataFrame], column: str, descending: bool
) -> None:
    store, run, expected = finished
    frame, total = results.page(
        store, run.id, offset=20, limit=30, sort_by=column, descending=descending
    )
    ordered = expected.sort_values(
        [column, "_row"], ascending=[not descending, True], na_position="last", kind="stable"
    )
    assert total == 600
    assert frame["_row"].tolist() == ordered["_row"].iloc[20:50].tolist()


def test_filters_match_pandas(finished: tuple[Store, Run, pd.DataFrame]) -> None:
    store, run, expected = finished
    cases = [
        ({"prediction": "yes"}, expected["prediction"] == "yes"),
        ({"prediction": ["yes", "no"]}, expected["prediction"].isin(["yes", "no"])),
        ({"confidence": 0.8}, expected["confidence"] >= 0.8),
        ({"input_quality": 1}, expected["input_quality"] >= 1),
        (
            {"prediction": "no", "confidence": "0.9", "input_quality": None},
            (expected["prediction"] == "no") & (expected["confidence"] >= 0.9),
        ),
    ]
    for where, mask in cases:
        frame, total = results.page(store, run.id, where=where, limit=1000, sort_by="_row")
        assert total == int(mask.sum()) > 0, where
        assert frame["_row"].tolist() == expected.loc[mask, "_row"].tolist(), where


def test_the_challenger_page(finished: tuple[Store, Run, pd.DataFrame]) -> None:
    store, run, expected = finished
    frame, total = results.page(store, run.id, which="challenger", limit=10)
    assert total == 600
    assert frame["prediction"].tolist() == expected["challenger_prediction"].head(10).tolist()


def test_bad_page_requests_are_refused(finished: tuple[Store, Run, pd.DataFrame]) -> None:
    store, run, _ = finished
    with pytest.raises(InvalidInput) as caught:
        results.page(store, run.id, sort_by="confidence; DROP TABLE runs")
    assert caught.value.message == "The results have no column 'confidence; DROP TABLE runs'."
    with pytest.raises(InvalidInput, match="The results have no column 'secret'"):
        results.page(store, run.id, columns=["prediction", "secret"])
    with pytest.raises(InvalidInput, match="Cannot filter on 'age'"):
        results.page(store, run.id, where={"age": 3})
    with pytest.raises(InvalidInput, match="The confidence filter needs a number, not 'high'"):
        results.page(store, run.id, where={"confidence": "high"})
    with pytest.raises(InvalidInput, match="offset >= 0 and 0 < limit <= 10000"):
        results.page(store, run.id, limit=0)
    with pytest.raises(InvalidInput, match="Unknown results 'other'"):
        results.page(store, run.id, which="other")
    # A value is a parameter, never SQL: a quote in it just matches nothing.
    assert results.page(store, run.id, where={"prediction": "x' OR '1'='1"})[1] == 0


def test_summary_and_exports(finished: tuple[Store, Run, pd.DataFrame]) -> None:
    store, run, expected = finished
    summary = results.summary(store, run.id)
    assert (summary["status"], summary["rows"], summary["run_id"]) == ("succeeded", 600, run.id)
    assert summary["main"]["metrics"]["accuracy"] == run.summary["main"]["metrics"]["accuracy"]
    parquet = results.export(store, run.id, "parquet")
    assert parquet == runs.result_path(store.workspace, run.id)
    csv = results.export(store, run.id, "csv")
    assert csv == parquet.with_suffix(".csv") and results.export(store, run.id, "csv") == csv
    read = pd.read_csv(csv)
    assert read["prediction"].tolist() == expected["prediction"].tolist()
    assert read["customer_id"].tolist() == expected["customer_id"].tolist()
    with pytest.raises(InvalidInput, match="Cannot export as 'xlsx'"):
        results.export(store, run.id, "xlsx")


def test_runs_without_results_say_why(trained_store: Store) -> None:
    name = deploy_churn(trained_store)
    queued = runs.enqueue_run(trained_store, name, actor="tester")
    with pytest.raises(Conflict, match=f"Run {queued.id} is still queued"):
        results.page(trained_store, queued.id)
    with pytest.raises(Conflict, match="still queued"):
        results.summary(trained_store, queued.id)
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None and execution.execute_run(trained_store, claimed, WORKER).status == (
        "succeeded"
    )
    broken = runs.enqueue_run(
        trained_store, name, source_override=unfit_source(trained_store), actor="tester"
    )
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None and claimed.id == broken.id
    broken = execution.execute_run(trained_store, claimed, WORKER)
    assert broken.status == "failed"
    with pytest.raises(Conflict) as caught:
        results.page(trained_store, broken.id)
    assert caught.value.message == f"Run {broken.id} failed without results: {broken.error}"
    with pytest.raises(NotFound, match="No run 'run_nope'"):
        results.page(trained_store, "run_nope")


def test_purge_deletes_the_files_and_is_audited(trained_store: Store) -> None:
    name = deploy_churn(trained_store)
    kept, purged = execute(trained_store, name), execute(trained_store, name)
    results.export(trained_store, purged.id, "csv")
    done = results.purge(trained_store, purged.id, actor="ana")
    assert done.purged_at is not None and done.status == "succeeded"
    assert not runs.results_dir(trained_store.workspace, purged.id).exists()
    with pytest.raises(Conflict, match=f"The results of run {purged.id} were purged on "):
        results.page(trained_store, purged.id)
    assert results.summary(trained_store, purged.id)["main"]["metrics"]  # the summary stays
    assert (
        results.purge(trained_store, purged.id, actor="tester").purged_at == done.purged_at
    )  # idempotent
    entries = [e for e in audit.list_entries(trained_store, name) if e.action == "purge"]
    assert [(e.actor, e.before) for e in entries] == [("ana", {"run": purged.id, "rows": 600})]
    assert results.page(trained_store, kept.id)[1] == 600  # other runs untouched


def test_purge_refuses_an_unfinished_run(trained_store: Store) -> None:
    queued = runs.enqueue_run(trained_store, deploy_churn(trained_store), actor="tester")
    with pytest.raises(Conflict, match="is still queued"):
        results.purge(trained_store, queued.id, actor="tester")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_results_file_is_named_everywhere(trained_store: Store, damage: str) -> None:
    from core import explain

    name = deploy_churn(trained_store)
    done = execute(trained_store, name)
    path = runs.result_path(trained_store.workspace, done.id)
    key = results.page(trained_store, done.id, limit=1)[0]["customer_id"].iloc[0]
    explain.explain_rows(trained_store, done.id, [key])  # remembered as readable
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        detail = "Parquet magic bytes not found"
    else:
        pd.DataFrame({"x": [1, 2]}).to_parquet(path)
        detail = f"it holds 2 rows, the run wrote {done.rows_out:,}"
    for action in (
        lambda: results.page(trained_store, done.id),
        lambda: results.export(trained_store, done.id, "csv"),
        lambda: explain.explain_rows(trained_store, done.id, [key]),
    ):
        with pytest.raises(DamagedResults) as caught:
            action()
        assert caught.value.message.startswith(f"The results file of run {done.id} is damaged (")
        assert detail in caught.value.message
        assert caught.value.hint == "Purge the run (its results are lost) or run it again."
    assert results.purge(trained_store, done.id, actor="ana").purged_at is not None
