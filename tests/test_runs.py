"""Runs on a real store with real trained models and real files: queue, leases, execution."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from core import datasets, deployments, execution, promotion, registry, runs, scoring, sinks
from core.engine import metrics as run_metrics
from core.engine.metrics import classification_metrics, regression_metrics
from core.entities import Deployment, Run
from core.errors import InvalidInput, NotFound
from core.store import Store
from core.training import TrainRequest, train
from tests.files import source_gone

WORKER = "test-worker"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    """churn-staging: gradient boosting as main, the linear model as challenger."""
    return deploy_churn("gradient_boosting", challenger="linear", actor="ana")


def execute(store: Store, name: str, **enqueue: Any) -> Run:
    """Enqueue a run, claim it and execute it in this process."""
    queued = runs.enqueue_run(store, name, **{"actor": "tester", **enqueue})
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None and claimed.id == queued.id
    return execution.execute_run(store, claimed, WORKER)


def set_pipeline(store: Store, deployment: Deployment, **changes: Any) -> None:
    deployments.update_pipeline(
        store, deployment.name, {**deployment.pipeline, **changes}, actor="tester"
    )


def source_frame(store: Store, deployment: Deployment) -> pd.DataFrame:
    return pd.read_parquet(store.workspace.home / deployment.pipeline["source"]["path"])


def write_source(store: Store, frame: pd.DataFrame, name: str = "incoming.parquet") -> str:
    path = store.workspace.home / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    return str(path.relative_to(store.workspace.home))


# ---------------------------------------------------------------------------- the queue
def test_enqueue_snapshots_pipeline_and_version(trained_store: Store, deployed: Deployment) -> None:
    run = runs.enqueue_run(trained_store, deployed.name, actor="bo")
    assert (run.status, run.trigger, run.queued_by, run.attempt) == ("queued", "manual", "bo", 0)
    assert run.version_id == deployed.current_version_id
    assert run.pipeline == deployed.pipeline and run.source_override is None
    set_pipeline(trained_store, deployed, transforms=[{"name": "t", "sql": "SELECT 1"}])
    assert runs.get_run(trained_store, run.id).pipeline == deployed.pipeline  # a snapshot
    assert [r.id for r in runs.list_runs(trained_store, deployed.name)] == [run.id]


def test_enqueue_refuses_bad_requests(trained_store: Store, deployed: Deployment) -> None:
    with pytest.raises(NotFound, match="No deployment 'nope'"):
        runs.enqueue_run(trained_store, "nope", actor="tester")
    with pytest.raises(InvalidInput, match="Unknown run trigger 'cron'"):
        runs.enqueue_run(trained_store, deployed.name, trigger="cron", actor="tester")
    with pytest.raises(InvalidInput, match="source override must be a source block"):
        runs.enqueue_run(
            trained_store, deployed.name, source_override={"path": "x.csv"}, actor="tester"
        )
    trained_store.execute(
        "UPDATE deployments SET current_version_id = NULL WHERE id = ?", [deployed.id]
    )
    with pytest.raises(InvalidInput) as caught:
        runs.enqueue_run(trained_store, deployed.name, actor="tester")
    assert caught.value.message == "Deployment 'churn-staging' has no current version to run."
    with pytest.raises(NotFound, match="No run 'run_x'"):
        runs.get_run(trained_store, "run_x")


def test_claims_are_oldest_first_and_exactly_once(
    trained_store: Store, deployed: Deployment
) -> None:
    first = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    second = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, "w1", lease_seconds=30)
    assert claimed is not None and claimed.id == first.id
    assert (claimed.status, claimed.lease_owner, claimed.attempt) == ("running", "w1", 1)
    assert claimed.started_at is not None and claimed.lease_expires_at > claimed.started_at
    again = execution.claim_next_run(trained_store, "w2")
    assert again is not None and again.id == second.id
    assert execution.claim_next_run(trained_store, "w3") is None
    assert runs.renew_lease(trained_store, claimed, "w1", progress=0.5, message="halfway")
    assert not runs.renew_lease(trained_store, claimed, "w2")  # not w2's run
    assert runs.get_run(trained_store, first.id).message == "halfway"


def test_an_expired_lease_fails_the_run_and_removes_its_files(
    trained_store: Store, deployed: Deployment
) -> None:
    earlier = execute(trained_store, deployed.name)
    runs.enqueue_run(trained_store, deployed.name, actor="tester")
    lost = execution.claim_next_run(trained_store, "dead-worker", lease_seconds=0.001)
    assert lost is not None
    partial = runs.results_dir(trained_store.workspace, lost.id) / ".main.parquet.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a file")
    time.sleep(0.01)
    assert runs.expire_leases(trained_store) == [lost.id]
    failed = runs.get_run(trained_store, lost.id)
    assert failed.status == "failed" and failed.error.startswith("worker lost (lease expired at ")
    assert not partial.parent.exists()
    assert not runs.renew_lease(trained_store, lost, "dead-worker")  # it is no longer its run
    assert runs.expire_leases(trained_store) == []
    assert runs.result_path(trained_store.workspace, earlier.id).exists()


# ---------------------------------------------------------------------------- a full run
def test_a_full_run_with_challenger_and_labelled_metrics(
    trained_store: Store, deployed: Deployment
) -> None:
    run = execute(trained_store, deployed.name)
    assert run.status == "succeeded", run.error
    frame = source_frame(trained_store, deployed)
    assert (run.rows_in, run.rows_out, run.progress, run.error) == (len(frame), len(frame), 1, None)
    folder = runs.results_dir(trained_store.workspace, run.id)
    assert sorted(p.name for p in folder.iterdir()) == [
        "challenger.parquet",
        "main.parquet",
        "sample_challenger.parquet",
        "sample_main.parquet",
    ]
    main = pd.read_parquet(folder / "main.parquet")
    features = [c for c in frame.columns if c not in ("customer_id", "churn")]
    assert list(main.columns) == [
        "_row",
        "customer_id",
        "prediction",
        "confidence",
        "input_quality",
        "proba_no",
        "proba_yes",
        "challenger_prediction",
        *features,
        "churn",
    ]
    assert main["_row"].tolist() == list(range(len(frame)))
    assert main["customer_id"].tolist() == frame["customer_id"].tolist()
    pd.testing.assert_frame_equal(main[features], frame[features], check_dtype=False)

    models = {
        which: registry.get_model(trained_store, run.summary[which]["model_id"])
        for which in ("main", "challenger")
    }
    estimator = registry.load_estimator(trained_store, models["main"])
    proba = estimator.predict_proba(frame[features])
    assert main["prediction"].tolist() == estimator.predict(frame[features]).tolist()
    np.testing.assert_allclose(main["proba_yes"], proba[:, 1])
    np.testing.assert_allclose(main["confidence"], proba.max(axis=1))
    assert main["input_quality"].between(0, 1).all()

    challenger = pd.read_parquet(folder / "challenger.parquet")
    other = registry.load_estimator(trained_store, models["challenger"])
    assert challenger["prediction"].tolist() == other.predict(frame[features]).tolist()
    assert main["challenger_prediction"].tolist() == challenger["prediction"].tolist()

    summary = run.summary
    assert summary["rows"] == len(frame) and summary["label_column"] == "churn"
    expected = classification_metrics(
        frame["churn"], main["prediction"].to_numpy(), proba, ["no", "yes"], "binary"
    )
    assert summary["main"]["metrics"] == {**expected, "rows": len(frame)}
    assert summary["main"]["class_counts"] == main["prediction"].value_counts().to_dict()
    assert summary["main"]["mean_confidence"] == pytest.approx(main["confidence"].mean())
    assert summary["main"]["confidence_kind"] == "class probability"
    agreement = (main["prediction"] == challenger["prediction"]).mean()
    assert summary["challenger"]["agreement_rate"] == pytest.approx(agreement)
    assert summary["challenger"]["metrics"]["accuracy"] == pytest.approx(
        (challenger["prediction"] == frame["churn"]).mean()
    )
    quality = summary["input_quality"]
    assert quality["mean"] == pytest.approx(main["input_quality"].mean())
    assert quality["missing"] == int(frame[features].isna().sum().sum())
    assert {
        "load_models",
        "read",
        "predict_main",
        "predict_challenger",
        "quality",
        "write",
        "total",
    } <= set(summary["timings"])
    assert summary["results"] == {
        "main": f"runs/{run.id}/main.parquet",
        "challenger": f"runs/{run.id}/challenger.parquet",
    }


def test_batches_give_the_same_results_as_one(trained_store: Store, deployed: Deployment) -> None:
    whole = execute(trained_store, deployed.name)
    set_pipeline(trained_store, deployed, batch_rows=64)
    batched = execute(trained_store, deployed.name)
    read = [
        pd.read_parquet(runs.result_path(trained_store.workspace, r.id)) for r in (whole, batched)
    ]
    pd.testing.assert_frame_equal(*read)
    assert batched.summary["main"]["metrics"] == whole.summary["main"]["metrics"]


def test_a_source_override_and_extra_columns(trained_store: Store, deployed: Deployment) -> None:
    frame = source_frame(trained_store, deployed).head(40).drop(columns=["churn"])
    frame["prediction"] = "mine"  # a column named like a result column is kept, renamed
    frame["note"] = "extra"
    path = write_source(trained_store, frame)
    run = execute(trained_store, deployed.name, source_override={"kind": "file", "path": path})
    assert run.status == "succeeded", run.error
    main = pd.read_parquet(runs.result_path(trained_store.workspace, run.id))
    assert (main["input_prediction"] == "mine").all() and (main["note"] == "extra").all()
    assert run.rows_out == 40
    assert run.summary["label_column"] is None and run.summary["main"]["metrics"] is None
    assert set(run.summary["extra_columns"]) >= {"note", "prediction"}


# ---------------------------------------------------------------------------- bad input
def assert_failed(store: Store, run: Run, *fragments: str) -> None:
    assert run.status == "failed"
    for fragment in fragments:
        assert fragment in run.error
    assert not runs.results_dir(store.workspace, run.id).exists()  # no partial files


def test_a_missing_source_fails_the_run_and_keeps_earlier_ones(
    trained_store: Store, deployed: Deployment
) -> None:
    earlier = execute(trained_store, deployed.name)
    source_gone(trained_store, deployed.name, "incoming/gone.parquet")
    run = execute(trained_store, deployed.name)
    assert_failed(trained_store, run, "gone.parquet")
    assert runs.get_run(trained_store, earlier.id).status == "succeeded"
    assert pd.read_parquet(runs.result_path(trained_store.workspace, earlier.id)).shape[0] == 600


def test_a_schema_mismatch_fails_naming_the_columns(
    trained_store: Store, deployed: Deployment
) -> None:
    frame = source_frame(trained_store, deployed).drop(columns=["tenure_months"])
    frame["age"] = "old"  # numeric feature, text column
    run = execute(
        trained_store,
        deployed.name,
        source_override={"kind": "file", "path": write_source(trained_store, frame)},
    )
    assert_failed(trained_store, run, "tenure_months", "age")


def test_an_empty_result_after_transforms_fails(trained_store: Store, deployed: Deployment) -> None:
    set_pipeline(
        trained_store,
        deployed,
        transforms=[{"name": "none", "sql": "SELECT * FROM input WHERE age < 0"}],
    )
    run = execute(trained_store, deployed.name)
    assert_failed(trained_store, run, "no rows after transforms")


def test_a_transform_error_fails_the_run_with_duckdbs_message(
    trained_store: Store, deployed: Deployment
) -> None:
    set_pipeline(
        trained_store, deployed, transforms=[{"name": "broken", "sql": "SELECT nope FROM input"}]
    )
    run = execute(trained_store, deployed.name)
    assert_failed(trained_store, run, "broken", "nope")


@pytest.mark.parametrize("damage", ["tamper", "delete"])
def test_a_changed_artifact_fails_the_run(
    trained_store: Store, deployed: Deployment, damage: str
) -> None:
    model = registry.get_model(trained_store, deployed.current.challenger_model_id)
    artifact = trained_store.workspace.home / model.artifact_path
    if damage == "tamper":
        artifact.write_bytes(artifact.read_bytes() + b"\0")
    else:
        artifact.unlink()
    run = execute(trained_store, deployed.name)
    reason = "changed on disk" if damage == "tamper" else "is missing"
    assert_failed(trained_store, run, "The challenger model cannot be loaded", model.id, reason)


def test_deleting_the_deployment_mid_run_cancels_it(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = execute(trained_store, deployed.name)
    set_pipeline(trained_store, deployed, batch_rows=50)
    monkeypatch.setattr(execution, "BEAT_SECONDS", 0.0)  # check the run row after every batch
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None
    seen: list[str] = []

    def progress(fraction: float, text: str) -> None:
        seen.append(text)
        if text.endswith("rows scored") and len(seen) < 5:
            promotion.delete_deployment(
                trained_store, deployed.name, confirm=deployed.name, actor="tester"
            )

    run = execution.execute_run(trained_store, claimed, WORKER, progress)
    assert run.id == queued.id and run.status == "cancelled"
    assert run.error == "deployment deleted"
    assert sum(t.endswith("rows scored") for t in seen) == 1  # stopped at the next batch
    assert not runs.results_dir(trained_store.workspace, run.id).exists()
    assert [r.id for r in runs.list_runs(trained_store, deployed.name)] == [run.id, earlier.id]
    assert runs.result_path(trained_store.workspace, earlier.id).exists()


def test_a_stopped_worker_fails_its_run_and_goes_on_stopping(
    trained_store: Store, deployed: Deployment
) -> None:
    runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None

    def progress(fraction: float, text: str) -> None:
        if text.endswith("rows scored"):
            raise SystemExit(143)  # what the worker's SIGTERM handler raises

    with pytest.raises(SystemExit):
        execution.execute_run(trained_store, claimed, WORKER, progress)
    run = runs.get_run(trained_store, claimed.id)
    assert (run.status, run.error) == (
        "failed",
        "The worker was stopped during the run. Run it again.",
    )
    assert not runs.results_dir(trained_store.workspace, run.id).exists()


# ---------------------------------------------------------------------------- sinks
def test_sinks_write_a_folder_copy_and_a_duckdb_table(
    trained_store: Store, deployed: Deployment
) -> None:
    set_pipeline(
        trained_store,
        deployed,
        sinks=[
            {"kind": "folder", "path": "exports/scores", "format": "csv"},
            {
                "kind": "duckdb_table",
                "path": "exports/scores.duckdb",
                "table": "scores",
                "mode": "append",
            },
        ],
    )
    first = execute(trained_store, deployed.name)
    second = execute(trained_store, deployed.name)
    assert first.status == second.status == "succeeded"
    home = trained_store.workspace.home
    csv = pd.read_csv(home / "exports/scores" / f"churn-staging-{first.id}.csv")
    main = pd.read_parquet(runs.result_path(trained_store.workspace, first.id))
    assert csv["prediction"].tolist() == main["prediction"].tolist()
    assert first.summary["sinks"][1] == {
        "kind": "duckdb_table",
        "path": str(home / "exports/scores.duckdb"),
        "table": "scores",
        "mode": "append",
        "rows": 600,
    }
    con = duckdb.connect(str(home / "exports/scores.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (1200,)
    finally:
        con.close()


def test_a_failing_sink_fails_the_run_but_keeps_the_results(
    trained_store: Store, deployed: Deployment
) -> None:
    bad = trained_store.workspace.home / "exports" / "not-a-database.duckdb"
    bad.parent.mkdir()
    bad.write_text("this is not a DuckDB file")
    set_pipeline(
        trained_store,
        deployed,
        sinks=[
            {"kind": "duckdb_table", "path": "exports/not-a-database.duckdb", "table": "scores"}
        ],
    )
    run = execute(trained_store, deployed.name)
    assert run.status == "failed"
    assert run.error.startswith("Sink 1 (duckdb_table exports/not-a-database.duckdb) failed: ")
    assert "The run's own results were kept." in run.error
    assert bad.read_text() == "this is not a DuckDB file"
    assert runs.result_path(trained_store.workspace, run.id).exists()
    assert run.summary["results_written"] is True and run.rows_out == 600


def test_a_sink_may_not_write_into_the_store(trained_store: Store, deployed: Deployment) -> None:
    run = execute(trained_store, deployed.name)
    results = runs.result_path(trained_store.workspace, run.id)
    with pytest.raises(InvalidInput) as caught:  # the sink's own guard, behind validation's
        sinks.write_sinks(
            trained_store.workspace,
            [
                {
                    "kind": "duckdb_table",
                    "path": "modeldeck.duckdb",
                    "table": "deployments",
                    "mode": "replace",
                }
            ],
            results,
            "x",
        )
    assert caught.value.message == (
        "Sink 1 (duckdb_table modeldeck.duckdb) failed: 'modeldeck.duckdb' is among ModelDeck's "
        f"own files and folders ({trained_store.workspace.db_path}); nothing is written there "
        "for you."
    )
    assert deployments.get_deployment(trained_store, deployed.name).id == deployed.id


# ---------------------------------------------------------------------------- regression
def test_a_regression_forest_reports_its_trees_spread(store: Store) -> None:
    frame = datasets.demo_frame("diabetes")
    dataset = datasets.register_frame(
        store, frame, name="diabetes", kind="demo", source="diabetes", actor="tester"
    )
    result = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="progression", algorithms=("random_forest", "linear")
        ),
        actor="tester",
    )
    by_algorithm = {m.algorithm: m for m in result.models}
    deployment = deployments.deploy(
        store,
        by_algorithm["random_forest"].id,
        "staging",
        challenger_id=by_algorithm["linear"].id,
        actor="tester",
    )
    run = execute(store, deployment.name)
    assert run.status == "succeeded", run.error
    main = pd.read_parquet(runs.result_path(store.workspace, run.id))
    features = list(by_algorithm["random_forest"].schema.feature_names)
    forest = registry.load_estimator(store, by_algorithm["random_forest"])
    np.testing.assert_allclose(main["prediction"], forest.predict(frame[features]))
    inputs = forest[:-1].transform(frame[features]).astype(np.float32)
    spread = np.std([t.predict(inputs) for t in forest[-1].estimators_], axis=0)
    np.testing.assert_allclose(main["confidence"], spread)
    challenger = pd.read_parquet(runs.result_path(store.workspace, run.id, "challenger"))
    assert challenger["confidence"].isna().all()  # a linear model gives no spread
    metrics = run.summary["main"]["metrics"]
    expected = regression_metrics(frame["progression"], main["prediction"].to_numpy())
    assert metrics["rows"] == len(frame)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-5)
    summary = run.summary["main"]["prediction_summary"]
    assert summary["p50"] == pytest.approx(main["prediction"].median())
    assert run.summary["challenger"]["mean_abs_difference"] == pytest.approx(
        (main["prediction"] - challenger["prediction"]).abs().mean()
    )


# ---------------------------------------------------------------------------- statistics
def test_the_sample_stays_bounded_and_uniform() -> None:
    sample = run_metrics.Sample(cap=1000)
    for start in range(0, 100_000, 7_000):
        sample.add(value=np.arange(start, min(start + 7_000, 100_000)))
    kept = sample.get("value")
    assert kept is not None and len(kept) <= 1000 and sample.stride == 128
    assert (np.diff(kept) == 128).all() and kept[0] == 0


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_counts_give_sklearns_metrics_beyond_the_sample(task: str) -> None:
    rng = np.random.default_rng(3)
    classes = ("a", "b") if task == "binary" else ("a", "b", "c")
    y = rng.choice(classes, 5000)
    pred = np.where(rng.random(5000) < 0.7, y, rng.choice(classes, 5000))
    proba = rng.dirichlet(np.ones(len(classes)), 5000)
    exact = classification_metrics(pd.Series(y), pred, proba, list(classes), task)
    vocabulary = run_metrics.Vocabulary(classes)
    stats = run_metrics.LabelStats(task, len(classes))
    stats.sample = run_metrics.Sample(cap=700)  # far fewer than the rows: counts carry it
    for start in range(0, 5000, 999):
        part = slice(start, start + 999)
        stats.add_codes(vocabulary.codes(y[part]), vocabulary.codes(pred[part]), proba[part])
    result = stats.result()
    for name in ("accuracy", "precision", "recall", "f1"):
        assert result[name] == pytest.approx(exact[name], abs=1e-6)
    assert result["roc_auc"] == pytest.approx(exact["roc_auc"], abs=0.05)
    assert result["roc_auc_sample_rows"] <= 700 and result["rows"] == 5000


def test_labels_outside_the_classes_still_give_metrics() -> None:
    vocabulary = run_metrics.Vocabulary(("no", "yes"))
    y = vocabulary.codes(np.array(["yes", "no", "maybe", "yes"]))
    assert y.tolist() == [1, 0, 2, 1] and vocabulary.names == ["no", "yes", "maybe"]
    stats = run_metrics.LabelStats("binary", 2)
    stats.add_codes(y, np.array([1, 0, 0, 0]), None)
    result = stats.result()
    assert (result["accuracy"], result["precision"], result["recall"]) == (0.5, 1.0, 0.5)
    assert result["roc_auc"] is None


def test_labels_compare_as_text() -> None:
    assert run_metrics.as_text(np.array([1.0, 0.0])).tolist() == ["1", "0"]
    assert run_metrics.as_text(np.array([1.5, 0.0])).tolist() == ["1.5", "0.0"]
    assert run_metrics.as_text(np.array(["x", "y"], dtype=object)).tolist() == ["x", "y"]
    assert run_metrics.Vocabulary((0, 1)).codes(
        run_metrics.as_text(np.array([1.0, 0.0]))
    ).tolist() == [1, 0]


def test_result_columns_keep_every_input_column() -> None:
    plan = scoring.column_plan(
        ["id", "prediction", "input_prediction", "x", "proba_a"], "id", ["proba_a"]
    )
    assert plan == [
        ("id", "id"),
        ("prediction", "input_input_prediction"),
        ("input_prediction", "input_prediction"),
        ("x", "x"),
        ("proba_a", "input_proba_a"),
    ]


def test_results_files_are_named_under_the_run(store: Store) -> None:
    assert runs.result_path(store.workspace, "run_1", "challenger") == Path(
        store.workspace.runs_dir / "run_1" / "challenger.parquet"
    )
