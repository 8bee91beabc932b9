"""The challenger in shadow: every request's rows scored by the challenger after the main answer
was computed, in a process of its own, through a bounded channel.

A process, not a thread: a thread scoring in the API process holds the GIL while a request
arrives (it waited up to the 5 ms switch interval), and a challenger that crashes the
interpreter (a native library's fault, `os._exit`) would take the API down with it. Here a
slow, failing or crashing challenger never slows or fails the main answer: a full channel skips
the shadow call and counts it; an exception is logged as the challenger's outcome (status 500);
a dead process is counted and started again at the next call.

The process is started at the first request that has a challenger. It receives each challenger
model once (the estimator the API already loaded and verified, and its compiled preprocessing),
then only (model id, rows as Arrow IPC bytes, request) per call, over a Unix datagram socket
(`Shadow`), and writes its outcomes to its own prediction-log segment (kind "challenger", the
request id of the main answer).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import socket
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pyarrow as pa

from core import prediction_log, serving
from core.engine.profiles import plain
from core.store import utcnow
from core.workspace import Workspace, is_running

log = logging.getLogger("modeldeck.shadow")
QUEUE_SIZE = 64  # calls in flight to the challenger; more are skipped and counted
INLINE_BYTES = 32 * 1024  # a larger message goes through a file of SPILL_DIR
RECEIVE_BYTES = 64 * 1024  # above any datagram sent (INLINE_BYTES, or a file's path)
SPILL_DIR = "shadow"  # in the workspace's private folder
SHADOW_NICENESS = 10  # the challenger's process runs at a lower CPU priority than the API
_CONTEXT = multiprocessing.get_context("spawn")  # never fork a process that runs threads


class Shadow:
    """The API process's side: a bounded channel to the challenger's process, and counters.

    The channel is a Unix SOCK_SEQPACKET socket written by the request's own thread without
    blocking: each message is one datagram, whole or refused. A multiprocessing queue cost a
    one-row answer 0.15-0.2 ms (+20-28 %, wrk at c1, a quiet box) through its feeder thread,
    which took the GIL beside the next request; this socket costs 4-7 % (every call scored).
    A message over INLINE_BYTES (a batch's rows, a model) is written to a file of
    `private/shadow/` and only its path is sent. At most `size` calls are in flight (sent,
    not yet scored); more, or a full socket, are skipped and counted."""

    def __init__(self, workspace: Workspace, size: int = QUEUE_SIZE) -> None:
        self.workspace = workspace
        self.size = size
        self.skipped = 0  # calls not sent: too many in flight, or the socket was full
        self.restarts = 0  # the process died (a crashing challenger) and was started again
        # done, failed: written by the process only (so no lock, and no semaphore to leak)
        self._counts = _CONTEXT.Array("q", 2, lock=False)
        self._process: BaseProcess | None = None
        self._socket: socket.socket | None = None
        self._sent: set[str] = set()  # models the running process has received
        self._calls = 0  # calls sent to the running process
        self._settled = 0  # done + failed when it started
        self._died_at: float | None = None  # when the process was found dead
        self._spill = workspace.private_dir / SPILL_DIR
        self._spilled = 0

    @property
    def done(self) -> int:
        return int(self._counts[0])

    def running(self) -> bool:
        """Is the challenger's process on a CPU, or waiting for one, at this moment? It runs at
        a lower priority (SHADOW_NICENESS) and yields its core to the API's threads, so a
        batch shared among them need not count it as busy (predict.idle_cores)."""
        process = self._process
        if process is None or process.pid is None:
            return False
        try:
            with open(f"/proc/{process.pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] == b"R"
        except (OSError, IndexError):
            return False

    @property
    def failed(self) -> int:
        return int(self._counts[1])

    def submit(
        self, endpoint: serving.Endpoint, table: pa.Table, request_id: str, source: str = "api"
    ) -> bool:
        """Send a shadow call (False, counted, when `size` calls are in flight or the socket
        is full); False without a challenger. Never blocks and never raises."""
        challenger = endpoint.challenger
        if challenger is None:
            return False
        try:
            if not self._ensure_running():
                self.skipped += 1  # it crashed a moment ago: waiting before a restart
                return False
            if self._calls - (self.done + self.failed - self._settled) >= self.size:
                self.skipped += 1  # the challenger is behind
                return False
            if challenger.id not in self._sent:  # once per model and process
                model = (challenger, endpoint.challenger_estimator, endpoint.challenger_compiled)
                try:
                    message: bytes | None = _pickled(("model", challenger.id, model))
                except Exception:  # its calls are logged as failed by the process (_score)
                    log.exception("challenger %s cannot be sent to its process", challenger.id)
                    message = None
                if message is not None and not self._send(message):
                    self.skipped += 1
                    return False
                self._sent.add(challenger.id)
            call = _call(endpoint, request_id, source)
            if not self._send(_pickled(("call", challenger.id, (to_ipc(table), call)))):
                self.skipped += 1
                return False
            self._calls += 1
        except Exception:  # a process that cannot start must not fail the main answer
            log.exception("the challenger's process could not be reached")
            self.skipped += 1
            return False
        return True

    def _send(self, data: bytes) -> bool:
        """One message to the process; False when the socket's buffer is full."""
        assert self._socket is not None
        spilled = None
        if len(data) > INLINE_BYTES:
            self._spill.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._spilled += 1
            spilled = self._spill / f"{os.getpid()}-{self._spilled}.pickle"
            spilled.write_bytes(data)
            data = _pickled(("file", str(spilled)))
        try:
            self._socket.send(data)
        except BlockingIOError:
            if spilled is not None:
                spilled.unlink(missing_ok=True)
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
            self._close()
        self._died_at = None
        self._remove_spilled()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._socket, self._sent = ours, set()
        self._calls, self._settled = 0, self.done + self.failed
        self._process = _CONTEXT.Process(
            target=_serve,
            args=(str(self.workspace.home), theirs, self._counts),
            name="modeldeck-shadow",
            daemon=True,
        )
        try:
            self._process.start()  # the socket is duplicated for the process as it starts
        finally:
            theirs.close()
        return True

    def stop(self, timeout: float = 10) -> None:
        """Let the process finish what was sent, then end it."""
        if self._process is None:
            return
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.settimeout(timeout)
                self._socket.send(_pickled(None))
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._close()
        self._remove_spilled()

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket, self._process = None, None

    def _remove_spilled(self) -> None:
        """Files of messages no process will read: this process's, and those of API processes
        that are gone."""
        for path in self._spill.glob("*.pickle") if self._spill.is_dir() else ():
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or not is_running(int(pid))):
                path.unlink(missing_ok=True)


def _serve(home: str, channel: socket.socket, counts: Any) -> None:
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
                data = channel.recv(RECEIVE_BYTES)
            except OSError:
                break
            if not data:  # the API process closed its end
                break
            try:
                item = _message(data)
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
        channel.close()


def _pickled(item: Any) -> bytes:
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _message(data: bytes) -> Any:
    """A datagram's message, read from its file when it was too large to send (`_send`)."""
    item = pickle.loads(data)
    if isinstance(item, tuple) and len(item) == 2 and item[0] == "file":
        path = Path(item[1])
        try:
            item = pickle.loads(path.read_bytes())
        finally:
            path.unlink(missing_ok=True)
    return item


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
        scored = serving.score(compiled, estimator, batch, challenger, "challenger").scored
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
