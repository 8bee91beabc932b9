"""Labels keyed by request id (issue 17 item 11): true labels meet the API's answers in the
prediction log (open segments, closed ones and compacted Parquet), row by row, with the labels
users bring; unknown request ids are reported, not dropped."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core import datasets, deployments, ground_truth, prediction_log
from core.datasets import churn_frame
from core.errors import InvalidInput
from core.store import Store
from core.training import TrainRequest, train
from tests.cli_helpers import run, run_json
from tests.conftest import DeployChurn
from tests.files import write_frame
from tests.test_api import api_server, rows
from tests.test_ground_truth import diabetes


def post(base: str, name: str, frame: pd.DataFrame, request_id: str | None = None) -> Any:
    body = json.dumps({"dataframe_records": json.loads(frame.to_json(orient="records"))})
    request = urllib.request.Request(
        f"{base}/v1/deployments/{name}/invocations", data=body.encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if request_id:
        request.add_header("X-Request-ID", request_id)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def logged(store: Store, kind: str) -> list[dict[str, Any]]:
    return [r for r in prediction_log.read_all(store.workspace).to_pylist() if r["kind"] == kind]


def labels_file(store: Store, frame: pd.DataFrame, name: str) -> str:
    return write_frame(store, "truth", name, frame)


def add(
    store: Store, name: str, frame: pd.DataFrame, file: str, label: str, row: str | None = None
) -> ground_truth.LabelSet:
    """Add `frame` (written as `file`) as labels keyed by its request_id column."""
    source = {"kind": "file", "path": labels_file(store, frame, file)}
    return ground_truth.add_labels(
        store, name, source, "request_id", label, actor="tester", keyed_by="request", row=row
    )


def test_labels_by_request_id_and_row_measure_the_api_answers(
    trained_store: Store, deploy_churn: DeployChurn
) -> None:
    deployed = deploy_churn("gradient_boosting", challenger="linear")
    deployments.set_access(trained_store, deployed.name, "public", actor="tester")
    frame = rows(5, seed=4)
    with api_server(trained_store) as base:
        several = post(base, deployed.name, frame, request_id="batch-1")
        singles = [post(base, deployed.name, rows(1, seed=s)) for s in (7, 8, 9)]
        deadline = time.monotonic() + 30
        while len(logged(trained_store, "challenger")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    challengers = {
        r["request_id"]: json.loads(r["outputs"]) for r in logged(trained_store, "challenger")
    }
    truth = ["yes", "no", "no", "yes", "no"]
    labels = pd.DataFrame(
        {
            "request_id": ["batch-1"] * 5 + [a["request_id"] for a in singles] + ["nope"],
            "row": [0, 1, 2, 3, 4, None, None, None, 0],
            "churn": [*truth, "yes", "no", None, "no"],  # one label missing: left out
        }
    )
    added = add(trained_store, deployed.name, labels, "labels.csv", "churn", row="row")
    c = added.counts
    assert (c["labels"], c["matched_labels"], c["without_label"]) == (8, 7, 1)
    assert (c["unknown_requests"], c["unknown_examples"], c["keyed_by"]) == (1, ["nope"], "request")
    assert c["predictions"] == 8 and c["predictions_with_label"] == 7

    predicted = several["predictions"] + [s["predictions"][0] for s in singles[:2]]
    shadow = challengers["batch-1"]["predictions"] + [
        challengers[s["request_id"]]["predictions"][0] for s in singles[:2]
    ]
    expected = [*truth, "yes", "no"]
    live = ground_truth.live_metrics(trained_store, deployed.name)
    [api] = live.runs
    assert (api.run_id, api.rows) == ("api", 7)
    assert api.main["accuracy"] == pytest.approx(
        sum(p == t for p, t in zip(predicted, expected, strict=True)) / 7
    )
    assert api.challenger["accuracy"] == pytest.approx(
        sum(p == t for p, t in zip(shadow, expected, strict=True)) / 7
    )
    m = live.matching
    assert (m.logged_predictions, m.unknown_requests, m.unknown_examples) == (8, 1, ("nope",))

    # Booleans for yes/no classes (a Parquet column of true/false) meet them as truth
    # values; a later set wins for the same request row.
    flipped = pd.DataFrame({"request_id": ["batch-1"], "row": [0], "churn": [False]})
    add(trained_store, deployed.name, flipped, "flip.parquet", "churn", row="row")
    expected[0] = "no"
    again = ground_truth.live_metrics(trained_store, deployed.name).runs[0]
    assert again.main["accuracy"] == pytest.approx(
        sum(p == t for p, t in zip(predicted, expected, strict=True)) / 7
    )


def record(
    request_id: str, predictions: list[float], kind: str = "main", **more: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "logged_at": "2026-12-06T10:00:00",
        "request_id": request_id,
        "deployment": more.pop("deployment", "diabetes-staging"),
        "deployment_id": more.pop("deployment_id"),
        "version": 1,
        "source": more.pop("source", "api"),
        "rows": len(predictions),
        "status": 200,
        "latency_ms": 1.0,
        "outputs": {"predictions": predictions},
    }


def test_regression_labels_by_request_over_every_kind_of_segment(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, _ = diabetes(store)
    d = deployed.id
    log = prediction_log.PredictionLog(store.workspace)
    log.write(record("r1", [100.0, 150.0], deployment_id=d))
    log.write(record("r1", [110.0, 140.0], kind="challenger", deployment_id=d))
    log.close()
    prediction_log.compact(store.workspace)  # r1: compacted Parquet
    log = prediction_log.PredictionLog(store.workspace, max_bytes=1)
    log.write(record("r2", [200.0], deployment_id=d, source="form"))  # rotated: closed
    log.write(record("r3", [50.0, 60.0, 70.0], deployment_id=d))  # open
    log.write(record("r3", [55.0, 60.0, 65.0], kind="challenger", deployment_id=d))
    with open(sorted(prediction_log.open_segments(store.workspace))[-1], "ab") as f:
        f.write(b'{"kind": "main", "request_id": "r4", "outp')  # a process killed mid-write
    labels = pd.DataFrame(
        {
            "rid": ["r1", "r1", "r2", "r3", "r3", "r9", "r3"],
            "row": ["0", "1", "", "0", "2", "0", ""],
            "y": ["110", "150.5", "190", "", "80", "1", "7"],
        }
    )
    path = labels_file(store, labels, "truth.csv")
    argv = f"labels add {deployed.name} --file {path} --request-id rid --row row --label y"
    added = run_json(capsys, *argv.split())
    c = added["counts"]
    assert (c["labels"], c["matched_labels"], c["unknown_requests"]) == (6, 4, 1)
    assert c["ambiguous_labels"] == 1 and c["without_label"] == 1
    assert c["predictions"] == 6 and c["predictions_with_label"] == 4
    live = ground_truth.live_metrics(store, deployed.name)
    by = {r.run_id: r for r in live.runs}
    assert by["api"].main["mae"] == pytest.approx((10 + 0.5 + 10) / 3)
    assert by["api"].challenger["mae"] == pytest.approx((0 + 10.5 + 15) / 3)
    assert by["form"].main["mae"] == pytest.approx(10) and by["form"].challenger is None
    assert live.overall.main["mae"] == pytest.approx((10 + 0.5 + 10 + 10) / 4)
    assert any("form: the challenger has no answer for 1" in n for n in live.notes)
    code, out, _ = run(capsys, "live", deployed.name)
    assert code == 0 and "1 labels name request ids never answered (e.g. r9)" in out


def test_request_labels_that_meet_no_answer_name_the_unknown_ids(store: Store) -> None:
    deployed, _ = diabetes(store)
    log = prediction_log.PredictionLog(store.workspace)
    log.write(record("r1", [1.0, 2.0], deployment_id=deployed.id))
    log.close()
    labels = pd.DataFrame({"request_id": ["x1", "x2", "r1"], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(
        InvalidInput,
        match=r"None of the 3 labels in 'request_id' matches an answered request of deployment "
        r"'diabetes-staging' \(2 logged rows\): 2 request ids are unknown, e.g. 'x1', 'x2'; "
        r"1 labels without a row belong to requests of several rows",
    ):
        add(store, deployed.name, labels, "none.csv", "y")
    bad = pd.DataFrame({"request_id": ["r1"], "row": [-1], "y": [1.0]})
    with pytest.raises(InvalidInput, match="1 of 1 row numbers are not whole numbers from 0"):
        add(store, deployed.name, bad, "b.csv", "y", row="row")
    assert not list(Path(store.workspace.home / "labels").rglob("*.parquet"))


def test_zero_one_labels_as_text_floats_with_holes_and_booleans(store: Store) -> None:
    frame = churn_frame(n_rows=200, seed=5)
    frame["churn"] = (frame["churn"] == "yes").astype(int)
    dataset = datasets.register_frame(
        store, frame, name="c01", kind="upload", source="c01.csv", actor="tester"
    )
    request = TrainRequest(dataset_id=dataset.id, target="churn", algorithms=("linear",))
    [model] = train(store, request, actor="tester").models
    d = deployments.deploy(store, model.id, "staging", name="c01", actor="tester")
    assert list(model.schema.classes) == [0, 1]
    log = prediction_log.PredictionLog(store.workspace)
    log.write(record("q1", [0, 1, 1, 0], deployment_id=d.id, deployment="c01"))
    log.close()
    as_text = pd.DataFrame(
        {"request_id": ["q1"] * 4, "row": [0, 1, 2, 3], "y": ["0", "1", "0", "0"]}
    )
    add(store, d.name, as_text, "text.csv", "y", row="row")
    live = ground_truth.live_metrics(store, d.name)
    assert (live.overall.rows, live.overall.main["accuracy"]) == (4, 0.75)
    # Floats with a hole (0.0/1.0/NaN, as pandas reads a 0/1 column with a gap) meet the
    # integer classes; the later set wins, the hole is left out.
    floats = pd.DataFrame(
        {"request_id": ["q1"] * 3, "row": [0, 1, 2], "y": [0.0, float("nan"), 1.0]}
    )
    added = add(store, d.name, floats, "floats.parquet", "y", row="row")
    assert added.counts["without_label"] == 1
    assert ground_truth.live_metrics(store, d.name).overall.main["accuracy"] == 1.0
    # Booleans meet the classes 0 and 1 (core.engine.classes): True is 1. Row 3 was
    # predicted 0, so with row 1 still labelled by the text set, 3 of 4 rows are right.
    flags = pd.DataFrame({"request_id": ["q1"], "row": [3], "y": [True]})
    add(store, d.name, flags, "flags.parquet", "y", row="row")
    live = ground_truth.live_metrics(store, d.name)
    assert (live.overall.rows, live.overall.main["accuracy"]) == (4, 0.75)
    assert len(ground_truth.list_labels(store, d.name)) == 3
    words = pd.DataFrame({"request_id": ["q1"], "row": [3], "y": ["maybe"]})
    with pytest.raises(InvalidInput, match="classes the models never saw: 'maybe'"):
        add(store, d.name, words, "words.csv", "y", row="row")
    assert len(ground_truth.list_labels(store, d.name)) == 3
