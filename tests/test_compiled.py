"""The compiled preprocessing (core/engine/compiled.py) gives sklearn's matrix bit for bit, so
the API's numpy path predicts what a run predicts, on the data users bring."""

from __future__ import annotations

import os
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler

from core import serving
from core.engine import model_input, predict
from core.engine.compiled import compile_pipeline
from core.engine.profiles import build_schema
from core.entities import ModelSchema
from core.errors import InvalidInput
from core.training import make_pipeline

CAFE = unicodedata.normalize("NFD", "café")  # decomposed, as a Mac exports it


def training_rows(n: int = 400) -> pa.RecordBatch:
    rng = np.random.default_rng(7)
    age = rng.normal(40, 12, n)
    age[::17] = np.nan
    spend = rng.exponential(300, n)
    spend[5] = np.inf  # a file with an overflowed cell
    # 48 cities and "missing" fill the 49 columns one-hot gives before grouping the rest
    many = [f"city-{i % 48}" if i < 350 else f"rare-{i}" for i in range(n)]
    return pa.RecordBatch.from_pydict(
        {
            "âge": age,
            "spend": spend,
            "visits": rng.integers(0, 9, n),
            "member": rng.choice(["yes", "no"], n).tolist(),
            "town": [CAFE if i % 3 else "Zürich" for i in range(n)],
            "city": [None if i % 29 == 0 else c for i, c in enumerate(many)],
        }
    )


ODD_ROWS = {
    "âge": [None, float("inf"), -1e30, 41.5, 0.0],
    "spend": [float("-inf"), None, 12.5, 1e-300, 3.0],
    "visits": [None, 3.0, 100.0, 1.0, 2.0],
    "member": [None, "YES", "no", " Yes ", "maybe"],  # any spelling of a truth value
    "town": [None, "café", "Zürich", "", "München"],  # composed, known, empty, unseen
    "city": ["city-1", "rare-399", "city-0", None, "nowhere"],  # frequent, rare, unseen
}


def fitted(algorithm: str, task: str) -> tuple[Pipeline, ModelSchema]:
    batch = training_rows()
    rng = np.random.default_rng(3)
    target = {
        "binary": rng.integers(0, 2, batch.num_rows),  # a 0/1 label
        "multiclass": rng.choice(["low", "mid", "high"], batch.num_rows),
        "regression": rng.normal(100, 20, batch.num_rows),
    }[task]
    features = batch.schema.names
    kind = "regression" if task == "regression" else "classification"
    frame = batch.to_pandas()
    classes = sorted(set(target.tolist())) if kind == "classification" else []
    schema = build_schema(frame, features, "y", kind, classes, None)
    model_frame = model_input.finite(model_input.to_model_frame(batch, schema))
    pipe = make_pipeline(schema, algorithm, seed=1)
    predict.serial(pipe.fit(model_frame, target))  # as registry.load_estimator does
    return pipe, schema


