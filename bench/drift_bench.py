"""Drift for 20 features (15 numeric, 5 categorical): a 100k-row training profile vs 1,000,000
scored rows in Parquet, with 4 features shifted on purpose.

Prints the time of `count_file` (one DuckDB aggregation) + scoring, the verdict per feature,
and the time to score a window of 30 such runs from stored counts. Evidently (issue 7's
comparison) needs `pandas<3`, so it lives in its own venv: `python -m venv /tmp/evvenv &&
/tmp/evvenv/bin/pip install "evidently==0.7.*" "pandas<3"`; when that venv is missing this
script says so and skips the comparison.

    .venv/bin/python bench/drift_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import drift
from core.drift_scores import Thresholds, score_feature
from core.entities import FeatureSchema, Model, ModelSchema
from core.profiles import categorical_profile, numeric_profile

NUMERIC, CATEGORICAL = 15, 5
SHIFTED = {"num_0", "num_1", "cat_0", "cat_1"}
EVIDENTLY = Path("/tmp/evvenv/bin/python")


def frame(n: int, seed: int, shifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i in range(NUMERIC):
        values = rng.normal(50 + i, 10 + i, n)
        if shifted and f"num_{i}" in SHIFTED:
            values = values + (10 + i) * 0.8  # 0.8 standard deviations
        data[f"num_{i}"] = values
    for i in range(CATEGORICAL):
        p = np.asarray([0.4, 0.3, 0.2, 0.1])
        if shifted and f"cat_{i}" in SHIFTED:
            p = p[::-1]
        data[f"cat_{i}"] = rng.choice(["a", "b", "c", "d"], n, p=p)
    data["prediction"] = rng.choice(["no", "yes"], n, p=[0.7, 0.3])
    return pd.DataFrame(data)


def model_of(reference: pd.DataFrame) -> Model:
    features = [FeatureSchema(f"num_{i}", "numeric", "float64") for i in range(NUMERIC)]
    features += [FeatureSchema(f"cat_{i}", "categorical", "str", ("a", "b", "c", "d"))
                 for i in range(CATEGORICAL)]
    profile = {"features": {f.name: numeric_profile(reference[f.name]) if f.kind == "numeric"
                            else categorical_profile(reference[f.name]) for f in features},
               "prediction": categorical_profile(reference["prediction"])}
    schema = ModelSchema(tuple(features), "y", "binary", ("no", "yes"))
    return Model("mdl_bench", "ver", "bench", "binary", "bench", {}, {}, schema, profile, "",
                 "joblib", (), "", 0, 0.0, datetime(2020, 1, 1))


def scores(model: Model, counts: dict, thresholds: Thresholds) -> dict[str, str]:
    profiles = {**model.profile["features"], "prediction": model.profile["prediction"]}
    return {name: score_feature(name, profiles[name], c, thresholds).status
            for name, c in counts["features"].items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    reference = frame(100_000, 1, shifted=False)
    model = model_of(reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "main.parquet"
        frame(args.rows, 2, shifted=True).to_parquet(path, index=False)
        drift.count_file(path, model, model.profile)  # warm the footer cache, like a worker
        started = time.perf_counter()
        counts = drift.count_file(path, model, model.profile)
        counted = time.perf_counter() - started
        verdict = scores(model, counts, Thresholds())
        total = time.perf_counter() - started
        print(f"{args.rows:,} rows, 20 features + prediction: counts {counted:.3f} s, "
              f"counts + scores {total:.3f} s (target < 1 s)")
        wrong = {n for n, s in verdict.items() if (s == "drifted") != (n in SHIFTED)}
        print(f"verdicts: drifted {sorted(n for n, s in verdict.items() if s == 'drifted')}; "
              f"{'all as injected' if not wrong else f'WRONG: {sorted(wrong)}'}")
        stored = [json.loads(json.dumps(counts)) for _ in range(30)]
        started = time.perf_counter()
        texts = [json.dumps(c) for c in stored]
        window = drift.combine([json.loads(t) for t in texts])
        scores(model, window, Thresholds())
        print(f"30-run window from stored counts (parse, add, score): "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")
    if not EVIDENTLY.exists():
        print(f"Evidently: not measured ({EVIDENTLY} missing; see this file's docstring).")


if __name__ == "__main__":
    main()
