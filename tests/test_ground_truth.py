"""Ground truth on real runs: labels matched by key (counts), live metrics of main and challenger
checked against sklearn on the joined rows, the bootstrap interval, and every bad input of
issue 7 item 9 (no match, wrong type, unknown classes, duplicate keys, no runs, zero rows)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from core import audit, datasets, deployments, ground_truth
from core.entities import Deployment
from core.errors import InvalidInput, PipelineError, Step
from core.store import Store
from core.training import TrainRequest, train
from tests.cli_helpers import run, run_json
from tests.files import write_frame
from tests.test_challenger import deployed, results, score, served

__all__ = ["deployed"]


def truth(n_rows: int = 800, seed: int = 11) -> pd.DataFrame:
    """The true outcomes of `served(n_rows, seed)`, keyed like its predictions."""
    return datasets.churn_frame(n_rows=n_rows, seed=seed)[["customer_id", "churn"]]


def other_customers(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows for other customers: keys that do not collide with the first batch."""
    return frame.assign(customer_id="B" + frame["customer_id"])


def write(store: Store, frame: pd.DataFrame, name: str = "labels.csv") -> str:
    return write_frame(store, "truth", name, frame)


def add(
    store: Store,
    name: str,
    frame: pd.DataFrame,
    file: str = "labels.csv",
    key: str = "customer_id",
    label: str = "churn",
) -> ground_truth.LabelSet:
    return ground_truth.add_labels(
        store, name, {"kind": "file", "path": write(store, frame, file)}, key, label, actor="ana"
    )


def nothing_stored(store: Store) -> bool:
    folder = store.workspace.home / ground_truth.LABELS_DIR
    files = list(folder.rglob("*")) if folder.exists() else []
    return (
        not [p for p in files if p.is_file()]
        and store.query("SELECT count(*) FROM ground_truth").scalar() == 0
    )


def expected_accuracy(store: Store, run_id: str, labels: pd.DataFrame) -> tuple[float, float]:
    frame = results(store, run_id).merge(labels, on="customer_id")
    return (
        skm.accuracy_score(frame["churn"], frame["prediction"]),
        skm.accuracy_score(frame["churn"], frame["challenger_prediction"]),
    )


# ---------------------------------------------------------------------------- labels
def test_partial_matches_are_counted_and_the_set_is_stored_and_audited(
    trained_store: Store, deployed: Deployment
) -> None:
    score(trained_store, deployed.name, served())
    labels = pd.concat(
        [truth()[:500], pd.DataFrame({"customer_id": [f"X{i}" for i in range(50)], "churn": "no"})],
        ignore_index=True,
    )
    labels.loc[labels.index[:10], "churn"] = None  # unknown yet: left out, counted
    added = add(trained_store, deployed.name, labels)
    assert added.counts == {
        "labels": 540,
        "matched_labels": 490,
        "unmatched_labels": 50,
        "predictions": 800,
        "predictions_with_label": 490,
        "predictions_without_label": 310,
        "without_label": 10,
        "key_column": "customer_id",
    }
    stored = pd.read_parquet(trained_store.workspace.home / added.path)
    assert list(stored.columns) == ["key", "label"] and len(stored) == 540
    assert added.path.startswith(f"labels/{deployed.id}/")
    assert [s.id for s in ground_truth.list_labels(trained_store, deployed.name)] == [added.id]
    entry = audit.list_entries(trained_store, deployed.name)[0]
    assert (entry.action, entry.after) == (
        "labels",
        {"labels": added.id, "rows": 540, "matched": 490},
    )


