"""The REST API server: deployed models in real time, over MLflow's scoring protocol and the
Open Inference Protocol (KServe V2), with the deployments' access levels and API keys.

The deployments, their loaded models and the keys live in memory (`core.serving.Catalog`,
reloaded in the background on the workspace's change marker): no request opens the store.

Every error a caller can cause is a ModelDeckError, answered by one handler as the same JSON
(`ModelDeckError.to_dict`: error, message, hint and, when the fix is an action, its step) with
the error's HTTP status; on the Open Inference paths `error` carries the message itself, as that
protocol has it. Unknown paths and methods get the same shape.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from threadpoolctl import threadpool_limits

from core import __version__, prediction_log, serving, shadow, usage
from core.api import metrics
from core.engine import payloads, predict
from core.entities import FeatureSchema
from core.errors import ModelDeckError
from core.store import Store
from core.workspace import Workspace

SWITCH_SECONDS = 0.0005  # the GIL's switch interval in the API process
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# The bodies the endpoints read themselves (the raw body, for speed), for /docs and fuzzing.
_ROWS = {"type": "array", "items": {}}
MLFLOW_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Exactly one of the four fields, as an MLflow scoring server "
                "takes it.",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": _ROWS},
                        },
                    },
                    "dataframe_records": {"type": "array", "items": {"type": "object"}},
                    "instances": _ROWS,
                    "inputs": {"oneOf": [_ROWS, {"type": "object"}]},
                },
            }
        },
        "text/csv": {"schema": {"type": "string", "description": "A header row, then rows."}},
    },
}
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "shape", "datatype", "data"],
                            "properties": {
                                "name": {"type": "string"},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string"},
                                "data": _ROWS,
                            },
                        },
                    },
                },
            }
        }
    },
}


class FastJSON(JSONResponse):
    """JSON through orjson: a 1,000-row answer in 0.1 ms instead of 5 ms (and NaN as null,
    which is JSON, where the standard library writes NaN, which is not)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """A ModelDeckError as the API's one error shape."""
    if not isinstance(exc, ModelDeckError):  # registered for ModelDeckError only
        raise exc
    body = exc.to_dict()
    if request.url.path.startswith("/v2"):
        body["error"] = str(exc)  # the Open Inference Protocol's {"error": "..."}
    return JSONResponse(body, status_code=exc.status)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors (unknown path, wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)
    error = ModelDeckError(
        {404: "No such path.", 405: "This path does not take that method."}.get(
            exc.status_code, str(exc.detail)
        ),
        "See the API documentation at /docs.",
    )
    error.status = exc.status_code
    return error_response(request, error)


Endpoint = Callable[[Request, str], Awaitable[Response]]


