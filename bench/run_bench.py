"""A full deployment run against the plain pandas + scikit-learn script doing the same work.

Run: `.venv/bin/python bench/run_bench.py [--rows 1000000] [--threads 1] [--keep DIR]`.

Builds a generated Parquet source (`--rows` rows, 18 numeric + 2 categorical features, a key
and a label), trains histogram gradient boosting (main) and a linear model (challenger) on a
sample through core.training, deploys them, then measures, each path in its own fresh
subprocess so that peak memory (ru_maxrss) is its own:

- ModelDeck: enqueue_run + claim + execute_run in-process (read in batches, schema check,
  predict main + challenger, confidence, input quality, labelled metrics, write both results
  files, temp names renamed into place);
- plain: `pd.read_parquet` + `predict_proba` of both models + `to_parquet` of the predictions
  beside the input columns.

Targets (issue 3, Performance): time ratio <= 1.5, peak memory ratio <= 1.5, and results.page
(offset 0, limit 50) on the finished run <= 0.3 s. `--rows 10000000` shows the memory of a run
staying bounded (the plain path then needs the whole table in memory; skip it with
`--skip-plain`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.5
TARGET_PAGE_SECONDS = 0.3
N_NUMERIC, N_CATEGORICAL = 18, 2
CHUNK_ROWS = 500_000
SOURCE = "bench/source.parquet"


# ---------------------------------------------------------------------------- data
def chunk(start: int, n: int, seed: int) -> pd.DataFrame:
    """Rows start..start+n of the generated table (deterministic per chunk)."""
    rng = np.random.default_rng([seed, start])
    data: dict[str, Any] = {"row_id": np.arange(start, start + n, dtype=np.int64)}
    for i in range(N_NUMERIC):
        data[f"x{i:02d}"] = rng.normal(i % 5, 1 + i % 3, n)
    data["region"] = rng.choice(["north", "south", "east", "west"], n)
    data["plan"] = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    logit = (
        data["x00"]
        - data["x01"] * 0.5
        + 0.3 * data["x02"] * data["x03"]
        + 0.8 * (data["region"] == "north")
        - 0.6 * (data["plan"] == "pro")
        - 1.0
    )
    data["target"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame(data)
    frame.loc[rng.random(n) < 0.01, "x04"] = np.nan  # a few holes, as in real exports
    return frame


def write_source(path: Path, rows: int, seed: int = 11) -> None:
    """Write the source in chunks, so even 10M rows never sit in memory at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    for start in range(0, rows, CHUNK_ROWS):
        table = pa.Table.from_pandas(
            chunk(start, min(CHUNK_ROWS, rows - start), seed), preserve_index=False
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
        print(f"  source: {min(start + CHUNK_ROWS, rows):,}/{rows:,} rows", flush=True)
    if writer is not None:
        writer.close()


def prepare(home: Path, rows: int, train_rows: int) -> dict[str, Any]:
    """Source file, trained models and the deployment; returns what the children need."""
    from core import datasets, deployments, training
    from core.store import Store

    store = Store.open(home)
    started = time.perf_counter()
    write_source(home / SOURCE, rows)
    print(f"source written in {time.perf_counter() - started:.1f} s", flush=True)
    sample = chunk(10**9, train_rows, seed=11)  # a different slice, same distribution
    dataset = datasets.register_frame(
        store, sample, name="bench", kind="upload", source="bench", actor="system:bench"
    )
    started = time.perf_counter()
    result = training.train(
        store,
        training.TrainRequest(
            dataset_id=dataset.id,
            target="target",
            key_column="row_id",
            algorithms=("hist_gradient_boosting", "linear"),
        ),
        actor="system:bench",
    )
    models = {m.algorithm: m.id for m in result.models}
    print(f"trained on {train_rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    deployment = deployments.deploy(
        store,
        models["hist_gradient_boosting"],
        "staging",
        name="bench",
        challenger_id=models["linear"],
        actor="bench",
    )
    deployments.update_pipeline(
        store,
        deployment.name,
        {
            "source": {"kind": "file", "path": SOURCE},
            "transforms": [],
            "sinks": [],
            "label_column": "target",
        },
        actor="bench",
    )
    return {
        "deployment": deployment.name,
        "main": models["hist_gradient_boosting"],
        "challenger": models["linear"],
    }


# ---------------------------------------------------------------------------- the two paths
def child_modeldeck(home: Path, deployment: str) -> dict[str, Any]:
    from core import execution, runs
    from core.store import Store
    from core.worker import loop as worker  # noqa: F401  (the worker's imports, as a worker has them)

    store = Store.open(home)
    last = [-1.0]

    def progress(fraction: float, text: str) -> None:
        if fraction - last[0] >= 0.1:
            last[0] = fraction
            print(f"  modeldeck: {fraction:4.0%} {text}", flush=True)

    started = time.perf_counter()
    runs.enqueue_run(store, deployment, trigger="manual", actor="bench")
    claimed = execution.claim_next_run(store, "bench-worker", lease_seconds=600)
    assert claimed is not None
    run = execution.execute_run(store, claimed, "bench-worker", progress, lease_seconds=600)
    seconds = time.perf_counter() - started
    if run.status != "succeeded":
        raise SystemExit(f"run failed: {run.error}")
    return {
        "seconds": seconds,
        "run_id": run.id,
        "rows": run.rows_out,
        "timings": run.summary["timings"],
    }


def child_plain(home: Path, main_id: str, challenger_id: str) -> dict[str, Any]:
    from core.registry import get_model, load_estimator
    from core.store import Store

    store = Store.open(home)
    main, challenger = get_model(store, main_id), get_model(store, challenger_id)
    load_estimator(store, main)  # imports what loading needs, outside the clock
    features = main.schema.feature_names
    started = time.perf_counter()
    estimators = [joblib.load(home / m.artifact_path) for m in (main, challenger)]
    frame = pd.read_parquet(home / SOURCE)
    print(f"  plain: read {len(frame):,} rows", flush=True)
    for prefix, estimator in zip(("", "challenger_"), estimators, strict=True):
        proba = estimator.predict_proba(frame[features])
        frame[f"{prefix}prediction"] = estimator.classes_[proba.argmax(axis=1)]
        if not prefix:
            for i, cls in enumerate(estimator.classes_):
                frame[f"proba_{cls}"] = proba[:, i]
        print(f"  plain: predicted with {prefix or 'main '}model", flush=True)
    frame.to_parquet(home / "bench" / "plain.parquet", index=False)
    return {"seconds": time.perf_counter() - started, "rows": len(frame)}


def run_child(args: list[str]) -> dict[str, Any]:
    """Run one path in a fresh interpreter; its last stdout line is its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if not line.startswith("{"):
            print(line, end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed (exit {process.returncode})")
    return json.loads(lines[-1])


def page_seconds(home: Path, run_id: str) -> dict[str, float]:
    """Time results.page on the finished run: first call, then the median of five."""
    from core import results
    from core.store import Store

    store = Store.open(home)
    out = {}
    cases = {
        "first page": {},
        "sorted by confidence": {"sort_by": "confidence", "descending": True},
        "filtered (prediction, confidence)": {"where": {"prediction": "yes", "confidence": 0.8}},
    }
    for label, kwargs in cases.items():
        times = []
        for _ in range(6):
            started = time.perf_counter()
            frame, total = results.page(store, run_id, offset=0, limit=50, **kwargs)
            times.append(time.perf_counter() - started)
            assert len(frame) == min(50, total)
        out[label] = times[0]
        out[label + " (median of 5 more)"] = statistics.median(times[1:])
    return out


def child_main(argv: list[str]) -> None:
    from threadpoolctl import threadpool_limits

    kind, home, threads, *rest = argv
    # Both paths get the same thread limit (OpenMP spin-waiting on a shared machine slowed
    # histogram gradient boosting 10-20x; the limit changes no result, only the time).
    with threadpool_limits(limits=int(threads) if threads != "0" else None):
        result = (
            child_modeldeck(Path(home), rest[0])
            if kind == "modeldeck"
            else child_plain(Path(home), rest[0], rest[1])
        )
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- main
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads in both paths (0: the libraries' default)",
    )
    parser.add_argument(
        "--skip-plain", action="store_true", help="only the ModelDeck run (for --rows 10000000)"
    )
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it")
    args = parser.parse_args()
    temp = None if args.keep else tempfile.TemporaryDirectory(prefix="run_bench_")
    home = args.keep or Path(temp.name)  # type: ignore[union-attr]
    try:
        print(
            f"workspace {home}; {args.rows:,} rows, {N_NUMERIC + N_CATEGORICAL} features",
            flush=True,
        )
        setup = prepare(home, args.rows, args.train_rows)
        common = [str(home), str(args.threads)]
        ours = run_child(["--child", "modeldeck", *common, setup["deployment"]])
        plain = (
            None
            if args.skip_plain
            else run_child(["--child", "plain", *common, setup["main"], setup["challenger"]])
        )
        pages = page_seconds(home, ours["run_id"])
        report(args.rows, ours, plain, pages)
    finally:
        if temp is not None:
            temp.cleanup()


def report(
    rows: int, ours: dict[str, Any], plain: dict[str, Any] | None, pages: dict[str, float]
) -> None:
    print(f"\n{rows:,} rows scored by main + challenger")
    print(f"  ModelDeck run : {ours['seconds']:7.2f} s   peak {ours['peak_mb']:7.0f} MB")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in ours["timings"].items())
    print(f"    phases (s)  : {phases}")
    if plain is not None:
        print(f"  plain script  : {plain['seconds']:7.2f} s   peak {plain['peak_mb']:7.0f} MB")
        time_ratio = ours["seconds"] / plain["seconds"]
        memory_ratio = ours["peak_mb"] / plain["peak_mb"]
        print(
            f"  time ratio    : {time_ratio:.2f} (target <= {TARGET_RATIO}) "
            f"{'OK' if time_ratio <= TARGET_RATIO else 'MISSED'}"
        )
        print(
            f"  memory ratio  : {memory_ratio:.2f} (target <= {TARGET_RATIO}) "
            f"{'OK' if memory_ratio <= TARGET_RATIO else 'MISSED'}"
        )
    for label, seconds in pages.items():
        verdict = (
            "" if "median" in label else (" OK" if seconds <= TARGET_PAGE_SECONDS else " MISSED")
        )
        print(f"  results.page {label}: {seconds:.3f} s{verdict}")


if __name__ == "__main__":
    main()
