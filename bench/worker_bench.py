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

With `--burst` (issue 14) it measures a burst instead: `--deployments` (default 10 here)
deployments of a gradient-boosting model (so the after-run steps, a SHAP sample and drift
counts, cost real time) on a 2,000-row source, and one run queued every `--burst-interval`
seconds (default 1) for `--burst-seconds` (default 180). Per run: queue wait (started_at -
queued_at) and after-run lag (finished_at to the last step's file: importance and drift
counts). Then ten more runs, SIGTERM as soon as they have finished (their steps pending):
the time to exit, and how long a new worker takes to finish the steps the first one left.
Targets: p95 queue wait <= 10 s, after-run lag <= 60 s (p95), stop <= 10 s.

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
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import datasets, deployments, drift, explain, runs, scheduler
from core.store import Store, utcnow
from core.training import TrainRequest, train
from core.worker.executors import executor_count
from core.worker.sidecars import HEARTBEAT_FILE

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
    dataset = datasets.register_frame(
        store, frame, name="churn", kind="upload", source="churn.csv", actor="system:bench"
    )
    [model] = train(
        store,
        TrainRequest(dataset_id=dataset.id, target="churn", algorithms=("linear",)),
        actor="system:bench",
    ).models
    for i in range(n):
        deployments.deploy(store, model.id, "staging", name=f"{PREFIX}{i:03d}", actor="bench")
    set_paused(store, True)
    print(
        f"  setup: 1 model, {n} deployments with schedules in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )


def set_paused(store: Store, paused: bool) -> None:
    """Pause or resume every bench schedule in one transaction (resume: active from now).

    One UPDATE instead of `scheduler.pause` per deployment, so the bench's own store traffic
    stays out of the measurement; the marker is touched as the real calls do.
    """
    schedule = scheduler.Schedule(
        cron=scheduler.normalize_cron("* * * * *"), paused=paused, since=utcnow().isoformat()
    )
    store.execute(
        "UPDATE deployments SET schedule = ? WHERE name LIKE ?", [schedule.to_dict(), PREFIX + "%"]
    )
    runs.touch_queue_marker(store.workspace)


# ---------------------------------------------------------------------------- the worker
def start_worker(home: Path, log_path: Path, executors: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.cli",
                "--home",
                str(home),
                "worker",
                "--executors",
                str(executors),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


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
    return int(
        store.query("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')").scalar()
    )


def progress_line(store: Store) -> str:
    row = (
        store.query(
            "SELECT count(*) FILTER (WHERE outcome = 'queued') AS queued,"
            " count(*) FILTER (WHERE outcome = 'skipped') AS skipped"
            " FROM schedule_slots"
        ).first()
        or {}
    )
    done = store.query("SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed')").scalar()
    return (
        f"slots queued {row.get('queued')}, skipped {row.get('skipped')}; "
        f"runs finished {done}, in flight {in_flight(store)}"
    )


# ---------------------------------------------------------------------------- figures
def lags(store: Store) -> dict[str, Any]:
    rows = store.query(
        "SELECT s.outcome, s.slot_at, r.started_at, r.status FROM schedule_slots s"
        " LEFT JOIN runs r ON r.id = s.run_id"
    ).dicts()
    started = [
        (r["started_at"] - r["slot_at"]).total_seconds()
        for r in rows
        if r["outcome"] == "queued" and r["started_at"] is not None
    ]
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
    print(
        f"executors {figures['executors']}: slot-to-start lag: median {fmt(median)} "
        f"(target < {TARGET_MEDIAN_LAG:g} s: "
        f"{'ok' if ok_lag else 'MISSED'}), p95 {fmt(figures['lag_p95'])}, "
        f"max {fmt(figures['lag_max'])}; {figures['started']} runs started, "
        f"{figures['skipped']} slots skipped (a run of that deployment still in flight)"
    )
    print(
        f"idle CPU: {idle:.2%} of a core (target < {TARGET_IDLE_CPU:.0%}: "
        f"{'ok' if ok_idle else 'MISSED'}); busy: {figures['busy_cpu_share']:.0%} of a core "
        f"over {figures['busy_seconds']:.0f} s (worker and executors)"
    )
    return ok_lag and ok_idle


def compare(baseline: dict[str, Any], measured: dict[str, Any]) -> None:
    def ratio(key: str) -> str:
        a, b = baseline[key], measured[key]
        return "n/a" if not a or b is None else f"{b / a:.2f}"

    print(
        f"against the baseline (executors 0, same run): median lag {fmt(measured['lag_median'])}"
        f" vs {fmt(baseline['lag_median'])} (ratio {ratio('lag_median')}), p95 "
        f"{fmt(measured['lag_p95'])} vs {fmt(baseline['lag_p95'])} (ratio {ratio('lag_p95')}), "
        f"idle CPU {measured['idle_cpu_share']:.2%} vs {baseline['idle_cpu_share']:.2%}"
    )


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
    return {
        "executors": executors,
        **lags(store),
        "idle_cpu_share": round(idle, 4),
        "busy_cpu_share": round(busy, 4),
        "busy_seconds": round(busy_seconds, 1),
    }


# ---------------------------------------------------------------------------- the burst
BURST_ROWS = 2000
TARGET_WAIT_P95, TARGET_AFTER_P95, TARGET_STOP = 10.0, 60.0, 10.0


def build_burst(store: Store, n: int) -> list[str]:
    """One gradient-boosting model on a 2,000-row churn frame, `n` deployments of it."""
    frame = datasets.churn_frame(n_rows=BURST_ROWS)
    dataset = datasets.register_frame(
        store, frame, name="churn", kind="upload", source="churn.csv", actor="system:bench"
    )
    [model] = train(
        store,
        TrainRequest(dataset_id=dataset.id, target="churn", algorithms=("gradient_boosting",)),
        actor="system:bench",
    ).models
    return [
        deployments.deploy(store, model.id, "staging", name=f"{PREFIX}{i:03d}", actor="bench").name
        for i in range(n)
    ]


def warm_up(store: Store, names: list[str], executors: int) -> None:
    """A run (and its steps) per executor first, so the burst meets a running worker, not
    executor processes still importing their libraries (not counted)."""
    first = [runs.enqueue_run(store, names[0], actor="bench").id for _ in range(max(executors, 1))]
    deadline = time.monotonic() + 300
    while any(steps_done_at(store, r) is None for r in first) and time.monotonic() < deadline:
        time.sleep(0.5)


def steps_done_at(store: Store, run_id: str) -> float | None:
    """When the run's after-run steps were done (their files' newest mtime), or None."""
    files = [
        explain.importance_path(store, run_id, "main"),
        Path(drift.counts_path(store, run_id, None)),
    ]
    if not all(f.exists() for f in files):
        return None
    return max(f.stat().st_mtime for f in files)


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    pick = (
        (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))])
        if ordered
        else (lambda q: None)
    )
    return {"median": pick(0.5), "p95": pick(0.95), "max": pick(1.0)}


