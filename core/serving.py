"""Real-time serving: what the API process keeps in memory and how it answers one request.

The API never opens the store on a request (a connect alone costs 25-34 ms and can meet a
writer's lock). A `Catalog` holds a `Snapshot`: every deployment with a current version, its
access level, its models loaded and warmed up (one predict of their background rows), and the
API keys' `KeyRing`. A background thread reloads it when the workspace's change marker moves
(every audited change touches it after its commit: a deploy, rollback, swap, access change,
key or role change) and every REFRESH_SECONDS anyway. A reload builds a whole new snapshot and
swaps the reference, so a request in flight finishes on the version it started with.

A request's rows go through the same schema check and coercion as a run's batches
(`model_input`) and the same `predict.score`, so the API and a run give the same predictions
for the same rows, to the last bit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from core import api_status, deployments, keys, registry
from core.engine import model_input, predict
from core.engine.compiled import CompiledPipeline, compile_pipeline
from core.engine.profiles import plain
from core.entities import Deployment, Model, ModelSchema
from core.errors import Forbidden, InvalidInput, ModelDeckError, NotFound
from core.store import Store, utcnow
from core.workspace import CHANGES_MARKER, Workspace

log = logging.getLogger("modeldeck.serving")
POLL_SECONDS = 0.2  # how often the marker is looked at (a file read of a few microseconds)
REFRESH_SECONDS = 30.0  # a reload even without a marker change (a missed touch heals)


@dataclass(frozen=True)
class Endpoint:
    """One deployment as the API serves it."""

    deployment: Deployment
    version: int
    main: Model
    main_estimator: Any
    challenger: Model | None = None
    challenger_estimator: Any = None
    workspace: Workspace | None = None  # where the main model's background rows are
    main_compiled: CompiledPipeline | None = None  # the numpy path, when the pipeline has one
    challenger_compiled: CompiledPipeline | None = None
    load_seconds: dict[str, float] = field(default_factory=dict)  # by role: load + warm-up

    @property
    def name(self) -> str:
        return self.deployment.name

    def background(self) -> Any:
        """The main model's SHAP background rows (read when an explanation needs them)."""
        assert self.workspace is not None
        return pd.read_parquet(self.workspace.artifact_dir(self.main.id) / "background.parquet")


@dataclass(frozen=True)
class Snapshot:
    endpoints: dict[str, Endpoint]  # by deployment name
    ring: keys.KeyRing
    marker: bytes | None
    loaded_at: datetime
    failures: dict[str, str] = field(default_factory=dict)  # by name: why it is not served

    def endpoint(self, name: str) -> Endpoint:
        found = self.endpoints.get(name)
        if found is None:
            raise NotFound(
                "deployment",
                name,
                "Call a deployment that has a current version; GET /v1/deployments lists them.",
            )
        return found

    def authorize(self, endpoint: Endpoint, header: str | None) -> keys.Holder | None:
        """The caller's key holder (None for a public deployment called without a key):
        Unauthorized (401) for a missing or bad key where one is needed, Forbidden (403) for a
        valid key without access."""
        d = endpoint.deployment
        if d.access == "public" and not header:
            return None
        holder = self.ring.holder(header)
        if not self.ring.may_call(holder, d.access, d.project_id, d.id):
            needs = {
                "instance": "a key of an active user",
                "project": "a key of a collaborator of the deployment's project",
            }.get(d.access, "a key")
            raise Forbidden(
                f"This key may not call '{d.name}': it needs {needs}.",
                "Use a key of a user who may call it, or ask an owner to change its access.",
            )
        return holder

    def callable_by(self, header: str | None) -> list[Endpoint]:
        """The deployments a caller may call (public ones without a key), by name."""
        holder = self.ring.holder(header) if header else None
        return [
            e
            for _, e in sorted(self.endpoints.items())
            if e.deployment.access == "public"
            or (
                holder is not None
                and self.ring.may_call(
                    holder, e.deployment.access, e.deployment.project_id, e.deployment.id
                )
            )
        ]


def load_snapshot(store: Store, previous: Snapshot | None = None) -> Snapshot:
    """Read every served deployment, load (and warm up) models not loaded before, and the
    key ring. A deployment whose model cannot be loaded is left out and logged."""
    marker = store.workspace.read_marker(CHANGES_MARKER)
    endpoints: dict[str, Endpoint] = {}
    failures: dict[str, str] = {}
    for d in deployments.list_deployments(store):
        if d.current is None:
            continue
        try:
            endpoints[d.name] = _endpoint(store, d, previous)
        except ModelDeckError as exc:
            log.warning("deployment %s is not served: %s", d.name, exc)
            failures[d.name] = exc.message
    return Snapshot(endpoints, keys.load_ring(store), marker, utcnow(), failures)