class ScoringLane:
    """The two scoring POSTs handed straight to their endpoint functions, past FastAPI's
    routing, dependency solving and exception middleware: about 0.1 ms of a one-row call's
    0.5 ms (measured with wrk, issue 17). The endpoints are the FastAPI routes' own functions
    (the routes stay, for /docs and any other caller), a ModelDeckError answers with the same
    error shape, and every other request (other paths, other methods) goes on to FastAPI.
    Added before the metrics middleware, which therefore still counts and times these calls."""

    def __init__(self, app: metrics.ASGIApp, endpoints: dict[str, Endpoint]) -> None:
        self.app, self.endpoints = app, endpoints

    async def __call__(
        self, scope: metrics.Scope, receive: metrics.Receive, send: metrics.Send
    ) -> None:
        matched = (
            metrics.SCORING.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if matched is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        v1 = matched.group(1)
        try:
            if v1 is not None:
                response = await self.endpoints["invocations"](request, v1)
            else:
                response = await self.endpoints["infer"](request, matched.group(2))
        except ModelDeckError as exc:
            response = error_response(request, exc)
        await response(scope, receive, send)


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID.match(given) else secrets.token_hex(8)


def _datatype(feature: FeatureSchema) -> str:
    return "FP64" if feature.kind == "numeric" else "BYTES"


def create_app(store: Store | None = None) -> FastAPI:
    """The API application, serving the workspace of `store` (default: $MODELDECK_HOME)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        # One OpenMP/BLAS thread: two threads on a busy box made one HGB row 10-20x slower.
        limits = threadpool_limits(limits=1)
        # The challenger's thread holds the GIL while it scores; a request arriving meanwhile
        # would wait up to the 5 ms switch interval for it. 0.5 ms bounds that wait.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_SECONDS)
        served = store or Store.open()
        catalog = serving.Catalog(served)
        catalog.start()
        log = prediction_log.PredictionLog(served.workspace)
        api.state.catalog, api.state.log = catalog, log
        shadows = api.state.shadow = shadow.Shadow(served.workspace)
        # the challenger's process yields its core to a shared batch: not counted as busy
        api.state.threads = predict.RowThreads(
            serving.batch_threads(), idle=lambda: predict.idle_cores(shadows.running())
        )
        sampler = usage.Sampler(served.workspace, "api").start()
        try:
            yield
        finally:
            sampler.stop()
            api.state.shadow.stop()
            catalog.stop()
            log.close()
            api.state.threads.close()
            limits.restore_original_limits()
            sys.setswitchinterval(switch)

    api = FastAPI(title="ModelDeck API", version=__version__, lifespan=lifespan)
    api.add_exception_handler(ModelDeckError, error_response)
    api.add_exception_handler(HTTPException, _http_error)
    counted = metrics.ServingMetrics(api.state)

    def served_names() -> dict[str, Any] | None:
        catalog: serving.Catalog | None = getattr(api.state, "catalog", None)
        return catalog.snapshot.endpoints if catalog is not None and catalog.ready else None

    lane: dict[str, Endpoint] = {}  # the scoring endpoints, once defined below
    api.add_middleware(ScoringLane, endpoints=lane)
    api.add_middleware(metrics.MetricsMiddleware, metrics=counted, served=served_names)

    def snapshot(request: Request) -> serving.Snapshot:
        catalog: serving.Catalog = request.app.state.catalog
        return catalog.snapshot

    def served(request: Request, name: str) -> tuple[serving.Endpoint, str | None]:
        """The deployment, once the caller may call it, and the caller's key id."""
        now = snapshot(request)
        endpoint = now.endpoint(name)
        holder = now.authorize(endpoint, request.headers.get("authorization"))
        return endpoint, holder.key_id if holder else None

    def logged(
        request: Request,
        endpoint: serving.Endpoint,
        table: Any,
        answer: serving.Answer,
        request_id: str,
        key_id: str | None,
    ) -> BackgroundTask | None:
        """Write the answer to the prediction log (before it is sent); the task that hands
        the rows to the challenger's shadow queue once the answer is sent, if it has one."""
        record = serving.main_record(endpoint, table, answer, request_id=request_id, key_id=key_id)
        record["cpu_ms"] = request.state.cpu_ms
        request.app.state.log.write(record)
        if endpoint.challenger is None:
            return None
        shadow_queue: shadow.Shadow = request.app.state.shadow

        async def submit() -> None:  # async: run by the event loop, not the thread pool
            shadow_queue.submit(endpoint, table, request_id)

        return BackgroundTask(submit)

    @contextlib.contextmanager
    def refusals_logged(
        request: Request, endpoint: serving.Endpoint, key_id: str | None
    ) -> Iterator[None]:
        """A call refused for its input is logged (status and message, no inputs), so the
        deployment's page shows callers' failures; then the error answers as ever."""
        try:
            yield
        except ModelDeckError as exc:
            record = serving.refused_record(
                endpoint, exc, request_id=_request_id(request), key_id=key_id
            )
            request.app.state.log.write(record)
            raise

    def answered(
        request: Request, endpoint: serving.Endpoint, table: Any, explained: bool = False
    ) -> serving.Answer:
        """serving.answer, with the CPU time spent on it (for usage): this thread's and that of
        the threads that shared its rows."""
        started = time.thread_time()
        threads: predict.RowThreads = request.app.state.threads
        answer = serving.answer(endpoint, table, explained=explained, threads=threads)
        request.state.cpu_ms = (time.thread_time() - started + answer.helper_cpu) * 1000
        return answer

    @api.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        """Prometheus' text format (core.api.metrics): an instance admin's key, unless
        MODELDECK_METRICS_PUBLIC=1."""
        metrics.require_reader(snapshot(request).ring, request.headers.get("authorization"))
        return Response(counted.exposition(), media_type=metrics.CONTENT_TYPE)

    @api.get("/health")
    def health(request: Request) -> dict[str, Any]:
        """Liveness: the server runs and knows its workspace (it never opens the store here)."""
        catalog: serving.Catalog | None = getattr(request.app.state, "catalog", None)
        return {
            "status": "ok",
            "version": __version__,
            "workspace": str(Workspace.resolve().home),
            "deployments": len(catalog.snapshot.endpoints) if catalog and catalog.ready else 0,
            "reload_error": catalog.last_error if catalog else None,
        }

    # ------------------------------------------------------------------------ MLflow, v1
    @api.get("/v1/deployments")
    def list_deployments(request: Request) -> list[dict[str, Any]]:
        """The deployments the caller may call (public ones without a key)."""
        now = snapshot(request)
        return [_describe(e) for e in now.callable_by(request.headers.get("authorization"))]

    @api.get("/v1/deployments/{name}")
    def show_deployment(request: Request, name: str) -> dict[str, Any]:
        return _describe(served(request, name)[0])

    @api.post("/v1/deployments/{name}/invocations", openapi_extra={"requestBody": MLFLOW_BODY})
    async def invocations(request: Request, name: str) -> Response:
        """MLflow's scoring protocol: the same bodies an MLflow scoring server accepts."""
        endpoint, key_id = served(request, name)
        with refusals_logged(request, endpoint, key_id):
            table = payloads.read_mlflow(
                await request.body(),
                request.headers.get("content-type"),
                endpoint.main.schema.feature_names,
            )
            explained = request.query_params.get("explain", "").lower() in ("true", "1", "yes")
            answer = answered(request, endpoint, table, explained)
        request_id = _request_id(request)
        body: dict[str, Any] = {"predictions": answer.predictions}
        if answer.probabilities is not None:
            body["probabilities"] = answer.probabilities
        if answer.explanations is not None:
            body["explanations"] = answer.explanations
        body |= {"deployment": endpoint.name, "version": answer.version}
        body["request_id"] = request_id
        return FastJSON(
            body, background=logged(request, endpoint, table, answer, request_id, key_id)
        )

    # ------------------------------------------------------------------------ Open Inference
    @api.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    def ready(request: Request) -> JSONResponse:
        catalog: serving.Catalog = request.app.state.catalog
        return JSONResponse({"ready": catalog.ready}, status_code=200 if catalog.ready else 503)

    @api.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "modeldeck", "version": __version__, "extensions": []}

    @api.get("/v2/models/{name}")
    def model_metadata(request: Request, name: str) -> dict[str, Any]:
        endpoint = served(request, name)[0]
        schema = endpoint.main.schema
        outputs = [{"name": "predict", "datatype": _output_type(endpoint), "shape": [-1]}]
        if schema.task != "regression":
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
        return {
            "name": endpoint.name,
            "versions": [str(endpoint.version)],
            "platform": "sklearn",
            "inputs": [
                {"name": f.name, "datatype": _datatype(f), "shape": [-1]} for f in schema.features
            ],
            "outputs": outputs,
        }

    @api.get("/v2/models/{name}/ready")
    def model_ready(request: Request, name: str) -> dict[str, Any]:
        return {"name": served(request, name)[0].name, "ready": True}

    @api.post("/v2/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY})
    async def infer(request: Request, name: str) -> Response:
        endpoint, key_id = served(request, name)
        with refusals_logged(request, endpoint, key_id):
            table, given_id = payloads.read_v2(
                await request.body(), request.headers.get("content-type")
            )
            answer = answered(request, endpoint, table)
        rows = len(answer.predictions)
        outputs: list[dict[str, Any]] = [
            {
                "name": "predict",
                "datatype": _output_type(endpoint),
                "shape": [rows],
                "data": answer.predictions,
            }
        ]
        if answer.probabilities is not None and answer.classes is not None:
            outputs.append(
                {
                    "name": "predict_proba",
                    "datatype": "FP64",
                    "shape": [rows, len(answer.classes)],
                    "data": [p for row in answer.probabilities for p in row.values()],
                    "parameters": {"classes": [str(c) for c in answer.classes]},
                }
            )
        request_id = str(given_id)[:64] if given_id is not None else _request_id(request)
        return FastJSON(
            {
                "model_name": endpoint.name,
                "model_version": str(answer.version),
                "id": request_id,
                "outputs": outputs,
            },
            background=logged(request, endpoint, table, answer, request_id, key_id),
        )

    lane |= {"invocations": invocations, "infer": infer}
    return api


def _output_type(endpoint: serving.Endpoint) -> str:
    if endpoint.main.task == "regression":
        return "FP64"
    classes = endpoint.main.schema.classes
    return "INT64" if classes and all(isinstance(c, int) for c in classes) else "BYTES"


def _describe(endpoint: serving.Endpoint) -> dict[str, Any]:
    d, schema = endpoint.deployment, endpoint.main.schema
    return {
        "name": d.name,
        "environment": d.environment,
        "access": d.access,
        "version": endpoint.version,
        "model": {"id": endpoint.main.id, "algorithm": endpoint.main.algorithm},
        "task": schema.task,
        "classes": list(schema.classes),
        "inputs": [{"name": f.name, "kind": f.kind} for f in schema.features],
        "invocations": f"/v1/deployments/{d.name}/invocations",
    }


app = create_app()