ALGORITHMS = ["linear", "random_forest", "hist_gradient_boosting", "gradient_boosting"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_compiled_predictions_equal_sklearn_bit_for_bit(algorithm: str, task: str) -> None:
    pipe, schema = fitted(algorithm, task)
    compiled = compile_pipeline(pipe, schema, training_rows())
    assert compiled is not None, "every training pipeline compiles"
    odd = pa.RecordBatch.from_pydict(ODD_ROWS)
    many_odd = pa.RecordBatch.from_pydict({k: v * 8 for k, v in ODD_ROWS.items()})  # > FEW_ROWS
    for batch in (training_rows(60), odd, many_odd):
        fast = serving.score(compiled, pipe, batch, schema, "main").scored
        slow = serving.score(None, pipe, batch, schema, "main").scored
        assert fast.prediction.tobytes() == slow.prediction.tobytes()
        assert np.array_equal(fast.confidence, slow.confidence, equal_nan=True)
        if slow.proba is not None:
            assert fast.proba is not None
            assert fast.proba.tobytes() == slow.proba.tobytes()
            assert fast.classes == slow.classes


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_batch_shared_among_threads_predicts_the_same_bits(algorithm: str, task: str) -> None:
    """A tree model's large batch is split among threads (predict.RowThreads), on the compiled
    path and on sklearn's DataFrame path, and joins to the one thread's bits; a linear model's
    matrix product is never split."""
    pipe, schema = fitted(algorithm, task)
    compiled = compile_pipeline(pipe, schema, training_rows())
    rows = training_rows(300)
    odd = pa.RecordBatch.from_pydict({k: v * 20 for k, v in ODD_ROWS.items()})
    threads = predict.RowThreads(3, min_rows=50, idle=lambda: 3)  # as if 3 cores were idle
    try:
        for batch in (rows, odd):
            for path in (compiled, None):
                alone = serving.score(path, pipe, batch, schema, "main").scored
                shared = serving.score(path, pipe, batch, schema, "main", threads).scored
                assert shared.prediction.tobytes() == alone.prediction.tobytes()
                assert np.array_equal(shared.confidence, alone.confidence, equal_nan=True)
                assert (shared.proba is None) == (alone.proba is None)
                if alone.proba is not None:
                    assert shared.proba is not None
                    assert shared.proba.tobytes() == alone.proba.tobytes()
                    assert shared.codes is not None and alone.codes is not None
                    assert shared.codes.tolist() == alone.codes.tolist()
        assert threads.shared == (0 if algorithm == "linear" else 4)
        # fewer rows than min_rows stay on the caller's thread
        serving.score(compiled, pipe, training_rows(49), schema, "main", threads)
        assert threads.shared == (0 if algorithm == "linear" else 4)
    finally:
        threads.close()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_boosting_split_by_trees_gives_sklearns_bits(task: str) -> None:
    """A histogram boosting batch shared among threads is split by trees
    (boosting.OnThreads): each thread walks some trees for every row and the outputs are
    added in sklearn's order, so predictions and probabilities are sklearn's bits, with
    missing, infinite and unseen values among the rows, for any number of parts."""
    from core.engine import boosting

    pipe, schema = fitted("hist_gradient_boosting", task)
    compiled = compile_pipeline(pipe, schema, training_rows())
    assert compiled is not None and isinstance(compiled.model, boosting.Trees)
    odd = pa.RecordBatch.from_pydict({k: v * 40 for k, v in ODD_ROWS.items()})
    matrix = compiled.transform(model_input.to_model_arrays(odd, schema), odd.num_rows)
    final = pipe[-1]
    for parts in (2, 3, 7):
        threads = predict.RowThreads(parts, min_rows=10, idle=lambda n=parts: n)
        try:
            alone = predict.score(final, matrix, schema.task, "main")
            shared = threads.score(compiled.model, matrix, schema.task, "main")
        finally:
            threads.close()
        assert threads.shared == 1
        assert shared.scored.prediction.tobytes() == alone.prediction.tobytes()
        if alone.proba is not None:
            assert shared.scored.proba is not None
            assert shared.scored.proba.tobytes() == alone.proba.tobytes()
        on = boosting.OnThreads(compiled.model, parts, lambda tasks: [t() for t in tasks])
        assert on.raw(matrix).tobytes() == final._raw_predict(matrix).tobytes()


def test_a_batch_stays_on_one_thread_when_no_other_core_is_idle() -> None:
    pipe, schema = fitted("hist_gradient_boosting", "binary")
    busy = predict.RowThreads(2, min_rows=10, idle=lambda: 1)
    try:
        alone = serving.score(None, pipe, training_rows(100), schema, "main").scored
        got = serving.score(None, pipe, training_rows(100), schema, "main", busy)
        assert got.scored.proba is not None and alone.proba is not None
        assert got.scored.proba.tobytes() == alone.proba.tobytes()
        assert busy.shared == 0 and got.helper_cpu == 0.0
    finally:
        busy.close()
    assert 1 <= predict.idle_cores() <= len(os.sched_getaffinity(0))


def test_a_part_that_fails_fails_the_batch_with_the_models_message() -> None:
    """A part scored on a pool thread that the model refuses raises in the caller, as one
    thread would (InvalidInput, naming the model), and the threads stay usable."""
    pipe, schema = fitted("random_forest", "binary")
    threads = predict.RowThreads(2, min_rows=10, idle=lambda: 2)
    try:
        frame = model_input.finite(model_input.to_model_frame(training_rows(40), schema))
        good = np.asarray(pipe[:-1].transform(frame))
        wrong = good[:, :-1]  # a column short: the forest refuses every part
        with pytest.raises(InvalidInput, match="main model could not predict"):
            threads.score(pipe[-1], wrong, "classification", "main")
        assert threads.score(pipe[-1], good, "classification", "main").scored.proba is not None
        assert threads.shared == 1
    finally:
        threads.close()


def test_the_threads_come_from_the_setting_or_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serving.THREADS_ENV, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert serving.batch_threads() == cores
    assert serving.batch_threads(processes=cores * 2) == 1  # never fewer than one
    monkeypatch.setenv(serving.THREADS_ENV, "3")
    assert serving.batch_threads(processes=2) == 3
    for wrong in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(serving.THREADS_ENV, wrong)
        with pytest.raises(InvalidInput, match="MODELDECK_API_THREADS is") as caught:
            serving.batch_threads()
        assert "whole number of threads" in caught.value.message


def test_unseen_and_rare_categories_share_the_infrequent_column() -> None:
    pipe, schema = fitted("linear", "binary")
    compiled = compile_pipeline(pipe, schema, training_rows())
    assert compiled is not None
    odd = pa.RecordBatch.from_pydict(ODD_ROWS)
    matrix = compiled.transform(model_input.to_model_arrays(odd, schema), odd.num_rows)
    names = list(pipe[:-1].get_feature_names_out())
    rare = names.index("cat__city_infrequent_sklearn")
    assert matrix[:, rare].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]  # rare-399 and "nowhere"
    unseen_town = [i for i, n in enumerate(names) if n.startswith("cat__town_")]
    assert matrix[4, unseen_town].sum() == 0.0  # München: no town column at all
    assert np.isfinite(matrix).all()  # inf and missing numbers were imputed


