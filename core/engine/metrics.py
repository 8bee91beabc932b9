"""A run's statistics, bounded in memory whatever the number of rows.

Running sums and counts, plus a systematic sample of at most SAMPLE_ROWS rows (for ROC-AUC and
prediction quantiles), so a 10,000,000-row run needs no more memory than a 100,000-row one.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from core.engine.classes import as_text, class_texts
from core.engine.predict import Scored
from core.entities import Task

SAMPLE_ROWS = 200_000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class Vocabulary:
    """Class labels as text with stable integer codes: the schema's classes first (in their
    order, so the positive class of a binary task is the last of them), then any other label
    met in the data. Statistics count codes, which is far cheaper than comparing strings."""

    def __init__(self, classes: tuple[Any, ...]) -> None:
        self.n_classes = len(classes)
        self.names: list[str] = class_texts(classes)
        self._index = pd.Index(self.names)

    def codes(self, texts: np.ndarray) -> np.ndarray:
        # pandas-stubs types `target` as an Index; pandas takes any array-like (Axes).
        found = self._index.get_indexer(texts)  # type: ignore[arg-type]
        if (found < 0).any():
            self.names += sorted(set(np.asarray(texts)[found < 0].tolist()))
            self._index = pd.Index(self.names)
            found = self._index.get_indexer(texts)  # type: ignore[arg-type]
        return found

    def predictions(self, scored: Scored) -> np.ndarray:
        """Each prediction's code."""
        if scored.codes is not None and scored.classes:
            codes: np.ndarray = self.codes(np.asarray(class_texts(scored.classes)))[scored.codes]
            return codes
        return self.codes(as_text(scored.prediction))

    def proba(self, scored: Scored) -> np.ndarray | None:
        """Probabilities in the schema's class order (None unless the model's classes match)."""
        if scored.proba is None:
            return None
        order = self.codes(np.asarray(class_texts(scored.classes)))
        if sorted(order.tolist()) != list(range(self.n_classes)):
            return None
        out = np.empty_like(scored.proba)
        out[:, order] = scored.proba
        return out


class Sample:
    """A systematic sample of a stream of rows, at most `cap` of them.

    Keeps every `stride`-th row added; when more than `cap` are kept the stride doubles and
    every other kept row is dropped, so memory stays bounded and the sample stays uniform.
    """

    def __init__(self, cap: int = SAMPLE_ROWS) -> None:
        self.cap = cap
        self.stride = 1
        self.seen = 0
        self.parts: list[dict[str, np.ndarray]] = []

    @property
    def is_complete(self) -> bool:
        return self.stride == 1

    def add(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        index = np.arange(self.seen, self.seen + n)
        keep = index % self.stride == 0
        self.parts.append({"_i": index[keep], **{k: v[keep] for k, v in columns.items()}})
        self.seen += n
        while sum(len(p["_i"]) for p in self.parts) > self.cap:
            self.stride *= 2
            self.parts = [
                {k: v[p["_i"] % self.stride == 0] for k, v in p.items()} for p in self.parts
            ]

    def get(self, name: str) -> np.ndarray | None:
        parts = [p[name] for p in self.parts if name in p]
        return np.concatenate(parts) if parts and len(parts) == len(self.parts) else None


class ModelStats:
    """Running statistics of one model's predictions over a run."""

    def __init__(self, task: Task, vocabulary: Vocabulary) -> None:
        self.task, self.vocabulary = task, vocabulary
        self.rows, self.confidence_sum, self.confidence_rows = 0, 0.0, 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.total, self.low, self.high = 0.0, math.inf, -math.inf
        self.predictions = Sample()
        self.labels: LabelStats | None = None

    def add(
        self,
        scored: Scored,
        codes: np.ndarray | None,
        labels: np.ndarray | None,
        labelled: np.ndarray | None,
    ) -> None:
        """Count one batch; `codes` are the predictions' codes (classification), `labels` the
        labelled rows' codes or values, `labelled` which rows have a label."""
        self.rows += len(scored.prediction)
        known = scored.confidence[~np.isnan(scored.confidence)]
        self.confidence_sum += float(known.sum())
        self.confidence_rows += len(known)
        if codes is None:
            self.total += float(scored.prediction.sum())
            self.low = min(self.low, float(scored.prediction.min()))
            self.high = max(self.high, float(scored.prediction.max()))
            self.predictions.add(prediction=scored.prediction)
        else:
            batch = np.bincount(codes, minlength=len(self.vocabulary.names))
            self.counts = np.pad(self.counts, (0, len(batch) - len(self.counts))) + batch
        if labels is not None and labelled is not None:
            self.labels = self.labels or LabelStats(self.task, self.vocabulary.n_classes)
            if codes is None:
                self.labels.add_values(labels, scored.prediction[labelled])
            else:
                proba = self.vocabulary.proba(scored)
                self.labels.add_codes(
                    labels, codes[labelled], proba[labelled] if proba is not None else None
                )

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mean_confidence": _round(self.confidence_sum / self.confidence_rows)
            if self.confidence_rows
            else None
        }
        if self.task == "regression":
            values = self.predictions.get("prediction")
            out["prediction_summary"] = {
                "min": _round(self.low),
                "max": _round(self.high),
                "mean": _round(self.total / self.rows) if self.rows else None,
                **{
                    f"p{round(q * 100):02d}": _round(float(np.quantile(values, q)))
                    for q in QUANTILES
                    if values is not None and len(values)
                },
            }
        else:
            names = self.vocabulary.names
            counts = {
                names[i]: int(n)
                for i, n in enumerate(self.counts)
                if n or i < self.vocabulary.n_classes
            }
            out["class_counts"] = counts
            out["class_balance"] = {k: _round(v / self.rows) for k, v in counts.items()}
        out["metrics"] = self.labels.result() if self.labels else None
        return out


