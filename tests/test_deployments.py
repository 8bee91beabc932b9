"""Deploy, promote, roll back and delete on a real store, with the audit log checked each time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import audit, deployments, promotion, registry
from core.errors import ArtifactError, Conflict, InvalidInput, NotFound, PipelineError
from core.store import Store

ROOT = Path(__file__).resolve().parents[1]
UNGATED = "copying and idempotence tested here; the gate in test_gate.py"


def churn_models(store: Store) -> list[str]:
    """The two models of the trained churn version (linear, hist gradient boosting)."""
    return [m.id for m in registry.list_models(store)]


def test_first_deploy_creates_staging_with_the_training_pipeline(trained_store: Store) -> None:
    main, challenger = churn_models(trained_store)
    deployment = deployments.deploy(
        trained_store, main, "staging", challenger_id=challenger, actor="ana"
    )
    assert deployment.name == "churn-staging" and deployment.environment == "staging"
    assert deployment.current is not None
    assert (
        deployment.current.number,
        deployment.current.main_model_id,
        deployment.current.challenger_model_id,
    ) == (1, main, challenger)
    source = deployment.pipeline["source"]
    assert source["kind"] == "file" and source["path"].endswith("data.parquet")
    assert (deployment.pipeline["transforms"], deployment.pipeline["label_column"]) == ([], "churn")
    [entry] = audit.list_entries(trained_store, deployment.name)
    assert (entry.actor, entry.action, entry.before) == ("ana", "deploy", None)
    assert entry.after == {"version": 1, "main": main, "challenger": challenger}


def test_deploying_again_only_switches_the_model(trained_store: Store) -> None:
    first, second = churn_models(trained_store)
    deployed = deployments.deploy(trained_store, first, "staging", actor="tester")
    custom = {**deployed.pipeline, "transforms": [{"name": "all", "sql": "SELECT * FROM input"}]}
    deployments.update_pipeline(trained_store, deployed.name, custom, actor="tester")
    again = deployments.deploy(trained_store, second, "staging", actor="tester")
    assert again.id == deployed.id and again.current.number == 2
    assert again.current.main_model_id == second
    assert again.pipeline["transforms"] == custom["transforms"]  # pipeline kept
    assert [v.number for v in deployments.list_versions(trained_store, again.id)] == [2, 1]


def test_promotion_copies_settings_and_is_idempotent(trained_store: Store) -> None:
    main, challenger = churn_models(trained_store)
    staging = deployments.deploy(
        trained_store, main, "staging", challenger_id=challenger, actor="tester"
    )
    deployments.update_pipeline(
        trained_store,
        staging.name,
        {**staging.pipeline, "transforms": [{"name": "t", "sql": "SELECT * FROM input"}]},
        actor="tester",
    )
    production = promotion.promote(
        trained_store, staging.name, copy_pipeline=True, override_reason=UNGATED, actor="tester"
    )
    assert production.name == "churn-production" and production.environment == "production"
    assert (production.current.main_model_id, production.current.challenger_model_id) == (
        main,
        challenger,
    )
    assert production.pipeline["transforms"][0]["name"] == "t"
    again = promotion.promote(trained_store, staging.name, actor="tester")
    assert again.current.id == production.current.id  # nothing new to promote
    actions = [e.action for e in audit.list_entries(trained_store, production.name)]
    assert actions == ["promote"]


def test_promotion_gives_production_its_own_sinks(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    staging = deployments.deploy(trained_store, main, "staging", actor="tester")
    deployments.update_pipeline(
        trained_store,
        staging.name,
        {
            **staging.pipeline,
            "sinks": [
                {"kind": "folder", "path": "exports/churn-staging", "format": "csv"},
                {
                    "kind": "duckdb_table",
                    "path": "exports/scores.duckdb",
                    "table": "churn_staging",
                    "mode": "append",
                },
                {"kind": "folder", "path": "exports/scores"},
            ],
        },
        actor="tester",
    )
    proposed = promotion.production_sinks(trained_store, staging.name)
    assert [s.get("table") or s["path"] for s in proposed] == [
        "exports/churn-production",
        "churn_production",
        "exports/scores-production",
    ]
    assert proposed[1]["path"] == "exports/scores.duckdb"  # one file, its own table
    production = promotion.promote(
        trained_store, staging.name, override_reason=UNGATED, actor="tester"
    )
    assert [s.get("table") or s["path"] for s in production.pipeline["sinks"]] == [
        "exports/churn-production",
        "churn_production",
        "exports/scores-production",
    ]
    assert (
        deployments.get_deployment(trained_store, staging.name).pipeline["sinks"][0]["path"]
        == "exports/churn-staging"
    )  # staging keeps its own


def test_promotion_takes_edited_sinks(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    staging = deployments.deploy(trained_store, main, "staging", actor="tester")
    deployments.update_pipeline(
        trained_store,
        staging.name,
        {**staging.pipeline, "sinks": [{"kind": "folder", "path": "exports/churn-staging"}]},
        actor="tester",
    )
    production = promotion.promote(
        trained_store,
        staging.name,
        override_reason=UNGATED,
        sinks=[{"kind": "folder", "path": "exports/live"}],
        actor="tester",
    )
    assert [s["path"] for s in production.pipeline["sinks"]] == ["exports/live"]
    with pytest.raises(InvalidInput, match="outside"):
        promotion.promote(
            trained_store,
            staging.name,
            override_reason=UNGATED,
            sinks=[{"kind": "folder", "path": "../outside"}],
            actor="tester",
        )


def test_promotion_without_copying_keeps_production_pipeline(trained_store: Store) -> None:
    first, second = churn_models(trained_store)
    deployments.deploy(trained_store, first, "production", actor="tester")
    staging = deployments.deploy(trained_store, second, "staging", actor="tester")
    deployments.update_pipeline(
        trained_store,
        staging.name,
        {**staging.pipeline, "transforms": [{"name": "t", "sql": "SELECT * FROM input"}]},
        actor="tester",
    )
    production = promotion.promote(
        trained_store, staging.name, copy_pipeline=False, override_reason=UNGATED, actor="tester"
    )
    assert production.pipeline["transforms"] == []
    assert production.current.number == 2 and production.current.main_model_id == second


def test_rollback_makes_an_earlier_version_current(trained_store: Store) -> None:
    first, second = churn_models(trained_store)
    deployments.deploy(trained_store, first, "staging", actor="tester")
    deployed = deployments.deploy(trained_store, second, "staging", actor="tester")
    rolled = deployments.rollback(trained_store, deployed.name, 1, actor="bo")
    assert rolled.current.number == 1 and rolled.current.main_model_id == first
    entry = audit.list_entries(trained_store, deployed.name)[0]
    assert (entry.action, entry.actor, entry.before["version"], entry.after["version"]) == (
        "rollback",
        "bo",
        2,
        1,
    )
    with pytest.raises(NotFound, match=r"No version 'churn-staging v9'"):
        deployments.rollback(trained_store, deployed.name, 9, actor="tester")


def test_the_live_history_says_which_version_served_when(trained_store: Store) -> None:
    first, second = churn_models(trained_store)
    d = deployments.deploy(trained_store, first, "staging", actor="ana")
    deployments.deploy(trained_store, second, "staging", challenger_id=first, actor="bo")
    deployments.rollback(trained_store, d.name, 1, actor="ana")
    history = deployments.live_history(trained_store, d.id)
    assert [(p.version, p.how, p.by, p.challenger_model_id) for p in history] == [
        (1, "deploy", "ana", None),
        (2, "deploy", "bo", first),
        (1, "rollback", "ana", None),
    ]
    assert history[1].main_model_id == second
    assert [p.until for p in history[:-1]] == [p.since for p in history[1:]]  # no gap, no overlap
    assert history[-1].until is None and history[0].since < history[-1].since
    deployments.set_access(trained_store, d.name, "public", actor="ana")  # not a version change
    assert len(deployments.live_history(trained_store, d.id)) == 3


def test_bad_deploys_are_refused_and_change_nothing(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    with pytest.raises(InvalidInput, match="Unknown environment 'qa'") as info:
        deployments.deploy(trained_store, main, "qa", actor="tester")
    assert "staging, production" in info.value.hint
    with pytest.raises(InvalidInput, match="challenger is the main model"):
        deployments.deploy(trained_store, main, "staging", challenger_id=main, actor="tester")
    with pytest.raises(InvalidInput, match="not a valid deployment name"):
        deployments.deploy(trained_store, main, "staging", name="Churn Prod!", actor="tester")
    with pytest.raises(NotFound, match="No model 'mdl_missing'"):
        deployments.deploy(trained_store, "mdl_missing", "staging", actor="tester")
    assert deployments.list_deployments(trained_store) == []
    assert [e for e in audit.list_entries(trained_store) if not e.subject] == []


def test_a_name_serving_another_environment_is_a_conflict(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    deployments.deploy(trained_store, main, "staging", name="churn", actor="tester")
    with pytest.raises(Conflict, match="'churn' serves another experiment or environment"):
        deployments.deploy(trained_store, main, "production", name="churn", actor="tester")


def test_a_tampered_artifact_cannot_be_deployed(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    path = trained_store.workspace.home / model.artifact_path
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="changed on disk"):
        deployments.deploy(trained_store, model.id, "staging", actor="tester")
    assert deployments.list_deployments(trained_store) == []


def test_delete_needs_the_typed_name_and_keeps_the_audit(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    deployed = deployments.deploy(trained_store, main, "staging", actor="tester")
    with pytest.raises(InvalidInput, match="Type the deployment's name 'churn-staging'"):
        promotion.delete_deployment(trained_store, deployed.name, confirm="churn", actor="tester")
    assert deployments.get_deployment(trained_store, deployed.name).id == deployed.id
    promotion.delete_deployment(trained_store, deployed.name, confirm=deployed.name, actor="tester")
    with pytest.raises(NotFound):
        deployments.get_deployment(trained_store, deployed.name)
    actions = [e.action for e in audit.list_entries(trained_store, deployed.name)]
    assert actions == ["delete", "deploy"]
    again = deployments.deploy(
        trained_store, main, "staging", actor="tester"
    )  # the name is free again
    assert again.name == deployed.name and again.id != deployed.id


def test_pipeline_updates_cannot_touch_the_model_block(trained_store: Store) -> None:
    main, _ = churn_models(trained_store)
    deployed = deployments.deploy(trained_store, main, "staging", actor="tester")
    with pytest.raises(PipelineError, match="model block cannot be configured") as info:
        deployments.update_pipeline(
            trained_store,
            deployed.name,
            {**deployed.pipeline, "model": "mdl_other"},
            actor="tester",
        )
    assert "deploy another one or roll back" in info.value.hint


PROMOTE = """
import sys
from core import promotion
from core.store import Store
store = Store.open(sys.argv[1])
print(promotion.promote(store, "churn-staging", actor=sys.argv[2],
                          override_reason="testing concurrent promotion").current.number)
