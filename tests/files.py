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
