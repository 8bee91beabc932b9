"""Writing test data files inside a workspace (the sources, labels and validation sets)."""

from __future__ import annotations

import pandas as pd

from core.store import Store


def write_frame(store: Store, folder: str, name: str, frame: pd.DataFrame) -> str:
    """`frame` as CSV or Parquet (by `name`'s suffix) under `folder` in the workspace; returns
    its workspace-relative path, as a user would type it."""
    path = store.workspace.home / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path.relative_to(store.workspace.home))


def unfit_source(store: Store) -> dict[str, str]:
    """A file source that exists but has none of the model's columns: a run of it is queued,
    then fails at its schema check (a missing file is refused when the run is queued)."""
    return {
        "kind": "file",
        "path": write_frame(store, "incoming", "unfit.parquet", pd.DataFrame({"x": [1]})),
    }


def source_gone(store: Store, name: str, path: str) -> None:
    """Point deployment `name`'s pipeline source at `path`, a file that does not exist (as
    when an export was removed after the pipeline was saved): its next run fails saying so."""
    from core import deployments

    current = deployments.get_deployment(store, name).pipeline
    deployments.update_pipeline(
        store, name, {**current, "source": {"kind": "file", "path": path}}, actor="tester"
    )


# The people every test workspace has: instance admins, so a test that is not about roles acts
# with every right (tests/test_access.py covers the roles). No password: they never log in.
ADMINS = ("tester", "ana", "bo", "bob")


def add_admins(store: Store) -> Store:
    """`store` with the ADMINS added (those missing); returns it."""
    from core import access, users

    for name in ADMINS:
        if users.find_user(store, name) is None:
            users.create_user(store, name, password=None, role="admin", actor=access.BOOTSTRAP)
    return store
