"""Schemathesis fuzzes the API's OpenAPI description on a real server (issue 17 item 5): no
request, however malformed, gets a 5xx, and every error has the one error shape.

(Schemathesis' own pytest integration does not run under pytest 9 here, so each operation's
Hypothesis strategy is driven directly.)"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from core.store import Store
from tests.test_api import STAGING, served

__all__ = ["served"]


def test_no_request_gets_a_server_error(served: tuple[Store, str, dict[str, str]]) -> None:
    _, base, held = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            if case.path_parameters and "name" in case.path_parameters and case.body is not None:
                case.path_parameters["name"] = STAGING  # bodies reach a real model too
            for key in (None, held["olga"]):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.text[:300])
                if response.status_code >= 400:
                    assert {"error", "message", "hint"} <= set(response.json())

        check()
    assert "POST /v1/deployments/{name}/invocations" in seen
    assert "POST /v2/models/{name}/infer" in seen
