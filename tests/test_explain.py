"""SHAP on real models and real runs: additivity for every algorithm, caching, global importance,
and every bad input of issue 5."""

from __future__ import annotations

import io
import json
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core import charts, cli, datasets, deployments, explain, registry, runs, worker
from core.entities import Deployment, Model, Run
from core.errors import ArtifactError, Conflict, InvalidInput, NotFound
from core.explainers import AGNOSTIC, ModelExplainer
from core.model_import import ImportRequest, import_model
from core.store import Store
from core.training import ALGORITHMS

EXACT = 1e-6
WINE = datasets.demo_frame("wine")


def additivity_error(explainer: ModelExplainer, frame: pd.DataFrame) -> float:
    a = explainer.explain(frame)
    return float(np.abs(a.base + a.values.sum(axis=1) - a.output).max())


def explainer_of(store: Store, model: Model) -> ModelExplainer:
    return ModelExplainer(registry.load_estimator(store, model), model.schema,
                          registry.background_sample(store, model))


# ---------------------------------------------------------------------------- additivity
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_base_plus_contributions_is_the_output_for_every_algorithm(
    every_algorithm: dict[str, Any], task: str, algorithm: str
) -> None:
    trained = every_algorithm[task]
    model = next(m for m in trained.result.models if m.algorithm == algorithm)
    explainer = explainer_of(trained.store, model)
    rows = trained.frame[model.schema.feature_names].iloc[:25]
    assert additivity_error(explainer, rows) < EXACT
    a = explainer.explain(rows)
    assert a.values.shape[:2] == (25, len(model.schema.features))  # original columns only
    estimator = registry.load_estimator(trained.store, model)
    if explainer.scale == "probability":
        assert np.allclose(a.output, estimator.predict_proba(rows))
    elif explainer.scale == "log-odds":
        assert np.allclose(1 / (1 + np.exp(-a.output[:, 0])), estimator.predict_proba(rows)[:, 1])
    elif explainer.scale == "value":
        assert np.allclose(a.output[:, 0], estimator.predict(rows))
    expected = {"linear": "LinearExplainer", "random_forest": "TreeExplainer",
                "hist_gradient_boosting": "TreeExplainer", "gradient_boosting": "TreeExplainer"}
    if (task, algorithm) == ("multiclass", "gradient_boosting"):
        # shap 0.51's TreeExplainer refuses multiclass GradientBoostingClassifier.
        assert explainer.name == AGNOSTIC and "only supported for binary" in explainer.note
    else:
        assert explainer.name == expected[algorithm] and explainer.note == ""


def _imported(store: Store, estimator: Any, name: str) -> Model:
    dataset = datasets.add_demo(store, "wine")
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return import_model(store, ImportRequest(
        filename=f"{name}.joblib", data=buffer.getvalue(), dataset_id=dataset.id,
        target="cultivar", trust_pickle=True, experiment=name))


@pytest.mark.parametrize(("estimator", "name"), [
    (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), "LinearExplainer"),
    (RandomForestClassifier(n_estimators=10, random_state=0), "TreeExplainer"),
])
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
    assert explainer.note == ("shap has no exact explainer for KNeighborsClassifier. "
                              "The model-agnostic explainer is used instead.")
    assert additivity_error(explainer, X.iloc[:2]) < EXACT  # Kernel SHAP keeps the sum too


# ---------------------------------------------------------------------------- runs
@pytest.fixture
def deployed(trained_store: Store) -> Deployment:
    """churn-staging: gradient boosting as main, the linear model as challenger."""
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(trained_store)}
    return deployments.deploy(trained_store, by_algorithm["gradient_boosting"], "staging",
                              challenger_id=by_algorithm["linear"], actor="ana")


def run_by_worker(store: Store, name: str, **enqueue: Any) -> Run:
    queued = runs.enqueue_run(store, name, **enqueue)
    assert worker.run_once(store, "test-worker")
    return runs.get_run(store, queued.id)


@pytest.fixture
def run(trained_store: Store, deployed: Deployment) -> Run:
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded", done.error
    return done


def source(store: Store, deployment: Deployment) -> pd.DataFrame:
    return pd.read_parquet(store.workspace.home / deployment.pipeline["source"]["path"])


def test_a_row_by_its_key_is_explained_on_original_columns(trained_store: Store,
                                                           run: Run) -> None:
    [e] = explain.explain_rows(trained_store, run.id, ["C100003"])
    assert (e.key, e.row, e.which, e.explainer, e.scale) == (
        "C100003", 3, "main", "TreeExplainer", "log-odds")
    assert e.class_ == e.prediction  # the predicted class by default
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT
    features = {c.feature for c in e.contributions}
    assert features == {"age", "tenure_months", "monthly_charges", "support_tickets",
                        "contract", "internet_service", "payment_method"}
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
        {c.feature: c.contribution for c in shown.contributions})


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
    failed = run_by_worker(trained_store, deployed.name,
                           source_override={"kind": "file", "path": "nowhere/*.parquet"})
    assert failed.status == "failed"
    with pytest.raises(Conflict) as caught:
        explain.explain_rows(trained_store, failed.id, ["C100003"])
    assert caught.value.message.startswith(f"Run {failed.id} failed without results: ")
    assert not (trained_store.workspace.runs_dir / failed.id).exists()  # no importance step


