"""Drift on real runs of a real model: injected drift found, windows add up, every bad input of
issue 7's drift part, and the CLI's JSON shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import datasets, drift, execution, registry, runs
from core.cli import main as cli
from core.engine.drift_scores import FeatureDrift, Thresholds, psi
from core.entities import Deployment, Run
from core.errors import Conflict, InvalidInput, NotFound
from core.store import Store
from core.ui import charts, monitoring_charts
from tests.files import source_gone

WORKER = "drift-test"
SHIFTED = {"age", "monthly_charges", "contract"}
UNTOUCHED = {"tenure_months", "support_tickets", "internet_service", "payment_method"}


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("gradient_boosting", actor="ana")


def served(n_rows: int = 3000, seed: int = 11, shifted: bool = False) -> pd.DataFrame:
    frame = datasets.churn_frame(n_rows=n_rows, seed=seed).drop(columns=["churn"])
    if shifted:
        frame["age"] = frame["age"] + 30  # half the rows above the training range
        frame["monthly_charges"] = frame["monthly_charges"] * 1.8
        frame["contract"] = "two-year"
    return frame


def score(store: Store, name: str, frame: pd.DataFrame, file: str = "in.parquet") -> Run:
    """Write `frame` as a source file, run the deployment on it here, store its counts."""
    path = store.workspace.home / "incoming" / file
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    runs.enqueue_run(
        store,
        name,
        source_override={"kind": "file", "path": str(path.relative_to(store.workspace.home))},
        actor="tester",
    )
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    done = execution.execute_run(store, claimed, WORKER)
    assert done.status == "succeeded", done.error
    drift.after_run(store, done)
    return done


def by_name(report: drift.DriftReport) -> dict[str, FeatureDrift]:
    return {f.name: f for f in report.features}


# ---------------------------------------------------------------------------- verdicts
def test_injected_drift_is_flagged_and_untouched_features_stay_stable(
    trained_store: Store, deployed: Deployment
) -> None:
    run = score(trained_store, deployed.name, served(shifted=True))
    assert drift.counts_path(trained_store, run.id).exists()  # stored by the post-run step
    report = drift.drift_report(trained_store, deployed.name, run_id=run.id)
    found = by_name(report)
    assert set(found) == SHIFTED | UNTOUCHED
    assert {n for n, f in found.items() if f.status == "drifted"} == SHIFTED
    assert all(found[n].status == "stable" for n in UNTOUCHED), {n: found[n].psi for n in UNTOUCHED}
    assert found["age"].distance > 0.5 and found["tenure_months"].distance < 0.1
    assert found["age"].distance_kind == "wasserstein/std"
    assert found["contract"].distance_kind == "jensen-shannon"
    assert found["age"].p_value is not None and found["contract"].p_value is not None
    assert found["age"].served[0] == 0 and found["age"].served[-2] > 0.3  # above range
    assert found["age"].served_mean == pytest.approx(served(shifted=True)["age"].mean(), rel=1e-9)
    assert report.rows == 3000 and len(report.drifted) == 3 and report.share_drifted == 3 / 7
    assert report.prediction is not None and report.prediction.kind == "categorical"
    assert sum(report.prediction.served) == pytest.approx(1.0)


def test_unseen_categories_and_missing_values_get_their_buckets(
    trained_store: Store, deployed: Deployment
) -> None:
    frame = served(n_rows=500)
    frame.loc[:99, "internet_service"] = "satellite"
    frame.loc[:249, "tenure_months"] = np.nan
    run = score(trained_store, deployed.name, frame)
    found = by_name(drift.drift_report(trained_store, deployed.name, run_id=run.id))
    internet = found["internet_service"]
    assert internet.served[internet.buckets.index("unseen")] == pytest.approx(0.2)
    assert internet.note == "20.0% of values were unseen in training"
    assert found["tenure_months"].served[-1] == pytest.approx(0.5)  # missing
    assert found["tenure_months"].status == "drifted"


def test_nan_in_a_results_file_counts_as_missing_like_null(
    trained_store: Store, deployed: Deployment
) -> None:
    run = score(trained_store, deployed.name, served(n_rows=400))
    table = pq.read_table(runs.result_path(trained_store.workspace, run.id))
    charges = table.column("monthly_charges").to_numpy(zero_copy_only=False).astype(float)
    charges[:100] = np.nan  # NaN, not null: pyarrow leaves it out of the min/max statistics
    where = table.schema.get_field_index("monthly_charges")
    path = trained_store.workspace.home / "nan.parquet"
    pq.write_table(table.set_column(where, "monthly_charges", pa.array(charges)), path)
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    counts = drift.count_file(path, model, model.profile)["features"]["monthly_charges"]
    assert counts["missing"] == 100
    assert counts["below"] + sum(counts["bins"]) + counts["above"] == 300
    assert counts["max"] == np.nanmax(charges) and counts["min"] == np.nanmin(charges)
    assert counts["sum"] == pytest.approx(np.nansum(charges), rel=1e-12)


def test_psi_is_zero_for_equal_shares_and_finite_with_empty_buckets() -> None:
    shares = np.asarray([0.2, 0.3, 0.5, 0.0])
    assert psi(shares, shares) == 0.0
    assert np.isfinite(psi(shares, np.asarray([0.0, 0.0, 0.0, 1.0])))
    assert Thresholds().status(0.05) == "stable"
    assert Thresholds().status(0.1) == "moderate" and Thresholds().status(0.3) == "drifted"


# ---------------------------------------------------------------------------- windows
def test_a_window_equals_the_counts_of_its_runs_data_concatenated(
    trained_store: Store, deployed: Deployment
) -> None:
    first = score(trained_store, deployed.name, served(800, seed=1), "a.parquet")
    second = score(trained_store, deployed.name, served(700, seed=2, shifted=True), "b.parquet")
    window = drift.drift_report(trained_store, deployed.name, last=2)
    assert set(window.run_ids) == {first.id, second.id} and window.rows == 1500
    # the same rows as one file, counted in one go against the same model
    both = pd.concat(
        [
            pq.read_table(runs.result_path(trained_store.workspace, r.id)).to_pandas()
            for r in (first, second)
        ]
    )
    path = trained_store.workspace.home / "both.parquet"
    both.to_parquet(path, index=False)
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    direct = drift.count_file(path, model, model.profile)
    stored = drift.combine(
        [json.loads(drift.counts_path(trained_store, r.id).read_text()) for r in (first, second)]
    )
    assert stored["features"].keys() == direct["features"].keys()
    for name, counts in direct["features"].items():
        for key, value in counts.items():  # counts exact, sums up to float rounding
            expected = pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
            assert stored["features"][name][key] == expected, (name, key)
    one = drift.drift_report(trained_store, deployed.name, run_id=second.id)
    assert by_name(window)["age"].psi < by_name(one)["age"].psi  # the clean run dilutes it


def test_missing_counts_are_computed_lazily_and_over_time_has_a_point_per_run(
    trained_store: Store, deployed: Deployment
) -> None:
    ran = [
        score(trained_store, deployed.name, served(300, seed=s, shifted=s == 3), f"{s}.pq")
        for s in (1, 2, 3)
    ]
    drift.counts_path(trained_store, ran[0].id).unlink()
    series = drift.drift_over_time(trained_store, deployed.name, last=10)
    assert drift.counts_path(trained_store, ran[0].id).exists()
    assert [s[0] for s in series.shares] == [r.id for r in ran]  # oldest first
    assert series.shares[-1][2] == pytest.approx(3 / 7) and series.shares[0][2] == 0
    assert len(series.points) == 3 * 8  # 7 features and the prediction
    alert = drift.drift_alert(trained_store, deployed.name)
    assert alert is not None and alert.n_drifted == 3 and alert.n_features == 7
    assert alert.since == ran[-1].finished_at and set(alert.drifted) == SHIFTED
    figure = monitoring_charts.drift_share_figure(series)
    assert [r["share"] for r in charts.rows_of(figure)] == [s[2] for s in series.shares]
    report = drift.drift_report(trained_store, deployed.name, last=3)
    overlay = charts.rows_of(monitoring_charts.drift_overlay_figure(by_name(report)["age"]))
    assert overlay[0]["series"] == "training"


def test_thresholds_are_per_deployment_and_checked(
    trained_store: Store, deployed: Deployment
) -> None:
    run = score(trained_store, deployed.name, served(shifted=True))
    drift.set_thresholds(trained_store, deployed.name, 5.0, 50.0, actor="ana")
    report = drift.drift_report(trained_store, deployed.name, run_id=run.id)
    assert report.thresholds == Thresholds(5.0, 50.0) and report.drifted == []
    with pytest.raises(InvalidInput) as caught:
        drift.set_thresholds(trained_store, deployed.name, 0.3, 0.2, actor="tester")
    assert caught.value.message == (
        "Drift thresholds must satisfy 0 < moderate < drifted; got moderate 0.3, drifted 0.2."
    )


# ---------------------------------------------------------------------------- bad input
def test_a_window_with_no_runs(trained_store: Store, deployed: Deployment) -> None:
    with pytest.raises(InvalidInput) as caught:
        drift.drift_report(trained_store, deployed.name, last=5)
    assert caught.value.message == (
        f"Deployment '{deployed.name}' has no succeeded run with rows: there is no served "
        "data to compare with training."
    )
    score(trained_store, deployed.name, served(100))
    with pytest.raises(InvalidInput, match="has no succeeded run with rows between"):
        drift.drift_report(
            trained_store,
            deployed.name,
            start=pd.Timestamp("2000-01-01").to_pydatetime(),
            end=pd.Timestamp("2000-02-01").to_pydatetime(),
        )
    assert drift.drift_alert(trained_store, "nobody") is None


def test_a_run_with_zero_rows_stores_nothing(trained_store: Store, deployed: Deployment) -> None:
    run = score(trained_store, deployed.name, served(50))
    path = runs.result_path(trained_store.workspace, run.id)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)  # a results file without rows
    drift.counts_path(trained_store, run.id).unlink()
    with pytest.raises(InvalidInput) as caught:
        drift.compute_run_counts(trained_store, run.id)
    assert caught.value.message == (
        f"Run {run.id} has zero rows: there is no served data to compare with training."
    )
    assert not drift.counts_path(trained_store, run.id).exists()


def test_a_failed_run_has_no_counts(trained_store: Store, deployed: Deployment) -> None:
    source_gone(trained_store, deployed.name, "incoming/none.parquet")
    runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, WORKER)
    assert claimed is not None
    failed = execution.execute_run(trained_store, claimed, WORKER)
    with pytest.raises(Conflict) as caught:
        drift.compute_run_counts(trained_store, failed.id)
    assert caught.value.message == (
        f"Run {failed.id} is failed without results: no drift to count."
    )
    with pytest.raises(InvalidInput, match=f"Run {failed.id} has no scored rows"):
        drift.drift_report(trained_store, deployed.name, run_id=failed.id)


def test_a_feature_absent_from_the_training_profile_is_reported_not_scored(
    trained_store: Store, deployed: Deployment
) -> None:
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    profile = json.loads(json.dumps(model.profile))
    del profile["features"]["support_tickets"]
    trained_store.execute("UPDATE models SET profile = ? WHERE id = ?", [profile, model.id])
    registry.clear_cache()  # model rows are immutable in the product; this test edits one
    run = score(trained_store, deployed.name, served(200))
    found = by_name(drift.drift_report(trained_store, deployed.name, run_id=run.id))
    assert found["support_tickets"] == FeatureDrift(
        "support_tickets",
        "numeric",
        "n/a",
        None,
        None,
        "",
        None,
        "",
        note="not in the training profile",
    )
    assert found["age"].status == "stable"


def test_a_constant_training_feature_uses_the_raw_distance(
    trained_store: Store, deployed: Deployment
) -> None:
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    profile = json.loads(json.dumps(model.profile))
    profile["features"]["support_tickets"].update(
        edges=[1.0], fractions=[1.0], std=0.0, mean=1.0, min=1.0, max=1.0, missing_rate=0.0
    )
    trained_store.execute("UPDATE models SET profile = ? WHERE id = ?", [profile, model.id])
    registry.clear_cache()  # model rows are immutable in the product; this test edits one
    frame = served(400)
    frame["support_tickets"] = 1
    frame.loc[:99, "support_tickets"] = 3
    run = score(trained_store, deployed.name, frame)
    tickets = by_name(drift.drift_report(trained_store, deployed.name, run_id=run.id))[
        "support_tickets"
    ]
    assert tickets.buckets == ("< 1", "= 1", "> 1", "missing")
    assert tickets.served == (0.0, 0.75, 0.25, 0.0)
    assert tickets.distance_kind == "wasserstein (raw)"
    assert tickets.distance == pytest.approx(0.5)  # a quarter of the rows moved by 2
    assert tickets.note == "constant in training (std 0): the distance is in the feature's units"
    assert tickets.status == "drifted"


def test_a_run_of_another_deployment_is_refused(trained_store: Store, deployed: Deployment) -> None:
    run = score(trained_store, deployed.name, served(100))
    with pytest.raises(NotFound) as caught:
        drift.drift_report(trained_store, "elsewhere", run_id=run.id)
    assert caught.value.message == f"No run '{run.id}' of deployment 'elsewhere'."
    with pytest.raises(InvalidInput, match="Choose one window"):
        drift.drift_report(trained_store, deployed.name, run_id=run.id, last=2)


# ---------------------------------------------------------------------------- CLI
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(["--user", "tester", *argv]) == 0
    return capsys.readouterr().out


def test_cli_json_shape(
    capsys: pytest.CaptureFixture[str], trained_store: Store, deployed: Deployment
) -> None:
    run = score(trained_store, deployed.name, served(shifted=True))
    out: dict[str, Any] = json.loads(run_cli(capsys, "drift", deployed.name, "--json"))
    assert out["run_ids"] == [run.id] and out["n_drifted"] == 3 and out["n_features"] == 7
    feature = next(f for f in out["features"] if f["name"] == "age")
    assert {"psi", "distance", "distance_kind", "p_value", "test", "status"} <= set(feature)
    assert feature["status"] == "drifted"
    assert out["prediction"]["name"] == "prediction"
    assert out["thresholds"] == {"moderate": 0.1, "drifted": 0.25}
    text = run_cli(capsys, "drift", deployed.name, "--last", "3")
    assert text.startswith(f"{deployed.name}: 3 of 7 features drifted")
    assert cli.main(["--user", "tester", "drift", deployed.name, "--last", "0"]) == 2
    assert "at least one run" in capsys.readouterr().err


def test_validation_runs_stay_out_of_drift_windows(
    trained_store: Store, deployed: Deployment
) -> None:
    from core import validation  # labelled test data is not served traffic

    served_run = score(trained_store, deployed.name, served(300))
    labelled = datasets.churn_frame(n_rows=200, seed=5)
    labelled.to_parquet(trained_store.workspace.home / "labelled.parquet")
    checked = validation.validate_here(
        trained_store, deployed.name, "labelled.parquet", label="churn", actor="tester"
    )
    assert checked.status == "succeeded"
    report = drift.drift_report(trained_store, deployed.name, last=5)
    assert report.run_ids == (served_run.id,)
    alone = drift.drift_report(trained_store, deployed.name, run_id=checked.run_id)
    assert alone.run_ids == (checked.run_id,)  # still open to anyone who asks for it by id
