"""What /metrics costs a scoring call: `ServingMetrics.observe` alone, and the ASGI middleware
around a do-nothing app (path match, served-name look-up, one counter increment and one
histogram observation) against the bare app. Microseconds per call, best of `--repeat`.

    .venv/bin/python bench/metrics_bench.py [--calls 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.api import metrics

SCOPE = {"type": "http", "path": "/v1/deployments/churn/invocations"}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def ignore(message: Any) -> None:
    return None


async def receive() -> dict[str, Any]:
    return {}


async def per_call(asgi: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await asgi(SCOPE, receive, ignore)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counted = metrics.ServingMetrics(SimpleNamespace())
    wrapped = metrics.MetricsMiddleware(app, counted, lambda: {"churn": None})
    observe, bare, middle = [], [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        for _ in range(args.calls):
            counted.observe("churn", 200, 0.0012)
        observe.append((time.perf_counter() - started) / args.calls * 1e6)
        bare.append(asyncio.run(per_call(app, args.calls)))
        middle.append(asyncio.run(per_call(wrapped, args.calls)))
    print(f"observe (counter + histogram)  {min(observe):6.2f} us a call")
    print(f"bare ASGI app                  {min(bare):6.2f} us a call")
    print(f"with the metrics middleware    {min(middle):6.2f} us a call")
    print(f"middleware overhead            {min(middle) - min(bare):6.2f} us a call")


if __name__ == "__main__":
    main()
