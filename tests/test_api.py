"""The serving API on a real server on 127.0.0.1 (issue 17): MLflow's scoring protocol and the
Open Inference Protocol with their documented bodies, predictions equal to a run's for the same
rows, the access matrix of keys and levels, a rollback picked up without a restart, and the one
error shape on every error path."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn

from core import (
    datasets,
    deployments,
    execution,
    keys,
    prediction_log,
    projects,
    registry,
    runs,
    users,
)
from core.api.app import create_app
from core.datasets import churn_frame, loans_frame
from core.store import Store
from core.training import TrainingResult, TrainRequest, train
from tests.files import add_admins

STAGING, PRODUCTION = "churn-staging", "churn-production"
WORKER = "api-test"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(
    trained_home: tuple[Path, TrainingResult], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, str, dict[str, str]]]:
    """A copy of trained_home with churn-staging (boosting, public) and churn-production
    (linear, project access), the people olga (owner), vic (viewer), otto (outsider) with a
    key each and a revoked key, and the API serving it. Yields (store, base URL, keys)."""
    home = tmp_path_factory.mktemp("api") / "home"
    shutil.copytree(trained_home[0], home)
    store = add_admins(Store.open(home))
    by = {m.algorithm: m.id for m in registry.list_models(store)}
    deployments.deploy(store, by["linear"], "staging", name=STAGING, actor="tester")
    deployments.deploy(store, by["gradient_boosting"], "staging", name=STAGING, actor="tester")
    deployments.set_access(store, STAGING, "public", actor="tester")
    deployments.deploy(store, by["linear"], "production", name=PRODUCTION, actor="tester")
    for name, role in (("olga", "owner"), ("vic", "viewer"), ("otto", None)):
        users.create_user(store, name, password=None, actor="tester")
        if role:
            projects.set_collaborator(store, "Default", name, role, actor="tester")
    held = {who: keys.create_key(store, who, actor=who).secret for who in ("olga", "vic", "otto")}
    revoked = keys.create_key(store, "old", actor="olga")
    keys.revoke_key(store, revoked.key.id, actor="olga")
    held["revoked"] = revoked.secret
    with api_server(store) as base:
        yield store, base, held


@contextlib.contextmanager
def api_server(store: Store) -> Iterator[str]:
    """The API serving `store` on a free 127.0.0.1 port, in a thread; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=_free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def call(
    url: str,
    body: Any = None,
    *,
    key: str | None = None,
    content_type: str | None = "application/json",
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type and data is not None:
        request.add_header("Content-Type", content_type)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as failed:
        assert failed.headers["content-type"] == "application/json"
        return failed.code, json.loads(failed.read())


def rows(n: int = 40, seed: int = 21) -> pd.DataFrame:
    return churn_frame(n_rows=n, seed=seed).drop(columns=["churn"])


def test_open_inference_health_and_metadata(served: tuple[Store, str, dict[str, str]]) -> None:
    _, base, _ = served
    assert call(f"{base}/v2/health/live") == (200, {"live": True})
    assert call(f"{base}/v2/health/ready") == (200, {"ready": True})
    status, meta = call(f"{base}/v2")
    assert status == 200 and meta["name"] == "modeldeck" and meta["extensions"] == []
    status, model = call(f"{base}/v2/models/{STAGING}")
    assert status == 200 and model["versions"] == ["2"] and model["platform"] == "sklearn"
    inputs = {i["name"]: i["datatype"] for i in model["inputs"]}
    assert inputs["tenure_months"] == "FP64" and inputs["contract"] == "BYTES"
    assert [o["name"] for o in model["outputs"]] == ["predict", "predict_proba"]
    assert call(f"{base}/v2/models/{STAGING}/ready") == (200, {"name": STAGING, "ready": True})


def test_every_format_predicts_what_a_run_predicts(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    store, base, _ = served
    frame = rows()
    path = store.workspace.home / "incoming" / "api.parquet"
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    run = runs.enqueue_run(
        store,
        STAGING,
        source_override={"kind": "file", "path": "incoming/api.parquet"},
        actor="tester",
    )
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None and claimed.id == run.id
    done = execution.execute_run(store, claimed, WORKER)
    expected = pd.read_parquet(runs.result_path(store.workspace, done.id))["prediction"].tolist()
    records = json.loads(frame.to_json(orient="records"))
    split = json.loads(frame.to_json(orient="split", index=False))
    bodies = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[c] for r in records] for c in frame.columns}},
    }
    url = f"{base}/v1/deployments/{STAGING}/invocations"
    for name, body in bodies.items():
        status, answer = call(url, body)
        assert status == 200, (name, answer)
        assert answer["predictions"] == expected, name
        assert answer["version"] == 2 and len(answer["request_id"]) == 16
        probabilities = answer["probabilities"]
        assert set(probabilities[0]) == {"no", "yes"}
        assert all(abs(sum(p.values()) - 1) < 1e-9 for p in probabilities)
    status, answer = call(url, raw=frame.to_csv(index=False).encode(), content_type="text/csv")
    assert status == 200 and answer["predictions"] == expected
    oip = {
        "id": "abc",
        "inputs": [
            {
                "name": c,
                "datatype": "FP64" if frame[c].dtype.kind in "fi" else "BYTES",
                "shape": [len(frame)],
                "data": [None if pd.isna(v) else v for v in frame[c].tolist()],
            }
            for c in frame.columns
        ],
    }
    status, inferred = call(f"{base}/v2/models/{STAGING}/infer", oip)
    assert status == 200, inferred
    assert inferred["id"] == "abc" and inferred["model_version"] == "2"
    predict, proba = inferred["outputs"]
    assert predict["data"] == expected and predict["shape"] == [len(frame)]
    assert proba["shape"] == [len(frame), 2] and proba["parameters"]["classes"] == ["no", "yes"]


