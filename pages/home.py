"""Overview: what the workspace holds, and where to start."""

import streamlit as st

from core import demo, registry, ui

ui.header("Overview", "Take trained models from experiment to staging to production.")
store = ui.get_store()
counts = ui.cached_read(registry.counts, store)
cols = st.columns(4)
for col, name in zip(cols, ("projects", "datasets", "experiments", "models"), strict=True):
    col.metric(name.capitalize(), counts.get(name, 0))

if counts.get("models", 0) == 0:
    st.info(
        "This workspace is empty. Create the demo workspace (four experiments trained on "
        "data scikit-learn ships), or add a dataset and train your own models."
    )
    if st.button("Create the demo workspace", type="primary"):
        with ui.guarded():
            demo.create_demo(store, ui.progress_bar("Creating the demo workspace"))
            st.rerun()
else:
    st.subheader("Latest models")
    ui.show_model_list(
        ui.cached_read(registry.list_models, store, visible_to=ui.actor())[:10], key="latest"
    )

st.subheader("Get started")
st.page_link(
    "pages/datasets.py",
    label="Add a dataset (upload, path or demo set)",
    icon=":material/table_chart:",
)
st.page_link("pages/train.py", label="Train models on a dataset", icon=":material/model_training:")
st.page_link(
    "pages/models.py",
    label="Browse projects, experiments and models",
    icon=":material/inventory_2:",
)
st.page_link(
    "pages/import_model.py", label="Import a model trained elsewhere", icon=":material/upload_file:"
)
