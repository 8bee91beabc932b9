"""A few rows through a histogram gradient boosting model without sklearn's call per tree.

sklearn predicts with one Cython call per tree (a hundred for the default model, times the
classes of a multiclass one), each with its own Python overhead: about 0.45 ms for one row of
a 100-tree model, most of a real-time request. `Trees` walks every tree at once with numpy
(one step per level of the deepest tree), applies sklearn's own rule at each node (a missing
value goes where the node sends missing values, else `value <= threshold` goes left), and adds
the leaves in sklearn's order, iteration after iteration from the baseline, so the raw
predictions are the same float64 sums; the probabilities and predictions then come from the
model's own loss. For more than FEW_ROWS rows sklearn's parallel Cython loop is faster, and
the model answers itself.

`fast(model)` is used only after it gave sklearn's bits on the rows the compiled pipeline is
checked on (core/engine/compiled.py); a model with categorical splits is left to sklearn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

FEW_ROWS = 16  # up to this many rows, all trees are walked at once


class Trees:
    """A fitted histogram gradient boosting model that predicts a few rows with numpy."""

    def __init__(self, model: Any) -> None:
        self.model = model
        nodes = [p.nodes for iteration in model._predictors for p in iteration]
        sizes = np.array([len(n) for n in nodes])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        every = np.concatenate(nodes)
        shift = np.repeat(starts, sizes)
        self.roots = starts.astype(np.intp)
        self.feature = every["feature_idx"].astype(np.intp)
        self.threshold = every["num_threshold"].astype(np.float64)
        self.missing_right = ~every["missing_go_to_left"].astype(bool)
        # node i's children at 2i (left) and 2i + 1 (right); a leaf's are itself, so a walk
        # that reached one stays there while deeper trees go on
        leaf, itself = every["is_leaf"].astype(bool), np.arange(len(every), dtype=np.intp)
        left = np.where(leaf, itself, every["left"].astype(np.intp) + shift)
        right = np.where(leaf, itself, every["right"].astype(np.intp) + shift)
        self.children = np.stack([left, right], axis=1).ravel()
        self.value = every["value"].astype(np.float64)
        self.steps = int(every["depth"].max())
        self.iterations = len(model._predictors)
        self.per_iteration = int(model.n_trees_per_iteration_)
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64)
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """Each row's summed leaves per tree of an iteration: sklearn's `_raw_predict`."""
        x = np.asarray(matrix, dtype=np.float64)
        n, width = x.shape
        flat = x.ravel()
        trees = len(self.roots)
        # every (row, tree) walk at once; `take` on flat arrays: fewer numpy steps per level
        at = np.tile(self.roots, n)
        offset = np.arange(n).repeat(trees) * width  # each walk's row in `flat`
        missing = bool(np.isnan(flat).any())
        feature, threshold, children = self.feature, self.threshold, self.children
        for _ in range(self.steps):
            values = flat.take(feature.take(at) + offset)
            # sklearn's rule: `value <= threshold` goes left; a missing value goes where the
            # node sends missing values (NaN > threshold is False: only the nodes that send
            # them right need the second test)
            right = values > threshold.take(at)
            if missing:
                right |= np.isnan(values) & self.missing_right.take(at)
            at = children.take(2 * at + right)
        leaves = self.value.take(at).reshape(n, self.iterations, self.per_iteration)
        start = np.zeros((n, 1, self.per_iteration)) + self.baseline.reshape(1, 1, -1)
        # cumsum adds in order, as sklearn's `raw += tree` does iteration after iteration
        return np.cumsum(np.concatenate([start, leaves], axis=1), axis=1)[:, -1, :]

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > FEW_ROWS:
            return np.asarray(self.model.predict_proba(matrix))
        return np.asarray(self.model._loss.predict_proba(self.raw(matrix)))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) > FEW_ROWS:
            return np.asarray(self.model.predict(matrix))
        return self.from_raw(self.raw(matrix))

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        """The predictions of raw values, as sklearn's `predict` makes them."""
        if isinstance(self.model, HistGradientBoostingRegressor):
            return np.asarray(self.model._loss.link.inverse(raw.ravel()))
        codes = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return np.asarray(self.model.classes_[codes])


