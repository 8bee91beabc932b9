"""Drift scores of one feature from bucket counts: PSI, a size-free distance, a p-value.

Pure arithmetic on a training profile entry (core.profiles) and summed bucket counts
(core.drift); no I/O. The buckets of a numeric feature are below-range, the training quantile
bins, above-range and missing; of a categorical one the profile's categories, `other` (known
in training, outside the profile's top categories), `unseen` and missing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, kstwobign

from core.engine.profiles import plain_number

EPSILON = 1e-4  # share given to an empty bucket in PSI, so one empty bin cannot make it infinite
DEFAULT_MODERATE, DEFAULT_DRIFTED = 0.1, 0.25
PREDICTION = "prediction"


@dataclass(frozen=True)
class Thresholds:
    """PSI at or above `moderate` is moderate drift, at or above `drifted` is drift."""

    moderate: float = DEFAULT_MODERATE
    drifted: float = DEFAULT_DRIFTED

    def status(self, psi: float | None) -> str:
        if psi is None:
            return "n/a"
        if psi >= self.drifted:
            return "drifted"
        return "moderate" if psi >= self.moderate else "stable"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature (or the prediction) in a window: buckets, shares, scores, status."""

    name: str
    kind: str  # numeric | categorical
    status: str  # stable | moderate | drifted | n/a
    psi: float | None
    distance: float | None
    distance_kind: str  # wasserstein/std | wasserstein (raw) | jensen-shannon | ""
    p_value: float | None
    test: str  # ks (binned) | chi-square | ""
    buckets: tuple[str, ...] = ()
    training: tuple[float, ...] = ()  # shares per bucket, missing included
    served: tuple[float, ...] = ()
    served_rows: int = 0
    served_mean: float | None = None
    training_mean: float | None = None
    note: str = ""


def not_scored(name: str, kind: str, why: str) -> FeatureDrift:
    """A feature drift cannot be computed for, with the reason."""
    return FeatureDrift(name, kind, "n/a", None, None, "", None, "", note=why)


def psi(training: np.ndarray, served: np.ndarray) -> float:
    """Population stability index of two share vectors over the same buckets."""
    t = np.clip(training, EPSILON, None)
    s = np.clip(served, EPSILON, None)
    return float(np.sum((s - t) * np.log(s / t)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=float)


def numeric_buckets(edges: list[float]) -> list[str]:
    """Bucket labels: below range, the training bins (the last one closed), above, missing."""
    if len(edges) == 1:
        inner = [f"= {plain_number(edges[0])}"]
    else:
        inner = [
            f"[{plain_number(lo)}, {plain_number(hi)}{']' if i == len(edges) - 2 else ')'}"
            for i, (lo, hi) in enumerate(itertools.pairwise(edges))
        ]
    return [f"< {plain_number(edges[0])}", *inner, f"> {plain_number(edges[-1])}", "missing"]


def score_feature(
    name: str,
    profile: dict[str, Any],
    counts: dict[str, Any],
    thresholds: Thresholds,
    *,
    p_value: bool = True,
) -> FeatureDrift:
    """Scores of one feature's summed counts against its training profile entry; without
    `p_value`, the p-value is left out (a chart of many points: scipy's chi-square test is
    ~2 ms a call, 5 of the 9 s of 720 hourly points)."""
    if profile["kind"] == "numeric":
        return _numeric(name, profile, counts, thresholds, p_value)
    return _categorical(name, profile, counts, thresholds, p_value)


def _numeric(
    name: str, profile: dict[str, Any], c: dict[str, Any], thresholds: Thresholds, tested: bool
) -> FeatureDrift:
    edges, missing_rate = profile["edges"], float(profile.get("missing_rate") or 0.0)
    inner = np.asarray(profile["fractions"], dtype=float)
    training = np.concatenate([[0.0], inner * (1 - missing_rate), [0.0, missing_rate]])
    counts = np.asarray([c["below"], *c["bins"], c["above"], c["missing"]], dtype=float)
    served = _shares(counts)
    present = counts[:-1]
    n_served = int(present.sum())
    note, distance, p_value, kind = "", None, None, "wasserstein/std"
    if n_served:
        mids = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)] or [edges[0]]
        below = c["below_sum"] / c["below"] if c["below"] else edges[0]
        above = c["above_sum"] / c["above"] if c["above"] else edges[-1]
        points = np.asarray([below, *mids, above])
        p_train, p_served = _shares(training[:-1]), _shares(present)
        gaps = np.abs(np.cumsum(p_train) - np.cumsum(p_served))[:-1]
        raw = float(np.sum(gaps * np.diff(points)))
        std = profile.get("std") or 0.0
        if std > 0:
            distance = raw / std
        else:
            distance, kind = raw, "wasserstein (raw)"
            note = "constant in training (std 0): the distance is in the feature's units"
        n_train = float(profile.get("count") or 0) * (1 - missing_rate)
        d_max = float(np.max(np.abs(np.cumsum(p_train) - np.cumsum(p_served))))
        if n_train > 0 and tested:
            p_value = float(
                kstwobign.sf(d_max * math.sqrt(n_train * n_served / (n_train + n_served)))
            )
    score = psi(training, served)
    return FeatureDrift(
        name,
        "numeric",
        thresholds.status(score),
        score,
        distance,
        kind,
        p_value,
        "ks (binned)",
        tuple(numeric_buckets(edges)),
        tuple(training.tolist()),
        tuple(served.tolist()),
        int(counts.sum()),
        served_mean=c["sum"] / n_served if n_served else None,
        training_mean=profile.get("mean"),
        note=note,
    )


def _categorical(
    name: str, profile: dict[str, Any], c: dict[str, Any], thresholds: Thresholds, tested: bool
) -> FeatureDrift:
    missing_rate = float(profile.get("missing_rate") or 0.0)
    frequencies = profile.get("frequencies") or {}
    labels = [*frequencies, "other", "unseen", "missing"]
    training = np.asarray(
        [
            *(float(v) * (1 - missing_rate) for v in frequencies.values()),
            float(profile.get("other_fraction") or 0.0) * (1 - missing_rate),
            0.0,
            missing_rate,
        ]
    )
    counts = np.asarray(
        [*(c["categories"].get(k, 0) for k in frequencies), c["other"], c["unseen"], c["missing"]],
        dtype=float,
    )
    served = _shares(counts)
    n = int(counts.sum())
    distance = float(jensenshannon(training, served, base=2)) if n else None
    p_value = None
    n_train = float(profile.get("count") or 0)
    keep = (training > 0) | (counts > 0)
    if n and n_train and keep.sum() >= 2 and tested:
        table = np.vstack([training[keep] * n_train, counts[keep]])
        p_value = float(chi2_contingency(table)[1])
    note = f"{c['unseen'] / n:.1%} of values were unseen in training" if n and c["unseen"] else ""
    score = psi(training, served)
    return FeatureDrift(
        name,
        "categorical",
        thresholds.status(score),
        score,
        distance,
        "jensen-shannon",
        p_value,
        "chi-square",
        tuple(labels),
        tuple(training.tolist()),
        tuple(served.tolist()),
        n,
        note=note,
    )