def test_a_pipeline_it_does_not_know_is_served_by_sklearn() -> None:
    pipe, schema = fitted("linear", "binary")
    cat = pipe.steps[0][1].transformers_[1][1]
    cat.steps[1] = ("onehot", OrdinalEncoder().fit(np.array([["a"], ["b"]])))
    assert compile_pipeline(pipe, schema) is None
    assert compile_pipeline(pipe.steps[-1][1], schema) is None  # a bare estimator


class _Doubling(StandardScaler):
    """A scaler that looks standard but is not: the compiled copy would differ."""

    def transform(self, X, copy=None):  # type: ignore[no-untyped-def]
        return super().transform(X, copy=copy) * 2


def test_a_compiled_pipeline_that_differs_from_sklearn_is_not_used() -> None:
    pipe, schema = fitted("linear", "binary")
    num = pipe.steps[0][1].transformers_[0][1]
    scaler = num.steps[1][1]
    twisted = _Doubling()
    twisted.__dict__.update(scaler.__dict__)
    num.steps[1] = ("scale", twisted)
    assert compile_pipeline(pipe, schema) is not None  # the structure compiles
    assert compile_pipeline(pipe, schema, training_rows()) is None  # the check catches it
    rows = training_rows(20)
    scored = predict.score(pipe, model_input.to_model_frame(rows, schema), "classification", "m")
    assert len(scored.prediction) == 20  # still served, by sklearn


