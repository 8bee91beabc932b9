"""The worker sidecar under 200 every-minute schedules: slot-to-start lag and idle CPU.

Run: `.venv/bin/python bench/worker_bench.py [--minutes 2] [--deployments 200] [--executors N]
[--no-baseline] [--keep DIR]`.

Builds a temp workspace with one tiny trained model (core.training, linear, on a generated
200-row churn frame) and `--deployments` deployments of it, each on that tiny frame as its
source, each scheduled `* * * * *` (set paused, in one transaction). Then starts one worker
process (`python -m core.cli --home DIR worker --executors N`, a new process as `modeldeck up`
does; N defaults to the worker's own default, one executor process per core) and:

1. idle: with every schedule paused and nothing queued, reads the CPU time of the worker and
   its executor processes (utime + stime from /proc/<pid>/stat) over `--idle-seconds`;
2. scheduled: resumes every schedule and lets them fire for `--minutes` minutes, then pauses
   them again and gives the worker up to `--drain-seconds` to finish what is queued;
3. stops the worker (SIGTERM) and reads, per decided slot, the run's lag
   (runs.started_at - schedule_slots.slot_at), and how many slots were skipped (overlap).

Targets (issue 4, Performance): median lag < 5 s, idle CPU < 2 % of a core. The baseline,
measured first in the same run unless `--no-baseline`, is the same worker with `--executors 0`
(runs in the worker's own process, the design before executor processes); the ratios compare
the two. The bench stops by itself; the workspaces are deleted unless `--keep DIR` names where
to build them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import datasets, deployments, runs, scheduler
from core.executors import executor_count
from core.sidecars import HEARTBEAT_FILE
from core.store import Store, utcnow
from core.training import TrainRequest, train

ROOT = Path(__file__).resolve().parent.parent
TARGET_MEDIAN_LAG = 5.0
TARGET_IDLE_CPU = 0.02  # share of one core
SOURCE_ROWS = 200
PREFIX = "bench-"


# ---------------------------------------------------------------------------- setup
def build(store: Store, n: int) -> None:
    """One tiny model, `n` deployments of it, each with a paused every-minute schedule."""
    started = time.perf_counter()
    frame = datasets.churn_frame(n_rows=SOURCE_ROWS)
    dataset = datasets.register_frame(store, frame, name="churn", kind="upload",
                                      source="churn.csv")
    [model] = train(store, TrainRequest(dataset_id=dataset.id, target="churn",
                                        algorithms=("linear",))).models
    for i in range(n):
        deployments.deploy(store, model.id, "staging", name=f"{PREFIX}{i:03d}", actor="bench")
    set_paused(store, True)
    print(f"  setup: 1 model, {n} deployments with schedules in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def set_paused(store: Store, paused: bool) -> None:
    """Pause or resume every bench schedule in one transaction (resume: active from now).

    One UPDATE instead of `scheduler.pause` per deployment, so the bench's own store traffic
    stays out of the measurement; the marker is touched as the real calls do.
    """
    schedule = scheduler.Schedule(cron=scheduler.normalize_cron("* * * * *"), paused=paused,
                                  since=utcnow().isoformat())
    store.execute("UPDATE deployments SET schedule = ? WHERE name LIKE ?",
                  [schedule.to_dict(), PREFIX + "%"])
    runs.touch_queue_marker(store.workspace)


# ---------------------------------------------------------------------------- the worker
def start_worker(home: Path, log_path: Path, executors: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "core.cli", "--home", str(home), "worker",
                                 "--executors", str(executors)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (utime + stime, the reaped children's too),
    from /proc: psutil is not installed."""
    ticks = sum(int(v) for v in _stat(pid)[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except OSError:
                continue
            if int(fields[1]) == pid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for_heartbeat(home: Path, worker: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (home / HEARTBEAT_FILE).exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not start (see its log)")
        time.sleep(0.2)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def in_flight(store: Store) -> int:
    return int(store.query("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
               .scalar())


def progress_line(store: Store) -> str:
    row = store.query("SELECT count(*) FILTER (WHERE outcome = 'queued') AS queued,"
                      " count(*) FILTER (WHERE outcome = 'skipped') AS skipped"
                      " FROM schedule_slots").first() or {}
    done = store.query("SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed')"
                       ).scalar()
    return (f"slots queued {row.get('queued')}, skipped {row.get('skipped')}; "
            f"runs finished {done}, in flight {in_flight(store)}")


# ---------------------------------------------------------------------------- figures
def lags(store: Store) -> dict[str, Any]:
    rows = store.query(
        "SELECT s.outcome, s.slot_at, r.started_at, r.status FROM schedule_slots s"
        " LEFT JOIN runs r ON r.id = s.run_id").dicts()
    started = [(r["started_at"] - r["slot_at"]).total_seconds() for r in rows
               if r["outcome"] == "queued" and r["started_at"] is not None]
    statuses: dict[str, int] = {}
    for r in rows:
        if r["outcome"] == "queued":
            statuses[r["status"] or "deleted"] = statuses.get(r["status"] or "deleted", 0) + 1
    ordered = sorted(started)
    return {
        "slots": len(rows),
        "skipped": sum(r["outcome"] == "skipped" for r in rows),
        "runs": statuses,
        "started": len(ordered),
        "lag_median": statistics.median(ordered) if ordered else None,
        "lag_p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else None,
        "lag_max": ordered[-1] if ordered else None,
    }


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def report(figures: dict[str, Any]) -> bool:
    median, idle = figures["lag_median"], figures["idle_cpu_share"]
    ok_lag = median is not None and median < TARGET_MEDIAN_LAG
    ok_idle = idle < TARGET_IDLE_CPU
    print(json.dumps(figures, default=str, indent=2))
    print(f"executors {figures['executors']}: slot-to-start lag: median {fmt(median)} "
          f"(target < {TARGET_MEDIAN_LAG:g} s: "
          f"{'ok' if ok_lag else 'MISSED'}), p95 {fmt(figures['lag_p95'])}, "
          f"max {fmt(figures['lag_max'])}; {figures['started']} runs started, "
          f"{figures['skipped']} slots skipped (a run of that deployment still in flight)")
    print(f"idle CPU: {idle:.2%} of a core (target < {TARGET_IDLE_CPU:.0%}: "
          f"{'ok' if ok_idle else 'MISSED'}); busy: {figures['busy_cpu_share']:.0%} of a core "
          f"over {figures['busy_seconds']:.0f} s (worker and executors)")
    return ok_lag and ok_idle


def compare(baseline: dict[str, Any], measured: dict[str, Any]) -> None:
    def ratio(key: str) -> str:
        a, b = baseline[key], measured[key]
        return "n/a" if not a or b is None else f"{b / a:.2f}"

    print(f"against the baseline (executors 0, same run): median lag {fmt(measured['lag_median'])}"
          f" vs {fmt(baseline['lag_median'])} (ratio {ratio('lag_median')}), p95 "
          f"{fmt(measured['lag_p95'])} vs {fmt(baseline['lag_p95'])} (ratio {ratio('lag_p95')}), "
          f"idle CPU {measured['idle_cpu_share']:.2%} vs {baseline['idle_cpu_share']:.2%}")


def measure(home: Path, args: argparse.Namespace, executors: int) -> dict[str, Any]:
    print(f"executors {executors}:", flush=True)
    store = Store.open(home)
    build(store, args.deployments)
    worker = start_worker(home, home / "worker.log", executors)
    try:
        wait_for_heartbeat(home, worker, timeout=120)
        time.sleep(args.settle_seconds)  # past the first full check
        before, started = cpu_seconds(worker.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = (cpu_seconds(worker.pid) - before) / (time.monotonic() - started)
        print(f"  idle: {idle:.2%} of a core over {args.idle_seconds:g} s", flush=True)

        set_paused(store, False)
        before, started = cpu_seconds(worker.pid), time.monotonic()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(15.0, max(end - time.monotonic(), 0.0)))
            print(f"  {time.monotonic() - started:4.0f} s: {progress_line(store)}", flush=True)
        set_paused(store, True)
        deadline = time.monotonic() + args.drain_seconds
        while in_flight(store) and time.monotonic() < deadline:
            time.sleep(1.0)
        busy_seconds = time.monotonic() - started
        busy = (cpu_seconds(worker.pid) - before) / busy_seconds
        print(f"  stopped: {progress_line(store)}", flush=True)
    finally:
        stop_worker(worker)
    if worker.returncode not in (0, 143, -signal.SIGTERM):
        print((home / "worker.log").read_text()[-3000:], file=sys.stderr)
    return {"executors": executors, **lags(store), "idle_cpu_share": round(idle, 4),
            "busy_cpu_share": round(busy, 4), "busy_seconds": round(busy_seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="how long the schedules fire (default 2)")
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--drain-seconds", type=float, default=120.0,
                        help="after the schedules stop, wait at most this for queued runs")
    parser.add_argument("--executors", type=int, default=executor_count(),
                        help="executor processes of the measured worker (default: the "
                        "worker's default, one per core)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline (the same worker with --executors 0)")
    parser.add_argument("--keep", type=Path, help="build the workspaces here and keep them")
    args = parser.parse_args()
    results = {}
    for executors in ([] if args.no_baseline else [0]) + [args.executors]:
        if args.keep:
            home = (args.keep / f"executors-{executors}").resolve()
            home.mkdir(parents=True, exist_ok=True)
            results[executors] = measure(home, args, executors)
            continue
        home = Path(tempfile.mkdtemp(prefix="worker_bench_"))
        try:
            results[executors] = measure(home, args, executors)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    ok = [report(figures) for figures in results.values()][-1]
    if len(results) > 1:
        compare(results[0], results[args.executors])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
