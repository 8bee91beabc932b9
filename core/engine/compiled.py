"""A fitted training pipeline's preprocessing in plain numpy, for one-row requests.

sklearn's ColumnTransformer on a one-row DataFrame spends 8-15 ms in input validation, column
selection and pandas conversions to compute a dozen numbers; the model after it predicts in
well under a millisecond. `compile_pipeline` reads the fitted parameters of the pipelines
`core.training.make_pipeline` builds (impute and scale numbers, impute and one-hot categories)
and computes the same matrix with the same float64 operations, so the model after it sees the
very array sklearn would have given it and predicts the same bits.

Anything else (an imported pipeline, a step or an option this module does not know) does not
compile and is served by sklearn itself. A compiled pipeline is also checked on sample rows
against sklearn when it is made: a difference in any bit leaves it out. A histogram boosting
model after it is walked by numpy for a few rows (core/engine/boosting.py), once that too gave
sklearn's bits on those rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.engine import boosting, linear, model_input
from core.entities import ModelSchema

log = logging.getLogger("modeldeck.compiled")
FEW_ROWS = 32  # up to this many rows, categories are looked up one by one (no pandas)
UNKNOWN_IGNORED = ("ignore", "infrequent_if_exist", "warn")  # unknown values encode as zeros


class NotCompiled(Exception):
    """The pipeline has a step or option this module does not reproduce."""


@dataclass(frozen=True)
class _Numbers:
    columns: tuple[str, ...]
    fill: np.ndarray  # the imputer's statistics, one per column
    mean: np.ndarray | None
    scale: np.ndarray | None

    def transform(self, data: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        out = np.empty((rows, len(self.columns)), dtype=np.float64)
        for j, name in enumerate(self.columns):
            out[:, j] = data[name]
        out[~np.isfinite(out)] = np.nan  # +/-inf are missing values, as in training
        missing = np.isnan(out)
        if missing.any():
            out = np.where(missing, self.fill, out)
        if self.mean is not None:
            out -= self.mean
        if self.scale is not None:
            out /= self.scale
        return out


@dataclass(frozen=True)
class _Categories:
    columns: tuple[str, ...]
    fill: tuple[str, ...]  # what a missing value becomes before encoding
    index: tuple[dict[str, int], ...]  # per column: value -> output column (within the block)
    unknown: tuple[int | None, ...]  # where an unknown value goes (None: all zeros)
    offsets: tuple[int, ...]  # each column's first output column
    width: int

    def transform(self, data: Mapping[str, Any], rows: int) -> np.ndarray:
        out = np.zeros((rows, self.width), dtype=np.float64)
        for j, name in enumerate(self.columns):
            values = data[name]
            if isinstance(values, pa.Array):  # text straight from the request (to_model_arrays)
                found = (
                    self._few(j, values.to_pylist()) if rows <= FEW_ROWS else self._arrow(j, values)
                )
            else:
                found = self._few(j, values) if rows <= FEW_ROWS else self._many(j, values)
            hit = found >= 0
            out[np.flatnonzero(hit), self.offsets[j] + found[hit]] = 1.0
        return out

    def _few(self, j: int, values: Sequence[Any]) -> np.ndarray:
        """Each value's output column (-1: none), by dictionary lookups: a few rows."""
        index, unknown, fill = self.index[j], self.unknown[j], self.fill[j]
        nowhere = -1 if unknown is None else unknown
        found = []
        for value in values:
            text = fill if _missing(value) else value
            found.append(index.get(text, nowhere) if isinstance(text, str) else nowhere)
        return np.array(found, dtype=np.intp)

    def _many(self, j: int, values: np.ndarray) -> np.ndarray:
        """The same, vectorised through a pandas Index: many rows."""
        index, unknown, fill = self.index[j], self.unknown[j], self.fill[j]
        known = pd.Index(list(index), dtype=object)
        lookup = np.array([*index.values(), -1 if unknown is None else unknown], dtype=np.intp)
        filled = np.where(pd.isna(values), fill, values).astype(object)
        return lookup[
            known.get_indexer(pd.Index(filled, dtype=object))
        ]  # get_indexer's -1 picks the last: unknown

    def _arrow(self, j: int, values: pa.Array) -> np.ndarray:
        """The same, by Arrow's hash lookup on the text column itself: no Python string is
        made per row (a 1,000-row batch spent most of its preprocessing on them)."""
        known, lookup = self._lookups[j]
        filled = pc.fill_null(values, self.fill[j])
        where = pc.fill_null(pc.index_in(filled, value_set=known), len(lookup) - 1)
        found: np.ndarray = lookup[where.to_numpy(zero_copy_only=False)]  # last entry: unknown
        return found

    @functools.cached_property
    def _lookups(self) -> tuple[tuple[pa.Array, np.ndarray], ...]:
        """Per column: the known values, and each one's output column (then the unknowns')."""
        return tuple(
            (
                pa.array(list(index), pa.string()),
                np.array([*index.values(), -1 if unknown is None else unknown], dtype=np.intp),
            )
            for index, unknown in zip(self.index, self.unknown, strict=True)
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@dataclass(frozen=True)
class CompiledPipeline:
    """The preprocessing of a fitted pipeline as numpy, and the model after it."""

    blocks: tuple[_Numbers | _Categories, ...]
    model: Any  # the pipeline's last step, fitted on the preprocessed matrix

    def transform(self, data: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """The matrix the pipeline's preprocessing gives for these columns (by feature name:
        numbers as float64, categories as text or None)."""
        parts = [block.transform(data, rows) for block in self.blocks]
        return np.hstack(parts) if len(parts) > 1 else parts[0]


def compile_pipeline(
    estimator: Any, schema: ModelSchema, sample: pa.RecordBatch | None = None
) -> CompiledPipeline | None:
    """The compiled form of a fitted training pipeline, or None when it cannot be compiled or
    (given `sample`, raw rows) does not reproduce sklearn's matrix bit for bit on the sample,
    on a row of missing values and on a row of unseen categories and infinite numbers."""
    try:
        compiled = _compile(estimator)
    except NotCompiled as exc:
        log.info("served by sklearn: %s", exc)
        return None
    if sample is None:
        return compiled
    matrices = []
    for rows in _checks(schema, sample):
        matrix = _agreed_matrix(estimator, compiled, schema, rows)
        if matrix is None:
            log.warning("the compiled pipeline differs from sklearn on sample rows: not used")
            return None
        matrices.append(matrix)
    return _with_fast_model(compiled, matrices)


def _with_fast_model(compiled: CompiledPipeline, matrices: list[np.ndarray]) -> CompiledPipeline:
    """The compiled pipeline with a faster path for a few rows through its model: a histogram
    boosting model's trees walked by numpy (core/engine/boosting.py), a linear model's own
    operations past its input checks (core/engine/linear.py); when that gives sklearn's bits
    on every check matrix."""
    fast = boosting.fast(compiled.model) or linear.fast(compiled.model)
    if fast is None:
        return compiled
    if not all(boosting.agrees(fast, matrix) for matrix in matrices):
        log.warning("the fast path of %s differs from sklearn: not used", type(fast).__name__)
        return compiled
    return replace(compiled, model=fast)


def _compile(estimator: Any) -> CompiledPipeline:
    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        raise NotCompiled("not a two-step pipeline")
    pre, model = estimator.steps[0][1], estimator.steps[1][1]
    if not isinstance(pre, ColumnTransformer) or pre.sparse_output_:
        raise NotCompiled("the first step is not a dense ColumnTransformer")
    if getattr(pre, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        raise NotCompiled("the preprocessing is set to output DataFrames")
    blocks: list[_Numbers | _Categories] = []
    for name, transformer, columns in pre.transformers_:
        if transformer == "drop" or len(columns) == 0:
            continue
        if name == "remainder" or not all(isinstance(c, str) for c in columns):
            raise NotCompiled("columns are not selected by name")
        steps = transformer.steps if isinstance(transformer, Pipeline) else [("", transformer)]
        blocks.append(_block(tuple(columns), [s for _, s in steps]))
    if not blocks:
        raise NotCompiled("no columns are used")
    return CompiledPipeline(tuple(blocks), model)


def _block(columns: tuple[str, ...], steps: list[Any]) -> _Numbers | _Categories:
    if not steps or not isinstance(steps[0], SimpleImputer):
        raise NotCompiled("a block does not start with a SimpleImputer")
    imputer = steps[0]
    if imputer.add_indicator or not _is_nan(imputer.missing_values):
        raise NotCompiled("an imputer with indicators or a missing value other than NaN")
    rest = steps[1:]
    if len(rest) == 1 and isinstance(rest[0], OneHotEncoder):
        return _categories(columns, imputer, rest[0])
    if len(rest) > 1 or (rest and not isinstance(rest[0], StandardScaler)):
        raise NotCompiled(f"an unknown step {type(rest[0]).__name__}")
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(fill).any():  # an all-missing column, which the imputer drops
        raise NotCompiled("an imputer that drops a column")
    scaler = rest[0] if rest else None
    mean = scale = None
    if scaler is not None:
        mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
        scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
    return _Numbers(columns, fill, mean, scale)


def _categories(
    columns: tuple[str, ...], imputer: SimpleImputer, encoder: OneHotEncoder
) -> _Categories:
    if encoder.drop is not None or encoder.handle_unknown not in UNKNOWN_IGNORED:
        raise NotCompiled("a one-hot encoder that drops a category or rejects unknown values")
    if encoder.dtype not in (np.float64, float):
        raise NotCompiled("a one-hot encoder with a dtype other than float64")
    fill = tuple(imputer.statistics_)
    if not all(isinstance(f, str) for f in fill):
        raise NotCompiled("a category imputer that fills with a non-text value")
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(columns))
    index, unknown, offsets, width = [], [], [], 0
    for categories, rare in zip(encoder.categories_, infrequent, strict=True):
        if not all(isinstance(c, str) for c in categories):
            raise NotCompiled("categories that are not text")
        rare_set = set() if rare is None else set(rare)
        frequent = [c for c in categories if c not in rare_set]
        mapping = {c: i for i, c in enumerate(frequent)}
        grouped = len(frequent) if rare_set else None  # the infrequent column comes last
        if grouped is not None:
            mapping |= dict.fromkeys(rare_set, grouped)
        index.append(mapping)
        unknown.append(grouped if encoder.handle_unknown != "ignore" else None)
        offsets.append(width)
        width += len(frequent) + (1 if rare_set else 0)
    return _Categories(columns, fill, tuple(index), tuple(unknown), tuple(offsets), width)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _checks(schema: ModelSchema, sample: pa.RecordBatch) -> list[pa.RecordBatch]:
    odd = {
        f.name: float("inf") if f.kind == "numeric" else "an unseen value, é"
        for f in schema.features
    }
    return [
        sample,
        pa.RecordBatch.from_pylist([{}], schema=sample.schema),  # every value missing
        pa.RecordBatch.from_pylist([odd]),
    ]


def _agreed_matrix(
    estimator: Any, compiled: CompiledPipeline, schema: ModelSchema, rows: pa.RecordBatch
) -> np.ndarray | None:
    """sklearn's matrix of these raw rows when the compiled one equals it bit for bit (the
    model's check then reuses it), else None."""
    try:
        frame = model_input.finite(model_input.to_model_frame(rows, schema))
        expected = np.asarray(estimator[:-1].transform(frame), dtype=np.float64)
        got = compiled.transform(model_input.to_model_arrays(rows, schema), rows.num_rows)
    except Exception as exc:  # rows sklearn or this module cannot take: not compiled
        log.info("the compiled pipeline could not be checked: %s", exc)
        return None
    same = got.shape == expected.shape and np.array_equal(
        got.view(np.uint64), expected.view(np.uint64)
    )
    return expected if same else None
