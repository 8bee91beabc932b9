"""Model input: does a table fit a model's schema, the model frame from a batch, input quality.

Shared by batch runs (through core/pipeline.py) and real-time serving: both check columns
against the model schema, coerce a batch to what the fitted pipeline expects, and score each
row's quality against the training profile.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.engine.classes import FALSE_WORDS, TRUE_WORDS, truth_pair
from core.engine.tables import nfc  # a decomposed é meets a composed one
from core.entities import FeatureSchema, ModelSchema
from core.errors import SchemaMismatch

EXPECTED = {"numeric": "numeric (a number or boolean)", "categorical": "categorical (text)"}


@dataclass(frozen=True)
class SchemaCheck:
    """Input columns against a model schema. `problems` empty means predictable."""

    missing: tuple[str, ...]  # model features absent from the input
    mismatched: tuple[tuple[str, str, str], ...]  # (column, expected kind, found dtype)
    extra: tuple[str, ...]  # input columns the model ignores (kept)
    wanted: tuple[tuple[str, str], ...] = ()  # (column, what it takes in words)

    @property
    def is_ok(self) -> bool:
        return not self.missing and not self.mismatched

    def message(self) -> str:
        """One sentence per problem, naming each column, expected vs found ("" when ok)."""
        sentences = []
        for name in self.missing:
            close = difflib.get_close_matches(name, self.extra, n=1, cutoff=0.8) or [
                c for c in self.extra if c.lower() == name.lower()
            ]
            guess = f" (the input has '{close[0]}')" if close else ""
            sentences.append(f"Column '{name}' is missing from the input{guess}.")
        words = dict(self.wanted)
        for name, kind, found in self.mismatched:
            sentences.append(
                f"Column '{name}' should be "
                f"{words.get(name) or EXPECTED.get(kind, kind)} but is {found}."
            )
        return " ".join(sentences)

    def raise_for_problems(self) -> None:
        """Raise SchemaMismatch (message names every column) unless is_ok."""
        if not self.is_ok:
            raise SchemaMismatch(
                f"The input does not fit the model's schema. {self.message()}",
                "Give the model the columns it needs. In a pipeline, add, rename or cast "
                "them with a transform, e.g. SELECT * REPLACE (TRY_CAST(age AS DOUBLE) AS "
                "age) FROM input.",
            )


def _value_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def _is_number(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_null(dtype)
    )


def _is_text(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _is_opaque(dtype: pa.DataType) -> bool:
    """Types with no text form a category could take."""
    return bool(
        pa.types.is_nested(dtype)
        or pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_fixed_size_binary(dtype)
        or pa.types.is_binary_view(dtype)
    )


def _blank_to_null(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    trimmed = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _first_non_number(column: pa.Array | pa.ChunkedArray, flags: bool = False) -> str | None:
    """The first text value that is not a number (nor, for `flags`, a true/false word), or
    None when all are numbers or blank."""
    values = _blank_to_null(column)
    try:
        _text_numbers(values, flags)
        return None
    except pa.ArrowInvalid:
        text = values.to_pandas()
        bad = text[pd.to_numeric(text, errors="coerce").isna() & text.notna()]
        if flags:
            bad = bad[~bad.str.lower().isin(TRUE_WORDS | FALSE_WORDS)]
        return str(bad.iloc[0]) if len(bad) else None


def _text_numbers(values: pa.Array | pa.ChunkedArray, flags: bool) -> np.ndarray:
    """Text as float64 (blank already null); for `flags` true/false words as 1/0 too.
    Raises ArrowInvalid for any other text."""
    if flags:
        lowered = pc.utf8_lower(values)
        values = pc.if_else(
            pc.is_in(lowered, pa.array(sorted(TRUE_WORDS))),
            "1",
            pc.if_else(pc.is_in(lowered, pa.array(sorted(FALSE_WORDS))), "0", values),
        )
    numbers: np.ndarray = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return numbers


def _type_problem(
    feature: FeatureSchema, dtype: pa.DataType, sample: pa.Array | pa.ChunkedArray | None
) -> str | None:
    """What is wrong with a column of `dtype` for `feature`, or None."""
    dtype = _value_type(dtype)
    if feature.kind != "numeric":
        if pa.types.is_boolean(dtype) and not _reads_as_truth(feature):
            return "true/false (boolean)"
        return str(dtype) if _is_opaque(dtype) else None
    if _is_number(dtype):
        return None
    if _is_text(dtype):
        bad = _first_non_number(sample, _is_flag(feature)) if sample is not None else None
        return f"text with non-numeric values such as '{bad}'" if bad is not None else None
    return str(dtype)


def _is_flag(feature: FeatureSchema) -> bool:
    """A numeric feature trained on true/false values: yes/no text reads as 1/0."""
    return feature.dtype in ("bool", "boolean")


def _reads_as_truth(feature: FeatureSchema) -> bool:
    """A categorical feature whose two categories read as true and false (yes/no, Y/N, ...):
    a boolean column meets them (a SQL source's read_csv may guess yes/no as booleans)."""
    return truth_pair(feature.categories) is not None


def _positions(names: list[str]) -> dict[str, int]:
    """Input column positions by NFC name (the first of equal names)."""
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        found.setdefault(nfc(name), i)
    return found


def check_schema(
    columns: pa.Schema, schema: ModelSchema, sample: pa.Table | pa.RecordBatch | None = None
) -> SchemaCheck:
    """Compare input columns with the model's features (numeric needs a numeric/bool type).

    A text column for a numeric feature passes when its values are numbers: give `sample`
    (e.g. the first batch) to have them checked here; `to_model_frame` checks every batch.
    """
    names = columns.names
    at = _positions(names)
    wanted = {nfc(n) for n in schema.feature_names}
    missing = tuple(f.name for f in schema.features if nfc(f.name) not in at)
    mismatched = []
    for feature in schema.features:
        if feature.name in missing:
            continue
        i = at[nfc(feature.name)]
        values = sample.column(i) if sample is not None else None
        problem = _type_problem(feature, columns.field(i).type, values)
        if problem is not None:
            mismatched.append((feature.name, feature.kind, problem))
    extra = tuple(n for n in dict.fromkeys(names) if nfc(n) not in wanted)
    return SchemaCheck(missing, tuple(mismatched), extra, _words(schema, mismatched))


def _words(
    schema: ModelSchema, mismatched: Sequence[tuple[str, str, str]]
) -> tuple[tuple[str, str], ...]:
    bad = {name for name, _, _ in mismatched}
    return tuple((f.name, expected(f)) for f in schema.features if f.name in bad)


def expected(feature: FeatureSchema) -> str:
    """What a feature takes, in words: its kind and, for a category, the known values."""
    if feature.kind == "numeric":
        return (
            EXPECTED["numeric"]
            if not _is_flag(feature)
            else ("numeric (true/false, 1/0 or yes/no)")
        )
    shown = ", ".join(f"'{c}'" for c in feature.categories[:4])
    more = ", …" if len(feature.categories) > 4 else ""
    return f"categorical (text such as {shown}{more})" if shown else EXPECTED["categorical"]


class _Unfit(Exception):
    """A column that cannot be coerced to its feature's kind; args[0] describes it."""


def _as_numbers(column: pa.Array | pa.ChunkedArray, feature: FeatureSchema) -> np.ndarray:
    dtype = _value_type(column.type)
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, dtype)
    if _is_number(dtype):
        if column.type != pa.float64():  # already float64: no cast (4 us a column per call)
            column = pc.cast(column, pa.float64())
        numbers: np.ndarray = column.to_numpy(zero_copy_only=False)
        return numbers
    if _is_text(dtype):
        flags = _is_flag(feature)
        try:
            return _text_numbers(_blank_to_null(column), flags)
        except pa.ArrowInvalid:
            raise _Unfit(
                f"text with non-numeric values such as '{_first_non_number(column, flags)}'"
            ) from None
    raise _Unfit(str(dtype))


