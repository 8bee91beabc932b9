"""The serving API against the model predicting in-process, and against `mlflow models serve`.

Run: `.venv/bin/python bench/api_bench.py [--seconds 3] [--skip-mlflow] [--processes N]`.

Trains the churn demo's linear model and histogram gradient boosting (core.training), deploys
each as a public deployment (and boosting with the linear challenger), starts the API
(`uvicorn core.api.app:app`, one process, as `modeldeck api` does) on 127.0.0.1 and measures,
with keep-alive connections:

- one row: p50 / p99 latency and req/s at concurrency 1 and 8, beside the model's own
  in-process predict of the same row (p50);
- 1,000-row batches: rows/s for dataframe_split, dataframe_records, CSV and Open Inference
  (the API shares a batch's rows among its threads when cores are idle: predict.RowThreads),
  and the same work in-process without HTTP or JSON; and the server's CPU time per batch
  (its process and children), what a batch costs it whatever the concurrency;
- each with and without a challenger in shadow;
- the same model under `mlflow models serve` (its own virtual environment, made by the bench
  under bench/out/; if it cannot be installed, the bench says so and goes on).

At concurrency 8 the client threads of this process share the GIL and the two cores with the
server, so their figures hold the client's own waits; where `wrk` is installed (Debian's
package: `apt-get install wrk`), the bench also measures c8 with it, a C client on one thread
whose eight connections cost the box little, beside the same for MLflow.

Targets (issue 17): the API adds at most 1 ms at p50 to the in-process predict; p99 <= 10 ms at
c8; >= 5x MLflow's req/s and >= 4x its batch rows/s; the challenger adds at most 10 % to main
latency. The client runs in this process (threads), so at c8 on 2 cores client and server share
the CPU: the figures are upper bounds of the server's own cost.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import access, api_status, datasets, deployments, registry, serving  # noqa: E402
from core.engine import boosting, predict  # noqa: E402
from core.engine.compiled import compile_pipeline  # noqa: E402
from core.store import Store  # noqa: E402
from core.training import TrainRequest, train  # noqa: E402

BENCH = access.BOOTSTRAP
OUT = ROOT / "bench" / "out"
DRAIN_SECONDS = 3.0  # before a challenger's rounds: its process ends the calls queued before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port}{path}")


def workspace(home: Path) -> tuple[Store, dict[str, Any]]:
    store = Store.open(home)
    frame = datasets.demo_frame("customer_churn")
    dataset = datasets.register_frame(
        store, frame, name="churn", kind="upload", source="churn", actor=BENCH
    )
    result = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="churn", algorithms=("linear", "hist_gradient_boosting")
        ),
        actor=BENCH,
    )
    by = {m.algorithm: m for m in result.models}
    for name, main, challenger in (
        ("linear", by["linear"], None),
        ("hgb", by["hist_gradient_boosting"], None),
        ("hgb-shadow", by["hist_gradient_boosting"], by["linear"]),
    ):
        deployments.deploy(
            store,
            main.id,
            "staging",
            name=name,
            challenger_id=challenger.id if challenger else None,
            actor=BENCH,
        )
        deployments.set_access(store, name, "public", actor=BENCH)
    rows = frame.drop(columns=["churn"]).head(1000)
    return store, {"rows": rows, "models": by}


# ---------------------------------------------------------------------------- load
def measure(
    port: int, path: str, body: bytes, content_type: str, concurrency: int, seconds: float
) -> dict[str, float]:
    """Latencies (ms) and req/s of POSTs over `concurrency` keep-alive connections."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    failures = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            answer = conn.getresponse()
            answer.read()
            mine.append((time.perf_counter() - started) * 1000)
            if answer.status != 200:
                failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    if failures[0]:
        raise RuntimeError(f"{failures[0]} requests to {path} failed")
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "rps": len(latencies) / elapsed,
        "n": len(latencies),
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` and its descendants so far (MLflow's
    server runs uvicorn in a child; the API's --processes are children too)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def batch_cpu(
    pid: int, port: int, path: str, body: tuple[bytes, str], seconds: float
) -> tuple[float, float]:
    """Rows/s of 1,000-row batches at c1, and the server's CPU ms per batch: what a batch
    costs the server whatever the concurrency (the rows/s a server can reach once every core
    is busy is about cores x 1,000 / that)."""
    before = cpu_seconds(pid)
    got = measure(port, path, *body, 1, seconds)
    spent = cpu_seconds(pid) - before
    return got["rps"], spent * 1000 / got["n"]


def wrk(
    port: int, path: str, body: bytes, content_type: str, connections: int, seconds: float
) -> dict[str, float] | None:
    """The same POSTs from `wrk` (one thread, `connections` keep-alive connections): p50 / p99
    (ms) and req/s; None where wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = {json.dumps(content_type)}\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    command += ["-s", script.name, f"http://127.0.0.1:{port}{path}"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(percent: str) -> float:
        line = next(x for x in done.stdout.splitlines() if x.strip().startswith(percent))
        figure = line.split()[1]
        unit = next(u for u in ("us", "ms", "s") if figure.endswith(u))
        return float(figure[: -len(unit)]) * units[unit]

    if "Non-2xx" in done.stdout:
        raise RuntimeError(f"wrk: requests to {path} failed:\n{done.stdout}")
    rps = next(x for x in done.stdout.splitlines() if x.startswith("Requests/sec"))
    return {"p50": latency("50%"), "p99": latency("99%"), "rps": float(rps.split()[1])}


def c8_line(label: str, got: dict[str, float] | None) -> str:
    if got is None:
        return f"{label} wrk not installed (apt-get install wrk)"
    return f"{label} p50 {got['p50']:6.2f} p99 {got['p99']:6.2f} ms {got['rps']:7.0f} req/s"


Client = Callable[[int, str, bytes, str, int, float], dict[str, float] | None]


def paired(
    port: int,
    path: str,
    other: str,
    body: tuple[bytes, str],
    seconds: float,
    rounds: int = 6,
    client: Client = measure,
) -> tuple[dict[str, float], dict[str, float]] | None:
    """Two paths at c1 in alternating short rounds, so that a load that comes and goes on the
    box weighs on both alike; the medians of the rounds' p50s (None: the client is wrk, and it
    is not installed)."""
    got: dict[str, list[dict[str, float]]] = {path: [], other: []}
    for _ in range(rounds):
        for p in (path, other):
            found = client(port, p, *body, 1, seconds / rounds)
            if found is None:
                return None
            got[p].append(found)

    def median(found: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(f[k] for f in found) for k in ("p50", "p99", "rps")}

    return median(got[path]), median(got[other])


def in_process_p50(predict: Callable[[], Any], n: int = 300) -> float:
    for _ in range(20):
        predict()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        predict()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def numpy_p50(estimator: Any, model: Any, first: pd.DataFrame) -> float:
    """The model itself predicting one row already preprocessed into a numpy array (the
    baseline of "the API adds at most 1 ms"): the pipeline's last step on the matrix its
    preprocessing gives."""
    matrix = np.asarray(estimator[:-1].transform(first[model.schema.feature_names]))
    final = estimator.steps[-1][1]
    return in_process_p50(lambda: final.predict_proba(matrix))


def walk_p50(estimator: Any, model: Any, first: pd.DataFrame) -> float | None:
    """The same row through the API's numpy walk of the trees (core/engine/boosting.py), for
    a histogram boosting model; None for any other."""
    trees = boosting.fast(estimator.steps[-1][1])
    if trees is None:
        return None
    matrix = np.asarray(estimator[:-1].transform(first[model.schema.feature_names]))
    return in_process_p50(lambda: trees.predict_proba(matrix))


def batch_ceilings(estimator: Any, model: Any, rows: pd.DataFrame) -> dict[str, float]:
    """Rows/s on the 1,000-row batch with no HTTP and no JSON: sklearn's pipeline on a
    DataFrame (MLflow's path), the API's scoring (coercion, compiled preprocessing, model) on
    an Arrow batch on one thread and with its rows shared among the API's threads (as many as
    cores are idle: predict.RowThreads), and the model alone on the matrix already
    preprocessed, on one thread and shared: the ceilings of any server of this model here."""
    batch = pa.RecordBatch.from_pandas(rows, preserve_index=False)
    compiled = compile_pipeline(estimator, model.schema, batch)
    matrix = np.asarray(estimator[:-1].transform(rows[model.schema.feature_names]))
    final = estimator.steps[-1][1]
    threads = predict.RowThreads(serving.batch_threads())
    task = model.schema.task
    timed = {
        "sklearn pipeline": lambda: estimator.predict_proba(rows),
        "API scoring": lambda: serving.score(compiled, estimator, batch, model, "bench"),
        "API scoring, shared": lambda: serving.score(
            compiled, estimator, batch, model, "bench", threads
        ),
        "model alone": lambda: final.predict_proba(matrix),
        # the API's own split (by trees for boosting: boosting.OnThreads)
        "model alone, shared": lambda: threads.score(
            compiled.model if compiled else final, matrix, task, "bench"
        ),
    }
    try:
        return {k: len(rows) * 1000 / in_process_p50(f, n=30) for k, f in timed.items()}
    finally:
        threads.close()


def bodies(rows: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    split = json.loads(rows.to_json(orient="split", index=False))
    records = json.loads(rows.to_json(orient="records"))
    oip = {
        "inputs": [
            {
                "name": c,
                "datatype": "FP64" if rows[c].dtype.kind in "fi" else "BYTES",
                "shape": [len(rows)],
                "data": [r[c] for r in records],
            }
            for c in rows.columns
        ]
    }
    return {
        "split": (json.dumps({"dataframe_split": split}).encode(), "application/json"),
        "records": (json.dumps({"dataframe_records": records}).encode(), "application/json"),
        "csv": (rows.to_csv(index=False).encode(), "text/csv"),
        "oip": (json.dumps(oip).encode(), "application/json"),
    }


def rollback_pickup(store: Store, port: int, body: bytes) -> float:
    """Seconds from a rollback's commit to the first answer from the version rolled back to
    (the target: within 1 s, without a restart)."""
    hgb = next(m for m in registry.list_models(store) if m.algorithm == "hist_gradient_boosting")
    deployments.deploy(store, hgb.id, "staging", name="linear", actor=BENCH)  # v2
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def version() -> int:
        conn.request(
            "POST",
            "/v1/deployments/linear/invocations",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        return int(json.loads(conn.getresponse().read())["version"])

    while version() != 2:
        time.sleep(0.05)
    deployments.rollback(store, "linear", 1, actor=BENCH)
    started = time.perf_counter()
    while version() != 1:
        time.sleep(0.01)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- mlflow
def mlflow_server(model: Any, rows: pd.DataFrame) -> tuple[subprocess.Popen[bytes], int] | None:
    """`mlflow models serve` of the same estimator in its own venv, or None (said why)."""
    venv = OUT / "mlflow-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        print("  creating the MLflow environment (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        import sklearn

        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "mlflow",
                f"scikit-learn=={sklearn.__version__}",
                f"pandas=={pd.__version__}",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"  MLflow could not be installed: {done.stderr.strip()[-300:]}")
            shutil.rmtree(venv, ignore_errors=True)
            return None
    import joblib

    model_dir = OUT / "mlflow-model"
    shutil.rmtree(model_dir, ignore_errors=True)
    joblib.dump(model, OUT / "model.joblib")
    saved = subprocess.run(
        [
            str(python),
            "-c",
            "import joblib, mlflow.sklearn, sys; "
            "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2],"
            " serialization_format='cloudpickle')",
            str(OUT / "model.joblib"),
            str(model_dir),
        ],
        capture_output=True,
        text=True,
    )
    if saved.returncode != 0:
        print(f"  MLflow could not save the model: {saved.stderr.strip()[-300:]}")
        return None
    port = free_port()
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "-p",
            str(port),
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # mlflow starts `uvicorn` by name: its own environment's must be on the PATH
        env={**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    try:
        wait_ready(port, "/ping")
    except RuntimeError:
        proc.kill()
        print("  mlflow models serve did not start")
        return None
    return proc, port


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument(
        "--processes", type=int, default=1, help="API server processes (modeldeck api --processes)"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="api-bench-"))
    print(f"workspace {home}: training the churn models ...", flush=True)
    store, made = workspace(home)
    rows: pd.DataFrame = made["rows"]
    one, batch = bodies(rows.head(1)), bodies(rows)
    port = free_port()
    serve = (
        ["core.cli", "api", "--processes", str(args.processes), "--port", str(port)]
        if args.processes > 1
        else ["uvicorn", "core.api.app:app", "--port", str(port), "--log-level", "warning"]
    )
    api = subprocess.Popen(
        [sys.executable, "-m", *serve],
        cwd=ROOT,
        env={**os.environ, "MODELDECK_HOME": str(home)},
        stdout=subprocess.DEVNULL if args.processes > 1 else None,
    )
    results: dict[str, Any] = {}
    try:
        wait_ready(port, "/v2/health/ready")
        while len([s for s in api_status.read_states(store.workspace) if s.is_fresh()]) < (
            args.processes
        ):  # every server process warm
            time.sleep(0.2)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        for name, algorithm in (("linear", "linear"), ("hgb", "hist_gradient_boosting")):
            model = made["models"][algorithm]
            estimator = registry.load_estimator(store, model)
            first = rows.head(1)
            pipeline = in_process_p50(functools.partial(estimator.predict_proba, first))
            base = numpy_p50(estimator, model, first)
            walk = walk_p50(estimator, model, first)
            path = f"/v1/deployments/{name}/invocations"
            c1 = measure(port, path, *one["split"], 1, args.seconds)
            c8 = measure(port, path, *one["split"], 8, args.seconds)
            c8_wrk = wrk(port, path, *one["split"], 8, args.seconds)
            print(
                f"{name:<7} one row   in-process p50: sklearn pipeline on a DataFrame"
                f" {pipeline:6.2f} ms, the model on a numpy row {base:6.2f} ms"
                + (f", its trees walked by numpy {walk:6.2f} ms" if walk is not None else ""),
                flush=True,
            )
            print(
                f"{'':<7} one row   API c1 p50 {c1['p50']:6.2f}"
                f" p99 {c1['p99']:6.2f} ms {c1['rps']:7.0f} req/s | c8 p50 {c8['p50']:6.2f}"
                f" p99 {c8['p99']:6.2f} ms {c8['rps']:7.0f} req/s",
                flush=True,
            )
            print(c8_line(f"{'':<7} one row   API c8 from wrk:", c8_wrk), flush=True)
            formats = {}
            for fmt, (body, kind) in batch.items():
                p = f"/v2/models/{name}/infer" if fmt == "oip" else path
                got = measure(port, p, body, kind, 1, args.seconds)
                formats[fmt] = got["rps"] * len(rows)
            print(
                f"{'':<7} 1,000-row batches, rows/s: "
                + "  ".join(f"{k} {v:,.0f}" for k, v in formats.items()),
                flush=True,
            )
            _, cpu_ms = batch_cpu(api.pid, port, path, batch["split"], args.seconds)
            print(
                f"{'':<7} 1,000-row split batch: {cpu_ms:.2f} ms of server CPU each,"
                f" {len(rows) * 1000 / cpu_ms:,.0f} rows per CPU second",
                flush=True,
            )
            ceilings = batch_ceilings(estimator, model, rows)
            print(
                f"{'':<7} 1,000-row batches in-process, rows/s: "
                + "  ".join(f"{k} {v:,.0f}" for k, v in ceilings.items()),
                flush=True,
            )
            results[name] = {
                "in_process_p50": base,
                "walk_p50": walk,
                "c1": c1,
                "c8": c8,
                "c8_wrk": c8_wrk,
                "batch": formats,
                "ceilings": ceilings,
                "batch_cpu_ms": cpu_ms,
            }
        # the challenger's process starts at the first call with a challenger: warm it first
        measure(port, "/v1/deployments/hgb-shadow/invocations", *one["split"], 1, 2)
        for label, client in (("", measure), (" from wrk", wrk)):
            both = []
            for split in (one["split"], batch["split"]):
                time.sleep(DRAIN_SECONDS)  # the challenger's backlog of the last rounds
                both.append(
                    paired(
                        port,
                        "/v1/deployments/hgb/invocations",
                        "/v1/deployments/hgb-shadow/invocations",
                        split,
                        args.seconds * (2 if client is wrk else 1),
                        client=client,
                    )
                )
            if both[0] is None or both[1] is None:
                print(f"hgb with the linear challenger{label}: wrk not installed", flush=True)
                continue
            (alone, shadow), (batch_alone, batch_shadow) = both[0], both[1]
            results[f"hgb-shadow{label}"] = {
                "c1": shadow,
                "alone": alone,
                "batch": batch_shadow,
                "batch_alone": batch_alone,
            }
            print(
                f"hgb with the linear challenger in shadow{label}: c1 p50 {shadow['p50']:6.2f}"
                f" ms ({shadow['p50'] / alone['p50'] - 1:+.0%} vs {alone['p50']:.2f} ms"
                f" without); 1,000-row split p50 {batch_shadow['p50']:6.2f} ms"
                f" ({batch_shadow['p50'] / batch_alone['p50'] - 1:+.0%} vs"
                f" {batch_alone['p50']:.2f} ms without), measured in alternating rounds",
                flush=True,
            )
        results["rollback_seconds"] = rollback_pickup(store, port, one["split"][0])
        print(f"a rollback is served after {results['rollback_seconds']:.2f} s", flush=True)
    finally:
        api.terminate()
        api.wait(timeout=30)
    if not args.skip_mlflow:
        started = mlflow_server(
            registry.load_estimator(store, made["models"]["hist_gradient_boosting"]), rows
        )
        if started is not None:
            proc, mport = started
            try:
                c1 = measure(mport, "/invocations", *one["split"], 1, args.seconds)
                c8 = measure(mport, "/invocations", *one["split"], 8, args.seconds)
                c8_wrk = wrk(mport, "/invocations", *one["split"], 8, args.seconds)
                rps, cpu_ms = batch_cpu(
                    proc.pid, mport, "/invocations", batch["split"], args.seconds
                )
                results["mlflow"] = {
                    "c1": c1,
                    "c8": c8,
                    "c8_wrk": c8_wrk,
                    "batch_rows": rps * len(rows),
                    "batch_cpu_ms": cpu_ms,
                }
                print(
                    f"mlflow  hgb one row c1 p50 {c1['p50']:6.2f} ms {c1['rps']:6.0f} req/s | c8"
                    f" p50 {c8['p50']:6.2f} ms {c8['rps']:6.0f} req/s | batch split"
                    f" {rps * len(rows):,.0f} rows/s, {cpu_ms:.2f} ms of server CPU a batch",
                    flush=True,
                )
                print(c8_line("mlflow  hgb one row c8 from wrk:", c8_wrk), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    summary(results)
    shutil.rmtree(home, ignore_errors=True)


def summary(r: dict[str, Any]) -> None:
    hgb = r["hgb"]
    print("\ntargets:")
    added = hgb["c1"]["p50"] - hgb["in_process_p50"]
    print(
        f"  API adds {added:.2f} ms at p50 to the model's in-process numpy predict (target <= 1 ms)"
    )
    if hgb.get("walk_p50") is not None:
        print(
            f"    (the API walks the trees itself: {hgb['c1']['p50'] - hgb['walk_p50']:.2f} ms"
            " over that walk's own time, i.e. HTTP, parsing, checks and the log)"
        )
    print(f"  p99 at c8 {hgb['c8']['p99']:.2f} ms (target <= 10 ms)", end="")
    if hgb["c8_wrk"] is not None:
        print(f"; from wrk {hgb['c8_wrk']['p99']:.2f} ms", end="")
    print()
    for label in ("", " from wrk"):
        if f"hgb-shadow{label}" not in r:
            continue
        paired_ = r[f"hgb-shadow{label}"]
        shadow = paired_["c1"]["p50"] / paired_["alone"]["p50"] - 1
        batched = paired_["batch"]["p50"] / paired_["batch_alone"]["p50"] - 1
        print(
            f"  challenger adds{label} {shadow:+.0%} to main latency, {batched:+.0%} on"
            " 1,000-row batches (target <= 10 %)"
        )
    print(f"  a rollback is served after {r['rollback_seconds']:.2f} s (target <= 1 s)")
    if "mlflow" in r:
        m = r["mlflow"]
        print(
            f"  req/s vs MLflow at c1 {hgb['c1']['rps'] / m['c1']['rps']:.1f}x, at c8"
            f" {hgb['c8']['rps'] / m['c8']['rps']:.1f}x (target >= 5x)"
            + (
                f"; at c8 from wrk {hgb['c8_wrk']['rps'] / m['c8_wrk']['rps']:.1f}x"
                if hgb["c8_wrk"] and m["c8_wrk"]
                else ""
            )
        )
        print(
            f"  batch rows/s vs MLflow {hgb['batch']['split'] / m['batch_rows']:.1f}x"
            " (target >= 4x); in-process, the model alone on its matrix is"
            f" {hgb['ceilings']['model alone'] / m['batch_rows']:.1f}x MLflow's rows/s on one"
            " thread and"
            f" {hgb['ceilings']['model alone, shared'] / m['batch_rows']:.1f}x shared,"
            f" the API's scoring {hgb['ceilings']['API scoring'] / m['batch_rows']:.1f}x and"
            f" {hgb['ceilings']['API scoring, shared'] / m['batch_rows']:.1f}x shared:"
            " the rest of a request (HTTP, JSON, checks, the log) is the difference"
        )
        print(
            f"  server CPU per 1,000-row batch: {hgb['batch_cpu_ms']:.2f} ms against MLflow's"
            f" {m['batch_cpu_ms']:.2f} ms ({m['batch_cpu_ms'] / hgb['batch_cpu_ms']:.1f}x the"
            " rows per CPU second: the batch rows/s ratio once every core is busy)"
        )
    else:
        print("  MLflow: not measured")


if __name__ == "__main__":
    main()