def burst_figures(store: Store, run_ids: list[str]) -> dict[str, Any]:
    done = [runs.get_run(store, r) for r in run_ids]
    waits = [(r.started_at - r.queued_at).total_seconds() for r in done if r.started_at]
    lags_after, missing = [], 0
    for run in done:
        at = steps_done_at(store, run.id) if run.status == "succeeded" else None
        if at is None or run.finished_at is None:
            missing += run.status == "succeeded"
            continue
        finished = run.finished_at.replace(tzinfo=UTC).timestamp()
        lags_after.append(max(at - finished, 0.0))
    statuses: dict[str, int] = {}
    for run in done:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    return {
        "runs": statuses,
        "queue_wait": percentiles(waits),
        "after_run_lag": percentiles(lags_after),
        "steps_missing": missing,
    }


def stop_and_resume(home: Path, store: Store, names: list[str], executors: int) -> dict[str, Any]:
    """Ten more runs; SIGTERM once they finished (steps pending): time to exit; then a new
    worker: time until it has done the steps the first one left."""
    worker = start_worker(home, home / "worker-stop.log", executors)
    wait_for_heartbeat(home, worker, timeout=120)
    extra = [runs.enqueue_run(store, names[i % len(names)], actor="bench").id for i in range(10)]
    while any(runs.get_run(store, r).status in ("queued", "running") for r in extra):
        time.sleep(0.1)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=120)
    stop_seconds = time.monotonic() - started
    left = len(list(store.workspace.pending_dir.glob("*")))
    worker = start_worker(home, home / "worker-resume.log", executors)
    started = time.monotonic()
    try:
        while any(steps_done_at(store, r) is None for r in extra):
            if time.monotonic() - started > 300:
                break
            time.sleep(0.2)
        resume_seconds = time.monotonic() - started
    finally:
        stop_worker(worker)
    return {
        "stop_seconds": round(stop_seconds, 2),
        "steps_left_at_stop": left,
        "resume_seconds": round(resume_seconds, 1),
    }


