"""SHAP on real models and real runs: additivity for every algorithm, caching, global importance,
and every bad input of issue 5."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core import datasets, deployments, execution, explain, registry, runs, scoring
from core.cli import main as cli
from core.engine.explainers import AGNOSTIC, ModelExplainer
from core.entities import Deployment, Model, Run
from core.errors import ArtifactError, Conflict, DatasetError, InvalidInput, NotFound
from core.model_import import ImportRequest, import_model
from core.scoring import proba_name
from core.store import Store
from core.training import ALGORITHMS
from core.ui import charts
from core.worker import loop as worker
from tests.cli_helpers import run as run_cli
from tests.cli_helpers import run_json
from tests.files import unfit_source

EXACT = 1e-6
WINE = datasets.demo_frame("wine")


def additivity_error(explainer: ModelExplainer, frame: pd.DataFrame) -> float:
    a = explainer.explain(frame)
    return float(np.abs(a.base + a.values.sum(axis=1) - a.output).max())


def explainer_of(store: Store, model: Model) -> ModelExplainer:
    return ModelExplainer(
        registry.load_estimator(store, model),
        model.schema,
        registry.background_sample(store, model),
    )


# ---------------------------------------------------------------------------- additivity
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_base_plus_contributions_is_the_output_for_every_algorithm(
    every_algorithm: dict[str, Any], task: str, algorithm: str
) -> None:
    trained = every_algorithm[task]
    model = next(m for m in trained.result.models if m.algorithm == algorithm)
    explainer = explainer_of(trained.store, model)
    n = 25 if explainer.name != AGNOSTIC else 5  # the model-agnostic explainer is the slow one
    rows = trained.frame[model.schema.feature_names].iloc[:n]
    assert additivity_error(explainer, rows) < EXACT
    a = explainer.explain(rows)
    assert a.values.shape[:2] == (n, len(model.schema.features))  # original columns only
    estimator = registry.load_estimator(trained.store, model)
    if explainer.scale == "probability":
        assert np.allclose(a.output, estimator.predict_proba(rows))
    elif explainer.scale == "log-odds":
        assert np.allclose(1 / (1 + np.exp(-a.output[:, 0])), estimator.predict_proba(rows)[:, 1])
    elif explainer.scale == "value":
        assert np.allclose(a.output[:, 0], estimator.predict(rows))
    expected = {
        "linear": "LinearExplainer",
        "random_forest": "TreeExplainer",
        "hist_gradient_boosting": "TreeExplainer",
        "gradient_boosting": "TreeExplainer",
    }
    if (task, algorithm) == ("multiclass", "gradient_boosting"):
        # shap 0.51's TreeExplainer refuses multiclass GradientBoostingClassifier.
        assert explainer.name == AGNOSTIC and "only supported for binary" in explainer.note
    else:
        assert explainer.name == expected[algorithm] and explainer.note == ""


def _imported(store: Store, estimator: Any, name: str) -> Model:
    dataset = datasets.add_demo(store, "wine", actor="tester")
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return import_model(
        store,
        ImportRequest(
            filename=f"{name}.joblib",
            data=buffer.getvalue(),
            dataset_id=dataset.id,
            target="cultivar",
            trust_pickle=True,
            experiment=name,
        ),
        actor="tester",
    )


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), "LinearExplainer"),
        (RandomForestClassifier(n_estimators=10, random_state=0), "TreeExplainer"),
    ],
)
def test_imported_models_are_additive_too(store: Store, estimator: Any, name: str) -> None:
    X, y = WINE.drop(columns="cultivar"), WINE["cultivar"]
    model = _imported(store, estimator.fit(X, y), name)
    explainer = explainer_of(store, model)
    assert explainer.name == name
    assert additivity_error(explainer, X.iloc[:20]) < EXACT


def test_a_model_shap_cannot_explain_falls_back_and_says_so(store: Store) -> None:
    X, y = WINE.drop(columns="cultivar"), WINE["cultivar"]
    model = _imported(store, KNeighborsClassifier().fit(X, y), "knn")
    explainer = explainer_of(store, model)
    assert explainer.name == AGNOSTIC and explainer.scale == "probability"
    assert explainer.note == (
        "shap has no exact explainer for KNeighborsClassifier. "
        "The model-agnostic explainer is used instead."
    )
    assert additivity_error(explainer, X.iloc[:2]) < EXACT  # Kernel SHAP keeps the sum too


# ---------------------------------------------------------------------------- runs
@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    """churn-staging: gradient boosting as main, the linear model as challenger."""
    return deploy_churn("gradient_boosting", challenger="linear", actor="ana")


def run_by_worker(store: Store, name: str, **enqueue: Any) -> Run:
    queued = runs.enqueue_run(store, name, **{"actor": "tester", **enqueue})
    assert worker.run_once(store, "test-worker")
    return runs.get_run(store, queued.id)


@pytest.fixture
def run(trained_store: Store, deployed: Deployment) -> Run:
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded", done.error
    return done


def source(store: Store, deployment: Deployment) -> pd.DataFrame:
    return pd.read_parquet(store.workspace.home / deployment.pipeline["source"]["path"])


def test_a_row_by_its_key_is_explained_on_original_columns(trained_store: Store, run: Run) -> None:
    [e] = explain.explain_rows(trained_store, run.id, ["C100003"])
    assert (e.key, e.row, e.which, e.explainer, e.scale) == (
        "C100003",
        3,
        "main",
        "TreeExplainer",
        "log-odds",
    )
    assert e.class_ == e.prediction  # the predicted class by default
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT
    features = {c.feature for c in e.contributions}
    assert features == {
        "age",
        "tenure_months",
        "monthly_charges",
        "support_tickets",
        "contract",
        "internet_service",
        "payment_method",
    }
    sizes = [abs(c.contribution) for c in e.contributions]
    assert sizes == sorted(sizes, reverse=True)
    row = source(trained_store, explain_deployment(trained_store)).iloc[3]
    shown = {c.feature: c.value for c in e.contributions}
    assert shown["contract"] == row["contract"]
    # log-odds of the class shown, and the row's probability of it beside
    assert e.probability == pytest.approx(1 / (1 + np.exp(-e.output)))


def explain_deployment(store: Store) -> Deployment:
    return deployments.list_deployments(store)[0]


def test_binary_other_class_is_the_negated_log_odds(trained_store: Store, run: Run) -> None:
    [shown] = explain.explain_rows(trained_store, run.id, ["C100003"])
    other = "yes" if shown.class_ == "no" else "no"
    [flipped] = explain.explain_rows(trained_store, run.id, ["C100003"], class_=other)
    assert flipped.class_ == other and flipped.output == pytest.approx(-shown.output)
    assert {c.feature: -c.contribution for c in flipped.contributions} == pytest.approx(
        {c.feature: c.contribution for c in shown.contributions}
    )


def test_challenger_rows_and_row_numbers(trained_store: Store, run: Run) -> None:
    first, second = explain.explain_rows(trained_store, run.id, [5, 2], "challenger", by="row")
    assert (first.row, second.row) == (5, 2)
    assert first.explainer == "LinearExplainer" and first.scale == "log-odds"
    assert first.model_id == run.summary["challenger"]["model_id"]


def test_a_reopen_is_a_cache_hit(trained_store: Store, run: Run) -> None:
    [first] = explain.explain_rows(trained_store, run.id, ["C100007"])
    cached = list((trained_store.workspace.runs_dir / run.id / "explanations").glob("*.json"))
    assert [p.name.startswith("main-7-") for p in cached] == [True]
    # Without the model file and with no explainer in memory, only the cache can answer.
    model = registry.get_model(trained_store, run.summary["main"]["model_id"])
    (trained_store.workspace.home / model.artifact_path).unlink()
    explain._explainers.clear()
    assert explain.explain_rows(trained_store, run.id, ["C100007"]) == [first]
    with pytest.raises(ArtifactError, match="is missing"):
        explain.explain_rows(trained_store, run.id, ["C100008"])


def test_a_key_not_in_the_run(trained_store: Store, run: Run) -> None:
    with pytest.raises(NotFound) as caught:
        explain.explain_rows(trained_store, run.id, ["C100003", "nope"])
    assert caught.value.message == "No row with customer_id 'nope'."
    assert caught.value.hint == (f"Run {run.id} has 600 rows; pick one from the results table.")
    with pytest.raises(NotFound, match="No row number '9999'"):
        explain.explain_rows(trained_store, run.id, [9999], by="row")
    with pytest.raises(NotFound, match="No class 'maybe'"):
        explain.explain_rows(trained_store, run.id, ["C100003"], class_="maybe")


def test_a_failed_run_cannot_be_explained(trained_store: Store, deployed: Deployment) -> None:
    failed = run_by_worker(
        trained_store, deployed.name, source_override=unfit_source(trained_store)
    )
    assert failed.status == "failed"
    with pytest.raises(Conflict) as caught:
        explain.explain_rows(trained_store, failed.id, ["C100003"])
    assert caught.value.message.startswith(f"Run {failed.id} failed without results: ")
    assert not (trained_store.workspace.runs_dir / failed.id).exists()  # no importance step


def test_a_run_with_zero_rows(trained_store: Store, deployed: Deployment) -> None:
    deployments.update_pipeline(
        trained_store,
        deployed.name,
        {
            **deployed.pipeline,
            "transforms": [{"name": "none", "sql": "SELECT * FROM input WHERE age < 0"}],
        },
        actor="tester",
    )
    empty = run_by_worker(trained_store, deployed.name)
    assert empty.status == "failed" and not empty.rows_out
    for call in (
        lambda: explain.explain_rows(trained_store, empty.id, ["C100003"]),
        lambda: explain.global_importance(trained_store, empty.id),
    ):
        with pytest.raises(Conflict, match="failed without results: The pipeline gave no rows"):
            call()


def test_a_row_with_missing_features_is_explained_with_a_note(
    trained_store: Store, deployed: Deployment
) -> None:
    frame = source(trained_store, deployed).head(20).copy()
    frame.loc[0, ["age", "contract"]] = None
    path = trained_store.workspace.home / "incoming" / "gaps.parquet"
    path.parent.mkdir()
    frame.to_parquet(path, index=False)
    done = run_by_worker(
        trained_store,
        deployed.name,
        source_override={"kind": "file", "path": "incoming/gaps.parquet"},
    )
    [e] = explain.explain_rows(trained_store, done.id, [frame.loc[0, "customer_id"]])
    shown = {c.feature: c.value for c in e.contributions}
    assert shown["age"] is None and shown["contract"] is None
    assert "Missing in this row: " in e.note and "imputed" in e.note
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT


def test_a_row_with_every_feature_missing(trained_store: Store, deployed: Deployment) -> None:
    frame = source(trained_store, deployed).head(20).copy()
    features = sorted(CHURN_FEATURES)
    frame[features] = frame[features].astype(object)
    frame.loc[4, features] = None
    path = trained_store.workspace.home / "incoming" / "blank.parquet"
    path.parent.mkdir()
    frame.to_parquet(path, index=False)
    done = run_by_worker(
        trained_store,
        deployed.name,
        source_override={"kind": "file", "path": "incoming/blank.parquet"},
    )
    assert done.status == "succeeded", done.error
    [e] = explain.explain_rows(trained_store, done.id, [frame.loc[4, "customer_id"]])
    assert all(c.value is None for c in e.contributions) and len(e.contributions) == 7
    assert e.note == (
        f"Missing in this row: {', '.join(c.feature for c in e.contributions)}; "
        "the model's pipeline imputed them, and their contributions are those of "
        "the imputed values."
    )
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT
    labels = charts.explanation_bars(e)
    assert all(label.endswith(" = missing") for label, _ in labels)


def test_a_run_of_a_model_shap_cannot_explain_names_the_fallback(store: Store) -> None:
    X, y = WINE.drop(columns="cultivar"), WINE["cultivar"]
    model = _imported(store, KNeighborsClassifier().fit(X, y), "knn")
    name = deployments.deploy(store, model.id, "staging", actor="tester").name
    runs.enqueue_run(store, name, actor="tester")
    claimed = execution.claim_next_run(store, "w")
    assert claimed is not None
    done = execution.execute_run(store, claimed, "w")  # without the worker's (slow) global step
    [e] = explain.explain_rows(store, done.id, [7], by="row")
    assert e.explainer == AGNOSTIC and e.scale == "probability"
    assert e.note == (
        "shap has no exact explainer for KNeighborsClassifier. "
        "The model-agnostic explainer is used instead."
    )
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT
    scored = pd.read_parquet(runs.result_path(store.workspace, done.id))
    assert e.output == pytest.approx(scored.loc[7, proba_name(e.class_)])  # the probability
    found = explain.global_importance(store, done.id, sample=4)
    assert found.explainer == AGNOSTIC and found.rows == 4
    assert found.note.startswith("shap has no exact explainer for KNeighborsClassifier.")


def test_explaining_asks_for_a_few_rows(trained_store: Store, run: Run) -> None:
    with pytest.raises(InvalidInput, match="Explain between 1 and 100 rows at a time"):
        explain.explain_rows(trained_store, run.id, [])


# ---------------------------------------------------------------------------- global
def test_the_worker_stores_global_importance_after_a_run(trained_store: Store, run: Run) -> None:
    for which in ("main", "challenger"):
        importance = explain.get_importance(trained_store, run.id, which)
        assert importance is not None and importance.error is None
        assert importance.rows == 600 and importance.model_id == run.summary[which]["model_id"]
        values = [v for _, v in importance.features]
        assert len(values) == 7 and min(values) >= 0 and values == sorted(values, reverse=True)
    assert explain.get_importance(trained_store, run.id, "main").explainer == "TreeExplainer"


def test_the_sample_is_stratified_by_predicted_class(trained_store: Store, run: Run) -> None:
    importance = explain.global_importance(trained_store, run.id, "main", sample=40)
    assert 38 <= importance.rows <= 42
    table = explain.sample_rows(trained_store, run, "main", 40, True)
    counts = pd.Series(table.column("prediction").to_pylist()).value_counts()
    balance = run.summary["main"]["class_counts"]
    assert set(counts.index) == set(balance)  # every predicted class is in the sample
    stored = json.loads(explain.importance_path(trained_store, run.id, "main").read_text())
    assert stored["rows"] == importance.rows


def test_importance_is_computing_until_its_file_exists(
    trained_store: Store, deployed: Deployment
) -> None:
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    claimed = execution.claim_next_run(trained_store, "w")
    assert claimed is not None and claimed.id == queued.id
    done = execution.execute_run(trained_store, claimed, "w")  # without the worker's step
    assert explain.get_importance(trained_store, done.id) is None
    explain.after_run(trained_store, done)
    assert explain.get_importance(trained_store, done.id) is not None


def test_a_failing_importance_step_keeps_the_run_succeeded(
    trained_store: Store, deployed: Deployment
) -> None:
    # The linear model needs its background rows (a tree explainer does not read them).
    linear = registry.get_model(trained_store, deployed.current.challenger_model_id)  # type: ignore[union-attr,arg-type]
    (trained_store.workspace.artifact_dir(linear.id) / "background.parquet").unlink()
    explain._explainers.clear()
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded"
    failed = explain.get_importance(trained_store, done.id, "challenger")
    assert failed is not None and failed.error is not None
    assert failed.error.startswith("Global importance could not be computed: ")
    assert explain.get_shap_sample(trained_store, done.id, "challenger") is None
    assert explain.get_importance(trained_store, done.id, "main").error is None


# ---------------------------------------------------------------------------- chart and CLI
def test_the_chart_folds_the_smallest_features_and_keeps_the_sum() -> None:
    contributions = tuple(
        explain.Contribution(f"f{i}", float(i), (-1) ** i * (20 - i) / 10) for i in range(15)
    )
    e = explain.Explanation(
        "run",
        "main",
        0,
        None,
        "m",
        "linear",
        "LinearExplainer",
        "value",
        None,
        1.0,
        None,
        0.5,
        0.5 + sum(c.contribution for c in contributions),
        contributions,
    )
    bars = charts.explanation_bars(e)
    assert [label for label, _ in bars[:2]] == ["f0 = 0", "f1 = 1"]
    assert bars[-1][0] == "other 3 features" and len(bars) == 13
    assert sum(v for _, v in bars) == pytest.approx(e.output - e.base_value)
    fig = charts.explanation_figure(e)
    scale = fig["layer"][0]["encoding"]["color"]["scale"]
    colour = dict(zip(scale["domain"], scale["range"], strict=True))
    colors = [colour[r["direction"]] for r in charts.rows_of(fig)]  # top down
    assert colors[0] == charts.POSITIVE and colors[1] == charts.NEGATIVE  # f0 +, f1 -


def test_cli_explain_json_and_errors(
    capsys: pytest.CaptureFixture[str], trained_store: Store, run: Run
) -> None:
    assert cli.main(["--user", "tester", "explain", run.id, "--row", "C100003", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == "C100003" and shown["explainer"] == "TreeExplainer"
    total = shown["base_value"] + sum(c["contribution"] for c in shown["contributions"])
    assert total == pytest.approx(shown["output"], abs=EXACT)
    assert (
        cli.main(
            [
                "--user",
                "tester",
                "explain",
                run.id,
                "--row",
                "C100003",
                "--which",
                "challenger",
                "--class",
                "yes",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["class_"] == "yes"
    assert cli.main(["--user", "tester", "explain", run.id, "--row", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: No row with customer_id 'nope'.\n")
    assert (
        cli.main(["--user", "tester", "explain", run.id, "--global", "--sample", "30", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["rows"] <= 31


# ---------------------------------------------------------------------------- per-row sample
CHURN_FEATURES = {
    "age",
    "tenure_months",
    "monthly_charges",
    "support_tickets",
    "contract",
    "internet_service",
    "payment_method",
}
CHURN_CATEGORIES = {"contract", "internet_service", "payment_method"}


def test_the_global_step_keeps_each_sampled_rows_shap_values(
    trained_store: Store, run: Run
) -> None:
    importance = explain.get_importance(trained_store, run.id, "main")
    sample = explain.get_shap_sample(trained_store, run.id, "main")
    assert importance is not None and sample is not None
    assert sample.rows == importance.rows == 600 and sample.scale == "log-odds"
    assert set(sample.features) == CHURN_FEATURES and sample.categorical == CHURN_CATEGORIES
    matrix = np.column_stack([sample.shap(f) for f in sample.features])
    assert matrix.shape == (600, 7)
    # Each row is additive on the scale shown, and the bars are the sample's mean |SHAP|.
    assert (
        np.abs(sample.column("_base") + matrix.sum(axis=1) - sample.column("_output")).max() < EXACT
    )
    assert dict(importance.features) == pytest.approx(
        {f: float(np.abs(sample.shap(f)).mean()) for f in sample.features}
    )
    assert set(sample.column("_class")) == {"yes"}  # binary: the positive class's log-odds
    # The values are the rows' own, and a row's SHAP values are its local explanation's.
    rows = sample.column("_row")
    frame = source(trained_store, explain_deployment(trained_store))
    contract = sample.values("contract")
    assert contract[10] == frame.loc[rows[10], "contract"]
    [e] = explain.explain_rows(trained_store, run.id, [int(rows[10])], class_="yes", by="row")
    assert {c.feature: c.contribution for c in e.contributions} == pytest.approx(
        {f: float(sample.shap(f)[10]) for f in sample.features}, abs=EXACT
    )


def test_multiclass_samples_explain_each_rows_predicted_class(
    every_algorithm: dict[str, Any],
) -> None:
    trained = every_algorithm["multiclass"]
    model = next(m for m in trained.result.models if m.algorithm == "random_forest")
    explainer = explainer_of(trained.store, model)
    frame = trained.frame[model.schema.feature_names].iloc[:30].reset_index(drop=True)
    predictions = explainer.estimator.predict(frame).tolist()
    result, table = explain._explain_sample(
        explainer, frame, predictions, np.arange(30), lambda f, t: None
    )
    assert table.column("_class").to_pylist() == [str(p) for p in predictions]
    a = explainer.explain(frame)
    k = [list(a.outputs).index(p) for p in predictions]
    assert table.column("_output").to_numpy() == pytest.approx(a.output[np.arange(30), k])
    assert set(result.by_class) == {str(c) for c in a.outputs}


def test_the_beeswarm_shows_every_sampled_row_of_the_top_features(
    trained_store: Store, run: Run
) -> None:
    sample = explain.get_shap_sample(trained_store, run.id, "main")
    assert sample is not None
    fig = charts.beeswarm_figure(sample, "main", top=3)
    top = sample.ranked()[:3]
    assert charts.tick_texts(fig, "y") == top[::-1]  # the strongest on top
    points = charts.rows_of(fig)
    assert len(points) == 3 * sample.rows
    for position, feature in enumerate(top[::-1]):
        mine = [p for p in points if round(p["y"]) == position]
        assert all(abs(p["y"] - position) < 0.41 and p["feature"] == feature for p in mine)
        assert sorted(p["shap"] for p in mine) == pytest.approx(sorted(sample.shap(feature)))
    colours = [p["colour"] for p in points if p["colour"] is not None]
    assert min(colours) == 0.0 and max(colours) == 1.0
    # A category is coloured by its code and named in the tooltip.
    points = charts.rows_of(charts.beeswarm_figure(sample, "main", top=7))
    by_contract = {
        f"contract = {p['value']}": p["colour"] for p in points if p["feature"] == "contract"
    }
    assert by_contract == {
        "contract = month-to-month": 0.0,
        "contract = one-year": 0.5,
        "contract = two-year": 1.0,
    }
    missing = {p["feature"] for p in points if p["colour"] is None}  # drawn grey
    assert missing == {"age", "payment_method"}  # the features with gaps


def test_value_colours_of_numbers_and_categories() -> None:
    scaled, texts = charts.normalised([1.0, None, 3.0, 2.0, 100.0], categorical=False)
    assert np.isnan(scaled[1]) and texts[1] == "missing"
    assert scaled[0] == 0.0 and scaled[4] == 1.0 and 0 < scaled[3] < scaled[2] < 1
    scaled, texts = charts.normalised(["b", "a", None, "c"], categorical=True)
    assert scaled[:2].tolist() == [0.5, 0.0] and np.isnan(scaled[2]) and scaled[3] == 1.0


def test_the_dependence_view_plots_value_against_contribution(
    trained_store: Store, run: Run
) -> None:
    sample = explain.get_shap_sample(trained_store, run.id, "main")
    assert sample is not None
    fig = charts.dependence_figure(sample, "tenure_months", "main: tenure_months")
    values, shap_values = sample.values("tenure_months"), sample.shap("tenure_months")
    present = [i for i, v in enumerate(values) if v is not None]
    assert [r["x"] for r in charts.rows_of(fig)] == [values[i] for i in present]
    assert [r["shap"] for r in charts.rows_of(fig)] == pytest.approx(
        [shap_values[i] for i in present]
    )
    assert charts.axis_title(fig, "x") == "tenure_months"
    fig = charts.dependence_figure(sample, "contract", "main: contract", colour_by="age")
    xs = [r["x"] for r in charts.rows_of(fig)]
    assert set(xs) <= {*(str(v) for v in sample.values("contract")), "missing"}
    assert len(xs) == sample.rows  # a missing category is plotted as "missing"
    coloured, grey = fig["layer"][0]["layer"]
    assert coloured["encoding"]["color"]["legend"]["title"] == "age"
    assert grey["mark"]["color"] == "#adb5bd"  # rows without an age are grey
    missing_age = sum(v is None for v in sample.values("age"))
    assert sum(r["colour"] is None for r in charts.rows_of(fig)) == missing_age


# ---------------------------------------------------------------------------- model holdout
def _by_algorithm(store: Store, algorithm: str) -> Model:
    return next(m for m in registry.list_models(store) if m.algorithm == algorithm)


def test_the_holdout_is_rebuilt_exactly(trained_store: Store) -> None:
    model = _by_algorithm(trained_store, "gradient_boosting")
    rows, which = explain.evaluation_rows(trained_store, model)
    assert which == "holdout" and len(rows) == model.metrics["holdout_rows"] == 120
    dataset = datasets.list_datasets(trained_store)[0]
    labels = datasets.load_frame(trained_store, dataset).loc[rows.index, "churn"]
    assert (rows["churn"] == labels).all()
    estimator = registry.load_estimator(trained_store, model)
    accuracy = float((estimator.predict(rows[model.schema.feature_names]) == labels).mean())
    assert accuracy == pytest.approx(model.metrics["accuracy"])  # the same rows as at training


def test_model_importance_is_computed_once_and_stored(trained_store: Store) -> None:
    model = _by_algorithm(trained_store, "gradient_boosting")
    assert explain.get_model_importance(trained_store, model) is None
    seen: list[float] = []
    found = explain.model_importance(
        trained_store, model, sample=50, progress=lambda f, t: seen.append(f)
    )
    assert (found.which, found.model_id, found.scale) == ("holdout", model.id, "log-odds")
    assert found.note == ""  # the rebuilt rows give the recorded accuracy
    assert 48 <= found.rows <= 52 and seen[-1] == 1.0
    folder = trained_store.workspace.artifact_dir(model.id)
    assert (folder / "importance_holdout.json").exists()
    sample = explain.get_model_shap_sample(trained_store, model)
    assert sample is not None and sample.rows == found.rows
    rows, _ = explain.evaluation_rows(trained_store, model)
    assert set(sample.column("_row")) <= set(rows.index)
    matrix = np.column_stack([sample.shap(f) for f in sample.features])
    assert (
        np.abs(sample.column("_base") + matrix.sum(axis=1) - sample.column("_output")).max() < EXACT
    )
    # A later call reads the file: it works without the model file or an explainer in memory.
    (trained_store.workspace.home / model.artifact_path).unlink()
    explain._explainers.clear()
    assert explain.model_importance(trained_store, model) == found
    with pytest.raises(InvalidInput, match="at least 1"):
        explain.model_importance(trained_store, model, sample=0)


def test_model_importance_needs_the_dataset_snapshot(trained_store: Store) -> None:
    model = _by_algorithm(trained_store, "linear")
    dataset = datasets.list_datasets(trained_store)[0]
    (trained_store.workspace.home / dataset.snapshot_path).unlink()
    with pytest.raises(DatasetError) as caught:
        explain.model_importance(trained_store, model)
    assert caught.value.message == (
        f"The snapshot of dataset 'churn' is missing, so the rows "
        f"model {model.id} was measured on cannot be rebuilt."
    )
    assert explain.get_model_importance(trained_store, model) is None  # nothing half-stored


def test_an_imported_model_is_explained_on_its_reference_rows(store: Store) -> None:
    X, y = WINE.drop(columns="cultivar"), WINE["cultivar"]
    model = _imported(
        store, RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), "forest"
    )
    found = explain.model_importance(store, model, sample=40)
    assert found.which == "reference" and found.explainer == "TreeExplainer"
    assert 38 <= found.rows <= 42 and found.by_class.keys() == {str(c) for c in set(y)}


def test_cli_explain_a_models_holdout(
    capsys: pytest.CaptureFixture[str], trained_store: Store
) -> None:
    model = _by_algorithm(trained_store, "linear")
    shown = run_json(capsys, "explain", "--model", model.id, "--sample", "30")
    assert (shown["which"], shown["model_id"], shown["explainer"]) == (
        "holdout",
        model.id,
        "LinearExplainer",
    )
    assert 28 <= shown["rows"] <= 32 and set(shown["features"]) == CHURN_FEATURES
    code, out, _ = run_cli(capsys, "explain", "--model", model.id)  # stored: read, not recomputed
    assert code == 0 and out.startswith(f"holdout: mean |SHAP| (log-odds) over {shown['rows']}")
    code, _, err = run_cli(capsys, "explain", "--model", "mdl_nope")
    assert code == 2 and err.startswith("error: No model 'mdl_nope'.")
    code, _, err = run_cli(capsys, "explain")
    assert code == 2 and err.startswith("error: Say which run to explain.\n")


def test_rows_that_do_not_give_the_recorded_accuracy_are_flagged(trained_store: Store) -> None:
    model = _by_algorithm(trained_store, "gradient_boosting")
    rows, _ = explain.evaluation_rows(trained_store, model)
    predictions = (
        registry.load_estimator(trained_store, model)
        .predict(rows[model.schema.feature_names])
        .tolist()
    )
    assert explain._check_accuracy(model, rows["churn"], predictions, "") == ""
    moved = dataclasses.replace(model, metrics={**model.metrics, "accuracy": 0.5})
    note = explain._check_accuracy(moved, rows["churn"], predictions, "")
    assert note == (
        f"These rows give accuracy {model.metrics['accuracy']:.4f}, not the recorded "
        "0.5000: they may not be exactly the rows the metrics were measured on."
    )


# ---------------------------------------------------------------------------- kept samples
def _bottom_k(frame: pd.DataFrame, quotas: dict[str, int]) -> list[int]:
    """By brute force: per predicted class, the rows with the smallest row keys."""
    keyed = frame.assign(
        key=scoring.row_keys(frame["_row"].to_numpy()), group=frame["prediction"].astype(str)
    )
    return sorted(
        int(r)
        for g, n in quotas.items()
        for r in keyed[keyed["group"] == g].nsmallest(n, "key")["_row"]
    )


def test_the_sampler_keeps_the_bottom_k_of_each_class_across_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "_row": np.arange(5000),
            "prediction": rng.choice(["no", "yes", "maybe"], 5000, p=[0.7, 0.28, 0.02]),
            "x": rng.normal(size=5000),
        }
    )
    sampler = scoring.Sampler(tmp_path / "sample_main.parquet", size=200)
    codes = {"no": 0, "yes": 1, "maybe": 2}
    for start in range(0, 5000, 700):  # uneven batches
        part = frame.iloc[start : start + 700]
        sampler.add(
            pa.RecordBatch.from_pandas(part, preserve_index=False),
            part["prediction"].map(codes).to_numpy(),
            start,
        )
    info = sampler.commit()
    kept = pd.read_parquet(tmp_path / "sample_main.parquet")
    counts = frame["prediction"].value_counts().to_dict()
    quotas = scoring.stratified_quotas(counts, 200)
    assert sum(quotas.values()) == 200 and info == {
        "size": 200,
        "rows": 200,
        "path": "sample_main.parquet",
    }
    assert kept["_row"].tolist() == _bottom_k(frame, quotas)
    assert kept["prediction"].value_counts().to_dict() == quotas


def test_a_smaller_global_sample_is_taken_exactly_from_the_kept_one(
    trained_store: Store, run: Run
) -> None:
    info = run.summary["main"]["sample"]
    assert info["rows"] == run.rows_out  # 600 rows: all kept
    table = explain.sample_rows(trained_store, run, "main", 40, True)
    results = pd.read_parquet(runs.result_path(trained_store.workspace, run.id))
    quotas = scoring.stratified_quotas(
        results["prediction"].astype(str).value_counts().to_dict(), 40
    )
    assert table.column("_row").to_pylist() == _bottom_k(results, quotas)
    # A run scored before samples were kept: the scan gives a sample all the same.
    older = replace(
        run,
        summary={
            **run.summary,
            "main": {k: v for k, v in run.summary["main"].items() if k != "sample"},
        },
    )
    scanned = explain.sample_rows(trained_store, older, "main", 40, True)
    assert 38 <= scanned.num_rows <= 42
    assert set(scanned.column("prediction").to_pylist()) == set(results["prediction"].astype(str))
