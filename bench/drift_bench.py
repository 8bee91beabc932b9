"""Drift for 20 features (15 numeric, 5 categorical) and the prediction: a 100k-row training
profile vs 1,000,000 scored rows in Parquet (written like a run's results: row groups of
DEFAULT_BATCH_ROWS rows, dictionaries for text only), with 4 features shifted on purpose.

Ours runs in a child process, so its peak memory is its own: `count_file` (one DuckDB
aggregation) + scores, median of --repeat runs after a first (cold) one. Issue 7 compares it
with Evidently's DataDriftPreset on the same files (100k reference rows vs the 1M current
rows), run in its own venv because Evidently 0.7 needs `pandas<3`. Create that venv once:

    python3.11 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install "evidently==0.7.*" "pandas<3"

This script never installs anything: without the venv it says so and skips Evidently. Both
verdicts are checked per column against the injected drift. It also prints the time to score
a window of 30 runs from stored counts (what opening the Drift tab costs).

    .venv/bin/python bench/drift_bench.py [--rows 1000000] [--repeat 5]
                                          [--evidently-repeat 1] [--no-evidently]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import drift
from core.engine.drift_scores import Thresholds, score_feature
from core.engine.profiles import categorical_profile, numeric_profile
from core.entities import FeatureSchema, Model, ModelSchema
from core.pipeline import DEFAULT_BATCH_ROWS

NUMERIC, CATEGORICAL = 15, 5
NUMERIC_COLUMNS = [f"num_{i}" for i in range(NUMERIC)]
CATEGORICAL_COLUMNS = [f"cat_{i}" for i in range(CATEGORICAL)]
SHIFTED = {"num_0", "num_1", "cat_0", "cat_1"}
EVIDENTLY = Path("/tmp/evvenv/bin/python")
SETUP = (
    'python3.11 -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install "evidently==0.7.*" "pandas<3"'
)

# Run by the Evidently venv's interpreter after peak_mb's source; argv = folder, numeric
# columns, categorical columns.
EVIDENTLY_CHILD = """
import json, sys, time
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

folder, numeric, categorical = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
started = time.perf_counter()
reference = pd.read_parquet(f"{folder}/reference.parquet")
current = pd.read_parquet(f"{folder}/current.parquet")
read = time.perf_counter() - started
definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
snapshot = Report([DataDriftPreset()], include_tests=True).run(
    Dataset.from_pandas(current, data_definition=definition),
    Dataset.from_pandas(reference, data_definition=definition))
drifted = {}
for test in snapshot.dict()["tests"]:
    column = test["metric_config"]["params"].get("column")
    if column is not None:
        drifted[column] = getattr(test["status"], "value", test["status"]) == "FAIL"
print(json.dumps({"seconds": time.perf_counter() - started, "read_seconds": read,
                  "peak_mb": peak_mb(), "drifted": drifted}))
