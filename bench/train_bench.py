"""How long the demo workspace takes, and the store's overhead over plain scikit-learn.

Run: `.venv/bin/python bench/train_bench.py [--repeat N]`.

The baseline is the plain scikit-learn script that produces the same leaderboard: load each
demo table, split it, fit the same pipelines, score them on the holdout (the same metric
calls) and joblib.dump each model. ModelDeck's side is `create_demo` on an empty workspace:
the same work plus what the store adds (Parquet snapshots, validation, schema and training
profile, SHAP background sample, SHA-256, DuckDB metadata). Target: ratio <= 1.15.
The fit-only time is printed too, to show what the scoring and saving cost either way.

`--churn-rows N` runs the same comparison on one generated churn table of N rows instead of
the demo, to show how the store's mostly fixed costs (a DuckDB connection is about 30 ms)
weigh against fitting as the data grows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
import pandas as pd
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import datasets, demo, training
from core.engine import profiles
from core.store import Store

TARGET_RATIO = 1.15


def workload(churn_rows: int | None) -> list[tuple[str, str]]:
    """(table name, target) pairs: the demo's, or one churn table."""
    if churn_rows:
        return [("customer_churn", "churn")]
    return [(name, datasets.DEMO_TARGETS[name]) for name in demo.DEMO_EXPERIMENTS]


def table(name: str, churn_rows: int | None) -> pd.DataFrame:
    return datasets.churn_frame(churn_rows) if churn_rows else datasets.demo_frame(name)


def plain_script_seconds(out: Path, churn_rows: int | None) -> tuple[float, float]:
    """(whole plain script, fitting alone) for the workload's tables and the demo algorithms."""
    started, fitting = time.perf_counter(), 0.0
    for name, target in workload(churn_rows):
        frame = table(name, churn_rows)
        plan = training.plan_training(frame, target)
        X, y = frame[plan.features], frame[plan.target]
        X_train, X_test, y_train, y_test = train_test_split(
            X,
            y,
            test_size=training.TEST_SIZE,
            random_state=42,
            stratify=y if plan.task != "regression" else None,
        )
        schema = profiles.build_schema(
            X_train, plan.features, plan.target, plan.task, plan.classes, plan.key_column
        )
        for algorithm in training.DEFAULT_ALGORITHMS:
            pipeline = training.make_pipeline(schema, algorithm)
            fit_started = time.perf_counter()
            pipeline.fit(X_train, y_train)
            fitting += time.perf_counter() - fit_started
            training.evaluate(pipeline, X_test, y_test, plan.task, plan.classes)
            joblib.dump(pipeline, out / f"{name}-{algorithm}.joblib")
    return time.perf_counter() - started, fitting


def modeldeck_seconds(home: Path, churn_rows: int | None) -> float:
    """Build the demo workspace (or register and train the churn table) from scratch."""
    started = time.perf_counter()
    store = Store.open(home)
    if not churn_rows:
        demo.create_demo(store)
        return time.perf_counter() - started
    dataset = datasets.register_frame(
        store,
        table("customer_churn", churn_rows),
        name="churn",
        kind="upload",
        source="bench",
        actor="system:bench",
    )
    training.train(
        store, training.TrainRequest(dataset_id=dataset.id, target="churn"), actor="system:bench"
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--churn-rows", type=int, help="one churn table of N rows, not the demo")
    args = parser.parse_args()
    rows = args.churn_rows
    plain, fits, ours = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        plain_script_seconds(root, rows)  # warm imports and caches so neither side pays them
        for i in range(args.repeat):
            # Alternate the order so neither side always runs on a warmer machine.
            runs = [("plain", root / f"plain{i}"), ("demo", root / f"demo{i}")]
            for kind, folder in runs if i % 2 == 0 else runs[::-1]:
                folder.mkdir()
                if kind == "plain":
                    total, fit = plain_script_seconds(folder, rows)
                    plain.append(total)
                    fits.append(fit)
                else:
                    ours.append(modeldeck_seconds(folder, rows))
            print(
                f"round {i + 1}/{args.repeat}: plain script {plain[-1]:.2f} s "
                f"(fitting {fits[-1]:.2f} s), ModelDeck {ours[-1]:.2f} s",
                flush=True,
            )
    p, f, o = statistics.median(plain), statistics.median(fits), statistics.median(ours)
    what = f"churn table, {rows} rows" if rows else "demo workspace"
    print(f"\nworkload: {what}, algorithms {', '.join(training.DEFAULT_ALGORITHMS)}")
    print(f"plain scikit-learn script (median): {p:.2f} s, of which fitting {f:.2f} s")
    print(f"ModelDeck (median):                 {o:.2f} s" + ("" if rows else "  (limit 120 s)"))
    print(f"ratio to the plain script: {o / p:.2f}  (target <= {TARGET_RATIO})")
    print(f"ratio to fitting alone:    {o / f:.2f}")


if __name__ == "__main__":
    main()
