"""Reading a table's columns: feature kinds, identifier detection, task guess, schema, profile.

The training profile is the reference for drift and input quality later: per numeric feature
its quantile bin edges and the training share in each bin, per categorical feature its category
frequencies, plus missing rates and the holdout prediction distribution.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.entities import FeatureSchema, ModelSchema, Task

N_BINS = 10
MAX_CATEGORIES = 50  # categories kept by name in a profile; the rest count as "other"
_ID_NAME = re.compile(r"(^id$|_id$|^id_|uuid|guid|(^|_)key$)", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnReport:
    """What the training form needs to know about one column."""

    name: str
    dtype: str
    kind: str  # numeric | categorical | datetime | empty
    n_unique: int
    missing: int
    is_identifier: bool


def feature_kind(series: pd.Series) -> str:
    """numeric, categorical, datetime or empty (all values missing)."""
    if series.isna().all():
        return "empty"
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    return "categorical"


def is_identifier(series: pd.Series) -> bool:
    """Identifier-like: unique per row and textual, or integer with an id-like name or a range."""
    n = len(series)
    if n < 2 or series.isna().any() or series.nunique() != n:
        return False
    if (
        pd.api.types.is_float_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
    ):
        return False
    if pd.api.types.is_integer_dtype(series):
        steps = np.diff(np.sort(series.to_numpy()))
        return bool(_ID_NAME.search(str(series.name))) or bool((steps == 1).all())
    return True


def describe_columns(frame: pd.DataFrame) -> list[ColumnReport]:
    """One report per column, in order."""
    return [
        ColumnReport(
            name=str(name),
            dtype=str(frame[name].dtype),
            kind=feature_kind(frame[name]),
            n_unique=int(frame[name].nunique()),
            missing=int(frame[name].isna().sum()),
            is_identifier=is_identifier(frame[name]),
        )
        for name in frame.columns
    ]


def guess_task(target: pd.Series) -> Task:
    """binary for two values, multiclass for few discrete values or text, else regression."""
    values = target.dropna()
    n_unique = values.nunique()
    if n_unique == 2:
        return "binary"
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "multiclass"
    is_whole = pd.api.types.is_integer_dtype(values) or bool((values % 1 == 0).all())
    if is_whole and n_unique <= 20 and n_unique <= max(3, len(values) // 10):
        return "multiclass"
    return "regression"


def build_schema(
    frame: pd.DataFrame,
    features: list[str],
    target: str,
    task: Task,
    classes: list[Any],
    key_column: str | None,
) -> ModelSchema:
    """The input schema from the training rows: names, kinds, dtypes, known categories."""
    columns = []
    for name in features:
        series = frame[name]
        kind: Literal["numeric", "categorical"] = (
            "numeric" if feature_kind(series) == "numeric" else "categorical"
        )
        categories = sorted(map(str, series.dropna().unique())) if kind == "categorical" else []
        columns.append(FeatureSchema(name, kind, str(series.dtype), tuple(categories)))
    return ModelSchema(tuple(columns), target, task, tuple(plain(c) for c in classes), key_column)


def plain(value: Any) -> Any:
    """A JSON-safe Python scalar for numpy values."""
    return value.item() if isinstance(value, np.generic) else value


def plain_number(x: float) -> str:
    """A number as a person reads it: about 4 significant digits, thousands separated, never
    scientific notation (42,390 and 0.00012, not 4.239e+04 and 1.2e-04). The one rule for
    every number the app, the CLI and reports show."""
    if x == 0 or not math.isfinite(x):
        return str(0 if x == 0 else x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    decimals = max(0, 3 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}".rstrip("0").rstrip(".")


def numeric_profile(series: pd.Series) -> dict[str, Any]:
    """Quantile bin edges (inner edges; below/above range buckets are implied) and shares."""
    values = pd.to_numeric(series, errors="coerce").astype(float)
    present = values.dropna()
    edges: list[float] = []
    if len(present):
        quantiles = np.quantile(present, np.linspace(0, 1, N_BINS + 1))
        edges = [float(e) for e in np.unique(quantiles)]
    if len(edges) >= 2:
        counts, _ = np.histogram(present, bins=edges)
        fractions = (counts / max(len(present), 1)).tolist()
    else:
        fractions = [1.0] if len(present) else []
    return {
        "kind": "numeric",
        "count": len(values),
        "missing_rate": float(values.isna().mean()) if len(values) else 0.0,
        "min": float(present.min()) if len(present) else None,
        "max": float(present.max()) if len(present) else None,
        "mean": float(present.mean()) if len(present) else None,
        "std": float(present.std(ddof=0)) if len(present) else None,
        "edges": edges,
        "fractions": [float(f) for f in fractions],
    }


def categorical_profile(series: pd.Series) -> dict[str, Any]:
    """Category shares (the most frequent MAX_CATEGORIES by name, the rest as `other`)."""
    present = series.dropna().astype(str)
    shares = present.value_counts(normalize=True)
    kept = shares.head(MAX_CATEGORIES)
    return {
        "kind": "categorical",
        "count": len(series),
        "missing_rate": float(series.isna().mean()) if len(series) else 0.0,
        "n_categories": len(shares),
        "frequencies": {str(k): float(v) for k, v in kept.items()},
        "other_fraction": float(shares.iloc[MAX_CATEGORIES:].sum()),
    }


def build_profile(
    frame: pd.DataFrame, schema: ModelSchema, predictions: pd.Series | None = None
) -> dict[str, Any]:
    """The training profile of `frame` for the schema's features (and holdout predictions)."""
    features = {
        f.name: numeric_profile(frame[f.name])
        if f.kind == "numeric"
        else categorical_profile(frame[f.name])
        for f in schema.features
    }
    profile: dict[str, Any] = {"n_rows": len(frame), "bins": N_BINS, "features": features}
    if predictions is not None:
        profile["prediction"] = prediction_profile(predictions, schema.task)
    return profile


def prediction_profile(predictions: pd.Series, task: Task) -> dict[str, Any]:
    """The distribution of a model's predictions: bins for regression, class shares otherwise."""
    return (
        numeric_profile(predictions) if task == "regression" else categorical_profile(predictions)
    )