def test_labels_from_sql_and_a_later_set_overrides_an_earlier_one(
    trained_store: Store, deployed: Deployment
) -> None:
    done = score(trained_store, deployed.name, served())
    write(trained_store, truth(), "all.parquet")
    ground_truth.add_labels(
        trained_store,
        deployed.name,
        {
            "kind": "sql",
            "sql": "SELECT customer_id AS id, 'yes' AS outcome FROM "
            "read_parquet('truth/all.parquet')",
        },
        "id",
        "outcome",
        actor="tester",
    )
    first = ground_truth.live_metrics(trained_store, deployed.name)
    share_yes = (results(trained_store, done.id)["prediction"] == "yes").mean()
    assert first.overall.main["accuracy"] == pytest.approx(share_yes, abs=1e-6)
    add(trained_store, deployed.name, truth()[:300])
    second = ground_truth.live_metrics(trained_store, deployed.name)
    merged = pd.concat([truth()[:300], truth()[300:].assign(churn="yes")])
    assert second.overall.main["accuracy"] == pytest.approx(
        expected_accuracy(trained_store, done.id, merged)[0], abs=1e-6
    )


# ---------------------------------------------------------------------------- live metrics
def test_live_metrics_match_sklearn_with_difference_and_bootstrap_ci(
    trained_store: Store, deployed: Deployment
) -> None:
    first = score(trained_store, deployed.name, served(), "a.parquet")
    second = score(trained_store, deployed.name, other_customers(served(600, seed=12)), "b.parquet")
    labels = pd.concat([truth()[:700], other_customers(truth(600, seed=12))[:400]])
    add(trained_store, deployed.name, labels)
    live = ground_truth.live_metrics(trained_store, deployed.name)
    assert [r.run_id for r in live.runs] == [second.id, first.id]
    assert (live.metric, live.task) == ("accuracy", "binary")
    for done, found in zip((second, first), live.runs, strict=True):
        main, other = expected_accuracy(trained_store, done.id, labels)
        assert found.main["accuracy"] == pytest.approx(main, abs=1e-6)
        assert found.challenger["accuracy"] == pytest.approx(other, abs=1e-6)
        assert found.difference["accuracy"] == pytest.approx(other - main, abs=1e-6)
        assert found.ci[0] <= found.difference["accuracy"] <= found.ci[1]
        frame = results(trained_store, done.id).merge(labels, on="customer_id")
        assert found.main["f1"] == pytest.approx(
            skm.f1_score(frame["churn"], frame["prediction"], pos_label="yes"), abs=1e-6
        )
        assert found.main["roc_auc"] == pytest.approx(
            skm.roc_auc_score(frame["churn"] == "yes", frame["proba_yes"]), abs=1e-6
        )
    assert live.runs[0].rows == 400 and live.runs[1].rows == 700
    assert live.overall.rows == 1100
    assert live.overall.ci[0] < live.overall.difference["accuracy"] < live.overall.ci[1]
    assert live.matching.predictions_with_label == 1100
    assert live.matching.predictions_without_label == 300
    assert "1,000 resamples" in live.method and "seed 0" in live.method
    again = ground_truth.live_metrics(trained_store, deployed.name)
    assert again.overall.ci == live.overall.ci  # seeded
    wider = ground_truth.live_metrics(trained_store, deployed.name, run_id=first.id)
    assert [r.run_id for r in wider.runs] == [first.id]


def test_the_accuracy_ci_is_a_row_bootstrap(trained_store: Store, deployed: Deployment) -> None:
    """The multinomial shortcut agrees with resampling rows by hand."""
    done = score(trained_store, deployed.name, served())
    add(trained_store, deployed.name, truth())
    live = ground_truth.live_metrics(trained_store, deployed.name, resamples=4000)
    frame = results(trained_store, done.id).merge(truth(), on="customer_id")
    gain = (
        (frame["challenger_prediction"] == frame["churn"]).astype(float)
        - (frame["prediction"] == frame["churn"]).astype(float)
    ).to_numpy()
    rng = np.random.default_rng(5)
    diffs = gain[rng.integers(0, len(gain), size=(4000, len(gain)))].mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert live.overall.ci == pytest.approx((low, high), abs=0.006)