Run = Callable[[list[Callable[[], None]]], None]


class OnThreads:
    """A batch of `trees` predicted on `parts` threads, each walking its share of the trees
    for every row with sklearn's own Cython predictor; `run` runs the parts' tasks at once
    (predict.RowThreads.run) and the trees' outputs are then added in sklearn's order
    (`raw += tree`, iteration after iteration from the baseline), so the raw values are the
    same float64 sums as sklearn's.

    Split by trees, not by rows: a thread needs the GIL only between two trees (about 5 us),
    and with every row each tree's Cython loop runs twice as long without it, so the two
    threads hand the GIL to each other half as often. A 1,000-row batch on a quiet box: one
    thread 5.25 ms, two halves of the rows 3.57, two halves of the trees 3.15 (median of 6
    alternating rounds)."""

    def __init__(self, trees: Trees, parts: int, run: Run) -> None:
        self.trees, self.parts, self.run = trees, parts, run
        if hasattr(trees, "classes_"):
            self.classes_ = trees.classes_

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        model = self.trees.model
        x = model._preprocess_X(matrix, reset=False)  # sklearn's own checks and dtype
        known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        predictors = [p for iteration in model._predictors for p in iteration]
        outputs = np.empty((len(predictors), x.shape[0]))
        bounds = np.linspace(0, len(predictors), self.parts + 1).astype(int)

        def walk(start: int, stop: int) -> Callable[[], None]:
            def trees() -> None:
                for j in range(start, stop):
                    outputs[j] = predictors[j].predict(x, known, f_idx_map, 1)

            return trees

        self.run([walk(bounds[i], bounds[i + 1]) for i in range(self.parts)])
        per_iteration = self.trees.per_iteration
        raw = np.zeros(
            (x.shape[0], per_iteration), dtype=model._baseline_prediction.dtype, order="F"
        )
        raw += model._baseline_prediction
        for j in range(len(predictors)):  # sklearn's _predict_iterations, in its order
            raw[:, j % per_iteration] += outputs[j]
        return raw

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.trees.model._loss.predict_proba(self.raw(matrix)))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.trees.from_raw(self.raw(matrix))


def fast(model: Any) -> Trees | None:
    """The numpy walk of a histogram gradient boosting model, or None for any other model or
    one with categorical splits."""
    if not isinstance(model, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return None
    if any(p.nodes["is_categorical"].any() for it in model._predictors for p in it):
        return None
    return Trees(model)


def agrees(fast: Any, matrix: np.ndarray) -> bool:
    """Do the outputs of a fast path (this walk, or core/engine/linear.py's) equal its sklearn
    model's (`fast.model`), bit for bit, on each row of `matrix` alone and on its first
    FEW_ROWS rows together: the probabilities of a classifier, and every model's predictions?"""
    model = fast.model
    batches = [matrix[i : i + 1] for i in range(len(matrix))] + [matrix[:FEW_ROWS]]
    for rows in batches:
        if not len(rows):
            continue
        if hasattr(model, "predict_proba"):
            got = np.asarray(fast.predict_proba(rows), dtype=np.float64)
            expected = np.asarray(model.predict_proba(rows), dtype=np.float64)
            if got.shape != expected.shape or not np.array_equal(
                got.view(np.uint64), expected.view(np.uint64)
            ):
                return False
        got, expected = np.asarray(fast.predict(rows)), np.asarray(model.predict(rows))
        if got.dtype != expected.dtype or got.shape != expected.shape:
            return False
        same = (
            np.array_equal(got.view(np.uint64), expected.view(np.uint64))
            if got.dtype == np.float64
            else np.array_equal(got, expected)
        )
        if not same:
            return False
    return True
