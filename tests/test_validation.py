"""Validation on labelled data with real models and real runs: the report's numbers against the
results files, production on the same rows, the worker's hook, the CLI, and every bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core import datasets, deployments, execution, registry, runs, validation
from core.entities import Deployment
from core.errors import DatasetError, InvalidInput, NotFound, PipelineError, Step
from core.store import Store
from core.training import TrainRequest, train
from core.worker import loop as worker
from tests.cli_helpers import run, run_json
from tests.files import write_frame


def models(store: Store) -> dict[str, str]:
    return {m.algorithm: m.id for m in registry.list_models(store)}


@pytest.fixture
def staging(trained_store: Store) -> Deployment:
    by = models(trained_store)
    return deployments.deploy(
        trained_store,
        by["gradient_boosting"],
        "staging",
        challenger_id=by["linear"],
        actor="tester",
    )


def labelled_file(
    store: Store, frame: pd.DataFrame | None = None, name: str = "val.parquet"
) -> str:
    """Write a labelled churn file inside the workspace; its workspace-relative path."""
    frame = datasets.churn_frame(n_rows=800, seed=3) if frame is None else frame
    return write_frame(store, "labelled", name, frame)


def results(store: Store, v: validation.Validation, which: str = "main") -> pd.DataFrame:
    return pd.read_parquet(runs.result_path(store.workspace, v.run_id, which))


def test_report_numbers_match_the_results(trained_store: Store, staging: Deployment) -> None:
    v = validation.validate_here(
        trained_store, staging.name, labelled_file(trained_store), actor="tester"
    )
    assert v.status == "succeeded", v.error
    assert (v.version_number, v.label_column, v.created_by) == (1, "churn", v.created_by)
    assert len(v.dataset_sha256) == 64
    report, rows = v.report, results(trained_store, v)
    assert report["rows"] == len(rows) == 800
    main = report["main"]
    assert main["model_id"] == staging.current.main_model_id
    labels, matrix = main["confusion"]["labels"], main["confusion"]["matrix"]
    assert labels == ["no", "yes"]
    for i, truth in enumerate(labels):
        for j, predicted in enumerate(labels):
            assert matrix[i][j] == int(
                ((rows["churn"] == truth) & (rows["prediction"] == predicted)).sum()
            )
    yes = next(c for c in main["per_class"] if c["class"] == "yes")
    assert yes["f1"] == pytest.approx(main["metrics"]["f1"], abs=1e-6)  # positive class
    assert yes["recall"] == pytest.approx(main["metrics"]["recall"], abs=1e-6)
    assert main["macro"]["f1"] == pytest.approx(
        sum(c["f1"] for c in main["per_class"]) / 2, abs=1e-6
    )
    assert report["challenger"]["model_id"] == staging.current.challenger_model_id
    assert report["production"] is None  # nothing in production yet
    latency = report["latency"]
    assert latency["rows"] == validation.LATENCY_ROWS
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert report["throughput"]["rows"] == 800 and report["throughput"]["rows_per_second"] > 0


def test_error_analysis_ranks_slices_and_names_the_worst_rows(
    trained_store: Store, staging: Deployment
) -> None:
    v = validation.validate_here(
        trained_store, staging.name, labelled_file(trained_store), actor="tester"
    )
    errors, rows = v.report["error_analysis"], results(trained_store, v)
    wrong = rows["prediction"] != rows["churn"]
    assert errors["measure"] == "error rate"
    assert errors["overall"] == pytest.approx(wrong.mean(), abs=1e-6)
    slices = errors["slices"]
    assert slices and [s["error"] for s in slices] == sorted(
        (s["error"] for s in slices), reverse=True
    )
    assert all(s["rows"] >= errors["min_slice_rows"] for s in slices)
    for s in slices:
        if s["feature"] == "contract":  # categorical: recomputed from the results file
            chosen = rows["contract"].fillna("missing") == s["slice"]
            assert s["rows"] == int(chosen.sum())
            assert s["error"] == pytest.approx(wrong[chosen].mean(), abs=1e-6)
    worst = errors["worst_rows"]
    assert 0 < len(worst) <= validation.WORST_ROWS and errors["key"] == "customer_id"
    by_row = rows.set_index("_row")
    for r in worst:
        assert by_row.loc[r["row"], "prediction"] != by_row.loc[r["row"], "churn"]
        assert by_row.loc[r["row"], "customer_id"] == r["key"]
    confidences = [r["confidence"] for r in worst]
    assert confidences == sorted(confidences, reverse=True)  # the most confident mistakes


def test_production_is_scored_on_the_same_rows(trained_store: Store) -> None:
    by = models(trained_store)
    production = deployments.deploy(trained_store, by["linear"], "production", actor="tester")
    staging = deployments.deploy(trained_store, by["gradient_boosting"], "staging", actor="tester")
    path = labelled_file(trained_store)
    v = validation.validate_here(trained_store, staging.name, path, actor="tester")
    theirs = v.report["production"]
    assert (theirs["deployment"], theirs["model_id"]) == (production.name, by["linear"])
    # The same file run through production itself gives the same metrics.
    queued = runs.enqueue_run(
        trained_store,
        production.name,
        source_override={"kind": "file", "path": path},
        actor="tester",
    )
    claimed = execution.claim_next_run(trained_store, "t")
    assert claimed is not None and claimed.id == queued.id
    done = execution.execute_run(trained_store, claimed, "t")
    assert theirs["metrics"] == done.summary["main"]["metrics"]
    assert sum(map(sum, theirs["confusion"]["matrix"])) == 800


def test_regression_reports_errors_and_residuals(trained_store: Store) -> None:
    frame = datasets.demo_frame("diabetes")
    dataset = datasets.register_frame(
        trained_store, frame, name="diabetes", kind="upload", source="diabetes.csv", actor="tester"
    )
    result = train(
        trained_store,
        TrainRequest(dataset_id=dataset.id, target="progression", algorithms=("linear",)),
        actor="tester",
    )
    d = deployments.deploy(trained_store, result.models[0].id, "staging", actor="tester")
    v = validation.validate_here(
        trained_store, d.name, labelled_file(trained_store, frame, "diabetes.csv"), actor="tester"
    )
    assert v.status == "succeeded", v.error
    metrics = v.report["main"]["metrics"]
    rows = results(trained_store, v)
    assert metrics["mae"] == pytest.approx(
        (rows["progression"] - rows["prediction"]).abs().mean(), rel=1e-5
    )
    assert {"rmse", "r2"} <= set(metrics)
    residuals = v.report["main"]["residuals"]
    assert 0 < len(residuals["residual"]) <= validation.RESIDUAL_POINTS
    truth = set((rows["progression"] - rows["prediction"]).round(6))
    assert all(round(r, 6) in truth for r in residuals["residual"])
    assert v.report["error_analysis"]["measure"] == "mean absolute error"


def test_the_worker_builds_the_report_of_a_queued_validation(
    trained_store: Store, staging: Deployment
) -> None:
    v = validation.start_validation(
        trained_store, staging.name, labelled_file(trained_store), actor="tester"
    )
    assert v.status == "queued" and runs.get_run(trained_store, v.run_id).trigger == "validation"
    assert worker.run_once(trained_store)
    done = validation.get_validation(trained_store, v.id)
    assert done.status == "succeeded" and done.report["main"]["metrics"]["rows"] == 800


def test_a_failed_run_fails_its_validation(trained_store: Store, staging: Deployment) -> None:
    path = labelled_file(trained_store)
    v = validation.start_validation(trained_store, staging.name, path, actor="tester")
    (trained_store.workspace.home / path).unlink()  # gone before the worker reads it
    worker.run_once(trained_store)
    failed = validation.get_validation(trained_store, v.id)
    assert failed.status == "failed" and "does not exist" in failed.error
    assert failed.report == {}


def test_validations_are_listed_per_version(trained_store: Store, staging: Deployment) -> None:
    path = labelled_file(trained_store)
    first = validation.validate_here(trained_store, staging.name, path, actor="tester")
    deployments.deploy(trained_store, models(trained_store)["linear"], "staging", actor="tester")
    second = validation.validate_here(trained_store, staging.name, path, actor="tester")
    listed = validation.list_validations(trained_store, staging.name)
    assert [(v.id, v.version_number) for v in listed] == [(second.id, 2), (first.id, 1)]
    assert first.dataset_sha256 == second.dataset_sha256  # the same data: comparable


# ---------------------------------------------------------------------------- bad input
def _nothing_stored(store: Store) -> None:
    assert store.query("SELECT count(*) FROM validations").scalar() == 0
    assert store.query("SELECT count(*) FROM runs").scalar() == 0


def test_data_without_the_label_column(trained_store: Store, staging: Deployment) -> None:
    path = labelled_file(trained_store, datasets.churn_frame(200).drop(columns=["churn"]))
    with pytest.raises(DatasetError) as caught:
        validation.start_validation(trained_store, staging.name, path, actor="tester")
    assert caught.value.message == "The validation data has no label column 'churn'."
    assert caught.value.step == Step("choose-label") and "customer_id" in caught.value.hint
    with pytest.raises(DatasetError, match="no label column 'outcome'"):
        validation.start_validation(
            trained_store,
            staging.name,
            labelled_file(trained_store),
            label="outcome",
            actor="tester",
        )
    _nothing_stored(trained_store)


def test_labels_of_the_wrong_type(trained_store: Store, staging: Deployment) -> None:
    frame = datasets.churn_frame(200)
    frame["churn"] = frame["tenure_months"]  # numbers where the classes are no/yes
    with pytest.raises(InvalidInput) as caught:
        validation.start_validation(
            trained_store, staging.name, labelled_file(trained_store, frame), actor="tester"
        )
    assert "labels of the wrong type for a binary model of 'churn'" in caught.value.message
    assert "none of the model's classes (no, yes)" in caught.value.message
    frame = datasets.demo_frame("diabetes")
    dataset = datasets.register_frame(
        trained_store, frame, name="diabetes", kind="upload", source="d.csv", actor="tester"
    )
    model = train(
        trained_store,
        TrainRequest(dataset_id=dataset.id, target="progression", algorithms=("linear",)),
        actor="tester",
    ).models[0]
    d = deployments.deploy(trained_store, model.id, "staging", actor="tester")
    frame["progression"] = "high"
    with pytest.raises(InvalidInput, match="'high', not numbers: labels of the wrong type"):
        validation.start_validation(
            trained_store, d.name, labelled_file(trained_store, frame), actor="tester"
        )
    _nothing_stored(trained_store)


def test_obvious_bad_input(trained_store: Store, staging: Deployment, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="No deployment 'nope'"):
        validation.start_validation(
            trained_store, "nope", labelled_file(trained_store), actor="tester"
        )
    empty = trained_store.workspace.home / "labelled" / "empty.csv"
    empty.write_text("customer_id,churn\n")
    with pytest.raises(InvalidInput):  # header only: no rows (or no feature columns)
        validation.start_validation(
            trained_store, staging.name, "labelled/empty.csv", actor="tester"
        )
    header = datasets.churn_frame(5).head(0)
    with pytest.raises(DatasetError, match="The validation data has no rows"):
        validation.start_validation(
            trained_store,
            staging.name,
            labelled_file(trained_store, header, "none.parquet"),
            actor="tester",
        )
    outside = tmp_path / "outside.parquet"
    datasets.churn_frame(50).to_parquet(outside)
    with pytest.raises(PipelineError, match="outside the workspace"):
        validation.start_validation(trained_store, staging.name, str(outside), actor="tester")
    with pytest.raises(PipelineError, match="does not exist"):
        validation.start_validation(
            trained_store, staging.name, "labelled/missing.csv", actor="tester"
        )
    with pytest.raises(InvalidInput, match="No validation data given"):
        validation.start_validation(trained_store, staging.name, "  ", actor="tester")
    _nothing_stored(trained_store)


# ---------------------------------------------------------------------------- CLI
def test_cli_validate_and_list(
    capsys: pytest.CaptureFixture[str], trained_store: Store, staging: Deployment
) -> None:
    path = labelled_file(trained_store)
    found = run_json(capsys, "validate", staging.name, "--data", path)
    assert found["status"] == "succeeded" and found["label"] == "churn"
    assert found["report"]["main"]["metrics"]["rows"] == 800
    listed = run_json(capsys, "validations", staging.name)
    assert [v["id"] for v in listed] == [found["id"]]
    code, out, err = run(capsys, "validate", staging.name, "--data", path)
    assert code == 0 and "latency" in out and "worst slices" in out and "rows scored" in err
    code, out, err = run(capsys, "validate", staging.name, "--data", path, "--label", "x")
    assert (
        (code, out) == (2, "")
        and "error: The validation data has no label column 'x'." in err
        and "hint: " in err
    )
