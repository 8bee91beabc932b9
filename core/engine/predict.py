"""Predicting one batch: a model's predictions, its confidence and class probabilities.

The confidence is the predicted class's probability for a classifier, the spread (standard
deviation) of a regression forest's trees, else unknown (NaN).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from core.engine import boosting, model_input
from core.engine.boosting import Trees
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


# ---------------------------------------------------------------------------- shared rows
FORESTS = (
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    DecisionTreeClassifier,
    DecisionTreeRegressor,
)
BOOSTING = (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
TREES = (Trees, *FORESTS, *BOOSTING)  # the models whose rows are computed one by one


def row_by_row(estimator: Any) -> bool:
    """Does the model compute each row's output alone, by the same steps whatever the batch?

    Tree ensembles walk each row through each tree and add the trees in a fixed order, so any
    split of a batch gives the same bits. A linear model's matrix product does not promise that
    (BLAS picks its kernels by the matrix's size), and it is cheap anyway: it is never split."""
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return isinstance(final, TREES)


@dataclass
class SharedScore:
    """A batch's output, and the CPU seconds the pool's threads spent on it."""

    scored: Scored
    helper_cpu: float = 0.0


class RowThreads:
    """Scores a large batch of a tree model on several threads at once: the caller's and
    `threads - 1` of a pool's, as many as cores are idle at that moment.

    The API pins OpenMP to one thread: histogram boosting's own threads meet at every tree and
    either spin on a core something else needs or sleep and wake a hundred times a batch
    (measured, issue 17). Here each thread predicts its part with one OpenMP thread (sklearn's
    Cython loops release the GIL) and the threads meet once, at the end. A histogram boosting
    model walked by `boosting.Trees` is split by trees: each thread walks its share of the
    trees for every row, and the caller adds the trees' outputs in sklearn's order. Every
    other tree model is split by rows. Either way each output is computed as one thread
    computes it, so the bits are the same."""

    def __init__(
        self, threads: int, min_rows: int = 512, idle: Callable[[], int] | None = None
    ) -> None:
        self.threads = max(1, threads)
        self.min_rows = min_rows
        self.idle = idle or idle_cores  # the cores a batch may use at this moment
        self.pool = (
            ThreadPoolExecutor(
                self.threads - 1, thread_name_prefix="rows", initializer=_one_openmp_thread
            )
            if self.threads > 1
            else None
        )
        self.shared = 0  # batches scored on more than one thread

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def score(
        self, estimator: Any, rows: pd.DataFrame | np.ndarray, task: str, who: str
    ) -> SharedScore:
        """predict.score of `rows`, shared among the threads when the model is a tree model
        and the batch has at least `min_rows` rows; the same bits either way."""
        n = len(rows)
        shareable = self.pool is not None and n >= self.min_rows and row_by_row(estimator)
        k = min(self.threads, self.idle()) if shareable else 1  # /proc read only if needed
        if k == 1:
            return SharedScore(score(estimator, rows, task, who))
        if isinstance(estimator, Trees):
            spent: list[float] = []
            on_threads = boosting.OnThreads(
                estimator, k, lambda tasks: spent.append(self.run(tasks))
            )
            scored = score(on_threads, rows, task, who)
            self.shared += 1
            return SharedScore(scored, sum(spent))
        bounds = np.linspace(0, n, k + 1).astype(int)
        parts: list[Scored | None] = [None] * k

        def part(i: int) -> Callable[[], None]:
            def predict() -> None:
                parts[i] = score(estimator, _rows(rows, bounds[i], bounds[i + 1]), task, who)

            return predict

        helper_cpu = self.run([part(i) for i in range(k)])
        self.shared += 1
        return SharedScore(_joined([p for p in parts if p is not None]), helper_cpu)

    def run(self, tasks: list[Callable[[], None]]) -> float:
        """Run `tasks` on this thread and the pool's, each thread taking the next task until
        none is left (a pool thread that starts late leaves its task to this one); raise the
        first task's exception here. The CPU seconds the pool's threads spent on them."""
        k = len(tasks)
        failed: list[BaseException] = []
        done = [threading.Event() for _ in range(k)]
        helper_cpu = [0.0] * k
        taken = itertools.count()  # next() of a count is atomic: each task is taken once

        def work(helping: bool) -> None:
            while (i := next(taken)) < k:
                started = time.thread_time()
                try:
                    tasks[i]()
                except BaseException as exc:  # raised in the caller's thread below
                    failed.append(exc)
                finally:
                    if helping:
                        helper_cpu[i] = time.thread_time() - started
                    done[i].set()

        if self.pool is not None:
            for _ in range(min(k, self.threads) - 1):
                self.pool.submit(work, True)  # one that starts after the tasks are taken: none
        work(False)
        for event in done:  # only the tasks taken by the pool's threads can still be running
            event.wait()
        if failed:
            raise failed[0]
        return sum(helper_cpu)


def idle_cores(yielding: int = 0) -> int:
    """This thread's core plus the cores nothing runs on at this moment (the running count of
    /proc/loadavg counts this thread), counting as idle those of `yielding` running processes
    of a lower priority (the challenger's); 1 where it cannot be read. A part given to a
    thread with no core of its own would run beside another program and finish last."""
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
        cores = len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError, AttributeError):
        return 1
    return max(1, min(cores, cores - running + 1 + yielding))


def _rows(rows: pd.DataFrame | np.ndarray, start: int, stop: int) -> pd.DataFrame | np.ndarray:
    return rows.iloc[start:stop] if isinstance(rows, pd.DataFrame) else rows[start:stop]


def _one_openmp_thread() -> None:
    """OpenMP's thread count is set per thread: a new thread starts from the process default
    (every core), whatever the API pinned in its own threads."""
    threadpool_limits(limits=1, user_api="openmp")


def _joined(parts: list[Scored]) -> Scored:
    first = parts[0]
    return Scored(
        np.concatenate([p.prediction for p in parts]),
        np.concatenate([p.confidence for p in parts]),
        None if first.proba is None else np.concatenate([p.proba for p in parts]),
        first.classes,
        None if first.codes is None else np.concatenate([p.codes for p in parts]),
    )