def _endpoint(store: Store, d: Deployment, previous: Snapshot | None) -> Endpoint:
    assert d.current is not None
    kept = previous.endpoints.get(d.name) if previous else None
    pins = (d.current.main_model_id, d.current.challenger_model_id)
    if kept is not None and (kept.main.id, kept.challenger.id if kept.challenger else None) == pins:
        return replace(kept, deployment=d, version=d.current.number)
    main = registry.get_model(store, d.current.main_model_id)
    challenger = (
        registry.get_model(store, d.current.challenger_model_id)
        if d.current.challenger_model_id
        else None
    )
    loaded, seconds = [], {}
    for role, model in (("main", main), ("challenger", challenger)):
        started = time.perf_counter()
        loaded.append(_warm(store, model))
        if model is not None:
            seconds[role] = time.perf_counter() - started
    (main_estimator, main_compiled), (challenger_estimator, challenger_compiled) = loaded
    return Endpoint(
        d,
        d.current.number,
        main,
        main_estimator,
        challenger,
        challenger_estimator,
        store.workspace,
        main_compiled,
        challenger_compiled,
        seconds,
    )


def _warm(store: Store, model: Model | None) -> tuple[Any, CompiledPipeline | None]:
    """The model's estimator, loaded and warmed up by predicting its background rows once,
    and its compiled preprocessing (checked on those rows against sklearn), if it has one."""
    if model is None:
        return None, None
    estimator = registry.cached_estimator(store, model)
    rows = registry.background_sample(store, model)
    predict.score(estimator, rows.head(8), model.task, "warm-up")
    compiled = compile_pipeline(
        estimator, model.schema, pa.RecordBatch.from_pandas(rows, preserve_index=False)
    )
    if compiled is not None:
        score(compiled, estimator, pa.RecordBatch.from_pandas(rows.head(1)), model, "warm-up")
    return estimator, compiled


class Catalog:
    """The API's snapshot and the thread that keeps it current."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.status = api_status.Publisher(store.workspace)  # run/api-<pid>.json, for the app

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self.reload()
        assert self._snapshot is not None
        return self._snapshot

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def reload(self) -> Snapshot:
        self._snapshot = load_snapshot(self.store, self._snapshot)
        return self._snapshot

    def start(self) -> None:
        """Load now, then keep current in a daemon thread."""
        self.reload()
        self.status.beat(self._snapshot, None, force=True)
        self._thread = threading.Thread(target=self._follow, name="catalog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.status.stop()

    def _follow(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(POLL_SECONDS):
            self.status.beat(self._snapshot, self.last_error)
            current = self._snapshot
            marker = self.store.workspace.read_marker(CHANGES_MARKER)
            due = time.monotonic() - last >= REFRESH_SECONDS
            if current is not None and marker == current.marker and not due:
                continue
            try:
                self.reload()
                self.last_error = None
            except Exception as exc:  # keep serving the last snapshot; say why in /health
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("reloading the served deployments failed")
            last = time.monotonic()
            self.status.beat(self._snapshot, self.last_error, force=True)


# ---------------------------------------------------------------------------- answering
EXPLAIN_ROWS = 100  # rows a request may ask explanations for
THREADS_ENV = "MODELDECK_API_THREADS"


def batch_threads(processes: int = 1) -> int:
    """The threads that share a large batch's rows in one API process: $MODELDECK_API_THREADS,
    else the cores this process may use, divided among the API's `processes`. InvalidInput for
    anything but a whole number of threads."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return max(1, len(os.sched_getaffinity(0)) // max(1, processes))
    if not raw.isdecimal() or int(raw) < 1:
        raise InvalidInput(
            f"{THREADS_ENV} is {raw!r}: it must be a whole number of threads, 1 or more.",
            f"Set {THREADS_ENV} to the threads that may share one request's rows (1 keeps each"
            " request on one thread), or unset it to use the cores.",
        )
    return int(raw)


