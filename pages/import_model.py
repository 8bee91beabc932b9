"""Import a model trained elsewhere: a .skops file, or a joblib/pickle file you trust."""

import streamlit as st

from core import datasets, model_import, ui
from core.engine import artifacts
from core.entities import TASKS

ui.header(
    "Import a model",
    "A fitted scikit-learn estimator or pipeline. A reference dataset "
    "with the target column records its schema, profile and reference metrics.",
)
store = ui.get_store()
upload = st.file_uploader(
    "Model file", type=["skops", "joblib", "pkl", "pickle"], key="import_file"
)
if upload is None:
    st.caption("Prefer `.skops` (skops.io.dump): it is loaded without running code.")
    st.stop()

data = upload.getvalue()
check = None
with ui.guarded():
    check = artifacts.inspect_bytes(upload.name, data)
if check is None:
    st.stop()
trusted: list[str] = []
trust_pickle = False
if check.runs_code:
    st.warning(
        "This is a pickle/joblib file: loading it runs any code it contains. Import it "
        "only if it comes from someone you trust.",
        icon="🔒",
    )
    trust_pickle = st.checkbox("I trust this file and want it loaded", key="import_trust")
elif check.untrusted_types:
    st.warning(
        "This .skops file contains types beyond standard scikit-learn and numpy. "
        "Approve each one you expect:",
        icon="🔒",
    )
    trusted = [t for t in check.untrusted_types if st.checkbox(f"`{t}`", key=f"trust_{t}")]
else:
    st.success("Only standard scikit-learn and numpy types: safe to load.")
is_ready = trust_pickle if check.runs_code else len(trusted) == len(check.untrusted_types)

found = ui.cached_read(datasets.list_datasets, store, visible_to=ui.actor())
if not found:
    st.info("Register the reference dataset first.")
    st.page_link("pages/datasets.py", label="Add a dataset", icon=":material/table_chart:")
    st.stop()
dataset = st.selectbox(
    "Reference dataset",
    found,
    key="import_dataset",
    format_func=lambda d: f"{d.name} · {d.n_rows} rows ({d.id})",
)
columns = dataset.column_names
target = st.selectbox(
    "Target column", columns, index=len(columns) - 1, key=f"import_target_{dataset.id}"
)
left, right = st.columns(2)
task = left.selectbox("Task", ["(from the model)", *TASKS], key="import_task")
key = right.selectbox("Prediction key", ["(auto)", "(none)", *columns], key="import_key")
project = ui.project_picker(store, "import-model", "import_project")
experiment = st.text_input(
    "Experiment", value=f"{dataset.name} (imported)", key=f"import_experiment_{dataset.id}"
)

if st.button("Import", type="primary", disabled=not is_ready or project is None):
    assert project is not None
    request = model_import.ImportRequest(
        filename=upload.name,
        data=data,
        dataset_id=dataset.id,
        target=target,
        task=None if task.startswith("(") else task,
        key_column={"(auto)": None, "(none)": ""}.get(key, key),
        trust_pickle=trust_pickle,
        trusted_types=tuple(trusted),
        project=project,
        experiment=experiment,
    )
    with ui.guarded():
        model = model_import.import_model(
            store, request, ui.progress_bar("Importing…"), actor=ui.actor()
        )
        st.success(f"Imported {model.algorithm} as {model.id}.")
        st.page_link(
            "pages/model.py",
            label="Open the model",
            query_params={"id": model.id},
            icon=":material/insights:",
        )
