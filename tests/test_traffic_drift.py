"""Drift, input quality and champion vs challenger over the API's traffic (issue 18 item 7):
rows answered through the serving code and logged as the API logs them give the same drift
counts and scores as a run over the same rows; agreement is a hand count; labels keyed by
request id measure the window; an empty window says what to do."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core import drift, ground_truth, monitoring, prediction_log, serving, shadow
from core.errors import InvalidInput
from core.store import Store, utcnow
from core.traffic_challenger import compare_traffic
from core.traffic_drift import keep_counts, traffic_drift
from tests.conftest import DeployChurn
from tests.test_challenger import results, score, served
from tests.test_ground_truth import diabetes
from tests.test_request_labels import add


def call(
    store: Store,
    name: str,
    frame: pd.DataFrame,
    request_id: str,
    *,
    source: str = "api",
    with_challenger: bool = True,
) -> Any:
    """Answer `frame` as the API does and log the main record and the shadow answer."""
    endpoint = serving.load_snapshot(store).endpoint(name)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    answered = serving.answer(endpoint, table)
    log = prediction_log.PredictionLog(store.workspace)
    record = serving.main_record(
        endpoint, table, answered, request_id=request_id, key_id=None, source=source
    )
    log.write(record)
    if with_challenger and endpoint.challenger is not None:
        log.write(shadow.challenger_record(endpoint, table, request_id, source))
    log.close()
    return answered


def window(source: str = "api", bucket: str = "hour") -> monitoring.Window:
    now = utcnow()
    return monitoring.Window(now - timedelta(days=1), now + timedelta(hours=1), bucket, source)


def same_scores(a: drift.DriftReport, b: drift.DriftReport) -> None:
    assert a.rows == b.rows
    for x, y in zip([*a.features, a.prediction], [*b.features, b.prediction], strict=True):
        assert x is not None and y is not None
        assert (x.name, x.status, x.buckets, x.served_rows) == (
            y.name,
            y.status,
            y.buckets,
            y.served_rows,
        )
        assert x.served == pytest.approx(y.served)
        assert x.psi == pytest.approx(y.psi)
        assert x.distance == pytest.approx(y.distance, nan_ok=True)
        assert x.served_mean == pytest.approx(y.served_mean, nan_ok=True)


def test_log_drift_equals_run_drift_and_agreement_is_a_hand_count(
    trained_store: Store, deploy_churn: DeployChurn
) -> None:
    d = deploy_churn("gradient_boosting", challenger="linear", name="churn-staging")
    frame = served(240, seed=5)
    frame.loc[3, "contract"] = "lifetime"  # unseen in training
    frame.loc[4, "age"] = 140.0  # above the training range
    frame.loc[5, "monthly_charges"] = np.nan
    done = score(trained_store, d.name, frame)
    by_run = drift.drift_report(trained_store, d.name, run_id=done.id)

    with pytest.raises(InvalidInput, match="No API calls in this window") as empty:
        traffic_drift(trained_store, d.name, window())
    assert "Call the API" in empty.value.hint
    with pytest.raises(InvalidInput, match="No API or form calls of 'churn-staging'"):
        compare_traffic(trained_store, d.name, window())

    # one-row, few-row and many-row requests; the first ones compacted to Parquet
    cuts = [0, 1, 4, 40, 120, 240]
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        call(trained_store, d.name, frame.iloc[lo:hi], f"req-{i}")
        if i == 2:
            prediction_log.compact(trained_store.workspace)
    call(trained_store, d.name, frame.iloc[:7], "form-1", source="form")  # another source

    # the worker's step after compacting: each new file counted once for the current model
    assert keep_counts(trained_store) == 3 and keep_counts(trained_store) == 0
    found = traffic_drift(trained_store, d.name, window())
    same_scores(found.report, by_run)
    # the compacted files' hourly counts were kept; read back, they count the same
    kept = list((prediction_log.folder(trained_store.workspace) / "drift").rglob("*.json"))
    assert len(kept) == len(prediction_log.compacted_files(trained_store.workspace)) == 3
    same_scores(traffic_drift(trained_store, d.name, window()).report, by_run)
    # a window ending inside the hour counts the compacted rows of that hour as they come
    cut = utcnow() + timedelta(seconds=1)
    sliver = monitoring.Window(window().start, cut, "hour", "api")
    same_scores(traffic_drift(trained_store, d.name, sliver).report, by_run)
    assert found.requests == 5 and found.report.run_ids == ()
    assert len(found.series.shares) == 1  # one hour bucket
    # input quality from the same counts as the run's own input_quality counts
    per_column = done.summary["input_quality"]["columns"]
    quality = {q.name: q for q in found.quality}
    assert quality["contract"].unseen == per_column["unseen_category"]["contract"] == 1
    assert quality["age"].out_of_range == per_column["out_of_range"]["age"] == 1
    for name, n in per_column["missing"].items():
        assert quality[name].missing == n

    both = traffic_drift(trained_store, d.name, window("all"))
    assert both.report.rows == 2 * 240 + 7 and both.report.run_ids == (done.id,)

    # agreement: a hand count over the run's rows, answered by the same two models
    rows = results(trained_store, done.id)
    agreeing = int((rows["prediction"] == rows["challenger_prediction"]).sum())
    compared = compare_traffic(trained_store, d.name, window("api"))
    assert (compared.rows, compared.agreeing) == (240, agreeing)
    assert sum(compared.main) == sum(compared.challenger) == 240
    assert compared.buckets[:2] == ("no", "yes")
    assert compared.main[1] == int((rows["prediction"] == "yes").sum())
    assert len(compared.top) == min(240 - agreeing, 20)
    worst = compared.top[0]
    assert worst["prediction"] != worst["challenger_prediction"]
    assert set(frame.columns) - {"customer_id"} <= set(worst)
    confidences = [r["confidence"] for r in compared.top]
    assert confidences == sorted(confidences, reverse=True)


def test_labels_by_request_id_measure_the_window_and_odd_inputs_count_as_missing(
    trained_store: Store, deploy_churn: DeployChurn
) -> None:
    d = deploy_churn("gradient_boosting", challenger="linear")
    frame = served(30, seed=9)
    answers = [call(trained_store, d.name, frame.iloc[i : i + 1], f"r{i}") for i in range(30)]
    truth = ["yes" if i % 3 == 0 else "no" for i in range(30)]
    labels = pd.DataFrame({"request_id": [f"r{i}" for i in range(30)], "churn": truth})
    add(trained_store, d.name, labels, "truth.csv", "churn")
    w = window()
    live = ground_truth.live_metrics(trained_store, d.name, start=w.start, end=w.end)
    [api] = live.runs
    predicted = [a.predictions[0] for a in answers]
    assert api.run_id == "api" and api.rows == 30
    assert api.main["accuracy"] == pytest.approx(
        np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    )
    assert live.overall.ci is not None

    # +/-inf reaches the log as null (JSON has neither): counted missing; text numbers read
    odd = served(3, seed=2)
    odd["age"] = [np.inf, -np.inf, 30.0]
    call(trained_store, d.name, odd, "odd", with_challenger=False)
    found = traffic_drift(trained_store, d.name, w)
    age = next(q for q in found.quality if q.name == "age")
    assert age.rows == 33 and age.missing == 2 + int(frame["age"].isna().sum())
    compared = compare_traffic(trained_store, d.name, w)
    assert compared.rows == 30 and any(
        "3 of 33 rows have no challenger" in n for n in compared.notes
    )


def test_a_regression_over_the_log_by_day(store: Store) -> None:
    d, frame = diabetes(store)
    rows = frame.drop(columns=["progression"]).head(25)
    done = score(store, d.name, rows)
    call(store, d.name, rows.iloc[:10], "a")
    call(store, d.name, rows.iloc[10:], "b")
    found = traffic_drift(store, d.name, window(bucket="day"))
    same_scores(found.report, drift.drift_report(store, d.name, run_id=done.id))
    compared = compare_traffic(store, d.name, window(bucket="day"))
    by_run = results(store, done.id)
    close = (by_run["prediction"] - by_run["challenger_prediction"]).abs() <= compared.tolerance
    assert compared.rows == 25 and compared.agreeing == int(close.sum())
    assert sum(compared.main) == 25 and len(compared.buckets) == 20