def diabetes(store: Store) -> tuple[Deployment, pd.DataFrame]:
    frame = datasets.demo_frame("diabetes")
    frame.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(frame))])
    dataset = datasets.register_frame(
        store, frame, name="diabetes", kind="upload", source="diabetes.csv", actor="tester"
    )
    trained = train(
        store,
        TrainRequest(
            dataset_id=dataset.id,
            target="progression",
            key_column="patient_id",
            algorithms=("linear", "random_forest"),
        ),
        actor="tester",
    )
    ids = {m.algorithm: m.id for m in trained.models}
    deployed = deployments.deploy(
        store,
        ids["linear"],
        "staging",
        name="diabetes-staging",
        challenger_id=ids["random_forest"],
        actor="tester",
    )
    return deployed, frame


def test_regression_live_mae_and_text_labels_refused(store: Store) -> None:
    deployed, frame = diabetes(store)
    done = score(store, deployed.name, frame.drop(columns=["progression"]))
    labels = frame[["patient_id", "progression"]]
    text = labels.astype({"progression": str})
    text.loc[[3, 7], "progression"] = ["high", "unknown"]
    with pytest.raises(
        InvalidInput,
        match="must be numbers for a regression: 2 rows hold text such as 'high', 'unknown'",
    ):
        add(store, deployed.name, text, key="patient_id", label="progression")
    assert nothing_stored(store)
    add(store, deployed.name, labels, key="patient_id", label="progression")
    live = ground_truth.live_metrics(store, deployed.name)
    joined = results(store, done.id).merge(labels, on="patient_id")
    assert live.metric == "mae"
    assert live.overall.main["mae"] == pytest.approx(
        skm.mean_absolute_error(joined["progression"], joined["prediction"]), abs=1e-6
    )
    other = skm.mean_absolute_error(joined["progression"], joined["challenger_prediction"])
    assert live.overall.challenger["mae"] == pytest.approx(other, abs=1e-6)
    assert live.overall.ci[0] <= live.overall.difference["mae"] <= live.overall.ci[1]


# ---------------------------------------------------------------------------- bad input
def test_labels_matching_no_prediction_are_refused(
    trained_store: Store, deployed: Deployment
) -> None:
    score(trained_store, deployed.name, served(100))
    wrong = pd.DataFrame({"customer_id": ["A1", "A2", "A3"], "churn": ["no", "yes", "no"]})
    with pytest.raises(
        InvalidInput, match="None of the 3 label keys in 'customer_id' matches a prediction"
    ) as caught:
        add(trained_store, deployed.name, wrong)
    assert "key column 'customer_id'" in caught.value.message
    assert nothing_stored(trained_store)


def test_classes_the_models_never_saw_are_named(trained_store: Store, deployed: Deployment) -> None:
    score(trained_store, deployed.name, served(100))
    labels = truth(100)
    labels.loc[:4, "churn"] = "maybe"
    labels.loc[5, "churn"] = "YES"
    with pytest.raises(
        InvalidInput, match="classes the models never saw: 'maybe' \\(5 rows\\), 'YES' \\(1 row\\)"
    ) as caught:
        add(trained_store, deployed.name, labels)
    assert "The models know: no, yes" in caught.value.hint
    assert nothing_stored(trained_store)


def test_duplicate_keys_are_refused_with_counts(trained_store: Store, deployed: Deployment) -> None:
    score(trained_store, deployed.name, served(100))
    labels = pd.concat([truth(100), truth(100)[:2], truth(100)[:1]])
    with pytest.raises(
        InvalidInput,
        match="2 keys appear more than once in 'customer_id': "
        "'C100000' \\(3x\\), 'C100001' \\(2x\\)",
    ):
        add(trained_store, deployed.name, labels, "labels.parquet")
    assert nothing_stored(trained_store)