@dataclass(frozen=True)
class Answer:
    """One request's main output (and, when asked, each row's explanation)."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None
    classes: list[Any] | None
    version: int
    seconds: float
    explanations: list[dict[str, Any]] | None = None
    helper_cpu: float = 0.0  # CPU seconds of the other threads that shared the rows


_explainers: dict[tuple[str, str], Any] = {}
_explainers_lock = threading.Lock()


def _explainer(endpoint: Endpoint) -> Any:
    """The main model's explainer, built once per model in this process (the runs' own)."""
    from core.engine.explainers import ModelExplainer  # shap: only when asked to explain

    key = (str(endpoint.workspace.home if endpoint.workspace else ""), endpoint.main.id)
    with _explainers_lock:
        if key not in _explainers:
            _explainers[key] = ModelExplainer(
                endpoint.main_estimator, endpoint.main.schema, endpoint.background
            )
        return _explainers[key]


def explain(explainer: Any, frame: Any, predictions: list[Any]) -> list[dict[str, Any]]:
    """Each row's SHAP contributions on the original columns, for its predicted class:
    `base` + the sum of `contributions` = `output`, on the stated `scale`."""
    attribution = explainer.explain(frame)
    outputs = [plain(o) for o in attribution.outputs]
    rows = []
    for i, predicted in enumerate(predictions):
        j = outputs.index(predicted) if predicted in outputs else 0
        sign = -1.0 if attribution.negative is not None and predicted != outputs[0] else 1.0
        # the other class of a one-output binary model: its log-odds are the negation
        # (1 - p on a probability scale, where the contributions still change sign)
        shift = 1.0 if sign < 0 and explainer.scale == "probability" else 0.0
        values = attribution.values[i, :, j] * sign
        rows.append(
            {
                "explains": "value" if outputs == [None] else str(predicted),
                "scale": explainer.scale,
                "base": float(shift + attribution.base[j] * sign),
                "contributions": {
                    f: float(v) for f, v in zip(explainer.features, values, strict=True)
                },
                "output": float(shift + attribution.output[i, j] * sign),
            }
        )
    return rows


def score(
    compiled: CompiledPipeline | None,
    estimator: Any,
    batch: pa.RecordBatch,
    model: Model | ModelSchema,
    who: str,
    threads: predict.RowThreads | None = None,
) -> predict.SharedScore:
    """Predict a batch: through the compiled preprocessing when there is one (numpy, no
    DataFrame), else through sklearn's pipeline; the same bits either way. With `threads`, a
    large batch of a tree model is shared among them (the same bits again)."""
    schema = model if isinstance(model, ModelSchema) else model.schema
    task = model.task
    threads = threads or ONE_THREAD
    if compiled is None:
        frame = model_input.to_model_frame(batch, schema)
        return threads.score(estimator, frame, task, who)
    arrays = model_input.to_model_arrays(batch, schema)
    return threads.score(compiled.model, compiled.transform(arrays, batch.num_rows), task, who)


ONE_THREAD = predict.RowThreads(1)


def probability_rows(names: list[str], proba: Any) -> list[dict[str, float]]:
    """Each row's probabilities by class name, as Python floats (a binary model's pairs built
    directly: four times faster than dict(zip()) on a 1,000-row batch)."""
    rows = proba.tolist()
    if len(names) == 2:
        first, second = names
        return [{first: a, second: b} for a, b in rows]
    return [dict(zip(names, row, strict=True)) for row in rows]


def answer(
    endpoint: Endpoint,
    table: pa.Table,
    *,
    explained: bool = False,
    threads: predict.RowThreads | None = None,
) -> Answer:
    """Check the rows against the main model's schema (SchemaMismatch, 422, naming each
    column) and predict them as a run would (a large batch shared among `threads`); with
    `explained`, each row's explanation too (at most EXPLAIN_ROWS rows)."""
    if explained and table.num_rows > EXPLAIN_ROWS:
        raise InvalidInput(
            f"Explanations are given for at most {EXPLAIN_ROWS} rows; this request has"
            f" {table.num_rows:,}.",
            "Ask without explain=true, or send fewer rows.",
        )
    started = time.perf_counter()
    schema = endpoint.main.schema
    model_input.check_schema(table.schema, schema, table).raise_for_problems()
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    assert batch is not None
    compiled = None if explained else endpoint.main_compiled
    shared = score(compiled, endpoint.main_estimator, batch, endpoint.main, "main", threads)
    scored = shared.scored
    classes = [plain(c) for c in scored.classes] if scored.proba is not None else None
    probabilities = None
    if scored.proba is not None and classes is not None:
        probabilities = probability_rows([str(c) for c in classes], scored.proba)
    predictions = scored.prediction.tolist()  # Python scalars, except in an object array
    if scored.prediction.dtype == object and not all(type(v) is str for v in predictions):
        predictions = [plain(v) for v in predictions]
    explanations = (
        explain(_explainer(endpoint), model_input.to_model_frame(batch, schema), predictions)
        if explained
        else None
    )
    return Answer(
        predictions,
        probabilities,
        classes,
        endpoint.version,
        time.perf_counter() - started,
        explanations,
        shared.helper_cpu,
    )


# ---------------------------------------------------------------------------- the log
def main_record(
    endpoint: Endpoint,
    table: pa.Table,
    answered: Answer,
    *,
    request_id: str,
    key_id: str | None,
    source: str = "api",
) -> dict[str, Any]:
    """The prediction log's record of one answered request."""
    return _call_record(endpoint, request_id, key_id, source) | {
        "rows": table.num_rows,
        "status": 200,
        "latency_ms": answered.seconds * 1000,
        "inputs": table.to_pydict(),
        "outputs": {
            "predictions": answered.predictions,
            "probabilities": answered.probabilities,
        },
    }


def refused_record(
    endpoint: Endpoint,
    error: ModelDeckError,
    *,
    request_id: str,
    key_id: str | None,
    source: str = "api",
) -> dict[str, Any]:
    """The prediction log's record of a call of an authorized caller refused for its input
    (unreadable body, schema mismatch, too many rows): the status and the message, which never
    echo the caller's data, and no inputs."""
    return _call_record(endpoint, request_id, key_id, source) | {
        "status": error.status,
        "error": error.message,
    }


def _call_record(
    endpoint: Endpoint, request_id: str, key_id: str | None, source: str
) -> dict[str, Any]:
    return {
        "kind": "main",
        "logged_at": utcnow().isoformat(),
        "request_id": request_id,
        "deployment": endpoint.name,
        "deployment_id": endpoint.deployment.id,
        "version": endpoint.version,
        "key_id": key_id,
        "source": source,
    }
