"""Datasets: register tables (upload, path, demo set) and look at them."""

import pandas as pd
import streamlit as st

from core import datasets, ui
from core.engine import profiles
from core.entities import Dataset

ui.header(
    "Datasets",
    "Every dataset is snapshotted to Parquet when registered, so training "
    "always sees exactly these rows.",
)
store = ui.get_store()


def registered(added: Dataset) -> None:
    """Say what was registered, show it below, and offer the next step."""
    st.success(f"Registered {added.name} ({added.n_rows} rows) as {added.id}.")
    st.page_link(
        "pages/train.py",
        query_params={"dataset": added.id},
        label=f"Train on {added.name}",
        icon=":material/model_training:",
    )
    st.session_state["ds_show"] = added.id  # the picker below opens on the new dataset


project = ui.project_picker(store, "add-dataset", "ds_project")
upload_tab, path_tab, demo_tab = st.tabs(["Upload a file", "From a path", "Demo sets"])
with upload_tab:
    upload = st.file_uploader(
        "CSV or Parquet file", type=["csv", "tsv", "parquet", "pq"], key="ds_upload"
    )
    if upload is not None and st.button(
        "Register upload", key="ds_upload_go", disabled=project is None
    ):
        assert project is not None
        with ui.guarded():
            added = datasets.add_upload(
                store, upload.name, upload.getvalue(), project=project, actor=ui.actor()
            )
            registered(added)
with path_tab:
    st.caption(
        f"Files inside the workspace ({store.workspace.home}) or a folder the "
        "administrator allowed. Globs such as `exports/*.csv` read every match."
    )
    path = st.text_input("File path or glob", key="ds_path")
    if st.button("Register path", key="ds_path_go", disabled=not path or project is None):
        assert project is not None
        with ui.guarded():
            added = datasets.add_path(store, path, confined=True, project=project, actor=ui.actor())
            registered(added)
with demo_tab:
    name = st.selectbox("Demo set", datasets.DEMO_NAMES, key="ds_demo")
    if st.button("Register demo set", key="ds_demo_go", disabled=project is None):
        assert project is not None
        with ui.guarded():
            added = datasets.add_demo(store, name, project=project, actor=ui.actor())
            registered(added)

found = ui.cached_read(datasets.list_datasets, store, visible_to=ui.actor())
st.subheader(f"Registered datasets ({len(found)})")
if not found:
    st.info("No dataset yet: upload one above, or register a demo set.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "id": d.id,
                "name": d.name,
                "kind": d.kind,
                "source": d.source,
                "rows": d.n_rows,
                "columns": len(d.columns),
                "registered": d.created_at,
            }
            for d in found
        ]
    ),
    hide_index=True,
)

by_id = {d.id: d for d in found}  # an id, not a Dataset: a selectbox hands back stale objects
chosen = by_id[
    st.selectbox(
        "Look at a dataset",
        list(by_id),
        key="ds_show",
        format_func=lambda i: f"{by_id[i].name} ({i})",
    )
]
frame = datasets.load_frame(store, chosen)
st.dataframe(frame.head(50), hide_index=True)
reports = profiles.describe_columns(frame)
st.dataframe(
    pd.DataFrame(
        [
            {
                "column": r.name,
                "type": r.dtype,
                "kind": r.kind,
                "distinct": r.n_unique,
                "missing": r.missing,
                "identifier": "yes" if r.is_identifier else "",
            }
            for r in reports
        ]
    ),
    hide_index=True,
)
