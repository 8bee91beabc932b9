"""Champion vs challenger on real runs of real models: agreement, distributions, disagreeing
rows and features checked against the results files, the swap and its rollback, every bad
input of issue 7 item 8, and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core import audit, challenger, datasets, deployments, execution, registry, runs
from core.engine.drift_scores import psi
from core.entities import Deployment, Run
from core.errors import InvalidInput, Step
from core.store import Store
from core.training import TrainRequest, train
from tests.cli_helpers import run, run_json

WORKER = "challenger-test"


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    """churn-staging: gradient boosting as main, the linear model as challenger."""
    return deploy_churn("gradient_boosting", challenger="linear", name="churn-staging", actor="ana")


def served(n_rows: int = 800, seed: int = 11) -> pd.DataFrame:
    return datasets.churn_frame(n_rows=n_rows, seed=seed).drop(columns=["churn"])


def score(
    store: Store, name: str, frame: pd.DataFrame, file: str = "in.parquet", **pipeline: Any
) -> Run:
    """Write `frame` as a source file and run the deployment on it here."""
    path = store.workspace.home / "incoming" / file
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    if pipeline:
        current = deployments.get_deployment(store, name).pipeline
        deployments.update_pipeline(store, name, {**current, **pipeline}, actor="tester")
    runs.enqueue_run(
        store,
        name,
        source_override={"kind": "file", "path": str(path.relative_to(store.workspace.home))},
        actor="tester",
    )
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    return execution.execute_run(store, claimed, WORKER)


def results(store: Store, run_id: str, which: str = "main") -> pd.DataFrame:
    return pd.read_parquet(runs.result_path(store.workspace, run_id, which))


# ---------------------------------------------------------------------------- comparison
def test_agreement_distributions_and_top_rows_match_the_results(
    trained_store: Store, deployed: Deployment
) -> None:
    first = score(trained_store, deployed.name, served(seed=1), "a.parquet")
    second = score(trained_store, deployed.name, served(600, seed=2), "b.parquet")
    found = challenger.compare(trained_store, deployed.name, last=2, top=15)
    assert found.run_ids == (second.id, first.id) and found.task == "binary"
    for done, agreement in zip((second, first), found.runs, strict=True):
        frame = results(trained_store, done.id)
        agree = frame["prediction"] == frame["challenger_prediction"]
        assert (agreement.rows, agreement.agreeing) == (len(frame), int(agree.sum()))
        assert agreement.agreement_rate == pytest.approx(
            done.summary["challenger"]["agreement_rate"], abs=1e-6
        )
    both = pd.concat([results(trained_store, r.id) for r in (second, first)])
    assert found.rows == 1400 and 0 < found.agreeing < found.rows
    assert found.buckets == ("no", "yes")
    assert found.main == tuple(int((both["prediction"] == c).sum()) for c in ("no", "yes"))
    assert found.challenger == tuple(
        int((both["challenger_prediction"] == c).sum()) for c in ("no", "yes")
    )
    assert sum(n for r, role, _, n in found.per_run if r == first.id and role == "main") == 800
    # top rows: disagreements, the surest of both models first, confidences from both files
    assert 0 < len(found.top) <= 15
    strength = [row["confidence"] + row["challenger_confidence"] for row in found.top]
    assert strength == sorted(strength, reverse=True)
    for row in found.top:
        assert row["prediction"] != row["challenger_prediction"]
        other = results(trained_store, row["run_id"], "challenger")
        mine = other[other["_row"] == row["_row"]].iloc[0]
        assert row["challenger_confidence"] == pytest.approx(mine["confidence"])
        assert row["customer_id"] == mine["customer_id"]


def test_feature_differences_are_psi_between_agreeing_and_disagreeing_rows(
    trained_store: Store, deployed: Deployment
) -> None:
    done = score(trained_store, deployed.name, served(1500, seed=3))
    found = challenger.compare(trained_store, deployed.name, run_id=done.id)
    assert {f.name for f in found.features} == {
        "age",
        "tenure_months",
        "monthly_charges",
        "support_tickets",
        "contract",
        "internet_service",
        "payment_method",
    }
    assert [f.psi for f in found.features] == sorted((f.psi for f in found.features), reverse=True)
    frame = results(trained_store, done.id)
    agree = frame["prediction"] == frame["challenger_prediction"]
    contract = next(f for f in found.features if f.name == "contract")
    model = registry.get_model(trained_store, found.model_id)
    categories = list(model.profile["features"]["contract"]["frequencies"])
    expected = []
    for group in (frame[agree], frame[~agree]):
        counts = np.asarray(
            [(group["contract"] == c).sum() for c in categories]
            + [0, 0, group["contract"].isna().sum()],
            dtype=float,
        )
        expected.append(counts / counts.sum())
    assert contract.agreeing == pytest.approx(tuple(expected[0]))
    assert contract.disagreeing == pytest.approx(tuple(expected[1]))
    assert contract.psi == pytest.approx(psi(expected[0], expected[1]))
    assert 0 <= contract.distance <= 1


def test_regression_agrees_within_a_tolerance(store: Store) -> None:
    dataset = datasets.register_frame(
        store,
        datasets.demo_frame("diabetes"),
        name="diabetes",
        kind="upload",
        source="diabetes.csv",
        actor="tester",
    )
    trained = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="progression", algorithms=("linear", "random_forest")
        ),
        actor="tester",
    )
    ids = {m.algorithm: m.id for m in trained.models}
    deployments.deploy(
        store,
        ids["linear"],
        "staging",
        name="diabetes-staging",
        challenger_id=ids["random_forest"],
        actor="tester",
    )
    done = score(
        store, "diabetes-staging", datasets.demo_frame("diabetes").drop(columns=["progression"])
    )
    found = challenger.compare(store, "diabetes-staging", tolerance=20.0)
    frame = results(store, done.id)
    gap = (frame["prediction"] - frame["challenger_prediction"]).abs()
    assert found.agreeing == int((gap <= 20.0).sum()) and found.tolerance == 20.0
    assert found.runs[0].mean_abs_difference == pytest.approx(gap.mean())
    assert len(found.buckets) == challenger.HISTOGRAM_BINS
    assert sum(found.main) == sum(found.challenger) == len(frame)
    top = found.top[0]
    assert abs(top["prediction"] - top["challenger_prediction"]) == pytest.approx(gap.max())
    default = challenger.compare(store, "diabetes-staging")
    model = registry.get_model(store, ids["linear"])
    assert default.tolerance == pytest.approx(0.1 * model.profile["prediction"]["std"])
    with pytest.raises(InvalidInput, match="tolerance must be 0 or more"):
        challenger.compare(store, "diabetes-staging", tolerance=-1.0)


# ---------------------------------------------------------------------------- bad input
def test_a_window_with_no_runs_is_refused(trained_store: Store, deployed: Deployment) -> None:
    with pytest.raises(InvalidInput, match="no succeeded run with rows") as caught:
        challenger.compare(trained_store, deployed.name)
    assert caught.value.message.startswith("No runs to compare main and challenger on")
    assert "Run the deployment" in caught.value.hint


def test_a_run_with_zero_rows_is_refused(trained_store: Store, deployed: Deployment) -> None:
    empty = score(
        trained_store,
        deployed.name,
        served(50),
        transforms=[{"name": "none", "sql": "SELECT * FROM input WHERE false"}],
    )
    assert empty.status == "failed" and not empty.rows_out
    with pytest.raises(InvalidInput, match="0 rows"):
        challenger.compare(trained_store, deployed.name, run_id=empty.id)


def test_runs_without_a_challenger_are_refused_saying_how_to_add_one(trained_store: Store) -> None:
    model = registry.list_models(trained_store)[0]
    alone = deployments.deploy(trained_store, model.id, "staging", name="alone", actor="tester")
    score(trained_store, alone.name, served(100))
    with pytest.raises(InvalidInput, match="scored a challenger") as caught:
        challenger.compare(trained_store, alone.name)
    assert "deploy the main model again with a challenger" in caught.value.hint
    with pytest.raises(InvalidInput, match="no challenger to swap in") as caught:
        challenger.swap(trained_store, alone.name, actor="tester")
    assert caught.value.step == Step("deploy-challenger", "alone")
    assert len(deployments.list_versions(trained_store, alone.id)) == 1  # nothing changed


def test_runs_without_a_challenger_are_left_out_with_a_note(
    trained_store: Store, deployed: Deployment
) -> None:
    with_one = score(trained_store, deployed.name, served(200, seed=4))
    deployments.deploy(
        trained_store,
        deployed.current.main_model_id,
        "staging",  # type: ignore
        name=deployed.name,
        actor="tester",
    )
    score(trained_store, deployed.name, served(200, seed=5), "c.parquet")
    found = challenger.compare(trained_store, deployed.name, last=2)
    assert found.run_ids == (with_one.id,)
    assert found.notes == ("1 run(s) without a challenger left out",)


# ---------------------------------------------------------------------------- swap
def test_swap_is_a_new_audited_version_undone_by_rollback(
    trained_store: Store, deployed: Deployment
) -> None:
    before = deployed.current
    assert before is not None
    swapped = challenger.swap(trained_store, deployed.name, actor="bo")
    assert swapped.current is not None and swapped.current.number == before.number + 1
    assert (swapped.current.main_model_id, swapped.current.challenger_model_id) == (
        before.challenger_model_id,
        before.main_model_id,
    )
    entry = audit.list_entries(trained_store, deployed.name)[0]
    assert (entry.action, entry.actor) == ("swap", "bo")
    assert entry.before == {
        "version": before.number,
        "main": before.main_model_id,
        "challenger": before.challenger_model_id,
    }
    assert entry.after == {
        "version": before.number + 1,
        "main": before.challenger_model_id,
        "challenger": before.main_model_id,
    }
    done = score(trained_store, deployed.name, served(100))
    assert done.summary["main"]["model_id"] == before.challenger_model_id
    back = deployments.rollback(trained_store, deployed.name, before.number, actor="tester")
    assert back.current is not None and back.current.id == before.id


# ---------------------------------------------------------------------------- CLI
def test_cli_compares_and_swaps(
    trained_store: Store, deployed: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    done = score(trained_store, deployed.name, served(300))
    found = run_json(capsys, "challenger", deployed.name, "--top", "3")
    assert found["run_ids"] == [done.id] and found["rows"] == 300
    assert 0 < found["agreement_rate"] < 1 and len(found["top"]) == 3
    assert {"name", "psi", "distance", "agreeing", "disagreeing"} <= set(found["features"][0])
    code, out, _ = run(capsys, "challenger", deployed.name)
    assert code == 0 and "agreement" in out and done.id in out
    swapped = run_json(capsys, "swap", deployed.name)
    assert swapped["current"]["main"] == deployed.current.challenger_model_id  # type: ignore
    code, _, err = run(capsys, "challenger", deployed.name, "--run", "run_missing")
    assert code == 2 and "error: No run 'run_missing'" in err and "hint:" in err
    alone = deployments.deploy(
        trained_store,
        registry.list_models(trained_store)[0].id,
        "production",
        name="alone",
        actor="tester",
    )
    code, _, err = run(capsys, "swap", alone.name)
    assert code == 2 and "no challenger to swap in" in err and "--challenger" in err
