"""The demo workspace: five experiments from data scikit-learn ships or that we generate."""

from __future__ import annotations

from core import datasets
from core.entities import Progress, no_progress
from core.store import Store
from core.training import DEFAULT_ALGORITHMS, TrainingResult, TrainRequest, train

DEMO_PROJECT = "Demo"
DEMO_EXPERIMENTS = {  # dataset -> experiment name
    "breast_cancer": "Breast cancer diagnosis",
    "wine": "Wine cultivar",
    "diabetes": "Diabetes progression",
    "customer_churn": "Customer churn",
    "loan_defaults": "Loan defaults",  # integer 0/1 labels, yes/no text, non-ASCII
}


def is_empty(store: Store) -> bool:
    """True when the workspace has no dataset and no model yet."""
    return not store.query(
        "SELECT (SELECT count(*) FROM datasets) + (SELECT count(*) FROM models) AS n"
    ).scalar()


def create_demo(store: Store, progress: Progress = no_progress) -> list[TrainingResult]:
    """Register the demo datasets and train each with the default algorithms (offline)."""
    results = []
    steps = len(DEMO_EXPERIMENTS)
    for i, (name, experiment) in enumerate(DEMO_EXPERIMENTS.items()):

        def step(fraction: float, text: str, i: int = i, experiment: str = experiment) -> None:
            progress((i + fraction) / steps, f"{experiment}: {text}")

        dataset = datasets.add_demo(store, name)
        request = TrainRequest(
            dataset_id=dataset.id,
            target=datasets.DEMO_TARGETS[name],
            algorithms=DEFAULT_ALGORITHMS,
            project=DEMO_PROJECT,
            experiment=experiment,
        )
        results.append(train(store, request, step))
    return results
