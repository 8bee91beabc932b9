"""Monitoring queries (issue 18 item 7): exact counts per bucket and source, and the main and
challenger prediction distributions, on generated logs (compacted and live) and real runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from core import monitoring, prediction_log
from core.entities import Deployment
from core.errors import InvalidInput
from core.store import Store, utcnow
from tests.test_challenger import deployed, results, score, served
from tests.test_ground_truth import diabetes

__all__ = ["deployed"]  # the fixture


def hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def entry(d: Deployment, at: datetime, predictions: list[Any], **more: Any) -> dict[str, Any]:
    return {
        "kind": more.get("kind", "main"),
        "logged_at": at.isoformat(),
        "request_id": more.get("request_id", "r"),
        "deployment": d.name,
        "deployment_id": d.id,
        "version": 1,
        "source": more.get("source", "api"),
        "rows": len(predictions),
        "status": more.get("status", 200),
        "latency_ms": 1.0,
        "outputs": {"predictions": predictions},
    }


def test_traffic_and_class_shares_by_source(trained_store: Store, deployed: Deployment) -> None:
    done = score(trained_store, deployed.name, served(300))
    now = utcnow()
    early, late = hour(now) - timedelta(hours=2), hour(now) - timedelta(hours=1)
    log = prediction_log.PredictionLog(trained_store.workspace)
    log.write(entry(deployed, early + timedelta(minutes=1), ["yes", "no"]))
    log.write(entry(deployed, early + timedelta(minutes=2), ["no"]))
    log.write(entry(deployed, early + timedelta(minutes=2), ["no", "no"], kind="challenger"))
    log.close()
    prediction_log.compact(trained_store.workspace)  # the early hour: compacted Parquet
    log = prediction_log.PredictionLog(trained_store.workspace)
    log.write(entry(deployed, late + timedelta(minutes=5), ["yes"], source="form"))
    log.write(entry(deployed, late + timedelta(minutes=6), ["no"], status=422))  # not counted
    log.write(entry(deployed, early - timedelta(hours=5), ["no"]))  # before the window
    window = monitoring.Window(early, now + timedelta(hours=1))
    found = monitoring.traffic(trained_store, deployed.name, window)
    assert found == [
        {"bucket": early, "source": "api", "requests": 2, "rows": 3},
        {"bucket": late, "source": "form", "requests": 1, "rows": 1},
        {"bucket": hour(done.finished_at), "source": "run", "requests": 1, "rows": 300},
    ]
    days = monitoring.traffic(
        trained_store, deployed.name, monitoring.Window(early, window.end, "day", "api")
    )
    assert [(r["source"], r["requests"], r["rows"]) for r in days] == [("api", 2, 3)]

    frame = results(trained_store, done.id)
    shares = monitoring.distributions(trained_store, deployed.name, window)
    assert shares.kind == "classes" and shares.labels == ("no", "yes")
    main = frame["prediction"].value_counts()
    other = frame["challenger_prediction"].value_counts()
    assert shares.main == (main.get("no", 0) + 2, main.get("yes", 0) + 2)
    assert shares.challenger == (other.get("no", 0) + 2, other.get("yes", 0))
    logged_only = monitoring.distributions(
        trained_store, deployed.name, monitoring.Window(early, window.end, source="api")
    )
    assert (logged_only.main, logged_only.challenger) == ((2, 1), (2, 0))


def test_a_regression_histogram_and_bad_windows(store: Store) -> None:
    d, _ = diabetes(store)
    now = utcnow()
    log = prediction_log.PredictionLog(store.workspace)
    log.write(entry(d, now - timedelta(minutes=3), [0.0, 10.0, 2.5]))
    log.write(entry(d, now - timedelta(minutes=2), [9.9], kind="challenger"))
    log.write(entry(d, now - timedelta(minutes=1), [5.0, 7.5, None]))
    window = monitoring.Window(now - timedelta(hours=1), now + timedelta(minutes=1), source="api")
    found = monitoring.distributions(store, d.name, window, bins=4)
    assert found.kind == "histogram" and found.edges == (0.0, 2.5, 5.0, 7.5, 10.0)
    assert found.main == (1, 1, 1, 2) and found.challenger == (0, 0, 0, 1)
    assert found.labels[0] == "0 to 2.5"
    with pytest.raises(InvalidInput, match="A bucket is an hour or a day, not 'week'"):
        monitoring.Window(now, now + timedelta(hours=1), "week")
    with pytest.raises(
        InvalidInput, match="The source is one of api, form, calls, run, all, not 'x'"
    ):
        monitoring.Window(now, now + timedelta(hours=1), source="x")
    with pytest.raises(InvalidInput, match="The window ends before it starts"):
        monitoring.Window(now, now)
