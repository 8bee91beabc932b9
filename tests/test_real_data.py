"""Every label and column kind a CSV export has, through every flow (issue 12).

Each zoo table (tests/zoo.py) goes train -> deploy -> run -> results -> explain -> validate ->
labels -> live metrics -> challenger, and each step's output is checked against what
scikit-learn computes on the same rows: a class keeps its type end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from core import (
    challenger,
    datasets,
    deployments,
    execution,
    explain,
    ground_truth,
    registry,
    results,
    runs,
    validation,
)
from core.engine import tables
from core.entities import Run
from core.store import Store
from core.training import TrainRequest, train
from tests import zoo

WORKER = "zoo-test"
# The classes each target becomes, in their own type (bool from a Parquet export).
CLASSES: dict[str, list[Any]] = {
    "int01": [0, 1],
    "bool": [False, True],
    "float01": [0, 1],
    "int123": [1, 2, 3],
    "text_utf8": ["défaut", "remboursé"],
    "regression": [],
}


def _export(store: Store, label: str) -> tuple[pd.DataFrame, str]:
    """The zoo table as its export (CSV; Parquet for real booleans), workspace-relative."""
    frame = zoo.table(label)
    folder = store.workspace.home / "incoming"
    folder.mkdir(exist_ok=True)
    if label == "bool":
        frame = frame.assign(
            outcome=frame["outcome"] == "true", opened=pd.to_datetime(frame["opened"])
        )
        frame.to_parquet(folder / "train.parquet", index=False)
        return frame, "incoming/train.parquet"
    zoo.write_csv(frame, str(folder / "train.csv"))
    return frame, "incoming/train.csv"


def _run(store: Store, name: str, path: str) -> Run:
    runs.enqueue_run(store, name, source_override={"kind": "file", "path": path}, actor="tester")
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    return execution.execute_run(store, claimed, WORKER)


@pytest.mark.slow
@pytest.mark.parametrize("label", zoo.LABELS)
def test_every_flow_on_every_label_kind(store: Store, label: str) -> None:
    frame, path = _export(store, label)
    dataset = datasets.add_path(store, str(store.workspace.home / path), name=label, actor="tester")
    trained = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="outcome", algorithms=("linear", "hist_gradient_boosting")
        ),
        actor="tester",
    )
    plan = trained.plan
    assert plan.key_column == zoo.KEY and zoo.COMPOSED in plan.features
    assert plan.excluded["opened"].startswith("date/time") and plan.infinite == {zoo.COMPOSED: 1}
    assert plan.classes == CLASSES[label]
    assert [type(c) for c in plan.classes] == [type(c) for c in CLASSES[label]]
    for model in trained.models:
        headline = "accuracy" if label != "regression" else "r2"
        assert model.metrics[headline] > (0.6 if label != "int123" else 0.45)
        assert model.schema.classes == tuple(CLASSES[label])
    by_algorithm = {m.algorithm: m for m in trained.models}
    deployed = deployments.deploy(
        store,
        by_algorithm["hist_gradient_boosting"].id,
        "staging",
        challenger_id=by_algorithm["linear"].id,
        actor="ana",
    )

    # A run on the rows without their target, read back from the CSV export.
    scoring = frame.drop(columns=["outcome"])
    zoo.write_csv(scoring, str(store.workspace.home / "incoming" / "score.csv"))
    run = _run(store, deployed.name, "incoming/score.csv")
    assert run.status == "succeeded", run.error
    assert run.rows_out == len(frame)
    quality = run.summary["input_quality"]
    assert quality["columns"]["out_of_range"][zoo.COMPOSED] >= 1  # the inf cell, named
    assert quality["unseen_category"] == 0  # yes/no stayed text: every category known
    table = pq.read_table(runs.result_path(store.workspace, run.id))
    scored = table.to_pandas()
    estimator = registry.load_estimator(store, by_algorithm["hist_gradient_boosting"])
    X = frame.rename(columns=tables.nfc)[plan.features].replace([np.inf, -np.inf], np.nan)
    expected = estimator.predict(X)
    if label == "regression":
        np.testing.assert_allclose(scored["prediction"], expected)
    else:
        assert scored["prediction"].tolist() == expected.tolist()
        assert set(scored["prediction"]) <= set(CLASSES[label])
        assert [f"proba_{c}" in table.column_names for c in CLASSES[label]] == [True] * len(
            CLASSES[label]
        )
    rows, total = results.page(store, run.id, limit=5)
    assert len(rows) == 5 and total == len(frame)

    # A local explanation adds up to the model's output.
    key = scored[zoo.KEY].iloc[7]  # the row with the infinite value
    (found,) = explain.explain_rows(store, run.id, [key])
    assert found.key == key and found.prediction == scored["prediction"].iloc[7]
    total = found.base_value + sum(c.contribution for c in found.contributions)
    assert total == pytest.approx(found.output, abs=1e-6)

    # Validation on the labelled export: metrics as sklearn computes them.
    done = validation.validate_here(store, deployed.name, path, "outcome", actor="ana")
    assert done.status == "succeeded", done.error
    truth = (
        frame["outcome"].astype(float) if label in ("float01", "regression") else (frame["outcome"])
    )
    if label == "regression":
        assert done.report["main"]["metrics"]["mae"] == pytest.approx(
            skm.mean_absolute_error(truth, expected), abs=1e-4
        )
    else:
        y = truth.astype(float).astype(int) if label == "float01" else truth
        accuracy = skm.accuracy_score(y, expected)
        assert done.report["main"]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        confusion = done.report["main"]["confusion"]
        assert sum(map(sum, confusion["matrix"])) == len(frame)
        assert np.trace(confusion["matrix"]) == round(accuracy * len(frame))

    # Ground truth keyed by the loan id; live metrics of main and challenger.
    labels = frame[[zoo.KEY, "outcome"]]
    zoo.write_csv(labels, str(store.workspace.home / "incoming" / "labels.csv"))
    added = ground_truth.add_labels(
        store,
        deployed.name,
        {"kind": "file", "path": "incoming/labels.csv"},
        zoo.KEY,
        "outcome",
        actor="ana",
    )
    assert added.counts["matched_labels"] == len(frame)
    live = ground_truth.live_metrics(store, deployed.name)
    if label == "regression":
        assert live.runs[0].main["mae"] == pytest.approx(
            skm.mean_absolute_error(truth, expected), abs=1e-4
        )
    else:
        assert live.runs[0].main["accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # Champion vs challenger: agreement as counted from the results file.
    compared = challenger.compare(store, deployed.name)
    if label == "regression":
        assert compared.rows == len(frame)
    else:
        agree = int((scored["prediction"] == scored["challenger_prediction"]).sum())
        assert (compared.rows, compared.agreeing) == (len(frame), agree)
