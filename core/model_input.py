"""Model input: does a table fit a model's schema, the model frame from a batch, input quality.

Shared by batch runs (through core/pipeline.py) and real-time serving: both check columns
against the model schema, coerce a batch to what the fitted pipeline expects, and score each
row's quality against the training profile.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.entities import ModelSchema
from core.errors import SchemaMismatch

EXPECTED = {"numeric": "numeric (a number or boolean)", "categorical": "categorical (text)"}


@dataclass(frozen=True)
class SchemaCheck:
    """Input columns against a model schema. `problems` empty means predictable."""

    missing: tuple[str, ...]                       # model features absent from the input
    mismatched: tuple[tuple[str, str, str], ...]   # (column, expected kind, found dtype)
    extra: tuple[str, ...]                         # input columns the model ignores (kept)

    @property
    def is_ok(self) -> bool:
        return not self.missing and not self.mismatched

    def message(self) -> str:
        """One sentence per problem, naming each column, expected vs found ("" when ok)."""
        sentences = []
        for name in self.missing:
            close = difflib.get_close_matches(name, self.extra, n=1, cutoff=0.8) or [
                c for c in self.extra if c.lower() == name.lower()]
            guess = f" (the input has '{close[0]}')" if close else ""
            sentences.append(f"Column '{name}' is missing from the input{guess}.")
        for name, expected, found in self.mismatched:
            sentences.append(f"Column '{name}' should be {EXPECTED.get(expected, expected)} "
                             f"but is {found}.")
        return " ".join(sentences)

    def raise_for_problems(self) -> None:
        """Raise SchemaMismatch (message names every column) unless is_ok."""
        if not self.is_ok:
            raise SchemaMismatch(
                f"The input does not fit the model's schema. {self.message()}",
                "Give the model the columns it needs. In a pipeline, add, rename or cast "
                "them with a transform, e.g. SELECT * REPLACE (TRY_CAST(age AS DOUBLE) AS "
                "age) FROM input.")


def _value_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _is_number(dtype: pa.DataType) -> bool:
    return (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
            or pa.types.is_decimal(dtype) or pa.types.is_boolean(dtype)
            or pa.types.is_null(dtype))


def _is_text(dtype: pa.DataType) -> bool:
    return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
            or pa.types.is_string_view(dtype))


def _is_opaque(dtype: pa.DataType) -> bool:
    """Types with no text form a category could take."""
    return (pa.types.is_nested(dtype) or pa.types.is_binary(dtype)
            or pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype)
            or pa.types.is_binary_view(dtype))


def _blank_to_null(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    trimmed = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _first_non_number(column: pa.Array | pa.ChunkedArray) -> str | None:
    """The first text value that is not a number, or None when all are numbers or blank."""
    values = _blank_to_null(column)
    try:
        pc.cast(values, pa.float64())
        return None
    except pa.ArrowInvalid:
        text = values.to_pandas()
        bad = text[pd.to_numeric(text, errors="coerce").isna() & text.notna()]
        return str(bad.iloc[0]) if len(bad) else None


def _type_problem(kind: str, dtype: pa.DataType,
                  sample: pa.Array | pa.ChunkedArray | None) -> str | None:
    """What is wrong with a column of `dtype` for a feature of `kind`, or None."""
    dtype = _value_type(dtype)
    if kind != "numeric":
        return str(dtype) if _is_opaque(dtype) else None
    if _is_number(dtype):
        return None
    if _is_text(dtype):
        bad = _first_non_number(sample) if sample is not None else None
        return f"text with non-numeric values such as '{bad}'" if bad is not None else None
    return str(dtype)


def check_schema(columns: pa.Schema, schema: ModelSchema,
                 sample: pa.Table | pa.RecordBatch | None = None) -> SchemaCheck:
    """Compare input columns with the model's features (numeric needs a numeric/bool type).

    A text column for a numeric feature passes when its values are numbers: give `sample`
    (e.g. the first batch) to have them checked here; `to_model_frame` checks every batch.
    """
    names = columns.names
    wanted = set(schema.feature_names)
    missing = tuple(f.name for f in schema.features if f.name not in names)
    mismatched = []
    for feature in schema.features:
        if feature.name in missing:
            continue
        found = columns.field(names.index(feature.name)).type
        values = (sample.column(sample.schema.names.index(feature.name))
                  if sample is not None else None)
        problem = _type_problem(feature.kind, found, values)
        if problem is not None:
            mismatched.append((feature.name, feature.kind, problem))
    extra = tuple(n for n in dict.fromkeys(names) if n not in wanted)
    return SchemaCheck(missing, tuple(mismatched), extra)


class _Unfit(Exception):
    """A column that cannot be coerced to its feature's kind; args[0] describes it."""