def test_a_run_with_zero_rows(trained_store: Store, deployed: Deployment) -> None:
    deployments.update_pipeline(trained_store, deployed.name, {
        **deployed.pipeline,
        "transforms": [{"name": "none", "sql": "SELECT * FROM input WHERE age < 0"}]})
    empty = run_by_worker(trained_store, deployed.name)
    assert empty.status == "failed" and not empty.rows_out
    for call in (lambda: explain.explain_rows(trained_store, empty.id, ["C100003"]),
                 lambda: explain.global_importance(trained_store, empty.id)):
        with pytest.raises(Conflict, match="failed without results: The pipeline gave no rows"):
            call()


def test_a_row_with_missing_features_is_explained_with_a_note(trained_store: Store,
                                                              deployed: Deployment) -> None:
    frame = source(trained_store, deployed).head(20).copy()
    frame.loc[0, ["age", "contract"]] = None
    path = trained_store.workspace.home / "incoming" / "gaps.parquet"
    path.parent.mkdir()
    frame.to_parquet(path, index=False)
    done = run_by_worker(trained_store, deployed.name,
                         source_override={"kind": "file", "path": "incoming/gaps.parquet"})
    [e] = explain.explain_rows(trained_store, done.id, [frame.loc[0, "customer_id"]])
    shown = {c.feature: c.value for c in e.contributions}
    assert shown["age"] is None and shown["contract"] is None
    assert "Missing in this row: " in e.note and "imputed" in e.note
    assert abs(e.base_value + sum(c.contribution for c in e.contributions) - e.output) < EXACT


def test_explaining_asks_for_a_few_rows(trained_store: Store, run: Run) -> None:
    with pytest.raises(InvalidInput, match="Explain between 1 and 100 rows at a time"):
        explain.explain_rows(trained_store, run.id, [])


# ---------------------------------------------------------------------------- global
def test_the_worker_stores_global_importance_after_a_run(trained_store: Store,
                                                         run: Run) -> None:
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


def test_importance_is_computing_until_its_file_exists(trained_store: Store,
                                                       deployed: Deployment) -> None:
    queued = runs.enqueue_run(trained_store, deployed.name)
    claimed = runs.claim_next_run(trained_store, "w")
    assert claimed is not None and claimed.id == queued.id
    done = runs.execute_run(trained_store, claimed, "w")  # without the worker's step
    assert explain.get_importance(trained_store, done.id) is None
    explain.after_run(trained_store, done)
    assert explain.get_importance(trained_store, done.id) is not None


def test_a_failing_importance_step_keeps_the_run_succeeded(trained_store: Store,
                                                           deployed: Deployment) -> None:
    main = registry.get_model(trained_store, deployed.current.main_model_id)  # type: ignore[union-attr]
    (trained_store.workspace.artifact_dir(main.id) / "background.parquet").unlink(
        missing_ok=True)
    explain._explainers.clear()
    done = run_by_worker(trained_store, deployed.name)
    assert done.status == "succeeded"
    failed = explain.get_importance(trained_store, done.id, "main")
    assert failed is not None and failed.error is not None
    assert failed.error.startswith("Global importance could not be computed: ")
    assert explain.get_importance(trained_store, done.id, "challenger").error is None


# ---------------------------------------------------------------------------- chart and CLI
def test_the_chart_folds_the_smallest_features_and_keeps_the_sum() -> None:
    contributions = tuple(explain.Contribution(f"f{i}", float(i), (-1) ** i * (20 - i) / 10)
                          for i in range(15))
    e = explain.Explanation("run", "main", 0, None, "m", "linear", "LinearExplainer", "value",
                            None, 1.0, None, 0.5, 0.5 + sum(c.contribution for c in contributions),
                            contributions)
    bars = charts.explanation_bars(e)
    assert [label for label, _ in bars[:2]] == ["f0 = 0", "f1 = 1"]
    assert bars[-1][0] == "other 3 features" and len(bars) == 13
    assert sum(v for _, v in bars) == pytest.approx(e.output - e.base_value)
    colors = charts.explanation_figure(e).data[0].marker.color
    assert colors[-1] == charts.POSITIVE and colors[-2] == charts.NEGATIVE  # f0 +, f1 -


def test_cli_explain_json_and_errors(capsys: pytest.CaptureFixture[str], trained_store: Store,
                                     run: Run) -> None:
    assert cli.main(["explain", run.id, "--row", "C100003", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key"] == "C100003" and shown["explainer"] == "TreeExplainer"
    total = shown["base_value"] + sum(c["contribution"] for c in shown["contributions"])
    assert total == pytest.approx(shown["output"], abs=EXACT)
    assert cli.main(["explain", run.id, "--row", "C100003", "--which", "challenger",
                     "--class", "yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["class_"] == "yes"
    assert cli.main(["explain", run.id, "--row", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: No row with customer_id 'nope'.\n")
    assert cli.main(["explain", run.id, "--global", "--sample", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] <= 31