def measure_burst(home: Path, args: argparse.Namespace, executors: int) -> dict[str, Any]:
    print(f"executors {executors} (burst):", flush=True)
    store = Store.open(home)
    names = build_burst(store, args.deployments)
    worker = start_worker(home, home / "worker.log", executors)
    queued: list[str] = []
    try:
        wait_for_heartbeat(home, worker, timeout=120)
        warm_up(store, names, executors)
        started = time.monotonic()
        count = int(args.burst_seconds / args.burst_interval)
        for i in range(count):
            time.sleep(max(started + i * args.burst_interval - time.monotonic(), 0.0))
            queued.append(runs.enqueue_run(store, names[i % len(names)], actor="bench").id)
            if i % 30 == 29:
                print(f"  {time.monotonic() - started:4.0f} s: {progress_line(store)}", flush=True)
        deadline = time.monotonic() + args.drain_seconds
        while time.monotonic() < deadline and (
            in_flight(store) or any(steps_done_at(store, r) is None for r in queued[-5:])
        ):
            time.sleep(1.0)
        print(f"  drained: {progress_line(store)}", flush=True)
    finally:
        stop_worker(worker)
    figures = {"executors": executors, "queued": len(queued), **burst_figures(store, queued)}
    figures.update(stop_and_resume(home, store, names, executors))
    return figures


def report_burst(figures: dict[str, Any]) -> bool:
    wait, lag = figures["queue_wait"]["p95"], figures["after_run_lag"]["p95"]
    checks = [
        wait is not None and wait <= TARGET_WAIT_P95,
        lag is not None and lag <= TARGET_AFTER_P95 and not figures["steps_missing"],
        figures["stop_seconds"] <= TARGET_STOP,
    ]
    print(json.dumps(figures, default=str, indent=2))
    print(
        f"executors {figures['executors']}: {figures['queued']} runs; queue wait p95 "
        f"{fmt(wait)} (target <= {TARGET_WAIT_P95:g} s: {'ok' if checks[0] else 'MISSED'}); "
        f"after-run lag p95 {fmt(lag)}, max {fmt(figures['after_run_lag']['max'])}, "
        f"{figures['steps_missing']} never done (target <= {TARGET_AFTER_P95:g} s: "
        f"{'ok' if checks[1] else 'MISSED'}); SIGTERM to exit {figures['stop_seconds']} s "
        f"with {figures['steps_left_at_stop']} step mark(s) kept (target <= "
        f"{TARGET_STOP:g} s: {'ok' if checks[2] else 'MISSED'}), resumed by the next worker "
        f"in {figures['resume_seconds']} s"
    )
    return all(checks)


def compare_burst(baseline: dict[str, Any], measured: dict[str, Any]) -> None:
    def ratio(part: str) -> str:
        a, b = baseline[part]["p95"], measured[part]["p95"]
        return "n/a" if not a or b is None else f"{b / a:.2f}"

    print(
        f"against the baseline (executors 0, same run): queue wait p95 ratio "
        f"{ratio('queue_wait')}, after-run lag p95 ratio {ratio('after_run_lag')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="how long the schedules fire (default 2)"
    )
    parser.add_argument("--deployments", type=int, help="default 200 (burst: 10)")
    parser.add_argument("--burst", action="store_true", help="measure a burst (issue 14)")
    parser.add_argument("--burst-seconds", type=float, default=180.0)
    parser.add_argument("--burst-interval", type=float, default=1.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=120.0,
        help="after the schedules stop, wait at most this for queued runs",
    )
    parser.add_argument(
        "--executors",
        type=int,
        default=executor_count(),
        help="executor processes of the measured worker (default: the "
        "worker's default, one per core)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the baseline (the same worker with --executors 0)",
    )
    parser.add_argument("--keep", type=Path, help="build the workspaces here and keep them")
    args = parser.parse_args()
    args.deployments = args.deployments or (10 if args.burst else 200)
    run, show, versus = (
        (measure_burst, report_burst, compare_burst) if args.burst else (measure, report, compare)
    )
    results = {}
    for executors in ([] if args.no_baseline else [0]) + [args.executors]:
        if args.keep:
            home = (args.keep / f"executors-{executors}").resolve()
            home.mkdir(parents=True, exist_ok=True)
            results[executors] = run(home, args, executors)
            continue
        home = Path(tempfile.mkdtemp(prefix="worker_bench_"))
        try:
            results[executors] = run(home, args, executors)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    ok = [show(figures) for figures in results.values()][-1]
    if len(results) > 1:
        versus(results[0], results[args.executors])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