ACCESS = {  # level -> caller -> status
    "public": {
        "no key": 200,
        "malformed": 401,
        "revoked": 401,
        "otto": 200,
        "vic": 200,
        "olga": 200,
    },
    "instance": {
        "no key": 401,
        "malformed": 401,
        "revoked": 401,
        "otto": 200,
        "vic": 200,
        "olga": 200,
    },
    "project": {
        "no key": 401,
        "malformed": 401,
        "revoked": 401,
        "otto": 403,
        "vic": 200,
        "olga": 200,
    },
}


def test_the_access_matrix(served: tuple[Store, str, dict[str, str]]) -> None:
    store, base, held = served
    callers = {"no key": None, "malformed": "mdk_not-a-key", **held}
    body = {"dataframe_records": json.loads(rows(2).to_json(orient="records"))}
    try:
        for level, outcome in ACCESS.items():
            deployments.set_access(store, PRODUCTION, level, actor="tester")
            _wait_for(
                base, PRODUCTION, lambda d, level=level: d.get("access") == level, held["olga"]
            )
            got = {
                who: call(f"{base}/v1/deployments/{PRODUCTION}/invocations", body, key=key)[0]
                for who, key in callers.items()
                if who in outcome
            }
            assert got == outcome, level
    finally:
        deployments.set_access(store, PRODUCTION, "project", actor="tester")
    status, refused = call(
        f"{base}/v1/deployments/{PRODUCTION}/invocations", body, key=held["otto"]
    )
    assert (
        status == 403 and refused["error"] == "Forbidden" and "collaborator" in refused["message"]
    )


def _wait_for(base: str, name: str, ok: Any, key: str | None = None) -> dict[str, Any]:
    """Poll the listing (as the holder of `key`) until `ok(description)`."""
    deadline = time.monotonic() + 10
    while True:
        status, found = call(f"{base}/v1/deployments", key=key)
        described = next((d for d in found if d["name"] == name), {}) if status == 200 else {}
        if ok(described) or time.monotonic() > deadline:
            return described
        time.sleep(0.1)


