"""Column reports, identifier detection, task guessing, schemas and training profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.engine import profiles
from core.entities import ModelSchema


# ---------------------------------------------------------------------------- identifiers
@pytest.mark.parametrize(
    ("series", "expected"),
    [
        (pd.Series([f"C{100000 + i}" for i in range(50)], name="customer_id"), True),
        (pd.Series([f"row-{i}" for i in range(50)], name="reference"), True),
        (pd.Series(range(1, 51), name="row"), True),  # an integer range
        (pd.Series([5, 17, 42, 99, 3], name="user_id"), True),  # id-like name
        (pd.Series([5, 17, 42, 99, 3], name="score"), False),  # unique numbers, not an id
        (pd.Series(np.linspace(0.1, 9.9, 50), name="amount"), False),  # unique floats
        (pd.Series(np.arange(50, dtype=float), name="row_id"), False),  # floats never ids
        (pd.Series(["a", "b", "a"], name="code"), False),  # repeats
        (pd.Series(["a", "b", None], name="code"), False),  # missing
        (pd.Series([True, False], name="flag"), False),
        (pd.Series(["only"], name="id"), False),  # one row says nothing
    ],
    ids=[
        "customer_id",
        "text",
        "int-range",
        "id-name",
        "int-unique",
        "float-unique",
        "float-id-name",
        "repeats",
        "missing",
        "bool",
        "one-row",
    ],
)
def test_is_identifier(series: pd.Series, expected: bool) -> None:
    assert profiles.is_identifier(series) is expected


def test_describe_columns_on_churn(churn_small: pd.DataFrame) -> None:
    reports = {r.name: r for r in profiles.describe_columns(churn_small)}
    assert list(reports) == list(churn_small.columns)
    assert reports["customer_id"].is_identifier
    assert reports["customer_id"].n_unique == len(churn_small)
    assert [n for n, r in reports.items() if r.is_identifier] == ["customer_id"]
    assert (reports["age"].kind, reports["contract"].kind) == ("numeric", "categorical")
    assert reports["age"].missing == int(churn_small["age"].isna().sum()) > 0
    assert reports["contract"].n_unique == 3 and reports["contract"].missing == 0


@pytest.mark.parametrize(
    ("series", "kind"),
    [
        (pd.Series([1, 2]), "numeric"),
        (pd.Series([1.5, None]), "numeric"),
        (pd.Series([True, False]), "numeric"),
        (pd.Series(["a", None]), "categorical"),
        (pd.Series(pd.to_datetime(["2024-01-01", "2024-02-01"])), "datetime"),
        (pd.Series([None, None], dtype=object), "empty"),
        (pd.Series([np.nan, np.nan]), "empty"),
    ],
)
def test_feature_kind(series: pd.Series, kind: str) -> None:
    assert profiles.feature_kind(series) == kind


# ---------------------------------------------------------------------------- task guess
RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["yes", "no"] * 50, "binary"),
        ([0, 1] * 50, "binary"),
        ([1.0, 2.0, None] * 30, "binary"),  # missing values are not a class
        (["a", "b", "c"] * 30, "multiclass"),
        ([0, 1, 2, 3, 4] * 20, "multiclass"),
        ([1.0, 2.0, 3.0] * 30, "multiclass"),  # whole-valued floats, few of them
        (list(range(100)), "regression"),  # integers, too many values to be classes
        (list(RNG.normal(size=100)), "regression"),
        ([0.5, 1.5, 2.5] * 30, "regression"),  # few values but not whole numbers
    ],
)
def test_guess_task(values: list[object], task: str) -> None:
    assert profiles.guess_task(pd.Series(values)) == task


# ---------------------------------------------------------------------------- profiles
def test_numeric_profile_edges_sorted_and_fractions_sum_to_one() -> None:
    values = pd.Series([*RNG.exponential(3.0, size=995), None, None, None, None, None])
    profile = profiles.numeric_profile(values)
    edges, fractions = profile["edges"], profile["fractions"]
    assert edges == sorted(edges) and len(set(edges)) == len(edges)
    assert len(edges) == profiles.N_BINS + 1 and len(fractions) == len(edges) - 1
    assert sum(fractions) == pytest.approx(1.0)
    assert all(f == pytest.approx(0.1, abs=0.01) for f in fractions)  # quantile bins
    assert profile["count"] == 1000 and profile["missing_rate"] == pytest.approx(0.005)
    assert profile["min"] == edges[0] and profile["max"] == edges[-1]
    assert profile["mean"] == pytest.approx(values.mean())


def test_numeric_profile_of_few_distinct_values_merges_edges() -> None:
    profile = profiles.numeric_profile(pd.Series([0, 0, 0, 0, 1, 1, 5] * 10))
    assert profile["edges"] == sorted(set(profile["edges"]))
    assert sum(profile["fractions"]) == pytest.approx(1.0)
    constant = profiles.numeric_profile(pd.Series([3.0] * 10))
    assert (constant["edges"], constant["fractions"]) == ([3.0], [1.0])
    empty = profiles.numeric_profile(pd.Series([None, None], dtype=float))
    assert (empty["edges"], empty["fractions"], empty["min"]) == ([], [], None)
    assert empty["missing_rate"] == 1.0


def test_categorical_profile_frequencies() -> None:
    profile = profiles.categorical_profile(pd.Series(["a", "a", "b", None, "a", "c", "b", "a"]))
    assert profile["frequencies"] == {"a": 4 / 7, "b": 2 / 7, "c": 1 / 7}
    assert list(profile["frequencies"]) == ["a", "b", "c"]  # most frequent first
    assert profile["missing_rate"] == 1 / 8 and profile["count"] == 8
    assert profile["n_categories"] == 3 and profile["other_fraction"] == 0.0


def test_categorical_profile_keeps_the_most_frequent_by_name() -> None:
    values = [f"v{i}" for i in range(profiles.MAX_CATEGORIES + 10)] + ["v0"] * 20
    profile = profiles.categorical_profile(pd.Series(values))
    assert len(profile["frequencies"]) == profiles.MAX_CATEGORIES
    assert profile["n_categories"] == profiles.MAX_CATEGORIES + 10
    assert profile["other_fraction"] > 0
    assert sum(profile["frequencies"].values()) + profile["other_fraction"] == pytest.approx(1)
    assert next(iter(profile["frequencies"])) == "v0"


def test_schema_and_profile_of_churn(churn_small: pd.DataFrame) -> None:
    features = ["age", "contract", "payment_method"]
    schema = profiles.build_schema(
        churn_small, features, "churn", "binary", [np.str_("no"), np.str_("yes")], "customer_id"
    )
    assert schema.feature_names == features
    kinds = {f.name: (f.kind, f.categories) for f in schema.features}
    assert kinds["age"] == ("numeric", ())
    assert kinds["contract"] == ("categorical", ("month-to-month", "one-year", "two-year"))
    assert "nan" not in kinds["payment_method"][1] and len(kinds["payment_method"][1]) == 4
    assert schema.classes == ("no", "yes") and type(schema.classes[0]) is str
    assert ModelSchema.from_dict(schema.to_dict()) == schema

    predictions = pd.Series(["no", "yes", "no"])
    profile = profiles.build_profile(churn_small, schema, predictions)
    assert profile["n_rows"] == len(churn_small) and profile["bins"] == profiles.N_BINS
    assert list(profile["features"]) == features
    assert profile["features"]["age"]["kind"] == "numeric"
    assert profile["features"]["age"]["missing_rate"] > 0
    assert profile["features"]["contract"]["kind"] == "categorical"
    assert profile["prediction"]["frequencies"] == {"no": 2 / 3, "yes": 1 / 3}


def test_regression_profile_describes_predictions_numerically() -> None:
    frame = pd.DataFrame({"x": np.arange(30.0)})
    schema = profiles.build_schema(frame, ["x"], "y", "regression", [], None)
    profile = profiles.build_profile(frame, schema, pd.Series(np.arange(30.0) * 2))
    assert profile["prediction"]["kind"] == "numeric"
    assert sum(profile["prediction"]["fractions"]) == pytest.approx(1.0)