def test_probability_rows_name_each_class() -> None:
    proba = np.array([[0.25, 0.75], [1.0, 0.0]])
    assert serving.probability_rows(["no", "yes"], proba) == [
        {"no": 0.25, "yes": 0.75},
        {"no": 1.0, "yes": 0.0},
    ]
    three = np.array([[0.2, 0.3, 0.5]])
    assert serving.probability_rows(["a", "b", "c"], three) == [{"a": 0.2, "b": 0.3, "c": 0.5}]
    assert all(type(v) is float for v in serving.probability_rows(["no", "yes"], proba)[0].values())


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("algorithm", ["hist_gradient_boosting", "linear"])
def test_a_few_rows_on_the_fast_path_give_sklearns_bits_row_by_row(
    algorithm: str, task: str
) -> None:
    """A few rows skip sklearn's call per tree (core/engine/boosting.py) or a linear model's
    input checks (core/engine/linear.py): each row alone, and the odd rows together, predict
    exactly what sklearn predicts."""
    from core.engine import boosting, linear

    pipe, schema = fitted(algorithm, task)
    compiled = compile_pipeline(pipe, schema, training_rows())
    fast = {
        "hist_gradient_boosting": boosting.Trees,
        "linear": linear.LinearRegressor if task == "regression" else linear.LinearClassifier,
    }[algorithm]
    assert compiled is not None and type(compiled.model) is fast
    rows = training_rows(40)
    batches = [rows.slice(i, 1) for i in range(rows.num_rows)]
    batches.append(pa.RecordBatch.from_pydict(ODD_ROWS))  # missing, inf, unseen together
    for batch in batches:
        assert batch.num_rows <= boosting.FEW_ROWS
        fast = serving.score(compiled, pipe, batch, schema, "main").scored
        slow = serving.score(None, pipe, batch, schema, "main").scored
        assert fast.prediction.tobytes() == slow.prediction.tobytes()
        if slow.proba is not None:
            assert fast.proba is not None and fast.proba.tobytes() == slow.proba.tobytes()


def test_trees_that_differ_from_sklearn_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk is used only once it gave sklearn's bits on the check rows: one threshold moved
    and the model answers itself."""
    from core.engine import boosting

    real = boosting.Trees

    class Moved(real):  # type: ignore[misc, valid-type]
        def __init__(self, model: object) -> None:
            super().__init__(model)
            self.threshold = self.threshold + 1e-3  # a leaf's is never read

    pipe, schema = fitted("hist_gradient_boosting", "binary")
    monkeypatch.setattr(boosting, "Trees", Moved)
    compiled = compile_pipeline(pipe, schema, training_rows())
    assert compiled is not None
    assert compiled.model is pipe.steps[-1][1], "sklearn's own model, not the walk"


def test_a_linear_path_that_differs_from_sklearn_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unchecked linear path is used only once it gave sklearn's bits: one row's score off
    by 1e-9 and the model answers itself."""
    from core.engine import linear

    real = linear.LinearClassifier.decision

    def off(self: linear.LinearClassifier, matrix: np.ndarray) -> np.ndarray:
        scores = real(self, matrix)
        scores[-1] += 1e-9
        return scores

    pipe, schema = fitted("linear", "binary")
    monkeypatch.setattr(linear.LinearClassifier, "decision", off)
    compiled = compile_pipeline(pipe, schema, training_rows())
    assert compiled is not None
    assert compiled.model is pipe.steps[-1][1], "sklearn's own model, not the unchecked path"


def test_categorical_splits_and_other_models_are_left_to_sklearn() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from core.engine import boosting

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 4, 200), rng.normal(size=200)])
    y = (x[:, 0] % 2 == 0).astype(int)
    categorical = HistGradientBoostingClassifier(categorical_features=[0], max_iter=5).fit(x, y)
    assert boosting.fast(categorical) is None
    assert boosting.fast(LogisticRegression().fit(x, y)) is None
    numeric = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    assert isinstance(boosting.fast(numeric), boosting.Trees)


def test_only_plain_linear_models_take_the_unchecked_path() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import (
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
    )

    from core.engine import linear

    class Subclass(LogisticRegression):
        pass

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    assert type(linear.fast(LogisticRegression().fit(x, y))) is linear.LinearClassifier
    assert type(linear.fast(Ridge().fit(x, x[:, 1]))) is linear.LinearRegressor
    assert type(linear.fast(LinearRegression().fit(x, x[:, 1]))) is linear.LinearRegressor
    for other in (
        Subclass().fit(x, y),  # its own methods may differ
        SGDClassifier(loss="log_loss").fit(x, y),
        HistGradientBoostingClassifier(max_iter=5).fit(x, y),
        LogisticRegression(),  # not fitted
    ):
        assert linear.fast(other) is None