"""


@pytest.mark.slow
def test_two_people_promoting_at_once_yield_one_version(trained_store: Store) -> None:
    main, challenger = churn_models(trained_store)
    deployments.deploy(trained_store, main, "staging", challenger_id=challenger, actor="tester")
    home = str(trained_store.workspace.home)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE, home, who],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("ana", "bo")
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(out.strip() for out, _ in results) == ["1", "1"]
    production = deployments.get_deployment(trained_store, "churn-production")
    assert [v.number for v in deployments.list_versions(trained_store, production.id)] == [1]
    assert len(audit.list_entries(trained_store, "churn-production")) == 1


def test_audit_entries_read_as_text() -> None:
    assert audit.describe(None) == ""
    assert audit.describe({"version": 2, "main": "mdl_a", "challenger": None}) == "v2: main mdl_a"
    assert audit.describe(
        {
            "version": 1,
            "main": "mdl_a",
            "challenger": "mdl_b",
            "from": "x-staging",
            "copied": {"pipeline": True},
        }
    ) == ("v1: main mdl_a, challenger mdl_b (from x-staging, copied [pipeline True])")
    assert audit.describe({"access": "public"}) == "access public"


def test_a_validation_run_never_delivers_to_the_sinks(trained_store: Store) -> None:
    import pandas as pd

    from core import datasets, runs, validation
    from core.worker import loop as worker

    main, _ = churn_models(trained_store)
    staging = deployments.deploy(trained_store, main, "staging", actor="tester")
    deployments.update_pipeline(
        trained_store,
        staging.name,
        {**staging.pipeline, "sinks": [{"kind": "folder", "path": "exports/churn-staging"}]},
        actor="tester",
    )
    path = trained_store.workspace.home / "labelled" / "val.parquet"
    path.parent.mkdir()
    pd.DataFrame(datasets.churn_frame(n_rows=300, seed=3)).to_parquet(path, index=False)
    v = validation.start_validation(
        trained_store, staging.name, "labelled/val.parquet", actor="tester"
    )
    assert worker.run_once(trained_store)
    assert validation.get_validation(trained_store, v.id).status == "succeeded"
    assert runs.get_run(trained_store, v.run_id).summary.get("sinks") in (None, [])
    assert not (trained_store.workspace.home / "exports").exists()
