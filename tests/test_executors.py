"""The worker on a pool of executor processes: runs, a dead executor, a stopped or killed worker.

These start real processes (`spawn`: each imports the libraries, ~2 s), so they are slow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core import drift, execution, explain, runs, scheduler
from core.entities import Deployment
from core.errors import InvalidInput
from core.store import Store
from core.worker import executors
from core.worker import loop as worker
from tests.worker_helpers import failed_by_lease_expiry, queue_big_run, wait_until_scoring

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("gradient_boosting", challenger="linear")


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc: psutil is not installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int]) -> None:
    assert pids, "no process to wait for"
    deadline = time.monotonic() + 10
    while alive := [p for p in pids if is_alive(p)]:
        assert time.monotonic() < deadline, f"processes {alive} outlived their worker"
        time.sleep(0.1)


def kill_executor(pid: int, ticking: threading.Thread) -> None:
    """SIGKILL an executor process (as the kernel's OOM killer would); the tick then ends."""
    os.kill(pid, signal.SIGKILL)
    ticking.join(timeout=240)
    assert not ticking.is_alive()


def sigkill_worker(child: subprocess.Popen[str]) -> None:
    """SIGKILL a worker process, then wait until its executor processes are gone too."""
    executor_pids = children_of(child.pid)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    wait_gone(executor_pids)  # an executor looks for its worker twice a second


@contextlib.contextmanager
def worker_process(store: Store, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """`start_worker`, killed on the way out if the test left it running."""
    child = start_worker(store, *args, **env)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def start_worker(store: Store, *args: str, **env: str) -> subprocess.Popen[str]:
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "--home", str(store.workspace.home), "worker", *args],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_executor_count_comes_from_the_option_the_environment_or_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(executors.EXECUTORS_ENV, raising=False)
    assert executors.executor_count(3) == 3 and executors.executor_count(0) == 0
    assert executors.executor_count() == min(os.cpu_count() or 1, 4)
    monkeypatch.setenv(executors.EXECUTORS_ENV, "1")
    assert executors.executor_count() == 1
    assert executors.executor_count(2) == 2  # the option wins
    monkeypatch.setenv(executors.EXECUTORS_ENV, "many")
    with pytest.raises(
        InvalidInput,
        match=r"\$MODELDECK_EXECUTORS must be a whole number.*"
        r"not 'many'",
    ) as caught:
        executors.executor_count()
    assert "0 to run pipelines in the worker's own process" in caught.value.hint
    with pytest.raises(
        InvalidInput, match="--executors must be a whole number, 0 or more, not '-1'"
    ):
        executors.executor_count(-1)


def test_the_worker_command_refuses_a_bad_executor_count(trained_store: Store) -> None:
    child = start_worker(trained_store, "--executors", "-2")
    out, _ = child.communicate(timeout=60)
    assert child.returncode != 0
    assert "--executors must be a whole number, 0 or more, not '-2'" in out


@pytest.mark.slow
def test_a_pool_executes_runs_and_their_steps_in_other_processes(
    trained_store: Store, deployed: Deployment
) -> None:
    queued = [runs.enqueue_run(trained_store, deployed.name, actor="tester").id for _ in range(5)]
    pool = executors.Pool(trained_store.workspace.home, 2)
    tick = worker.Tick(trained_store, "pool-worker", executor=pool)
    try:
        assert tick() == 5
        pids = pool.pids()
        assert (
            len(pids) == 2
            and os.getpid() not in pids
            and set(pids) <= set(children_of(os.getpid()))
        )
    finally:
        tick.close(budget_seconds=30)
    done = [runs.get_run(trained_store, r) for r in queued]
    assert [(r.status, r.attempt, r.lease_owner) for r in done] == [
        ("succeeded", 1, "pool-worker")
    ] * 5
    for run in done:
        assert run.started_at is not None and run.finished_at is not None
        assert run.queued_at <= run.started_at <= run.finished_at
        assert run.rows_out is not None and run.rows_out == run.summary["rows"] > 0
        assert runs.result_path(trained_store.workspace, run.id).exists()
        assert explain.get_importance(trained_store, run.id) is not None  # steps ran there too
    assert tick.claimed == {} and tick.deferred == []


@pytest.mark.slow
def test_a_dead_executor_fails_its_run_and_the_next_run_goes_on(
    trained_store: Store, deployed: Deployment
) -> None:
    doomed = queue_big_run(trained_store, deployed)
    after = runs.enqueue_run(
        trained_store, deployed.name, actor="tester"
    )  # the deployment's own small source
    pool = executors.Pool(trained_store.workspace.home, 1)
    tick = worker.Tick(trained_store, "w1", executor=pool)
    ticking = threading.Thread(target=tick)
    ticking.start()
    try:
        wait_until_scoring(trained_store, doomed.id, ticking.is_alive)
        [executor_pid] = pool.pids()
        kill_executor(executor_pid, ticking)
    finally:
        tick.close(budget_seconds=30)
    failed = runs.get_run(trained_store, doomed.id)
    assert failed.status == "failed" and failed.error == executors.DIED
    assert not runs.results_dir(trained_store.workspace, doomed.id).exists()
    assert runs.get_run(trained_store, after.id).status == "succeeded"  # on a new executor


@pytest.mark.slow
def test_a_stopped_pool_worker_records_its_run_as_stopped(
    trained_store: Store, deployed: Deployment
) -> None:
    doomed = queue_big_run(trained_store, deployed)
    later = runs.enqueue_run(
        trained_store, deployed.name, actor="tester"
    )  # claimed too, waits its turn
    with worker_process(trained_store, "--executors", "1") as child:
        wait_until_scoring(trained_store, doomed.id, lambda: child.poll() is None)
        executor_pids = children_of(child.pid)
        child.send_signal(signal.SIGTERM)  # `modeldeck up` stopping, systemd, a CI timeout
        out, _ = child.communicate(timeout=60)
    assert child.returncode in (0, 143), out
    stopped = runs.get_run(trained_store, doomed.id)
    assert (stopped.status, stopped.error) == ("failed", execution.STOPPED)
    assert not runs.results_dir(trained_store.workspace, doomed.id).exists()
    waited = runs.get_run(trained_store, later.id)  # never started: back in the queue
    assert (waited.status, waited.attempt, waited.started_at) == ("queued", 0, None)
    assert waited.message.startswith("queued again: the worker that claimed it stopped")
    wait_gone(executor_pids)


@pytest.mark.slow
def test_executors_of_a_killed_worker_stop_and_its_run_fails_by_lease(
    trained_store: Store, deployed: Deployment
) -> None:
    doomed = queue_big_run(trained_store, deployed)
    with worker_process(trained_store, "--executors", "1", MODELDECK_LEASE_SECONDS="2") as child:
        wait_until_scoring(trained_store, doomed.id, lambda: child.poll() is None)
        sigkill_worker(child)
    failed = failed_by_lease_expiry(trained_store, doomed.id)
    assert failed.status == "failed" and failed.error.startswith("worker lost (lease expired")
    assert not runs.results_dir(trained_store.workspace, doomed.id).exists()


@pytest.mark.slow
def test_a_dead_executor_fails_only_its_own_run_which_is_retried_by_its_policy(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@yearly", max_attempts=3, actor="tester")
    doomed = queue_big_run(trained_store, deployed)
    other = runs.enqueue_run(
        trained_store,
        deployed.name,
        source_override={"kind": "file", "path": "incoming/big.parquet"},
        actor="tester",
    )
    pool = executors.Pool(trained_store.workspace.home, 2)
    tick = worker.Tick(trained_store, "w1", executor=pool)
    ticking = threading.Thread(target=tick)
    ticking.start()
    try:
        for run_id in (doomed.id, other.id):  # both in flight, each on its own process
            wait_until_scoring(trained_store, run_id, ticking.is_alive)
        future = next(f for f, r in list(tick.running.items()) if r == doomed.id)
        victim = pool.pid_of(future)
        assert victim is not None and victim in pool.pids()
        kill_executor(victim, ticking)
    finally:
        tick.close(budget_seconds=30)
    spared = runs.get_run(trained_store, other.id)
    assert (spared.status, spared.attempt, spared.error) == ("succeeded", 1, None)
    retried = runs.get_run(trained_store, doomed.id)
    assert (retried.status, retried.attempt, retried.error) == ("succeeded", 2, None)
    assert runs.result_path(trained_store.workspace, doomed.id).exists()
    assert len(pool.pids()) == 0  # closed


@pytest.mark.slow
def test_a_stopped_worker_leaves_its_pending_steps_to_the_next_one(
    trained_store: Store, deployed: Deployment
) -> None:
    small = [runs.enqueue_run(trained_store, deployed.name, actor="tester").id for _ in range(6)]
    doomed = queue_big_run(trained_store, deployed)  # queued last: the steps wait behind it
    with worker_process(trained_store, "--executors", "1") as child:
        wait_until_scoring(trained_store, doomed.id, lambda: child.poll() is None)
        assert [runs.get_run(trained_store, r).status for r in small] == ["succeeded"] * 6
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
    assert child.returncode in (0, 143), out
    pending = trained_store.workspace.pending_dir
    # Nothing was computed on the way out (a step can outlast any stop budget) ...
    assert [r for r in small if explain.get_importance(trained_store, r) is None] == small
    assert set(small) | {doomed.id} == {p.name for p in pending.iterdir()}
    # ... and the next worker does it, before anything else.
    tick = worker.Tick(trained_store, "next-worker")
    assert tick() == 0
    for run_id in small:
        assert explain.get_importance(trained_store, run_id) is not None
        assert drift.counts_path(trained_store, run_id, None).exists()
    assert list(pending.iterdir()) == [] and tick.deferred == []