"""


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


def profile_of(reference: pd.DataFrame) -> dict[str, Any]:
    """The training profile a model trained on `reference` would carry."""
    return {
        "features": {
            **{n: numeric_profile(reference[n]) for n in NUMERIC_COLUMNS},
            **{n: categorical_profile(reference[n]) for n in CATEGORICAL_COLUMNS},
        },
        "prediction": categorical_profile(reference["prediction"]),
    }


def bench_model(profile: dict[str, Any]) -> Model:
    features = [FeatureSchema(n, "numeric", "float64") for n in NUMERIC_COLUMNS]
    features += [
        FeatureSchema(n, "categorical", "str", ("a", "b", "c", "d")) for n in CATEGORICAL_COLUMNS
    ]
    schema = ModelSchema(tuple(features), "y", "binary", ("no", "yes"))
    return Model(
        "mdl_bench",
        "ver",
        "bench",
        "binary",
        "bench",
        {},
        {},
        schema,
        profile,
        "",
        "joblib",
        (),
        "",
        0,
        0.0,
        datetime(2020, 1, 1),
    )


def write_like_a_run(data: pd.DataFrame, path: Path) -> None:
    """Parquet laid out like core.scoring's results files."""
    table = pa.Table.from_pandas(data, preserve_index=False)
    text = [
        f.name
        for f in table.schema
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    pq.write_table(
        table,
        path,
        row_group_size=DEFAULT_BATCH_ROWS,
        compression="snappy",
        use_dictionary=text or False,
    )


def scores(model: Model, counts: dict, thresholds: Thresholds) -> dict[str, str]:
    profiles = {**model.profile["features"], "prediction": model.profile["prediction"]}
    return {
        name: score_feature(name, profiles[name], c, thresholds).status
        for name, c in counts["features"].items()
    }


def peak_mb() -> float:
    """Peak resident memory (MB) of this process since its exec. Not getrusage's ru_maxrss:
    Linux carries that over from the forking parent, here the bench holding the 1M rows."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def measure_ours(folder: Path, repeat: int) -> None:
    """The child measuring ModelDeck: one JSON line with timings, memory, counts, verdicts."""
    imported = peak_mb()
    model = bench_model(json.loads((folder / "profile.json").read_text()))
    seconds = []
    for _ in range(repeat + 1):  # the first one is cold: a new DuckDB, no Parquet footer
        started = time.perf_counter()
        counts = drift.count_file(folder / "current.parquet", model, model.profile)
        verdict = scores(model, counts, Thresholds())
        seconds.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "imported_mb": imported,
                "peak_mb": peak_mb(),
                "counts": counts,
                "verdict": verdict,
            }
        )
    )


def child(command: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def window_ms(model: Model, counts: dict[str, Any], repeat: int) -> float:
    """Median time to parse, add and score 30 runs' stored counts."""
    texts = [json.dumps(counts) for _ in range(30)]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        scores(model, drift.combine([json.loads(t) for t in texts]), Thresholds())
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def compare_evidently(
    folder: Path, repeat: int, ours_seconds: float, ours_mb: float, ours_drifted: dict[str, bool]
) -> None:
    if not EVIDENTLY.exists():
        print(f"Evidently: not measured: {EVIDENTLY} is missing. Create it with\n    {SETUP}")
        return
    code = f"{inspect.getsource(peak_mb)}\n{EVIDENTLY_CHILD}"
    command = [
        str(EVIDENTLY),
        "-c",
        code,
        str(folder),
        json.dumps(NUMERIC_COLUMNS),
        json.dumps([*CATEGORICAL_COLUMNS, "prediction"]),
    ]
    try:
        runs = [child(command, timeout=1800) for _ in range(repeat)]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"Evidently: failed: {exc}")
        return
    total = statistics.median(r["seconds"] for r in runs)
    read = statistics.median(r["read_seconds"] for r in runs)
    peak = statistics.median(r["peak_mb"] for r in runs)
    drifted: dict[str, bool] = runs[0]["drifted"]
    print(
        f"Evidently DataDriftPreset (100k reference vs current, median of {repeat}): "
        f"{total:.1f} s, of which reading both files into pandas {read:.1f} s; "
        f"peak {peak:,.0f} MB"
    )
    speedup = (total - read) / ours_seconds  # Evidently's report alone vs our whole count
    print(
        f"ours vs Evidently: {speedup:.0f}x faster (target >= 30x), peak memory "
        f"{ours_mb / peak:.0%} of Evidently's (target < 50%)"
    )
    wrong = sorted(n for n, d in drifted.items() if d != (n in SHIFTED))
    differ = sorted(n for n in ours_drifted if drifted.get(n) != ours_drifted[n])
    print(
        f"Evidently verdicts: drifted {sorted(n for n, d in drifted.items() if d)}; "
        f"{'all as injected' if not wrong else f'WRONG: {wrong}'}; "
        f"{'same as ours on every column' if not differ else f'differs from ours: {differ}'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--evidently-repeat", type=int, default=1)
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--ours", type=Path, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.ours:
        measure_ours(args.ours, args.repeat)
        return
    reference = frame(100_000, 1, shifted=False)
    profile = profile_of(reference)
    model = bench_model(profile)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "profile.json").write_text(json.dumps(profile))
        write_like_a_run(reference, folder / "reference.parquet")
        write_like_a_run(frame(args.rows, 2, shifted=True), folder / "current.parquet")
        ours = child(
            [sys.executable, __file__, "--ours", str(folder), "--repeat", str(args.repeat)],
            timeout=600,
        )
        seconds = statistics.median(ours["seconds"][1:])
        print(
            f"{args.rows:,} rows, 20 features + prediction: counts + scores {seconds:.3f} s "
            f"(median of {args.repeat}, target < 1 s; first, cold: {ours['seconds'][0]:.3f} s)"
            f"; peak memory {ours['peak_mb']:,.0f} MB ({ours['imported_mb']:,.0f} MB after "
            f"imports)"
        )
        verdict = ours["verdict"]
        wrong = sorted(n for n, s in verdict.items() if (s == "drifted") != (n in SHIFTED))
        print(
            f"verdicts: drifted {sorted(n for n, s in verdict.items() if s == 'drifted')}; "
            f"{'all as injected' if not wrong else f'WRONG: {wrong}'}"
        )
        print(
            f"30-run window from stored counts (parse, add, score): "
            f"{window_ms(model, ours['counts'], args.repeat):.1f} ms"
        )
        if args.no_evidently:
            print("Evidently: skipped (--no-evidently).")
        else:
            compare_evidently(
                folder,
                args.evidently_repeat,
                seconds,
                ours["peak_mb"],
                {n: s == "drifted" for n, s in verdict.items()},
            )


if __name__ == "__main__":
    main()
