"""How long the demo workspace takes, and the store's overhead over plain scikit-learn fitting.

Run: `.venv/bin/python bench/train_bench.py [--repeat N]`. Both sides fit the same pipelines
on the same splits in this process; ModelDeck's side adds reading the snapshot, validation,
metrics, profiles, artifact files and the DuckDB writes. Target: ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.model_selection import train_test_split

from core import datasets, demo, profiles, training
from core.store import Store

TARGET_RATIO = 1.15


def plain_fit_seconds() -> float:
    """Fit the demo's pipelines with scikit-learn alone (data already in memory)."""
    total = 0.0
    for name in demo.DEMO_EXPERIMENTS:
        frame = datasets.demo_frame(name)
        target = datasets.DEMO_TARGETS[name]
        plan = training.plan_training(frame, target)
        X, y = frame[plan.features], frame[plan.target]
        X_train, _, y_train, _ = train_test_split(
            X, y, test_size=training.TEST_SIZE, random_state=42,
            stratify=y if plan.task != "regression" else None)
        schema = profiles.build_schema(X_train, plan.features, plan.target, plan.task,
                                       plan.classes, plan.key_column)
        for algorithm in training.DEFAULT_ALGORITHMS:
            pipeline = training.make_pipeline(schema, algorithm)
            started = time.perf_counter()
            pipeline.fit(X_train, y_train)
            total += time.perf_counter() - started
    return total


def demo_seconds() -> float:
    """Build a demo workspace from scratch in a temp folder."""
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        demo.create_demo(Store.open(home))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plain_fit_seconds()  # warm imports and caches so neither side pays them
    plain, ours = [], []
    for i in range(args.repeat):
        plain.append(plain_fit_seconds())
        ours.append(demo_seconds())
        print(f"round {i + 1}/{args.repeat}: plain fit {plain[-1]:.2f} s, "
              f"demo workspace {ours[-1]:.2f} s", flush=True)
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"\nplain scikit-learn fitting (median): {p:.2f} s")
    print(f"ModelDeck demo workspace (median):   {o:.2f} s  (limit 120 s)")
    print(f"ratio: {o / p:.2f}  (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