def _as_text(column: pa.Array | pa.ChunkedArray, feature: FeatureSchema) -> pa.Array:
    """A categorical feature's column as text, spelt as in training."""
    dtype = _value_type(column.type)
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, dtype)
    if _is_opaque(dtype):
        raise _Unfit(str(dtype))
    if pa.types.is_boolean(dtype):
        pair = truth_pair(feature.categories)
        if pair is None:
            raise _Unfit("true/false (boolean)")
        column = pc.if_else(column, pair[True], pair[False])  # as the training file spelt them
    elif not pa.types.is_string(dtype):
        column = pc.cast(column, pa.string())
    else:
        column = _truth_spelling(column, feature)
    return column


def _truth_spelling(
    column: pa.Array | pa.ChunkedArray, feature: FeatureSchema
) -> pa.Array | pa.ChunkedArray:
    """For a yes/no-like category pair, any spelling of a truth value ("True", "YES", "t") as
    the training file spelt it ("true", "yes"): exports differ in case and words."""
    pair = truth_pair(feature.categories)
    if pair is None:
        return column
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    return pc.if_else(
        pc.is_in(lowered, pa.array(sorted(TRUE_WORDS))),
        pair[True],
        pc.if_else(pc.is_in(lowered, pa.array(sorted(FALSE_WORDS))), pair[False], column),
    )


def _coerced(
    batch: pa.RecordBatch, schema: ModelSchema, as_texts: Callable[[pa.Array], Any]
) -> dict[str, Any]:
    """Each feature's column coerced to its kind: numbers as float64 arrays, categories as
    `as_texts` of a text column. Raises SchemaMismatch naming every column that is missing or
    cannot be coerced."""
    at = _positions(batch.schema.names)
    missing = tuple(f.name for f in schema.features if nfc(f.name) not in at)
    data: dict[str, Any] = {}
    problems = []
    for feature in schema.features:
        if feature.name in missing:
            continue
        column = batch.column(at[nfc(feature.name)])
        try:
            data[feature.name] = (
                _as_numbers(column, feature)
                if feature.kind == "numeric"
                else as_texts(_as_text(column, feature))
            )
        except _Unfit as unfit:
            problems.append((feature.name, feature.kind, str(unfit)))
    SchemaCheck(missing, tuple(problems), (), _words(schema, problems)).raise_for_problems()
    return data


