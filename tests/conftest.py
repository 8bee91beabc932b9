"""Shared fixtures: temp workspaces on a real DuckDB file, the demo workspace, a trained one.

Session-wide fixtures build their workspace once and must be treated as read-only; a test that
changes a workspace copies it first (`trained_store`) or uses the function-scoped `store`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from core import datasets, deployments, registry
from core.demo import create_demo
from core.entities import Dataset, Deployment
from core.store import Store
from core.training import ALGORITHMS, TrainingResult, TrainRequest, train
from tests.files import add_admins

# The test machine shares two cores with other processes, where OpenMP's spin-waiting made
# histogram gradient boosting 10-20x slower. One OpenMP thread changes no result, only the time.
# (Called after the imports above: it limits the OpenMP runtime sklearn has loaded.)
threadpool_limits(limits=1, user_api="openmp")

CHURN_ROWS = 600  # enough for every class and category in both splits, quick to fit
ENV_VARS = (
    "MODELDECK_HOME",
    "MODELDECK_ALLOWED_ROOTS",
    "MODELDECK_LOCK_TIMEOUT",
    "MODELDECK_EXECUTORS",
    "MODELDECK_PREVIEW_SECONDS",
    "MODELDECK_RUN_SQL_SECONDS",
    "MODELDECK_SQL_MEMORY",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), a file's tests stay on one
    worker, so its module fixtures are built once; the browser tests share one worker, one
    Streamlit server and one Chromium."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = "e2e" if "e2e" in item.path.parts else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace folder; MODELDECK_HOME points at it for the test's duration."""
    path = tmp_path / "workspace"
    path.mkdir()
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELDECK_HOME", str(path))
    return path


@pytest.fixture
def store(home: Path) -> Store:
    """The migrated store of `home`."""
    return add_admins(Store.open(home))


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace built by the code behind `modeldeck demo`: 5 experiments x 3 models."""
    path = tmp_path_factory.mktemp("demo_home")
    create_demo(add_admins(Store.open(path)))
    return path


@pytest.fixture(scope="session")
def churn_small() -> pd.DataFrame:
    """The generated churn table (key, categoricals, missing values), small enough to fit fast."""
    return datasets.churn_frame(n_rows=CHURN_ROWS)


@pytest.fixture(scope="session")
def trained_home(
    tmp_path_factory: pytest.TempPathFactory, churn_small: pd.DataFrame
) -> tuple[Path, TrainingResult]:
    """A workspace with one churn version of two models (linear, gradient boosting). Read-only."""
    path = tmp_path_factory.mktemp("trained_home")
    store = add_admins(Store.open(path))
    dataset = datasets.register_frame(
        store, churn_small, name="churn", kind="upload", source="churn.csv", actor="tester"
    )
    result = train(
        store,
        TrainRequest(
            dataset_id=dataset.id, target="churn", algorithms=("linear", "gradient_boosting")
        ),
        actor="tester",
    )
    return path, result


@dataclass(frozen=True)
class Trained:
    """One training of every algorithm on one task's dataset."""

    store: Store
    dataset: Dataset
    frame: pd.DataFrame
    result: TrainingResult


@pytest.fixture(scope="session")
def every_algorithm(
    tmp_path_factory: pytest.TempPathFactory, churn_small: pd.DataFrame
) -> dict[str, Trained]:
    """Per task, every algorithm trained once: churn (binary), wine, diabetes. Read-only."""
    store = add_admins(Store.open(tmp_path_factory.mktemp("every_algorithm")))
    tables = {
        "binary": ("churn", churn_small, "churn"),
        "multiclass": ("wine", datasets.demo_frame("wine"), "cultivar"),
        "regression": ("diabetes", datasets.demo_frame("diabetes"), "progression"),
    }
    out = {}
    for task, (name, frame, target) in tables.items():
        dataset = datasets.register_frame(
            store, frame, name=name, kind="upload", source=name, actor="tester"
        )
        request = TrainRequest(dataset_id=dataset.id, target=target, algorithms=tuple(ALGORITHMS))
        out[task] = Trained(store, dataset, frame, train(store, request, actor="tester"))
    return out


@pytest.fixture
def trained_store(
    trained_home: tuple[Path, TrainingResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """A private copy of `trained_home` (safe to change), with MODELDECK_HOME pointing at it."""
    path = tmp_path / "trained"
    shutil.copytree(trained_home[0], path)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODELDECK_HOME", str(path))
    return Store.open(path)


DeployChurn = Callable[..., Deployment]


@pytest.fixture
def deploy_churn(trained_store: Store) -> DeployChurn:
    """Deploy `trained_store`'s churn models to staging by algorithm name, e.g.
    `deploy_churn("gradient_boosting", challenger="linear", actor="ana")`."""
    by_algorithm = {m.algorithm: m.id for m in registry.list_models(trained_store)}

    def deploy(main: str, challenger: str | None = None, **options: Any) -> Deployment:
        return deployments.deploy(
            trained_store,
            by_algorithm[main],
            "staging",
            challenger_id=by_algorithm[challenger] if challenger else None,
            **{"actor": "tester", **options},
        )

    return deploy


def workspace_state(store: Store) -> dict[str, object]:
    """Rows per registry table and the entries of the immutable-file folders."""
    tables = ("projects", "datasets", "experiments", "versions", "models")
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables)
    state: dict[str, object] = dict(store.query(sql).first() or {})
    for folder in (store.workspace.datasets_dir, store.workspace.artifacts_dir):
        state[folder.name + "/"] = (
            sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
        )
    return state


@pytest.fixture
def state() -> Callable[[Store], dict[str, object]]:
    """`state(store)`: compare before and after a failing action to prove it stored nothing."""
    return workspace_state