def _as_numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    dtype = _value_type(column.type)
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, dtype)
    if _is_number(dtype):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if _is_text(dtype):
        try:
            return pc.cast(_blank_to_null(column), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            raise _Unfit(f"text with non-numeric values such as "
                         f"'{_first_non_number(column)}'") from None
    raise _Unfit(str(dtype))


def _as_text(column: pa.Array | pa.ChunkedArray) -> pd.Series:
    dtype = _value_type(column.type)
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, dtype)
    if _is_opaque(dtype):
        raise _Unfit(str(dtype))
    if pa.types.is_boolean(dtype):
        column = pc.if_else(column, "True", "False")  # as str() spells them in training
    elif not pa.types.is_string(dtype):
        column = pc.cast(column, pa.string())
    return column.to_pandas()


def to_model_frame(batch: pa.RecordBatch, schema: ModelSchema) -> pd.DataFrame:
    """The batch's feature columns as the model expects them (dtypes coerced, order kept).

    Numbers and booleans become float64, categories text with missing values kept as NaN.
    Raises SchemaMismatch naming every column that is missing or cannot be coerced.
    """
    names = batch.schema.names
    missing = tuple(f.name for f in schema.features if f.name not in names)
    data: dict[str, Any] = {}
    problems = []
    for feature in schema.features:
        if feature.name in missing:
            continue
        column = batch.column(names.index(feature.name))
        try:
            data[feature.name] = (_as_numbers(column) if feature.kind == "numeric"
                                  else _as_text(column))
        except _Unfit as unfit:
            problems.append((feature.name, feature.kind, str(unfit)))
    SchemaCheck(missing, tuple(problems), ()).raise_for_problems()
    return pd.DataFrame(data, columns=schema.feature_names)


def input_quality(frame: pd.DataFrame, schema: ModelSchema,
                  profile: dict[str, Any]) -> tuple[pd.Series, dict[str, int]]:
    """Per-row quality in [0, 1] (share of features present, in training range, of known
    category) and counts: {"missing": n, "out_of_range": n, "unseen_category": n}.

    Vectorised per feature. A feature without a reference (no training range, no known
    categories) counts every present value as good.
    """
    good = np.zeros(len(frame), dtype=np.int32)
    counts = {"missing": 0, "out_of_range": 0, "unseen_category": 0}
    stats = profile.get("features", {}) if isinstance(profile, dict) else {}
    for feature in schema.features:
        if feature.name not in frame.columns:
            counts["missing"] += len(frame)
            continue
        ref = stats.get(feature.name, {})
        if feature.kind == "numeric":
            values = pd.to_numeric(frame[feature.name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan)
            present = ~np.isnan(values)
            low, high = ref.get("min"), ref.get("max")
            fine = present & (values >= low) & (values <= high) if (
                low is not None and high is not None) else present
            counts["out_of_range"] += int(present.sum() - fine.sum())
        else:
            column = frame[feature.name]
            present = column.notna().to_numpy()
            known = feature.categories or tuple(ref.get("frequencies", {}))
            fine = present & column.isin(known).to_numpy() if known else present
            counts["unseen_category"] += int(present.sum() - fine.sum())
        counts["missing"] += int(len(frame) - present.sum())
        good += fine
    n_features = max(len(schema.features), 1)
    return pd.Series(good / n_features, index=frame.index, name="input_quality"), counts
