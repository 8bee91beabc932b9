"""`modeldeck deploy|promote|rollback|deployments`: JSON shapes, errors on stderr."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core import registry
from core.cli import deployments as cli_deployments
from core.store import Store
from core.worker import loop as worker
from tests.cli_helpers import run, run_json
from tests.files import unfit_source

DEPLOYMENT_FIELDS = {
    "id",
    "name",
    "environment",
    "access",
    "current",
    "pipeline",
    "created_at",
    "updated_at",
}


def test_deploy_promote_rollback_and_delete(
    capsys: pytest.CaptureFixture[str], trained_store: Store
) -> None:
    first, second = (m.id for m in registry.list_models(trained_store))
    deployed = run_json(capsys, "deploy", first, "--env", "staging", "--challenger", second)
    assert DEPLOYMENT_FIELDS <= set(deployed)
    assert deployed["current"] == {"version": 1, "main": first, "challenger": second}
    again = run_json(capsys, "deploy", second, "--env", "staging")
    assert again["current"]["version"] == 2 and again["name"] == deployed["name"]
    production = run_json(
        capsys,
        "promote",
        deployed["name"],
        "--no-pipeline",
        "--override",
        "gate tested in test_gate.py",
    )
    assert production["environment"] == "production"
    assert production["current"]["main"] == second
    rolled = run_json(capsys, "rollback", deployed["name"], "--version", "1")
    assert rolled["current"] == {"version": 1, "main": first, "challenger": second}
    shown = run_json(capsys, "deployments", "show", deployed["name"])
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    listed = run_json(capsys, "deployments", "list")
    assert sorted(d["environment"] for d in listed) == ["production", "staging"]
    code, out, _ = run(
        capsys, "deployments", "delete", production["name"], "--confirm", production["name"]
    )
    assert code == 0 and "results stay" in out
    assert [d["name"] for d in run_json(capsys, "deployments", "list")] == [deployed["name"]]


def test_deployment_errors_go_to_stderr(
    capsys: pytest.CaptureFixture[str], trained_store: Store
) -> None:
    code, out, err = run(capsys, "deploy", "mdl_nope", "--env", "staging")
    assert (code, out) == (2, "") and "error: No model 'mdl_nope'." in err and "hint: " in err
    code, out, err = run(capsys, "rollback", "nothing", "--version", "1")
    assert code == 2 and "error: No deployment 'nothing'." in err
    first = registry.list_models(trained_store)[0].id
    deployed = run_json(capsys, "deploy", first, "--env", "staging")
    code, _, err = run(capsys, "deployments", "delete", deployed["name"], "--confirm", "x")
    assert code == 2 and f"Type the deployment's name '{deployed['name']}'" in err
    code, _, err = run(capsys, "promote", deployed["name"].replace("staging", "nope"))
    assert code == 2 and "No deployment" in err


def test_run_queues_and_runs_show_the_outcome(
    capsys: pytest.CaptureFixture[str], trained_store: Store
) -> None:
    from core.worker import loop as worker

    first = registry.list_models(trained_store)[0].id
    name = run_json(capsys, "deploy", first, "--env", "staging")["name"]
    queued = run_json(capsys, "run", name)
    assert queued["status"] == "queued" and queued["deployment"] == name
    assert worker.run_once(trained_store)
    shown = run_json(capsys, "runs", "show", queued["id"])
    assert shown["status"] == "succeeded" and shown["rows_out"] == shown["summary"]["rows"] > 0
    assert [r["id"] for r in run_json(capsys, "runs", "list", name)] == [queued["id"]]
    failing = run_json(capsys, "run", name, "--source", unfit_source(trained_store)["path"])
    assert worker.run_once(trained_store)
    code, out, _ = run(capsys, "runs", "show", failing["id"])
    assert code == 0 and "failed" in out and "does not fit the model's schema" in out
    code, _, err = run(capsys, "run", name, "--source", "nowhere/*.csv")
    assert code == 2 and "No file matches the source 'nowhere/*.csv'." in err
    assert run_json(capsys, "runs", "list", name)[0]["id"] == failing["id"]
    code, _, err = run(capsys, "runs", "show", "run_nope")
    assert code == 2 and "error: No run 'run_nope'." in err


def test_run_wait_says_when_no_worker_is_running(
    trained_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = registry.list_models(trained_store)[0].id
    name = run_json(capsys, "deploy", first, "--env", "staging")["name"]
    monkeypatch.setattr(cli_deployments, "NO_WORKER_GRACE", 0.2)
    code, _, err = run(capsys, "run", name, "--wait")
    assert code == 2 and "error: No worker is running, so run run_" in err
    assert (
        "is still queued" in err
        and "hint: Start the worker: the run starts as soon as it is up. "
        "Start it with `modeldeck worker`"
        in err
    )
    queued = run_json(capsys, "runs", "list", name)
    assert [r["status"] for r in queued] == ["queued"]  # kept: a worker started later runs it


def test_run_wait_json_exits_1_for_a_failed_run(
    trained_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_deployments, "NO_WORKER_GRACE", 60.0)  # the thread is the worker
    first = registry.list_models(trained_store)[0].id
    name = run_json(capsys, "deploy", first, "--env", "staging")["name"]
    source = unfit_source(trained_store)["path"]
    worker_thread = threading.Thread(target=lambda: _drain(trained_store), daemon=True)
    worker_thread.start()
    code, out, _ = run(capsys, "run", name, "--source", source, "--wait", "--json")
    worker_thread.join(timeout=60)
    shown = json.loads(out[out.index("{") :])
    assert code == 1 and shown["status"] == "failed"
    assert "does not fit the model's schema" in shown["error"]
    assert shown["message"] == "failed"  # not the last progress text


def _drain(store: Store) -> None:
    """A worker for one run: tick until something was executed (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not worker.run_once(store):
        time.sleep(0.1)


def test_an_unexpected_error_prints_one_line_and_logs_the_traceback(
    trained_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_deployments.deployments, "list_deployments", broken)
    monkeypatch.setenv("MODELDECK_USER", "tester")
    code, out, err = run(capsys, "deployments", "list", user=None)
    log = trained_store.workspace.home / "logs" / "cli-errors.log"
    assert code == 1 and out == ""
    assert err.splitlines()[0] == (
        "error: internal error while running `modeldeck deployments list`: ZeroDivisionError: "
        f"division by zero; details in {log}"
    )
    assert "Traceback" not in err
    logged = log.read_text()
    assert "modeldeck deployments list" in logged and "Traceback (most recent call last)" in logged
    assert "ZeroDivisionError: division by zero" in logged
