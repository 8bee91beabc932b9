"""Predicting one batch: a model's predictions, its confidence and class probabilities.

The confidence is the predicted class's probability for a classifier, the spread (standard
deviation) of a regression forest's trees, else unknown (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.pipeline import Pipeline

from core.engine import model_input
from core.engine.profiles import plain
from core.errors import InvalidInput


@dataclass(frozen=True)
class Scored:
    """One model's output for one batch: predictions, confidence (NaN = unknown), probabilities."""

    prediction: np.ndarray
    confidence: np.ndarray
    proba: np.ndarray | None = None  # columns in `classes` order
    classes: tuple[Any, ...] = ()  # the estimator's classes_
    codes: np.ndarray | None = None  # index into `classes` of each prediction


def serial(estimator: Any) -> Any:
    """The estimator set to predict in one thread (n_jobs=1 in every step that has it).

    A forest with n_jobs=-1 adds its trees' probabilities in whatever order its threads finish,
    so two predictions of the same rows can differ in the last bit; in one thread a run and the
    API give the same bits (and the API pins one thread anyway: DESIGN.md, traps)."""
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    threaded = {
        k: 1
        for k, v in params.items()
        if (k == "n_jobs" or k.endswith("__n_jobs")) and v not in (None, 1)
    }
    if threaded:
        estimator.set_params(**threaded)
    return estimator


def confidence_kind(estimator: Any, task: str) -> str | None:
    """What the confidence column means for this model (None: the model gives none)."""
    if task != "regression":
        return "class probability" if hasattr(estimator, "predict_proba") else None
    return "spread of the forest's trees (std)" if _forest(estimator) is not None else None


def score(estimator: Any, frame: pd.DataFrame | np.ndarray, task: str, who: str) -> Scored:
    """Predict one batch (a model frame, or the matrix of a compiled pipeline's preprocessing
    for its model); raises InvalidInput when the model rejects the rows."""
    try:
        rows = model_input.finite(frame) if isinstance(frame, pd.DataFrame) else frame
        return _score(estimator, rows, task)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(
            f"The {who} model could not predict these rows: {exc}",
            "Check the input's values against the model's schema (Preview shows them).",
        ) from exc


def _score(estimator: Any, frame: pd.DataFrame | np.ndarray, task: str) -> Scored:
    nan = np.full(len(frame), np.nan)
    if task != "regression":
        classes = getattr(estimator, "classes_", None)
        if classes is None or not hasattr(estimator, "predict_proba"):
            return Scored(np.asarray(estimator.predict(frame)), nan)
        proba = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
        best = proba.argmax(axis=1)
        return Scored(
            np.asarray(classes)[best],
            proba[np.arange(len(best)), best],
            proba,
            tuple(plain(c) for c in classes),
            best,
        )
    forest = _forest(estimator)
    if forest is None:
        return Scored(np.asarray(estimator.predict(frame), dtype=np.float64), nan)
    # A forest's prediction is the mean of its trees: one pass gives it and their spread.
    inputs = estimator[:-1].transform(frame) if isinstance(estimator, Pipeline) else frame
    if not sparse.issparse(inputs):
        inputs = np.asarray(inputs, dtype=np.float32)
    per_tree = np.stack([tree.predict(inputs) for tree in forest.estimators_])
    return Scored(per_tree.mean(axis=0), per_tree.std(axis=0))


def _forest(estimator: Any) -> Any:
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return final if isinstance(final, RandomForestRegressor | ExtraTreesRegressor) else None
