"""The challenger in shadow: every request's rows scored by the challenger after the main answer
was computed, in a process of its own, through a bounded queue.

A process, not a thread: a thread scoring in the API process holds the GIL while a request
arrives (it waited up to the 5 ms switch interval), and a challenger that crashes the
interpreter (a native library's fault, `os._exit`) would take the API down with it. Here a
slow, failing or crashing challenger never slows or fails the main answer: a full queue skips
the shadow call and counts it; an exception is logged as the challenger's outcome (status 500);
a dead process is counted and started again at the next call.

The process is started at the first request that has a challenger. It receives each challenger
model once (the estimator the API already loaded and verified, and its compiled preprocessing),
then only (model id, rows as Arrow IPC bytes, request) per call, and writes its outcomes to its
own prediction-log segment (kind "challenger", the request id of the main answer).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pyarrow as pa

from core import prediction_log, serving
from core.engine.profiles import plain
from core.store import utcnow
from core.workspace import Workspace

log = logging.getLogger("modeldeck.shadow")
QUEUE_SIZE = 64  # calls waiting for the challenger; more are skipped and counted
SHADOW_NICENESS = 10  # the challenger's process runs at a lower CPU priority than the API
_CONTEXT = multiprocessing.get_context("spawn")  # never fork a process that runs threads


class Shadow:
    """The API process's side: a bounded queue to the challenger's process, and counters."""

    def __init__(self, workspace: Workspace, size: int = QUEUE_SIZE) -> None:
        self.workspace = workspace
        self.size = size
        self.skipped = 0  # calls not queued: the queue was full
        self.restarts = 0  # the process died (a crashing challenger) and was started again
        # done, failed: written by the process only (so no lock, and no semaphore to leak)
        self._counts = _CONTEXT.Array("q", 2, lock=False)
        self._process: BaseProcess | None = None
        self._queue: Any = None
        self._sent: set[str] = set()  # models the running process has received
        self._died_at: float | None = None  # when the process was found dead

    @property
    def done(self) -> int:
        return int(self._counts[0])

    @property
    def failed(self) -> int:
        return int(self._counts[1])

    def submit(
        self, endpoint: serving.Endpoint, table: pa.Table, request_id: str, source: str = "api"
    ) -> bool:
        """Queue a shadow call (False, counted, when the queue is full); False without a
        challenger. Never blocks and never raises."""
        challenger = endpoint.challenger
        if challenger is None:
            return False
        try:
            if not self._ensure_running():
                self.skipped += 1  # it crashed a moment ago: waiting before a restart
                return False
            if challenger.id not in self._sent:  # once per model and process
                self._queue.put_nowait(
                    (
                        "model",
                        challenger.id,
                        (challenger, endpoint.challenger_estimator, endpoint.challenger_compiled),
                    )
                )
                self._sent.add(challenger.id)
            call = _call(endpoint, request_id, source)
            self._queue.put_nowait(("call", challenger.id, (to_ipc(table), call)))
        except queue.Full:
            self.skipped += 1
            return False
        except Exception:  # a process that cannot start must not fail the main answer
            log.exception("the challenger's process could not be reached")
            self.skipped += 1
            return False
        return True

    def _ensure_running(self) -> bool:
        """True when the process runs (started now if need be); False while a crashed one
        waits for its restart (immediately the first time, then 1, 2, 4 ... 60 s)."""
        if self._process is not None and self._process.is_alive():
            return True
        if self._process is not None:  # it died: a crashing challenger
            if self._died_at is None:
                self._died_at = time.monotonic()
                self.restarts += 1
                log.warning("the challenger's process died (exit %s)", self._process.exitcode)
            wait = 0.0 if self.restarts == 1 else min(60.0, 2.0 ** (self.restarts - 2))
            if time.monotonic() - self._died_at < wait:
                return False
        self._died_at = None
        self._queue = _CONTEXT.Queue(self.size)
        self._sent = set()
        self._process = _CONTEXT.Process(
            target=_serve,
            args=(str(self.workspace.home), self._queue, self._counts),
            name="modeldeck-shadow",
            daemon=True,
        )
        self._process.start()
        return True

    def stop(self, timeout: float = 10) -> None:
        """Let the process finish what is queued, then end it."""
        if self._process is None:
            return
        with contextlib.suppress(queue.Full, ValueError, OSError):
            self._queue.put(None, timeout=timeout)
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._queue.close()
        self._queue.join_thread()
        self._queue = None  # its semaphores are unlinked when it is collected, not at exit
        self._process = None


def _serve(home: str, calls: Any, counts: Any) -> None:
    """The challenger's process: score each call, log its outcome."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # as the API: one OpenMP/BLAS thread
    with contextlib.suppress(OSError):  # shadow work yields the CPU to the main answers
        os.nice(SHADOW_NICENESS)
    writer = prediction_log.PredictionLog(Workspace(Path(home)))
    models: dict[str, tuple[Any, Any, Any]] = {}
    try:
        while True:
            try:
                item = calls.get()
            except Exception:  # a message that cannot be unpickled here: dropped, said
                log.exception("a message to the challenger's process could not be read")
                continue
            if item is None:
                break
            kind, model_id, payload = item
            if kind == "model":
                models[model_id] = payload
                continue
            rows, call = payload
            record = _score(models.get(model_id), from_ipc(rows), call)
            counts[0 if record["status"] == 200 else 1] += 1
            writer.write(record)
    finally:
        writer.close()


def to_ipc(table: pa.Table) -> bytes:
    """The rows as Arrow's IPC stream: 11 us for one row where pickling the table took 117 us
    of the API process's CPU (in the queue's feeder thread, beside the next request)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def challenger_record(
    endpoint: serving.Endpoint, table: pa.Table, request_id: str, source: str
) -> dict[str, Any]:
    """The challenger's outcome for one call, scored here and now (the prediction form, where
    a person waits for a page anyway, scores it after the main answer in its own process)."""
    model = (endpoint.challenger, endpoint.challenger_estimator, endpoint.challenger_compiled)
    return _score(model, table, _call(endpoint, request_id, source))


def _call(endpoint: serving.Endpoint, request_id: str, source: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "deployment": endpoint.name,
        "deployment_id": endpoint.deployment.id,
        "version": endpoint.version,
        "source": source,
    }


def _score(
    model: tuple[Any, Any, Any] | None, table: pa.Table, call: dict[str, Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"kind": "challenger", **call, "rows": table.num_rows}
    try:
        if model is None:  # its message was lost (a model that cannot be pickled)
            raise RuntimeError("the challenger model did not reach the shadow process")
        challenger, estimator, compiled = model
        batch = table.combine_chunks().to_batches()[0]
        scored = serving.score(compiled, estimator, batch, challenger, "challenger")
        record |= {
            "status": 200,
            "outputs": {"predictions": [plain(v) for v in scored.prediction.tolist()]},
        }
    except Exception as exc:  # the challenger's fault is logged, never raised
        record |= {"status": 500, "error": f"{type(exc).__name__}: {exc}"[:500]}
    record |= {
        "logged_at": utcnow().isoformat(),
        "latency_ms": (time.perf_counter() - started) * 1000,
    }
    return record
