"""The prediction log and the challenger in shadow (issue 17 items 9 and 10): every answered
call logged before its answer, a partial line skipped, segments compacted to Parquet, the API
killed with SIGKILL under load losing no answered call, and a challenger that sleeps, raises or
overflows its queue never touching the main answer."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from core import deployments, prediction_log, registry, serving, shadow
from core.datasets import churn_frame
from core.errors import InvalidInput
from core.shadow import Shadow
from core.store import Store
from core.workspace import Workspace
from tests.test_api import STAGING, _free_port, call

ROOT = Path(__file__).resolve().parents[1]
SLOW = 1.5  # seconds a slow challenger sleeps: far above a 5-row answer even on a busy box


def test_records_are_whole_lines_and_a_partial_last_line_is_skipped(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    log = prediction_log.PredictionLog(workspace)
    for i in range(3):
        log.write({"kind": "main", "request_id": f"r{i}", "logged_at": "2026-12-06T10:00:00"})
    [segment] = prediction_log.open_segments(workspace)
    with segment.open("ab") as f:
        f.write(b'{"kind": "main", "request_id": "torn')  # a process killed mid-write
    assert [r["request_id"] for r in prediction_log.read_segment(segment)] == ["r0", "r1", "r2"]
    log.close()
    assert prediction_log.open_segments(workspace) == []
    assert prediction_log.compact(workspace) == 3
    table = prediction_log.read_all(workspace)
    assert table["request_id"].to_pylist() == ["r0", "r1", "r2"]
    day = prediction_log.folder(workspace) / "compacted" / "day=2026-12-06"
    assert len(list(day.glob("*.parquet"))) == 1 and not list(day.glob(".*"))
    assert prediction_log.closed_segments(workspace) == []


def test_files_compacted_before_the_user_column_still_read(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    old = prediction_log.folder(workspace) / "compacted" / "day=2026-12-01" / "old.parquet"
    old.parent.mkdir(parents=True)
    columns = {n: t for n, t in prediction_log.COLUMNS.items() if n != "user"}
    pq_table = pa.table({n: pa.array([None], type=t) for n, t in columns.items()})
    pq.write_table(pq_table.set_column(0, "kind", pa.array(["main"])), old)
    log = prediction_log.PredictionLog(workspace)
    log.write({"kind": "main", "source": "form", "user": "vera", "logged_at": "2026-12-06"})
    table = prediction_log.read_all(workspace)
    assert sorted(table.column("user").to_pylist(), key=str) == [None, "vera"]


def test_health_counts_a_versions_calls_and_names_its_last_error(tmp_path: Path) -> None:
    """Per kind, over compacted days and open segments alike: calls and failures of one version
    since a time, the last answer and the last error; other versions, deployments and older
    days do not count, and a day before `since` is not even read."""
    workspace = Workspace(tmp_path)
    old = prediction_log.PredictionLog(workspace)

    def rec(kind: str, at: str, status: int = 200, **more: Any) -> dict[str, Any]:
        base = {"deployment_id": "dep_1", "version": 2, "rows": 1, "logged_at": at}
        return {"kind": kind, "status": status, **base, **more}

    old.write(rec("main", "2026-12-04T09:00:00", 500, error="ValueError: days ago"))
    old.write(rec("main", "2026-12-05T23:30:00"))
    old.write(rec("challenger", "2026-12-05T23:40:00", 500, error="KeyError: 'région'"))
    old.close()
    assert prediction_log.compact(workspace) == 3
    # a corrupt file for a day before `since`: listed, it would fail the query
    (prediction_log.folder(workspace) / "compacted" / "day=2026-12-04" / "x.parquet").write_text("")
    live = prediction_log.PredictionLog(workspace)
    live.write(rec("main", "2026-12-06T08:00:00"))
    live.write(rec("main", "2026-12-06T08:05:00", 422, error="missing column: âge"))
    live.write(rec("main", "2026-12-06T08:10:00"))
    live.write(rec("main", "2026-12-06T08:20:00", version=1))  # an older version
    live.write(rec("main", "2026-12-06T08:30:00", deployment_id="dep_2"))
    since = datetime(2026, 12, 5, 9, 0)
    found = prediction_log.health(workspace, "dep_1", 2, since)
    live.close()
    main, challenger = found["main"], found["challenger"]
    assert (main.calls, main.errors) == (4, 1)
    assert main.last_answer_at == datetime(2026, 12, 6, 8, 10)
    assert (main.last_error_at, main.last_error) == (
        datetime(2026, 12, 6, 8, 5),
        "missing column: âge",
    )
    assert (challenger.calls, challenger.errors, challenger.last_answer_at) == (1, 1, None)
    assert challenger.last_error == "KeyError: 'région'"
    assert prediction_log.health(workspace, "dep_3", 2, since) == {}


def test_a_segment_rotates_by_size(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    log = prediction_log.PredictionLog(workspace, max_bytes=200)
    for i in range(6):
        log.write({"kind": "main", "request_id": f"r{i}", "logged_at": "2026-12-06T10:00:00"})
    # 80-byte lines: the fourth write finds 240 bytes and starts a new segment
    assert len(prediction_log.closed_segments(workspace)) == 1
    assert len(prediction_log.open_segments(workspace)) == 1
    log.close()
    assert prediction_log.compact(workspace) == 6


@pytest.mark.parametrize("policy", ["never", "interval", "always"])
def test_every_fsync_policy_writes_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setenv("MODELDECK_LOG_FSYNC", policy)
    monkeypatch.setenv("MODELDECK_LOG_FSYNC_MS", "0")
    log = prediction_log.PredictionLog(Workspace(tmp_path))
    log.write({"kind": "main", "request_id": "a"})
    log.close()
    [closed] = prediction_log.closed_segments(Workspace(tmp_path))
    assert [r["request_id"] for r in prediction_log.read_segment(closed)] == ["a"]


def test_an_unknown_fsync_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDECK_LOG_FSYNC", "sometimes")
    with pytest.raises(ValueError, match="never, interval, always"):
        prediction_log.fsync_policy()


# ---------------------------------------------------------------------------- the shadow
def _endpoint(store: Store, challenger_step: Any) -> serving.Endpoint:
    """churn's boosting model as main, and the linear model behind `challenger_step` (a real
    sklearn pipeline step that sleeps or raises) as the challenger."""
    by = {m.algorithm: m for m in registry.list_models(store)}
    main, other = by["gradient_boosting"], by["linear"]
    deployed = deployments.deploy(store, main.id, "staging", challenger_id=other.id, actor="tester")
    challenger = Pipeline(
        [
            ("fault", FunctionTransformer(challenger_step)),
            ("model", registry.load_estimator(store, other)),
        ]
    )
    return serving.Endpoint(
        deployed, 1, main, registry.load_estimator(store, main), other, challenger
    )


def _table(n: int = 5) -> pa.Table:
    frame = churn_frame(n_rows=n, seed=4).drop(columns=["churn"])
    return pa.Table.from_pandas(frame, preserve_index=False)


def _sleep(frame: pd.DataFrame) -> pd.DataFrame:
    time.sleep(SLOW)
    return frame


def _same(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _spin(frame: pd.DataFrame) -> pd.DataFrame:
    ends = time.monotonic() + SLOW
    while time.monotonic() < ends:  # a challenger that holds the CPU
        pass
    return frame


def _fail(frame: pd.DataFrame) -> pd.DataFrame:
    raise RuntimeError("the challenger broke")


def _crash_on_three_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) == 3:
        os._exit(3)  # a challenger that takes its interpreter down (a native library's fault)
    return frame


@pytest.fixture(autouse=True)
def _importable_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The challenger's process (spawned) unpickles the fault steps above by reference to this
    module: it must find `tests` where this process does. A spawned process also runs this
    process's `__main__` again, which an earlier AppTest in the same worker may have left as
    its page script (whose `__args` exist only under AppTest): an empty one here."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


def _challenger_records(workspace: Workspace) -> list[dict[str, Any]]:
    table = prediction_log.read_all(workspace)
    return [r for r in table.to_pylist() if r["kind"] == "challenger"]


def test_a_slow_challenger_never_slows_the_main_answer(trained_store: Store) -> None:
    endpoint = _endpoint(trained_store, _sleep)
    shadow = Shadow(trained_store.workspace, size=2)
    table = _table()
    started = time.perf_counter()
    answered = serving.answer(endpoint, table)
    queued = [shadow.submit(endpoint, table, f"r{i}") for i in range(5)]
    assert time.perf_counter() - started < SLOW  # no shadow call was waited for
    assert queued.count(False) >= 2 and shadow.skipped == queued.count(False)  # bounded
    shadow.stop(timeout=30)
    logged = _challenger_records(trained_store.workspace)
    assert len(logged) == queued.count(True) and all(r["status"] == 200 for r in logged)
    assert all(r["latency_ms"] >= SLOW * 1000 for r in logged)
    assert {r["request_id"] for r in logged} <= {"r0", "r1", "r2", "r3", "r4"}
    assert len(answered.predictions) == 5 and shadow.done == len(logged)


def test_a_challenger_on_the_cpu_is_seen_running_and_yields_its_core(
    trained_store: Store,
) -> None:
    """A batch shared among the API's threads counts the cores idle at that moment; the
    challenger's process runs at a lower priority, so while it is on a CPU it is counted as
    yielding (Shadow.running); waiting for a call, or sleeping in one, it is not running."""
    from core.engine import predict

    def settled(shadow: Shadow, calls: int) -> None:
        deadline = time.monotonic() + 60
        while shadow.done < calls:
            assert time.monotonic() < deadline, "the challenger did not answer"
            time.sleep(0.02)

    spinning = Shadow(trained_store.workspace)
    assert not spinning.running()  # no process yet
    endpoint = _endpoint(trained_store, _spin)
    assert spinning.submit(endpoint, _table(), "r1")
    settled(spinning, 1)  # started and idle
    assert spinning.submit(endpoint, _table(), "r2")
    seen, deadline = False, time.monotonic() + SLOW * 0.8
    while not seen and time.monotonic() < deadline:
        seen = spinning.running()
        time.sleep(0.01)
    assert seen, "a challenger holding the CPU was never seen running"
    spinning.stop(timeout=30)
    assert not spinning.running()  # ended

    sleeping = Shadow(trained_store.workspace)
    endpoint = _endpoint(trained_store, _sleep)
    assert sleeping.submit(endpoint, _table(), "r3")
    settled(sleeping, 1)
    idle, deadline = False, time.monotonic() + 5  # it may be finishing the call's log line
    while not idle and time.monotonic() < deadline:
        idle = not sleeping.running()
        time.sleep(0.05)
    assert idle, "a challenger waiting for a call was seen running"
    assert sleeping.submit(endpoint, _table(), "r4")
    time.sleep(SLOW / 3)
    assert not sleeping.running()  # asleep in the call
    sleeping.stop(timeout=30)
    cores = len(os.sched_getaffinity(0))
    assert 1 <= predict.idle_cores() <= predict.idle_cores(yielding=1) <= cores


def test_a_failing_challenger_is_logged_and_the_main_answer_stands(trained_store: Store) -> None:
    endpoint = _endpoint(trained_store, _fail)
    shadow = Shadow(trained_store.workspace)
    answered = serving.answer(endpoint, _table())
    assert shadow.submit(endpoint, _table(), "r1", source="form")
    shadow.stop(timeout=30)
    [record] = _challenger_records(trained_store.workspace)
    assert record["status"] == 500 and "the challenger broke" in record["error"]
    assert (record["request_id"], record["source"], record["deployment"]) == (
        "r1",
        "form",
        endpoint.name,
    )
    assert shadow.failed == 1 and len(answered.predictions) == 5


def _wait_dead(shadow: Shadow) -> None:
    deadline = time.monotonic() + 60
    while shadow._process is not None and shadow._process.is_alive():
        assert time.monotonic() < deadline, "the crashing call did not end the process"
        time.sleep(0.1)


def test_a_crashing_challenger_is_started_again_and_the_api_lives_on(
    trained_store: Store,
) -> None:
    endpoint = _endpoint(trained_store, _crash_on_three_rows)
    shadow = Shadow(trained_store.workspace)
    assert shadow.submit(endpoint, _table(3), "crash")
    _wait_dead(shadow)
    assert len(serving.answer(endpoint, _table(3)).predictions) == 3  # main answers as ever
    assert shadow.submit(endpoint, _table(), "after")
    assert shadow.restarts == 1  # the first restart is at once
    assert shadow.submit(endpoint, _table(3), "crash again")
    _wait_dead(shadow)
    assert not shadow.submit(endpoint, _table(), "too soon")  # a second crash: 1 s first
    assert (shadow.restarts, shadow.skipped) == (2, 1)
    time.sleep(1.2)
    assert shadow.submit(endpoint, _table(), "later")
    shadow.stop(timeout=30)
    found = {r["request_id"]: r["status"] for r in _challenger_records(trained_store.workspace)}
    assert found == {"after": 200, "later": 200}


# ---------------------------------------------------------------------------- SIGKILL
def test_every_answered_call_survives_a_sigkill_of_the_api(trained_store: Store) -> None:
    store = trained_store
    boosting = next(m for m in registry.list_models(store) if m.algorithm == "gradient_boosting")
    deployments.deploy(store, boosting.id, "staging", name=STAGING, actor="tester")
    deployments.set_access(store, STAGING, "public", actor="tester")
    port = _free_port()
    env = {**os.environ, "MODELDECK_HOME": str(store.workspace.home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "core.api.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(f"{base}/v2/health/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        answered: list[str] = []
        stop = threading.Event()
        body = {"dataframe_records": json.loads(_table(2).to_pandas().to_json(orient="records"))}

        def hammer() -> None:
            while not stop.is_set():
                try:
                    status, answer = call(f"{base}/v1/deployments/{STAGING}/invocations", body)
                # killed mid-answer (IncompleteRead: its headers sent, not its body) is not an
                # answered call either
                except (urllib.error.URLError, OSError, http.client.HTTPException):
                    return
                if status == 200:
                    answered.append(answer["request_id"])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(answered) > 20
    logged = set(prediction_log.read_all(store.workspace, STAGING)["request_id"].to_pylist())
    assert set(answered) <= logged
    prediction_log.compact(store.workspace)  # the dead process's open segment is closed
    compacted = set(prediction_log.read_all(store.workspace, STAGING)["request_id"].to_pylist())
    assert set(answered) <= compacted and prediction_log.open_segments(store.workspace) == []


def test_rows_reach_the_challengers_process_with_their_types() -> None:
    """The shadow queue carries a request's rows as Arrow IPC bytes (a tenth of pickling's
    cost): every column comes back with its type and values, the odd ones included."""
    import datetime as dt
    import unicodedata

    table = pa.table(
        {
            "âge": pa.array([41.5, float("inf"), None]),
            "visits": pa.array([1, None, 3], pa.int64()),
            "town": pa.array([unicodedata.normalize("NFD", "café"), None, "Zürich"]),
            "member": pa.array([True, False, None]),
            "nothing": pa.array([None, None, None]),
            "seen": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5)] * 3, pa.timestamp("s")),
        }
    )
    back = shadow.from_ipc(shadow.to_ipc(table))
    assert back.schema == table.schema
    assert back.equals(table)


# ---------------------------------------------------------------------------- retention
def test_retention_keeps_the_last_days_and_their_drift_counts(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    log = prediction_log.PredictionLog(workspace)
    for day in ("2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"):
        log.write({"kind": "main", "request_id": day, "logged_at": f"{day}T10:00:00"})
    log.close()
    assert prediction_log.compact(workspace) == 4
    base = prediction_log.folder(workspace)
    unknown = base / "compacted" / "day=unknown" / "x.parquet"  # records without a time
    unknown.parent.mkdir()
    unknown.write_bytes(b"")
    for day in ("2026-12-04", "2026-12-05"):  # a model's kept counts for one deployment
        kept = base / "drift" / "mdl_1" / "dep_1" / f"day={day}" / "seg.json"
        kept.parent.mkdir(parents=True)
        kept.write_text("[]")
    late = prediction_log.PredictionLog(workspace)  # not compacted yet: it stays
    late.write({"kind": "main", "request_id": "late", "logged_at": "2026-12-01T09:00:00"})

    removed = prediction_log.prune(workspace, 2, today=datetime(2026, 12, 6).date())

    assert [d.isoformat() for d in removed] == ["2026-12-03", "2026-12-04"]
    kept_days = sorted(p.name for p in (base / "compacted").iterdir())
    assert kept_days == ["day=2026-12-05", "day=2026-12-06", "day=unknown"]
    counted = sorted(p.name for p in (base / "drift" / "mdl_1" / "dep_1").iterdir())
    assert counted == ["day=2026-12-05"]
    unknown.unlink()  # an empty stand-in, not Parquet
    ids = sorted(prediction_log.read_all(workspace)["request_id"].to_pylist())
    assert ids == ["2026-12-05", "2026-12-06", "late"]
    late.close()
    assert prediction_log.prune(workspace, 2, today=datetime(2026, 12, 6).date()) == []


@pytest.mark.parametrize(
    ("given", "days"), [(None, None), ("", None), ("0", None), ("90", 90), (" 7 ", 7)]
)
def test_retention_is_read_from_the_environment(
    given: str | None, days: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(prediction_log.RETENTION_ENV, raising=False)
    if given is not None:
        monkeypatch.setenv(prediction_log.RETENTION_ENV, given)
    assert prediction_log.retention_days() == days


@pytest.mark.parametrize("given", ["-1", "90d", "ninety", "1.5"])
def test_a_retention_that_is_no_number_of_days_is_refused(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(prediction_log.RETENTION_ENV, given)
    with pytest.raises(InvalidInput) as raised:
        prediction_log.retention_days()
    assert raised.value.message == (
        f"MODELDECK_LOG_RETENTION_DAYS is {given!r}: it must be a whole number of days."
    )
    assert "e.g. 90" in (raised.value.hint or "")


def test_a_large_batch_reaches_the_challenger_through_a_file_that_is_then_removed(
    trained_store: Store,
) -> None:
    """A message over the datagram's size (a batch's rows) goes through a file of
    private/shadow/; the challenger scores it, and the file is gone."""
    endpoint = _endpoint(trained_store, _same)
    sender = Shadow(trained_store.workspace)
    big = _table(3000)
    assert len(shadow.to_ipc(big)) > shadow.INLINE_BYTES
    assert sender.submit(endpoint, big, "big") and sender.submit(endpoint, _table(2), "small")
    sender.stop(timeout=60)
    logged = {r["request_id"]: r for r in _challenger_records(trained_store.workspace)}
    assert (logged["big"]["status"], logged["big"]["rows"]) == (200, 3000)
    assert (logged["small"]["status"], logged["small"]["rows"]) == (200, 2)
    spill = trained_store.workspace.private_dir / shadow.SPILL_DIR
    assert not list(spill.glob("*.pickle"))


def test_a_challenger_that_cannot_be_sent_is_logged_as_failing_not_skipped(
    trained_store: Store,
) -> None:
    """A challenger model that cannot be pickled never reaches its process: its calls are
    still sent, and logged as failures saying so, so the page shows why."""
    endpoint = _endpoint(trained_store, lambda frame: frame)  # a lambda: not picklable
    sender = Shadow(trained_store.workspace)
    assert sender.submit(endpoint, _table(), "r1") and sender.submit(endpoint, _table(), "r2")
    sender.stop(timeout=30)
    logged = _challenger_records(trained_store.workspace)
    assert [r["request_id"] for r in logged] == ["r1", "r2"] and sender.skipped == 0
    assert all(
        r["status"] == 500 and "did not reach the shadow process" in r["error"] for r in logged
    )