def test_missing_columns_empty_keys_and_bad_sources(
    trained_store: Store, deployed: Deployment
) -> None:
    score(trained_store, deployed.name, served(100))
    with pytest.raises(InvalidInput, match="no column 'outcome'") as caught:
        add(trained_store, deployed.name, truth(100), label="outcome")
    assert "customer_id, churn" in caught.value.hint
    keyless = truth(100)
    keyless.loc[:2, "customer_id"] = None
    with pytest.raises(InvalidInput, match="3 of 100 labels have no key"):
        add(trained_store, deployed.name, keyless, "keyless.parquet")
    with pytest.raises(PipelineError):
        ground_truth.add_labels(
            trained_store,
            deployed.name,
            {"kind": "file", "path": "truth/none.csv"},
            "a",
            "b",
            actor="tester",
        )
    assert nothing_stored(trained_store)


def test_a_window_with_no_runs_and_a_run_with_zero_rows(
    trained_store: Store, deployed: Deployment
) -> None:
    with pytest.raises(InvalidInput, match="No predictions to match labels with"):
        add(trained_store, deployed.name, truth(100))
    done = score(trained_store, deployed.name, served(100))
    add(trained_store, deployed.name, truth(100))
    empty = score(
        trained_store,
        deployed.name,
        served(50),
        "e.parquet",
        transforms=[{"name": "none", "sql": "SELECT * FROM input WHERE false"}],
    )
    with pytest.raises(InvalidInput, match="0 rows"):
        ground_truth.live_metrics(trained_store, deployed.name, run_id=empty.id)
    with pytest.raises(InvalidInput, match="No runs to measure"):
        ground_truth.live_metrics(
            trained_store, deployed.name, start=datetime(2001, 1, 1), end=datetime(2001, 1, 2)
        )
    assert ground_truth.live_metrics(trained_store, deployed.name).runs[0].run_id == done.id


def test_live_metrics_without_labels_say_how_to_add_them(
    trained_store: Store, deployed: Deployment
) -> None:
    score(trained_store, deployed.name, served(100))
    with pytest.raises(InvalidInput, match="has no ground truth yet") as caught:
        ground_truth.live_metrics(trained_store, deployed.name)
    assert caught.value.step == Step("add-labels", "churn-staging")


# ---------------------------------------------------------------------------- CLI
def test_cli_labels_and_live(
    trained_store: Store, deployed: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    score(trained_store, deployed.name, served(300))
    path = write(trained_store, truth(300)[:200])
    added = run_json(
        capsys,
        "labels",
        "add",
        deployed.name,
        "--file",
        path,
        "--key",
        "customer_id",
        "--label",
        "churn",
    )
    assert added["counts"]["matched_labels"] == 200
    before = run_json(capsys, "live", deployed.name)
    # DuckDB's own read_csv reads the yes/no labels as booleans: they meet the yes/no
    # classes as the truth values they stand for, so the live metrics do not change.
    code, out, _ = run(
        capsys,
        "labels",
        "add",
        deployed.name,
        "--sql",
        f"SELECT * FROM read_csv('{path}')",
        "--key",
        "customer_id",
        "--label",
        "churn",
    )
    assert code == 0 and "200 match a prediction" in out and "100 of 300 predictions" in out
    listed = run_json(capsys, "labels", "list", deployed.name)
    assert len(listed) == 2 and listed[0]["key_column"] == "customer_id"
    live = run_json(capsys, "live", deployed.name)
    assert live["overall"]["rows"] == 200 and len(live["overall"]["ci"]) == 2
    assert live["overall"]["main"] == before["overall"]["main"]
    code, out, _ = run(capsys, "live", deployed.name)
    assert code == 0 and "accuracy (challenger - main, 95% CI)" in out
    bad = write(
        trained_store,
        pd.DataFrame({"customer_id": ["C100000"] * 2, "churn": ["no", "yes"]}),
        "bad.csv",
    )
    code, _, err = run(
        capsys,
        "labels",
        "add",
        deployed.name,
        "--file",
        bad,
        "--key",
        "customer_id",
        "--label",
        "churn",
    )
    assert code == 2 and "appear more than once" in err and "hint:" in err
    assert Path(trained_store.workspace.home / "truth").exists()
