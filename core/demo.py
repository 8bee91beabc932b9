"""The demo workspace: five experiments from data scikit-learn ships or that we generate."""

from __future__ import annotations

from core import access, datasets, projects, users
from core.entities import Progress, no_progress
from core.store import Store
from core.training import DEFAULT_ALGORITHMS, TrainingResult, TrainRequest, train

DEMO_PROJECT = "Demo"
# The demo's people (username, display name, role in the Demo project); each one's password is
# '<username>-demo-pass', listed in the README so a newcomer can log in at once.
DEMO_USERS = (
    ("olivia", "Olivia Owner", "owner"),
    ("eddie", "Eddie Editor", "editor"),
    ("vera", "Vera Viewer", "viewer"),
)


def demo_password(username: str) -> str:
    return f"{username}-demo-pass"


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
    """Add the demo users, register the demo datasets and train each with the default
    algorithms (offline), in the Demo project."""
    add_demo_users(store)
    results = []
    steps = len(DEMO_EXPERIMENTS)
    for i, (name, experiment) in enumerate(DEMO_EXPERIMENTS.items()):

        def step(fraction: float, text: str, i: int = i, experiment: str = experiment) -> None:
            progress((i + fraction) / steps, f"{experiment}: {text}")

        dataset = datasets.add_demo(store, name, project=DEMO_PROJECT, actor=access.DEMO)
        request = TrainRequest(
            dataset_id=dataset.id,
            target=datasets.DEMO_TARGETS[name],
            algorithms=DEFAULT_ALGORITHMS,
            project=DEMO_PROJECT,
            experiment=experiment,
        )
        results.append(train(store, request, step, actor=access.DEMO))
    return results


def add_demo_users(store: Store) -> None:
    """The Demo project with an owner, an editor and a viewer (skipping users that exist)."""
    if not any(p.name == DEMO_PROJECT for p in projects.list_projects(store)):
        projects.create_project(
            store, DEMO_PROJECT, description="Five demo experiments.", actor=access.DEMO
        )
    for username, shown, role in DEMO_USERS:
        if users.find_user(store, username) is None:
            users.create_user(
                store,
                username,
                password=demo_password(username),
                display_name=shown,
                actor=access.DEMO,
            )
        projects.set_collaborator(store, DEMO_PROJECT, username, role, actor=access.DEMO)
