"""`GET /metrics`: the API's counters in Prometheus' text format (prometheus_client).

Each app has its own `CollectorRegistry` (not the library's global one), so several apps in one
process (tests) never share or collide on a series. What is exported:
- `modeldeck_requests_total{deployment, status}`: scoring calls (MLflow invocations and Open
  Inference infer) by deployment and HTTP status;
- `modeldeck_request_duration_seconds{deployment}`: their latency, server side, from the first
  byte of the request to the start of the answer, in buckets fine enough for 1-2 ms calls;
- `modeldeck_challenger_{skipped,failed,scored}_total`: the shadow queue's counters;
- `modeldeck_model_load_seconds{deployment, role}`: how long loading and warming each served
  model took.
A scoring call costs one dict look-up, one counter increment and one histogram observation (a
few microseconds, measured by bench/metrics_bench.py); the challenger and load figures are read
from the serving objects only when scraped.

A `deployment` label is only ever a name the server serves: a call to an unknown name is
counted under "-", so neither an attacker's made-up names (unbounded series) nor names of
deployments are created by callers.

Access: Prometheus usually scrapes without credentials on a private network, but the series
name every deployment, including project-only ones. So /metrics needs an instance admin's key
(not one limited to a deployment), who may list them all anyway; with
`MODELDECK_METRICS_PUBLIC=1` it is open, for a scraper on a network the operator trusts.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import keys
from core.errors import Forbidden

PUBLIC_ENV = "MODELDECK_METRICS_PUBLIC"
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORING = re.compile(r"^/(?:v1/deployments/([^/]+)/invocations|v2/models/([^/]+)/infer)$")
UNKNOWN = "-"
CONTENT_TYPE = CONTENT_TYPE_LATEST

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServingMetrics:
    """One app's registry and the request series."""

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modeldeck_requests",
            "Scoring calls by deployment and HTTP status.",
            ["deployment", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modeldeck_request_duration_seconds",
            "Scoring calls' latency in the server, by deployment.",
            ["deployment"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Served(state))

        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, name: str, status: int, seconds: float) -> None:
        """Count and time one call (the labelled children are looked up once per pair: the
        library's `labels()` takes a lock and builds a key every time)."""
        children = self._children.get((name, status))
        if children is None:
            children = (self.requests.labels(name, str(status)), self.latency.labels(name))
            self._children[(name, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Served(Collector):
    """The challenger's counters and the models' load times, read at scrape time from the
    app's state (`shadow`, `catalog`)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        shadow = getattr(self.state, "shadow", None)
        for what, help_text in (
            ("skipped", "Shadow calls skipped because the challenger's queue was full."),
            ("failed", "Shadow calls whose challenger raised."),
            ("scored", "Shadow calls the challenger answered."),
            ("restarts", "Times the challenger's process died and was started again."),
        ):
            family = CounterMetricFamily(f"modeldeck_challenger_{what}", help_text)
            attribute = "done" if what == "scored" else what
            family.add_metric([], float(getattr(shadow, attribute, 0) if shadow else 0))
            yield family
        loads = GaugeMetricFamily(
            "modeldeck_model_load_seconds",
            "Seconds taken to load and warm up each served model.",
            labels=["deployment", "role"],
        )
        catalog = getattr(self.state, "catalog", None)
        if catalog is not None and catalog.ready:
            for name, endpoint in sorted(catalog.snapshot.endpoints.items()):
                for role, seconds in endpoint.load_seconds.items():
                    loads.add_metric([name, role], seconds)
        yield loads


def is_public() -> bool:
    return os.environ.get(PUBLIC_ENV, "").strip().lower() in ("1", "true", "yes")


def require_reader(ring: keys.KeyRing, header: str | None) -> None:
    """Unauthorized without a valid key, Forbidden for one that is not an instance admin's
    (or is limited to one deployment); nothing when /metrics is public."""
    if is_public():
        return
    holder = ring.holder(header)
    if holder.role != "admin" or holder.deployment_id is not None:
        raise Forbidden(
            "/metrics names every deployment: it needs an instance admin's key that is not "
            "limited to one deployment.",
            f"Use such a key, or set {PUBLIC_ENV}=1 for a scraper on a trusted network.",
        )


class MetricsMiddleware:
    """Counts and times scoring calls as plain ASGI (no per-request objects of its own)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, served: Callable[[], Any]) -> None:
        self.app, self.metrics, self.served = app, metrics, served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = SCORING.match(scope.get("path", "")) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                name = matched.group(1) or matched.group(2)
                endpoints = self.served()
                known = name if endpoints is not None and name in endpoints else UNKNOWN
                self.metrics.observe(known, status, time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, sent)