class LabelStats:
    """Labelled metrics over a whole run, bounded: counts and sums, plus a sample for AUC.

    While a run has at most SAMPLE_ROWS labelled rows the metrics are exactly
    core.training's on all of them. Beyond that, accuracy, precision, recall and F1 (or MAE,
    RMSE and R2) stay exact, from confusion counts (or running sums), and ROC-AUC comes from
    a uniform systematic sample of SAMPLE_ROWS rows (`roc_auc_sample_rows`).
    """

    def __init__(self, task: Task, n_classes: int) -> None:
        self.task, self.n_classes = task, n_classes
        self.rows = 0
        self.confusion: Counter[tuple[int, int]] = Counter()
        self.sample = Sample()
        self.abs_error = self.sq_error = self.y_mean = self.y_m2 = 0.0

    def add_codes(self, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> None:
        if not len(y):
            return
        width = int(max(y.max(), pred.max())) + 1
        pairs = np.bincount(y.astype(np.int64) * width + pred, minlength=width * width)
        self.confusion.update({divmod(int(k), width): int(pairs[k]) for k in np.flatnonzero(pairs)})
        self.sample.add(y=y, p=pred, **({"proba": proba} if proba is not None else {}))
        self.rows += len(y)

    def add_values(self, y: np.ndarray, pred: np.ndarray) -> None:
        if not len(y):
            return
        y, error = y.astype(np.float64), y.astype(np.float64) - pred.astype(np.float64)
        self.abs_error += float(np.abs(error).sum())
        self.sq_error += float((error**2).sum())
        # Chan's parallel update of the label variance: stable over millions of rows.
        n_a, n_b = self.rows, len(y)
        mean_b = float(y.mean())
        delta = mean_b - self.y_mean
        self.y_mean += delta * n_b / (n_a + n_b)
        self.y_m2 += float(((y - mean_b) ** 2).sum()) + delta**2 * n_a * n_b / (n_a + n_b)
        self.rows += n_b

    def result(self) -> dict[str, Any]:
        if not self.rows:
            return {"rows": 0}
        if self.task == "regression":
            r2 = 1 - self.sq_error / self.y_m2 if self.y_m2 > 0 else None
            return {
                "mae": _round(self.abs_error / self.rows),
                "rmse": _round(math.sqrt(self.sq_error / self.rows)),
                "r2": _round(r2),
                "rows": self.rows,
            }
        y, pred, proba = (self.sample.get(k) for k in ("y", "p", "proba"))
        assert y is not None and pred is not None  # add_codes samples both with every batch
        classes = list(range(self.n_classes))
        try:  # on codes: sklearn's checks on integers are far cheaper than on strings
            out: dict[str, Any] = dict(
                classification_metrics(pd.Series(y), pred, proba, classes, self.task)
            )
        except ValueError:  # labels outside the model's classes: sklearn refuses "binary"
            out = {**_from_confusion(self.confusion, self.n_classes, self.task), "roc_auc": None}
        if not self.sample.is_complete:
            out.update(_from_confusion(self.confusion, self.n_classes, self.task))
            out["roc_auc_sample_rows"] = len(y)
        out["rows"] = self.rows
        return out


def _from_confusion(
    confusion: Counter[tuple[int, int]], n_classes: int, task: str
) -> dict[str, float | None]:
    """Accuracy, precision, recall and F1 as sklearn computes them, from (true, pred) counts.

    Binary: of the positive (last) class; otherwise the macro mean over every label seen.
    """
    total = sum(confusion.values())
    correct = sum(n for (t, p), n in confusion.items() if t == p)
    labels = (
        [n_classes - 1] if task == "binary" else sorted({x for pair in confusion for x in pair})
    )
    per_label = []
    for label in labels:
        tp = confusion.get((label, label), 0)
        fp = sum(n for (t, p), n in confusion.items() if p == label and t != label)
        fn = sum(n for (t, p), n in confusion.items() if t == label and p != label)
        per_label.append(
            (
                tp / (tp + fp) if tp + fp else 0.0,
                tp / (tp + fn) if tp + fn else 0.0,
                2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            )
        )
    precision, recall, f1 = (float(np.mean(col)) for col in zip(*per_label, strict=True))
    return {
        "accuracy": _round(correct / total),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


# ---------------------------------------------------------------------------- holdout metrics
def classification_metrics(
    y_true: pd.Series, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[Any], task: Task
) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 (binary: positive = last class; else macro), ROC-AUC."""
    average = "binary" if task == "binary" else "macro"
    pos = {"pos_label": classes[-1]} if task == "binary" else {}
    # One call for precision, recall and F1: each sklearn metric re-validates its inputs.
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0, **pos
    )
    out: dict[str, float | None] = {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": None,
    }
    if proba is not None and y_true.nunique() > 1:
        try:
            if task == "binary":
                out["roc_auc"] = skm.roc_auc_score(y_true == classes[-1], proba[:, -1])
            else:
                out["roc_auc"] = skm.roc_auc_score(
                    y_true, proba, multi_class="ovr", average="macro", labels=classes
                )
        except ValueError:  # a class absent from the holdout: AUC is undefined
            out["roc_auc"] = None
    return {k: _rounded(v) for k, v in out.items()}


def regression_metrics(y_true: pd.Series, y_pred: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE and R2."""
    return {
        "mae": _rounded(skm.mean_absolute_error(y_true, y_pred)),
        "rmse": _rounded(math.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "r2": _rounded(skm.r2_score(y_true, y_pred)),
    }


def _rounded(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)
