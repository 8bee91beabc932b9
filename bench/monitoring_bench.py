"""Monitoring queries over a month of hourly API traffic: ~1M logged requests.

Builds a temp workspace with one churn deployment (linear main, gradient boosting challenger,
trained on a small generated frame), then writes the prediction log as the worker's compaction
leaves it: one Parquet file per day under predictions/compacted/day=.../ (columns as
core.prediction_log.COLUMNS, inputs included, so the readers must skip them), a main record per
request (one row, class and probabilities) spread over `--days` days at `--per-hour` requests an
hour, a challenger record for every other request, plus one open JSON-lines segment holding
the last `--open` requests. Then times, median of `--repeat` runs after a first (cold) one:

- traffic: requests and rows per hour by source over the month (core.monitoring.traffic);
- traffic by day, api only;
- distributions: main and challenger class shares over the month;
- deployment usage: requests, rows, predict CPU, p50/p99 latency (core.usage);
- labels by request id: matching 10,000 request-keyed labels against the month
  (core.request_labels.match);
- drift of the month's API and form calls against training, by day and by hour, with input
  quality (core.traffic_drift.traffic_drift), after the worker's step that keeps each
  compacted file's hourly counts (keep_counts, timed once);
- champion vs challenger on the month's calls (core.traffic_challenger.compare_traffic).

Each request's inputs are one of 256 rows of the churn table (all seven features).

Target (issue 18): <= 1 s per section on a quiet 2-core box.

    .venv/bin/python bench/monitoring_bench.py [--days 30] [--per-hour 1389] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
WHO = "admin"
ALGORITHMS = ("linear", "gradient_boosting")


def setup(home: Path) -> Any:
    """A workspace with deployment `bench`: linear main, gradient boosting challenger."""
    from core import datasets, deployments, training, users
    from core.store import Store

    os.environ["MODELDECK_HOME"] = str(home)
    store = Store.open(home)
    users.ensure_admin(store)
    frame = datasets.churn_frame(n_rows=400)
    dataset = datasets.register_frame(store, frame, name="c", kind="upload", source="c", actor=WHO)
    asked = training.TrainRequest(dataset_id=dataset.id, target="churn", algorithms=ALGORITHMS)
    ids = [m.id for m in sorted(training.train(store, asked, actor=WHO).models, key=by_name)]
    main, other = ids[1], ids[0]  # linear, gradient_boosting
    return store, deployments.deploy(store, main, "staging", challenger_id=other, actor=WHO)


def by_name(model: Any) -> str:
    return str(model.algorithm)


START = datetime(2026, 11, 1)


def write_log(
    store: Any, deployed: Any, days: int, per_hour: int, open_rows: int, start: datetime = START
) -> int:
    """`days` days of traffic from `start` (UTC, naive) for `deployed`; the number of
    requests logged. bench/ui_bench.py --traffic reuses it, ending the month now."""
    from core import datasets, prediction_log

    rng = np.random.default_rng(7)
    base = prediction_log.folder(store.workspace) / "compacted"
    rows = datasets.churn_frame(n_rows=256, seed=3).drop(columns=["churn", "customer_id"])
    pool = [orjson.dumps(rows.iloc[[i]].to_dict(orient="list")).decode() for i in range(256)]
    outputs = [
        orjson.dumps({"predictions": [c], "probabilities": [{"no": p, "yes": 1 - p}]}).decode()
        for c, p in [("no", 0.8), ("yes", 0.3), ("no", 0.6), ("yes", 0.1)]
    ]
    challenger_outputs = [orjson.dumps({"predictions": [c]}).decode() for c in ("no", "yes")]
    total = 0
    for day in range(days):
        n = per_hour * 24
        seconds = np.sort(rng.integers(0, 86_400, n))
        at = np.datetime64(start + timedelta(days=day)) + seconds.astype("timedelta64[s]")
        ids = [f"d{day}-{i}" for i in range(n)]
        picks = rng.integers(0, len(outputs), n)
        main = {
            "kind": ["main"] * n,
            "logged_at": at.astype("datetime64[us]"),
            "request_id": ids,
            "deployment": [deployed.name] * n,
            "deployment_id": [deployed.id] * n,
            "version": [1] * n,
            "key_id": [None] * n,
            "source": np.where(rng.random(n) < 0.9, "api", "form").tolist(),
            "rows": [1] * n,
            "status": np.where(rng.random(n) < 0.99, 200, 422).tolist(),
            "latency_ms": rng.gamma(2.0, 0.6, n),
            "cpu_ms": rng.gamma(2.0, 0.4, n),
            "inputs": [pool[i] for i in rng.integers(0, len(pool), n)],
            "outputs": [outputs[i] for i in picks],
            "error": [None] * n,
        }
        half = slice(0, n, 2)
        shadow = {k: v[half] for k, v in main.items()}
        shadow["kind"] = ["challenger"] * len(shadow["request_id"])
        shadow["outputs"] = [challenger_outputs[i % 2] for i in range(len(shadow["request_id"]))]
        tables = [
            pa.table({c: pa.array(v, type=prediction_log.COLUMNS[c]) for c, v in part.items()})
            for part in (main, shadow)
        ]
        folder = base / f"day={(start + timedelta(days=day)).date()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), folder / "bench.parquet")
        total += n
    log = prediction_log.PredictionLog(store.workspace)
    end = start + timedelta(days=days)
    for i in range(open_rows):
        log.write(
            {
                "kind": "main",
                "logged_at": (end - timedelta(seconds=open_rows - i)).isoformat(),
                "request_id": f"open-{i}",
                "deployment": deployed.name,
                "deployment_id": deployed.id,
                "version": 1,
                "source": "api",
                "rows": 1,
                "status": 200,
                "latency_ms": 1.2,
                "cpu_ms": 0.8,
                "inputs": orjson.loads(pool[i % len(pool)]),
                "outputs": orjson.loads(outputs[i % len(outputs)]),
            }
        )
    return total + open_rows


def timed(name: str, fn: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    fn()
    cold = time.perf_counter() - started
    warm = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - started)
    median = statistics.median(warm)
    print(f"{name:<34} cold {cold:6.3f} s   warm median {median:6.3f} s", flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-hour", type=int, default=1389)
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        store, deployed = setup(home)
        from core import monitoring, request_labels, usage
        from core.traffic_challenger import compare_traffic
        from core.traffic_drift import keep_counts, traffic_drift

        started = time.perf_counter()
        total = write_log(store, deployed, args.days, args.per_hour, args.open)
        print(f"wrote {total:,} logged requests in {time.perf_counter() - started:.1f} s")
        labels = home / "labels.parquet"
        pq.write_table(
            pa.table(
                {
                    "request_id": [f"d{i % args.days}-{i}" for i in range(10_000)],
                    "row": pa.array([0] * 10_000, pa.int64()),
                    "label": ["yes" if i % 3 else "no" for i in range(10_000)],
                }
            ),
            labels,
        )
        start = START
        month = monitoring.Window(start, start + timedelta(days=args.days + 1))
        days_api = monitoring.Window(month.start, month.end, "day", "api")
        name = deployed.name
        timed(
            "traffic, hourly, all sources",
            lambda: monitoring.traffic(store, name, month),
            args.repeat,
        )
        timed("traffic, daily, api", lambda: monitoring.traffic(store, name, days_api), args.repeat)
        timed(
            "distributions, main + challenger",
            lambda: monitoring.distributions(store, name, month),
            args.repeat,
        )
        timed(
            "deployment usage (p50/p99, cpu)",
            lambda: usage.deployment_usage(store, deployed.id),
            args.repeat,
        )
        timed(
            "10k request-keyed labels matched",
            lambda: request_labels.match(store.workspace, deployed.id, [str(labels)]),
            args.repeat,
        )
        started = time.perf_counter()
        kept = keep_counts(store, days=10_000)  # the worker's step after compacting
        print(f"worker: kept drift counts of {kept} files in {time.perf_counter() - started:.1f} s")
        calls_by_day = monitoring.Window(month.start, month.end, "day", "calls")
        calls_by_hour = monitoring.Window(month.start, month.end, "hour", "calls")
        timed(
            "drift of calls, daily + quality",
            lambda: traffic_drift(store, name, calls_by_day),
            args.repeat,
        )
        timed(
            "drift of calls, hourly + quality",
            lambda: traffic_drift(store, name, calls_by_hour),
            args.repeat,
        )
        timed(
            "main vs challenger on calls, daily",
            lambda: compare_traffic(store, name, calls_by_day),
            args.repeat,
        )
        found = traffic_drift(store, name, calls_by_day)
        print(
            f"drift: {found.report.rows:,} rows, {found.requests:,} calls, "
            f"{len(found.series.shares)} days, {len(found.report.drifted)} drifted features"
        )
        compared = compare_traffic(store, name, calls_by_day)
        print(f"agreement {compared.agreement_rate:.3f} on {compared.rows:,} paired rows")
        shares = monitoring.distributions(store, name, month)
        print(f"main shares {dict(zip(shares.labels, shares.main, strict=True))}")
        print(f"challenger shares {dict(zip(shares.labels, shares.challenger, strict=True))}")


if __name__ == "__main__":
    main()
