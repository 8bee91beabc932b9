"""Explanations on a large run: the global step against a bare shap call, local open and reopen.

Run: `.venv/bin/python bench/explain_bench.py [--rows 1000000] [--sample 1000]
[--algorithms linear,random_forest,hist_gradient_boosting,gradient_boosting] [--keep DIR]`.

Builds the generated source of bench/run_bench.py (18 numeric + 2 categorical features, a key,
a label), trains each model kind on `--train-rows` rows through core.training, deploys each as
its own deployment and, per model kind, in this process:

- runs the deployment (enqueue, claim, execute_run): the run's wall time without the global step;
- the global step as the worker runs it (`explain.run_importance` with the model the run was
  scored with, as `explain.after_run(..., loaded=...)` gets it; explainer cache cleared, so
  the explainer is built inside the clock): stratified sample, transform, SHAP, mapping back
  to original columns, the per-row sample Parquet and the JSON file;
- "cold": the same through `explain.global_importance(run_id)` with nothing in memory (reads
  the run and model rows, loads and checks the model file), for information;
- the bare shap call on the same sampled rows: `TreeExplainer(model)` or
  `LinearExplainer(model, background)` built and `shap_values` on the transformed rows;
- opening one row's explanation cold (model load included) and reopening it (cache hit).

Targets (issue 5, Performance): global / bare <= 1.2; open < 0.5 s for tree and linear models
(< 3 s model-agnostic); reopen < 50 ms.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run_bench import SOURCE, chunk, write_source  # noqa: E402

ALGORITHMS = ("linear", "random_forest", "hist_gradient_boosting", "gradient_boosting")
TARGET_RATIO, TARGET_OPEN, TARGET_OPEN_AGNOSTIC, TARGET_REOPEN = 1.2, 0.5, 3.0, 0.05


def prepare(home: Path, rows: int, train_rows: int, algorithms: list[str]) -> dict[str, str]:
    """Source, one training of every algorithm, one deployment per algorithm."""
    from core import datasets, deployments, training
    from core.store import Store

    store = Store.open(home)
    write_source(home / SOURCE, rows)
    sample = chunk(10**9, train_rows, seed=11)
    dataset = datasets.register_frame(
        store, sample, name="bench", kind="upload", source="b", actor="system:bench"
    )
    started = time.perf_counter()
    result = training.train(
        store,
        training.TrainRequest(
            dataset_id=dataset.id,
            target="target",
            key_column="row_id",
            algorithms=tuple(algorithms),
        ),
        actor="system:bench",
    )
    print(
        f"trained {len(algorithms)} models on {train_rows:,} rows in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    names = {}
    for model in result.models:
        name = f"bench-{model.algorithm.replace('_', '-')}"
        d = deployments.deploy(store, model.id, "staging", name=name, actor="bench")
        deployments.update_pipeline(
            store,
            d.name,
            {
                "source": {"kind": "file", "path": SOURCE},
                "transforms": [],
                "sinks": [],
                "label_column": "target",
            },
            actor="bench",
        )
        names[model.algorithm] = d.name
    return names


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def bare_shap(store: Any, run: Any, sample: int) -> float:
    """A bare shap call on the rows the global step samples (transformed as the model does)."""
    import shap

    from core import explain, registry

    model = registry.get_model(store, run.summary["main"]["model_id"])
    estimator = registry.load_estimator(store, model)
    table = explain.sample_rows(store, run, "main", sample, True)
    frame = explain._model_frame(table, model)
    pre, final = estimator[:-1], estimator[-1]
    background = pre.transform(registry.background_sample(store, model)[frame.columns])
    rows = np.asarray(pre.transform(frame), dtype=np.float64)
    started = time.perf_counter()
    if model.algorithm == "linear":
        shap.LinearExplainer(final, background).shap_values(rows)
    else:
        shap.TreeExplainer(final).shap_values(rows, check_additivity=False)
    return time.perf_counter() - started


def measure(store: Any, name: str, sample: int) -> dict[str, Any]:
    from core import execution, explain, registry, runs
    from core.scoring import Loaded

    queued = runs.enqueue_run(store, name, actor="bench")
    claimed = execution.claim_next_run(store, "bench", lease_seconds=600)
    assert claimed is not None and claimed.id == queued.id
    run, run_seconds = timed(
        lambda: execution.execute_run(store, claimed, "bench", lease_seconds=600)
    )
    if run.status != "succeeded":
        raise SystemExit(f"run failed: {run.error}")
    model = registry.get_model(store, run.summary["main"]["model_id"])
    loaded = Loaded(model, registry.load_estimator(store, model), "main")  # as the worker has it
    explain._explainers.clear()
    importance, global_seconds = timed(
        lambda: explain.run_importance(store, run, "main", sample, loaded=loaded)
    )
    bare = bare_shap(store, run, sample)
    explain._explainers.clear()
    explain._models.clear()
    explain._readable_runs.clear()
    registry.clear_cache()
    _, cold = timed(lambda: explain.global_importance(store, run.id, "main", sample))
    explain._explainers.clear()
    registry.clear_cache()
    _, open_seconds = timed(lambda: explain.explain_rows(store, run.id, [12345 % run.rows_out]))
    reopen = min(
        timed(lambda: explain.explain_rows(store, run.id, [12345 % run.rows_out]))[1]
        for _ in range(5)
    )
    return {
        "rows": run.rows_out,
        "run": run_seconds,
        "global": global_seconds,
        "cold": cold,
        "sampled": importance.rows,
        "bare": bare,
        "ratio": global_seconds / bare,
        "open": open_seconds,
        "reopen": reopen,
        "explainer": importance.explainer,
        "top": importance.features[0][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=5_000)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads (HGB)")
    parser.add_argument("--keep", help="build the workspace here and keep it")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=args.threads, user_api="openmp")
    import core.engine.explainers
    import core.worker.loop  # the worker's imports (shap, skops), outside the clock

    assert core.engine.explainers.AGNOSTIC and core.worker.loop.HEARTBEAT_SECONDS
    home = Path(args.keep or tempfile.mkdtemp(prefix="explain_bench_"))
    try:
        from core.store import Store

        names = prepare(home, args.rows, args.train_rows, args.algorithms.split(","))
        store = Store.open(home)
        print(
            f"\n{'model':<24}{'rows':>10}{'run s':>8}{'global s':>10}{'bare s':>8}"
            f"{'ratio':>7}{'extra s':>8}{'cold s':>8}{'open s':>8}{'reopen ms':>11}"
            f"{'run+global s':>14}  explainer"
        )
        for algorithm, name in names.items():
            m = measure(store, name, args.sample)
            flags = [
                f"ratio>{TARGET_RATIO}" if m["ratio"] > TARGET_RATIO else "",
                f"open>{TARGET_OPEN}" if m["open"] > TARGET_OPEN else "",
                f"reopen>{TARGET_REOPEN * 1000:.0f}ms" if m["reopen"] > TARGET_REOPEN else "",
            ]
            print(
                f"{algorithm:<24}{m['rows']:>10,}{m['run']:>8.2f}{m['global']:>10.3f}"
                f"{m['bare']:>8.3f}{m['ratio']:>7.2f}{m['global'] - m['bare']:>8.3f}"
                f"{m['cold']:>8.3f}{m['open']:>8.3f}"
                f"{m['reopen'] * 1000:>11.1f}{m['run'] + m['global']:>14.2f}  "
                f"{m['explainer']} ({m['sampled']} rows) {' '.join(f for f in flags if f)}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
