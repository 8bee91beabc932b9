"""A few rows through a linear model without sklearn's checks of its input.

For one row, sklearn's `predict_proba` of a logistic regression spends nearly all its time
checking the matrix (`validate_data`: feature names, dtypes, finiteness, its DataFrame library
probes): 91 us a call against 6 us for the same operations unchecked (one row of 20 features,
timeit), for the API's every real-time request and for the challenger's every shadow call.
The matrix here is the compiled preprocessing's own, already float64 and checked, so
`LinearClassifier` and `LinearRegressor` apply the model's own operations to it: the same
product (`X @ coef_.T + intercept_`, what sklearn's `safe_sparse_dot` does for dense arrays),
the same `expit` or `softmax`, the same class pick. Same operations on the same arrays: the
same bits. For more than FEW_ROWS rows, where the checks cost little per row, the model
answers itself.

`fast(model)` is used only after it gave sklearn's bits on the rows the compiled pipeline is
checked on (core/engine/compiled.py, as the boosting walk is).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.utils.extmath import softmax

FEW_ROWS = 16  # up to this many rows the model's own operations, past its checks


class LinearRegressor:
    """A fitted ridge or least-squares model that predicts a few rows unchecked."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.coef = model.coef_ if model.coef_.ndim == 1 else model.coef_.T
        self.intercept = model.intercept_

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > FEW_ROWS:
            return np.asarray(self.model.predict(matrix))
        return np.asarray(matrix @ self.coef + self.intercept)  # LinearModel._decision_function


class LinearClassifier(LinearRegressor):
    """A fitted logistic regression that predicts a few rows unchecked."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.classes_ = model.classes_

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """LinearClassifierMixin.decision_function's scores."""
        scores = np.asarray(matrix @ self.coef + self.intercept)
        return scores.reshape(-1) if scores.ndim > 1 and scores.shape[1] == 1 else scores

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > FEW_ROWS:
            return np.asarray(self.model.predict_proba(matrix))
        scores = self.decision(matrix)
        if len(self.classes_) > 2:  # LogisticRegression.predict_proba: multinomial
            return np.asarray(softmax(scores, copy=False))
        prob = special.expit(scores, out=scores)  # _predict_proba_lr, binary
        return np.stack([1 - prob, prob], axis=1)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > FEW_ROWS:
            return np.asarray(self.model.predict(matrix))
        scores = self.decision(matrix)
        codes = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return np.asarray(self.classes_[codes])


def fast(model: Any) -> LinearRegressor | None:
    """The unchecked path of a logistic, ridge or least-squares model (dense coefficients),
    or None for any other model."""
    if not isinstance(getattr(model, "coef_", None), np.ndarray):
        return None
    if type(model) is LogisticRegression:
        return LinearClassifier(model)
    if type(model) in (Ridge, LinearRegression):
        return LinearRegressor(model)
    return None
