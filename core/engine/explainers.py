"""SHAP engines: pick an explainer for a fitted model and attribute outputs to original columns.

No I/O here (core.explain reads runs and caches). `ModelExplainer` is built once per model:

- tree ensembles (random forest, extra trees, gradient boosting, histogram gradient boosting,
  decision trees) get `shap.TreeExplainer` in its default path-dependent mode, the only exact
  one for HGB (DESIGN.md, traps). Boosting explains the log-odds (binary) or the softmax logits
  (multiclass), forests and trees the class probability, regressors the value;
- linear models get `shap.LinearExplainer` with the model's stored background sample; it
  explains the decision function: log-odds, logits, or the value;
- anything else, and any model shap refuses (multiclass GradientBoostingClassifier in shap
  0.51, a preprocessing step whose outputs cannot be traced to input columns), gets the
  model-agnostic `shap.KernelExplainer` over the whole pipeline on the original columns, with
  the background sample; it explains the probability or the value, and says why it was used.

Tree and linear explainers work on the pipeline's transformed columns; each transformed column
is traced to the original column it came from through the fitted ColumnTransformer, and the
contributions of, e.g., one-hot columns are summed onto it. Additivity holds per row and output:
base value + sum of contributions = the model's output on the scale named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shap
from sklearn.compose import ColumnTransformer
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
from sklearn.pipeline import Pipeline

from core.engine.predict import BOOSTING, FORESTS
from core.entities import ModelSchema

AGNOSTIC = "KernelExplainer (model-agnostic)"
KERNEL_BACKGROUND = 50  # rows: Kernel SHAP costs (background rows x samples) predictions a row
CHUNK_ROWS = 100  # rows per shap call when progress is reported
AGNOSTIC_CHUNK_ROWS = 10  # Kernel SHAP: ~0.25 s a row, so progress every few seconds


class Unexplainable(Exception):
    """The fast explainers cannot handle this model; the message says why (shown to users)."""


@dataclass(frozen=True)
class Attribution:
    """SHAP values of n rows on the original features, for each of the model's outputs.

    `values` is (rows, features, outputs), `base` (outputs,), `output` (rows, outputs) computed
    by the model itself. `outputs` names the class of each output (None for regression); a
    binary model explained by one log-odds output has `outputs == (positive,)` and
    `negative` holding the other class (its log-odds is the negation).
    """

    values: np.ndarray
    base: np.ndarray
    output: np.ndarray
    outputs: tuple[Any, ...]
    negative: Any = None


class ModelExplainer:
    """The explainer chosen for one fitted model, with what it needs to map back and rescale."""

    def __init__(
        self,
        estimator: Any,
        schema: ModelSchema,
        background: pd.DataFrame | Callable[[], pd.DataFrame],
    ) -> None:
        """`background`: the model's background rows, or a function reading them (only the
        linear and model-agnostic explainers need them: tree explainers skip the read)."""
        self.estimator, self.schema = estimator, schema
        self.features = schema.feature_names
        self.categorical = frozenset(f.name for f in schema.features if f.kind == "categorical")
        self.is_classifier = schema.task != "regression"
        self.note = ""
        self._background = background
        try:
            self._init_fast()
        except Unexplainable as why:
            self.note = f"{why} The model-agnostic explainer is used instead."
            self._init_agnostic(self.background())

    def background(self) -> pd.DataFrame:
        if callable(self._background):
            self._background = self._background()
        return self._background[self.features]

    # ---------------------------------------------------------------- choosing
    def _init_fast(self) -> None:
        pre, final = split_pipeline(self.estimator)
        if not isinstance(final, (*FORESTS, *BOOSTING, LinearClassifierMixin, LinearModel)):
            raise Unexplainable(f"shap has no exact explainer for {type(final).__name__}.")
        self.final = final
        self.sources = source_columns(pre, self.features)  # transformed column -> feature
        self.pre = pre
        if isinstance(final, FORESTS + BOOSTING):
            try:
                # Default path-dependent mode: exact for every tree model, HGB included.
                self.shap = shap.TreeExplainer(final)
            except Exception as exc:  # shap's InvalidModelError and friends
                raise Unexplainable(
                    f"shap's TreeExplainer cannot read this model ({exc})."
                ) from exc
            self.name = "TreeExplainer"
            probability = isinstance(final, FORESTS) and self.is_classifier
        else:
            self.shap = shap.LinearExplainer(final, self._transform(self.background()))
            self.name = "LinearExplainer"
            probability = False
        self.kind = "fast"
        self.scale = (
            "probability"
            if probability
            else "value"
            if not self.is_classifier
            else "log-odds"
            if len(final.classes_) == 2
            else "logit (softmax input)"
        )

    def _init_agnostic(self, background: pd.DataFrame) -> None:
        self.kind, self.name = "agnostic", AGNOSTIC
        self.scale = "probability" if self.is_classifier else "value"
        self.codec = _Codec(self.schema, background)
        small = background.sample(min(KERNEL_BACKGROUND, len(background)), random_state=0)
        self.shap = shap.KernelExplainer(self._agnostic_output, self.codec.encode(small))

    # ---------------------------------------------------------------- explaining
    @property
    def classes(self) -> tuple[Any, ...]:
        return tuple(getattr(self.estimator, "classes_", ())) if self.is_classifier else ()

    def explain(
        self,
        frame: pd.DataFrame,
        progress: Callable[[float], None] | None = None,
        chunk: int = CHUNK_ROWS,
    ) -> Attribution:
        """SHAP values of `frame` (the model's raw feature columns) on the original features.

        With `progress`, shap is called on `chunk` rows at a time and `progress(fraction)`
        after each (a worker refreshes its heartbeat); the rows are transformed once.
        """
        frame = frame[self.features]
        if self.kind == "agnostic":
            return self._explain_agnostic(frame, progress, chunk)
        transformed = self._transform(frame)
        if self.name == "TreeExplainer":
            raw = _chunked(
                lambda rows: self.shap.shap_values(rows, check_additivity=False),
                transformed,
                progress,
                chunk,
            )
        else:
            raw = _chunked(self.shap.shap_values, transformed, progress, chunk)
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim == 2:
            values = values[:, :, None]
        base = np.atleast_1d(np.asarray(self.shap.expected_value, dtype=np.float64))
        output = self._fast_output(transformed)
        # One-hot etc. back onto inputs: (rows, outputs, columns) @ (columns, features).
        fold = np.zeros((len(self.sources), len(self.features)))
        fold[np.arange(len(self.sources)), self.sources] = 1.0
        summed = np.ascontiguousarray((values.transpose(0, 2, 1) @ fold).transpose(0, 2, 1))
        classes = self.classes
        if classes and values.shape[2] == 1:  # binary, one log-odds output for classes_[1]
            return Attribution(summed, base, output, (classes[1],), classes[0])
        return Attribution(summed, base, output, classes or (None,))

    def _transform(self, frame: pd.DataFrame) -> np.ndarray:
        # A fitted preprocessor may return a dense array or a scipy sparse matrix.
        data: Any = frame if self.pre is None else self.pre.transform(frame)
        if hasattr(data, "toarray"):
            data = data.toarray()
        return np.asarray(data, dtype=np.float64)

    def _fast_output(self, transformed: Any) -> np.ndarray:
        """The model's own output on the explained scale (the check on additivity)."""
        final = self.final
        names = getattr(final, "feature_names_in_", None)
        if names is not None and len(names) == transformed.shape[1]:  # fitted on a DataFrame
            transformed = pd.DataFrame(transformed, columns=names)
        if not self.is_classifier:
            out = final.predict(transformed)
        elif self.scale == "probability":
            out = final.predict_proba(transformed)
        else:
            out = final.decision_function(transformed)
        out = np.asarray(out, dtype=np.float64)
        return out[:, None] if out.ndim == 1 else out

    def _agnostic_output(self, codes: np.ndarray) -> np.ndarray:
        frame = self.codec.decode(codes)
        if self.is_classifier:
            return np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        return np.asarray(self.estimator.predict(frame), dtype=np.float64)

    def _explain_agnostic(
        self, frame: pd.DataFrame, progress: Callable[[float], None] | None, chunk: int
    ) -> Attribution:
        codes = self.codec.encode(frame)
        raw = _chunked(
            lambda rows: self.shap.shap_values(rows, silent=True),
            codes,
            progress,
            min(chunk, AGNOSTIC_CHUNK_ROWS),
        )
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim == 2:
            values = values[:, :, None]
        base = np.atleast_1d(np.asarray(self.shap.expected_value, dtype=np.float64))
        output = self._agnostic_output(codes)
        output = output[:, None] if output.ndim == 1 else output
        return Attribution(values, base, output, self.classes or (None,))


def _chunked(
    shap_values: Callable[[np.ndarray], Any],
    rows: np.ndarray,
    progress: Callable[[float], None] | None,
    chunk: int,
) -> np.ndarray:
    """shap_values(rows), in chunks of `chunk` rows with progress after each when asked."""
    if progress is None or len(rows) <= chunk:
        out = np.asarray(shap_values(rows), dtype=np.float64)
        if progress is not None:
            progress(1.0)
        return out
    parts = []
    for start in range(0, len(rows), chunk):
        parts.append(np.asarray(shap_values(rows[start : start + chunk]), dtype=np.float64))
        progress(min(1.0, (start + chunk) / len(rows)))
    return np.concatenate(parts)  # rows first: (rows, columns[, outputs])


def split_pipeline(estimator: Any) -> tuple[Any, Any]:
    """(the preprocessing steps or None, the final estimator) of a pipeline or bare model."""
    if isinstance(estimator, Pipeline):
        pre = estimator[:-1] if len(estimator.steps) > 1 else None
        return pre, estimator.steps[-1][1]
    return None, estimator


def source_columns(pre: Any, features: list[str]) -> np.ndarray:
    """For each column the preprocessing outputs, the index of the feature it comes from.

    Follows ColumnTransformers (each transformer's output slice) and steps that keep one output
    per input; raises Unexplainable when an output cannot be traced to a single input.
    """
    index = np.arange(len(features))
    if pre is None:
        return index
    steps = [s for _, s in pre.steps] if isinstance(pre, Pipeline) else [pre]
    for step in steps:
        if step is None or step == "passthrough":
            continue
        if isinstance(step, ColumnTransformer):
            index = _through_column_transformer(step, index, features)
        elif getattr(step, "n_features_in_", None) != len(index) or _outputs(step) != len(index):
            raise Unexplainable(
                f"The step {type(step).__name__} changes the number of columns "
                "in a way that cannot be traced back to the input columns."
            )
    return index


def _outputs(step: Any) -> int | None:
    try:
        return len(step.get_feature_names_out())
    except Exception:  # a step without feature names keeps its width when it has n_features_in_
        return getattr(step, "n_features_in_", None)


def _through_column_transformer(
    ct: ColumnTransformer, index: np.ndarray, features: list[str]
) -> np.ndarray:
    names = list(getattr(ct, "feature_names_in_", features))
    out = np.full(sum(s.stop - s.start for s in ct.output_indices_.values()), -1)
    for name, transformer, columns in ct.transformers_:
        width = ct.output_indices_[name]
        if transformer == "drop" or width.stop == width.start:
            continue
        selected = _column_positions(columns, names)
        if len(selected) == 1:
            out[width] = index[selected[0]]
        elif width.stop - width.start == len(selected):
            out[width] = index[selected]
        else:
            out[width] = index[_by_prefix(transformer, selected, names)]
    if (out < 0).any():
        raise Unexplainable("Some transformed columns cannot be traced to an input column.")
    return out


def _column_positions(columns: Any, names: list[str]) -> list[int]:
    cols = list(columns) if not isinstance(columns, str | int) else [columns]
    if cols and isinstance(cols[0], bool | np.bool_):
        return [i for i, keep in enumerate(cols) if keep]
    return [names.index(c) if isinstance(c, str) else int(c) for c in cols]


def _by_prefix(transformer: Any, selected: list[int], names: list[str]) -> list[int]:
    """Outputs named `<input>_<something>` (one-hot style), matched to the longest input."""
    try:
        outputs = [str(n) for n in transformer.get_feature_names_out([names[i] for i in selected])]
    except Exception as exc:
        raise Unexplainable(f"{type(transformer).__name__} does not name its outputs.") from exc
    found = []
    for output in outputs:
        matches = [i for i in selected if output.startswith(f"{names[i]}_")]
        if not matches:
            raise Unexplainable(f"The transformed column '{output}' matches no input column.")
        found.append(max(matches, key=lambda i: len(names[i])))
    return found


class _Codec:
    """Categories as numeric codes, so Kernel SHAP can mix rows; decoded before predicting."""

    def __init__(self, schema: ModelSchema, background: pd.DataFrame) -> None:
        self.schema = schema
        self.vocab: dict[str, list[str]] = {}
        for f in schema.features:
            if f.kind == "categorical":
                seen = background[f.name].dropna().astype(str).unique().tolist()
                self.vocab[f.name] = list(dict.fromkeys([*f.categories, *seen]))

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.schema.features)), dtype=np.float64)
        for j, f in enumerate(self.schema.features):
            column = frame[f.name]
            if f.kind != "categorical":
                out[:, j] = pd.to_numeric(column, errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                continue
            vocab = self.vocab[f.name]
            for value in column.dropna().astype(str).unique():
                if value not in vocab:
                    vocab.append(value)
            lookup = {v: i for i, v in enumerate(vocab)}
            out[:, j] = [np.nan if pd.isna(v) else lookup[str(v)] for v in column]
        return out

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, f in enumerate(self.schema.features):
            column = codes[:, j]
            if f.kind != "categorical":
                data[f.name] = column
                continue
            vocab = np.asarray([*self.vocab[f.name], np.nan], dtype=object)
            idx = np.where(np.isnan(column), len(vocab) - 1, column).astype(int)
            data[f.name] = vocab[idx]
        return pd.DataFrame(data, columns=self.schema.feature_names)
