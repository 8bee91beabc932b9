"""`GET /metrics` (issue 18 item 5): Prometheus' text format, parsed with prometheus_client's
own parser, on a real server; request counts by deployment and status, the latency histogram's
fine buckets, the challenger's counters, model load times, and who may read it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import deployments, keys, users
from core.api import metrics
from core.api.app import create_app
from core.store import Store
from tests.conftest import DeployChurn
from tests.test_api import api_server, call, rows


def scrape(base: str, key: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"{base}/metrics")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.headers["content-type"].startswith("text/plain; version=")
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_time_and_guard_the_scoring_calls(
    trained_store: Store, deploy_churn: DeployChurn, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed = deploy_churn("gradient_boosting", challenger="linear")
    name = deployed.name
    deployments.set_access(trained_store, name, "public", actor="tester")
    users.create_user(trained_store, "mia", password=None, actor="tester")
    admin = keys.create_key(trained_store, "tester", actor="tester").secret
    member = keys.create_key(trained_store, "mia", actor="mia").secret
    body: dict[str, Any] = {"dataframe_records": json.loads(rows(2).to_json(orient="records"))}
    with api_server(trained_store) as base:
        for _ in range(3):
            assert call(f"{base}/v1/deployments/{name}/invocations", body)[0] == 200
        bad = {"dataframe_records": [{"age": 3}]}
        assert call(f"{base}/v1/deployments/{name}/invocations", bad)[0] == 422
        assert call(f"{base}/v1/deployments/made-up/invocations", body)[0] == 404
        assert call(f"{base}/v2/models/{name}/infer", {"inputs": []})[0] == 400
        assert call(f"{base}/health")[0] == 200  # not a scoring call: not counted
        assert scrape(base)[0] == 401
        status, text = scrape(base, member)
        assert status == 403 and "instance admin's key" in text
        status, text = scrape(base, admin)
        monkeypatch.setenv(metrics.PUBLIC_ENV, "1")
        assert scrape(base)[0] == 200
    assert status == 200
    found = samples(text)
    count = "modeldeck_requests_total"
    assert found[(count, (("deployment", name), ("status", "200")))] == 3
    assert found[(count, (("deployment", name), ("status", "422")))] == 1
    assert found[(count, (("deployment", "-"), ("status", "404")))] == 1
    assert found[(count, (("deployment", name), ("status", "400")))] == 1  # Open Inference
    assert not any("made-up" in str(labels) for _, labels in found)
    histogram = "modeldeck_request_duration_seconds"
    assert found[(f"{histogram}_count", (("deployment", name),))] == 5
    buckets = sorted(
        float(dict(labels)["le"])
        for metric, labels in found
        if metric == f"{histogram}_bucket" and dict(labels)["deployment"] == name
    )
    assert buckets[:4] == [0.0005, 0.001, 0.002, 0.003] and buckets[-1] == float("inf")
    assert found[("modeldeck_challenger_skipped_total", ())] == 0
    assert (
        found[("modeldeck_challenger_scored_total", ())]
        + found[("modeldeck_challenger_failed_total", ())]
        <= 3
    )
    for role in ("main", "challenger"):
        assert found[("modeldeck_model_load_seconds", (("deployment", name), ("role", role)))] > 0


def test_each_app_has_its_own_registry(trained_store: Store) -> None:
    one, two = create_app(trained_store), create_app(trained_store)  # no duplicate series
    assert one is not two
    assert (
        "modeldeck_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    )