def test_a_rollback_is_served_without_a_restart(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    store, base, _ = served
    body = {"dataframe_records": json.loads(rows(3).to_json(orient="records"))}
    url = f"{base}/v1/deployments/{STAGING}/invocations"
    assert call(url, body)[1]["version"] == 2
    deployments.rollback(store, STAGING, 1, actor="tester")
    started = time.monotonic()
    while call(url, body)[1]["version"] != 1:
        # the reload follows the marker within POLL_SECONDS plus one read of the store
        # (0.3 s here when quiet); the bound only keeps a stuck reload from hanging the test
        assert time.monotonic() - started < 10
        time.sleep(0.05)
    deployments.rollback(store, STAGING, 2, actor="tester")
    _wait_for(base, STAGING, lambda d: d.get("version") == 2)


@pytest.mark.parametrize(
    ("path", "body", "status", "problem"),
    [
        (
            f"/v1/deployments/{STAGING}/invocations",
            {"dataframe_records": [{"contract": "x"}]},
            422,
            "Column 'tenure_months' is missing from the input",
        ),
        ("/v1/deployments/nope/invocations", {"inputs": {}}, 404, "No deployment 'nope'."),
        (f"/v1/deployments/{STAGING}/invocations", {"rows": []}, 400, "exactly one of"),
        ("/v1/nothing-here", None, 404, "No such path."),
    ],
)
def test_errors_have_one_shape(
    served: tuple[Store, str, dict[str, str]], path: str, body: Any, status: int, problem: str
) -> None:
    _, base, _ = served
    got, answer = call(f"{base}{path}", body)
    assert got == status and problem in answer["message"]
    assert set(answer) >= {"error", "message", "hint"} and answer["hint"]


def test_open_inference_errors_carry_the_message_in_error(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    _, base, _ = served
    status, answer = call(f"{base}/v2/models/{STAGING}/infer", {"inputs": []})
    assert status == 400 and answer["error"].startswith("An inference request needs 'inputs'")


def test_every_answer_is_in_the_prediction_log_with_its_caller(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    store, base, held = served
    body = {"dataframe_records": json.loads(rows(3).to_json(orient="records"))}
    status, answer = call(f"{base}/v1/deployments/{PRODUCTION}/invocations", body, key=held["vic"])
    assert status == 200
    logged = prediction_log.read_all(store.workspace, PRODUCTION).to_pylist()
    [record] = [r for r in logged if r["request_id"] == answer["request_id"]]
    vic_key = keys.list_keys(store, actor="vic")[0].id
    assert (record["kind"], record["key_id"], record["rows"], record["status"]) == (
        "main",
        vic_key,
        3,
        200,
    )
    assert json.loads(record["outputs"])["predictions"] == answer["predictions"]
    assert sorted(json.loads(record["inputs"])) == sorted(rows(3).columns)


def test_a_refused_call_is_logged_with_its_reason_and_without_its_data(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    """An authorized caller's bad input: logged (status and message, no inputs, which may be
    anything) so the deployment's page shows it; a call without access is not logged."""
    store, base, held = served
    vic_key = keys.list_keys(store, actor="vic")[0].id
    bad = {"dataframe_records": [{"contract": "secret-value-é"}]}
    status, refused = call(f"{base}/v1/deployments/{PRODUCTION}/invocations", bad, key=held["vic"])
    assert status == 422
    status, _ = call(f"{base}/v2/models/{PRODUCTION}/infer", {"inputs": []}, key=held["vic"])
    assert status == 400
    before = len(prediction_log.read_all(store.workspace, PRODUCTION))
    assert call(f"{base}/v1/deployments/{PRODUCTION}/invocations", bad)[0] == 401  # no key
    logged = prediction_log.read_all(store.workspace, PRODUCTION).to_pylist()
    assert len(logged) == before
    mine = [r for r in logged if r["key_id"] == vic_key and r["status"] != 200][-2:]
    assert [(r["kind"], r["status"], r["inputs"], r["outputs"]) for r in mine] == [
        ("main", 422, None, None),
        ("main", 400, None, None),
    ]
    assert mine[0]["error"] == refused["message"] and "secret-value" not in mine[0]["error"]
    assert mine[1]["error"].startswith("An inference request needs 'inputs'")


def test_explain_adds_each_rows_additive_contributions(
    served: tuple[Store, str, dict[str, str]],
) -> None:
    _, base, _ = served
    frame = rows(12, seed=3)
    body = {"dataframe_records": json.loads(frame.to_json(orient="records"))}
    url = f"{base}/v1/deployments/{STAGING}/invocations"
    status, answer = call(f"{url}?explain=true", body)
    assert status == 200 and len(answer["explanations"]) == 12
    for predicted, probabilities, row in zip(
        answer["predictions"], answer["probabilities"], answer["explanations"], strict=True
    ):
        assert row["explains"] == predicted and row["scale"] == "log-odds"
        assert set(row["contributions"]) == set(frame.columns) - {"customer_id"}
        total = row["base"] + sum(row["contributions"].values())
        assert total == pytest.approx(row["output"], abs=1e-6)  # additive
        assert 1 / (1 + math.exp(-row["output"])) == pytest.approx(probabilities[predicted])
    assert "explanations" not in call(url, body)[1]
    many = {"dataframe_records": json.loads(rows(101).to_json(orient="records"))}
    status, refused = call(f"{url}?explain=true", many)
    assert status == 422 and "at most 100 rows" in refused["message"]


def test_data_users_bring_predicts_like_a_run(store: Store) -> None:
    """Integer 0/1 labels, yes/no text, non-ASCII categories ('Île-de-France') and missing
    values, over CSV and records: the API answers what a run answers, with integer classes."""
    frame = loans_frame(n_rows=400, seed=3)
    frame.loc[frame.index[::7], "income"] = None
    frame.loc[frame.index[::11], "home_owner"] = None
    dataset = datasets.register_frame(
        store, frame, name="loans", kind="upload", source="loans.csv", actor="tester"
    )
    result = train(
        store,
        TrainRequest(dataset_id=dataset.id, target="default", algorithms=("linear",)),
        actor="tester",
    )
    deployments.deploy(store, result.models[0].id, "staging", name="loans", actor="tester")
    deployments.set_access(store, "loans", "public", actor="tester")
    served_rows = loans_frame(n_rows=30, seed=9).drop(columns=["default"])
    served_rows.loc[served_rows.index[::4], "income"] = None
    path = store.workspace.home / "incoming" / "loans.csv"
    path.parent.mkdir(exist_ok=True)
    served_rows.to_csv(path, index=False)
    runs.enqueue_run(
        store,
        "loans",
        source_override={"kind": "file", "path": "incoming/loans.csv"},
        actor="tester",
    )
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    done = execution.execute_run(store, claimed, WORKER)
    expected = pd.read_parquet(runs.result_path(store.workspace, done.id))["prediction"].tolist()
    assert set(expected) <= {0, 1} and "Île-de-France" in set(served_rows["region"])
    with api_server(store) as base:
        url = f"{base}/v1/deployments/loans/invocations"
        status, by_csv = call(url, raw=path.read_bytes(), content_type="text/csv")
        records = {"dataframe_records": json.loads(served_rows.to_json(orient="records"))}
        _, by_records = call(url, records)
        _, meta = call(f"{base}/v2/models/loans")
    assert status == 200 and by_csv["predictions"] == expected
    assert by_records["predictions"] == expected
    assert all(isinstance(p, int) for p in by_csv["predictions"])
    assert set(by_csv["probabilities"][0]) == {"0", "1"}
    assert next(o for o in meta["outputs"] if o["name"] == "predict")["datatype"] == "INT64"