def to_model_frame(batch: pa.RecordBatch, schema: ModelSchema) -> pd.DataFrame:
    """The batch's feature columns as the model expects them (dtypes coerced, order kept).

    Numbers and booleans become float64, categories text with missing values kept as NaN.
    Raises SchemaMismatch naming every column that is missing or cannot be coerced.
    """
    data = _coerced(batch, schema, lambda texts: texts.to_pandas())
    return pd.DataFrame(data, columns=schema.feature_names)


def to_model_arrays(batch: pa.RecordBatch, schema: ModelSchema) -> dict[str, Any]:
    """The same coerced columns as `to_model_frame` by feature name, for a compiled pipeline
    (core.engine.compiled): numbers as float64 numpy arrays, categories as Arrow text arrays
    (nulls for missing values). A DataFrame costs more than a one-row prediction."""
    return _coerced(batch, schema, lambda texts: texts)


PROBLEMS = (
    ("missing", "missing values"),
    ("out_of_range", "out of training range"),
    ("unseen_category", "unseen categories"),
)


def input_quality(
    frame: pd.DataFrame, schema: ModelSchema, profile: dict[str, Any]
) -> tuple[pd.Series, dict[str, Any]]:
    """Per-row quality in [0, 1] (share of features present, in training range, of known
    category) and counts: {"missing": n, "out_of_range": n, "unseen_category": n,
    "columns": {problem: {column: n}}} (only columns with problems are listed).

    Vectorised per feature. A feature without a reference (no training range, no known
    categories) counts every present value as good; +/-inf is present and out of range.
    """
    good = np.zeros(len(frame), dtype=np.int32)
    counts: dict[str, Any] = {name: 0 for name, _ in PROBLEMS}
    by_column: dict[str, dict[str, int]] = {name: {} for name, _ in PROBLEMS}
    stats = profile.get("features", {}) if isinstance(profile, dict) else {}

    def count(problem: str, column: str, n: int) -> None:
        if n:
            counts[problem] += n
            by_column[problem][column] = by_column[problem].get(column, 0) + n

    for feature in schema.features:
        if feature.name not in frame.columns:
            count("missing", feature.name, len(frame))
            continue
        ref = stats.get(feature.name, {})
        if feature.kind == "numeric":
            values = pd.to_numeric(frame[feature.name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            present = ~np.isnan(values)
            low, high = ref.get("min"), ref.get("max")
            fine = (
                present & (values >= low) & (values <= high)
                if (low is not None and high is not None)
                else present & np.isfinite(values)
            )
            count("out_of_range", feature.name, int(present.sum() - fine.sum()))
        else:
            column = frame[feature.name]
            present = column.notna().to_numpy()
            known = feature.categories or tuple(ref.get("frequencies", {}))
            fine = present & column.isin(known).to_numpy() if known else present
            count("unseen_category", feature.name, int(present.sum() - fine.sum()))
        count("missing", feature.name, int(len(frame) - present.sum()))
        good += fine
    n_features = max(len(schema.features), 1)
    counts["columns"] = {k: v for k, v in by_column.items() if v}
    return pd.Series(good / n_features, index=frame.index, name="input_quality"), counts


def add_counts(total: dict[str, Any], counts: dict[str, Any]) -> None:
    """Add one batch's `input_quality` counts into `total` (per column too)."""
    for name, _ in PROBLEMS:
        total[name] = total.get(name, 0) + int(counts.get(name, 0))
    columns = total.setdefault("columns", {})
    for problem, per_column in counts.get("columns", {}).items():
        into = columns.setdefault(problem, {})
        for column, n in per_column.items():
            into[column] = into.get(column, 0) + int(n)


def describe_problems(quality: dict[str, Any], limit: int = 3) -> str:
    """ "3 missing values (age 2, plan 1), 0 out of training range, 0 unseen categories": each
    count with the columns behind it, most affected first."""
    parts = []
    for name, words in PROBLEMS:
        n = int(quality.get(name, 0) or 0)
        per_column = sorted(
            (quality.get("columns") or {}).get(name, {}).items(),
            key=lambda item: (-item[1], item[0]),
        )
        shown = ", ".join(f"{c} {v:,}" for c, v in per_column[:limit])
        more = f", {len(per_column) - limit} more" if len(per_column) > limit else ""
        parts.append(f"{n:,} {words}" + (f" ({shown}{more})" if shown else ""))
    return ", ".join(parts)


def finite(frame: pd.DataFrame) -> pd.DataFrame:
    """The model frame with +/-inf as missing values: the models' imputers fill them, as in
    training (input_quality counts them as out of range first)."""
    numbers = frame.select_dtypes(include="number")
    if numbers.empty or np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=0.0)).all():
        return frame
    return frame.replace([np.inf, -np.inf], np.nan)
