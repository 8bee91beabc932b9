"""`modeldeck deploy|promote|rollback|deployments`: JSON shapes, errors on stderr."""

from __future__ import annotations

import pytest

from core import registry
from core.store import Store
from tests.cli_helpers import run, run_json

DEPLOYMENT_FIELDS = {"id", "name", "environment", "access", "current", "pipeline",
                     "created_at", "updated_at"}




def test_deploy_promote_rollback_and_delete(capsys: pytest.CaptureFixture[str],
                                            trained_store: Store) -> None:
    first, second = (m.id for m in registry.list_models(trained_store))
    deployed = run_json(capsys, "deploy", first, "--env", "staging", "--challenger", second)
    assert DEPLOYMENT_FIELDS <= set(deployed)
    assert deployed["current"] == {"version": 1, "main": first, "challenger": second}
    again = run_json(capsys, "deploy", second, "--env", "staging")
    assert again["current"]["version"] == 2 and again["name"] == deployed["name"]
    production = run_json(capsys, "promote", deployed["name"], "--no-pipeline",
                          "--override", "gate tested in test_gate.py")
    assert production["environment"] == "production"
    assert production["current"]["main"] == second
    rolled = run_json(capsys, "rollback", deployed["name"], "--version", "1")
    assert rolled["current"] == {"version": 1, "main": first, "challenger": second}
    shown = run_json(capsys, "deployments", "show", deployed["name"])
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    listed = run_json(capsys, "deployments", "list")
    assert sorted(d["environment"] for d in listed) == ["production", "staging"]
    code, out, _ = run(capsys, "deployments", "delete", production["name"],
                       "--confirm", production["name"])
    assert code == 0 and "results stay" in out
    assert [d["name"] for d in run_json(capsys, "deployments", "list")] == [deployed["name"]]


def test_deployment_errors_go_to_stderr(capsys: pytest.CaptureFixture[str],
                                        trained_store: Store) -> None:
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


def test_run_queues_and_runs_show_the_outcome(capsys: pytest.CaptureFixture[str],
                                              trained_store: Store) -> None:
    from core import worker

    first = registry.list_models(trained_store)[0].id
    name = run_json(capsys, "deploy", first, "--env", "staging")["name"]
    queued = run_json(capsys, "run", name)
    assert queued["status"] == "queued" and queued["deployment"] == name
    assert worker.run_once(trained_store)
    shown = run_json(capsys, "runs", "show", queued["id"])
    assert shown["status"] == "succeeded" and shown["rows_out"] == shown["summary"]["rows"] > 0
    assert [r["id"] for r in run_json(capsys, "runs", "list", name)] == [queued["id"]]
    failing = run_json(capsys, "run", name, "--source", "nowhere/*.csv")
    assert worker.run_once(trained_store)
    code, out, _ = run(capsys, "runs", "show", failing["id"])
    assert code == 0 and "failed" in out and "nowhere" in out
    code, _, err = run(capsys, "runs", "show", "run_nope")
    assert code == 2 and "error: No run 'run_nope'." in err
