"""Training playground: pick a dataset, target, task, features and algorithms, then train."""

import streamlit as st

from core import datasets, registry, training, ui
from core.entities import TASKS
from core.ui import charts

ui.header(
    "Train",
    "Fit scikit-learn pipelines on a dataset; each round is a new version of "
    "the experiment, with a leaderboard on a 20% holdout.",
)
store = ui.get_store()
found = ui.cached_read(datasets.list_datasets, store, visible_to=ui.actor())
if not found:
    st.info("No dataset yet: register one (upload, path or demo set), then train on it here.")
    st.page_link("pages/datasets.py", label="Add a dataset first", icon=":material/table_chart:")
    st.stop()

params = st.query_params
ids = [d.id for d in found]
start = ids.index(params["dataset"]) if params.get("dataset") in ids else 0
dataset = st.selectbox(
    "Dataset",
    found,
    index=start,
    key="train_dataset",
    format_func=lambda d: f"{d.name} · {d.n_rows} rows ({d.id})",
)
frame = ui.cached_frame(str(store.workspace.home), dataset.id)
columns = list(frame.columns)
wanted = params.get("target") or datasets.DEMO_TARGETS.get(dataset.name, columns[-1])
target = st.selectbox(
    "Target column",
    columns,
    key=f"target_{dataset.id}",
    index=columns.index(wanted) if wanted in columns else len(columns) - 1,
)
hint = training.suggest(frame, target)
scope = f"{dataset.id}_{target}"  # widget defaults follow the chosen dataset and target

left, right = st.columns(2)
task = left.selectbox(
    "Task",
    TASKS,
    index=TASKS.index(hint.task),
    key=f"task_{scope}",
    help=f"Guessed from the target: {hint.task}.",
)
key_options = ["(none)", *[c for c in columns if c != target]]
key_choice = right.selectbox(
    "Prediction key",
    key_options,
    key=f"key_{scope}",
    index=key_options.index(hint.key_column) if hint.key_column else 0,
    help="An identifier carried through to every prediction; never a feature.",
)
key_column = None if key_choice == "(none)" else key_choice
candidates = [c for c in columns if c not in (target, key_column)]
features = st.multiselect(
    "Features",
    candidates,
    key=f"features_{scope}",
    default=[c for c in candidates if c not in hint.excluded],
)
if key_column:
    st.caption(
        f"`{key_column}` is the prediction key: carried through to results, never a feature."
    )
for column, reason in hint.excluded.items():
    if column != key_column and column not in features:
        st.caption(f"Left out by default: `{column}` ({reason}).")
algorithms = st.multiselect(
    "Algorithms",
    list(training.ALGORITHMS),
    default=list(training.DEFAULT_ALGORITHMS),
    key="train_algorithms",
    format_func=training.ALGORITHMS.__getitem__,
)
left, right = st.columns(2)
with left:
    project = ui.project_picker(store, "train", "train_project")
experiment = right.text_input(
    "Experiment",
    key=f"experiment_{scope}",
    value=ui.cached_read(training.default_experiment_name, store, dataset, target, project or ""),
)

plan = None
with ui.guarded():
    plan = training.plan_training(
        frame, target, task=task, features=features, key_column=key_column or ""
    )
if st.button("Train", type="primary", disabled=plan is None or not algorithms or project is None):
    assert project is not None
    request = training.TrainRequest(
        dataset_id=dataset.id,
        target=target,
        task=task,
        features=features,
        key_column=key_column or "",
        algorithms=tuple(algorithms),
        project=project,
        experiment=experiment,
    )
    with ui.guarded():
        result = training.train(store, request, ui.progress_bar("Training…"), actor=ui.actor())
        st.session_state["trained_version"] = result.version.id
        st.success(f"Trained version {result.version.number} of {experiment}.")

version_id = st.session_state.get("trained_version")
if version_id:
    st.subheader("Leaderboard")
    trained = registry.list_models(store, version_id=version_id)
    ui.show_leaderboard(trained, key="train_board")
    if trained:  # the next step: deploy the best of them (or open another from the table)
        best = charts.ranked(trained, charts.headline_metric(trained[0].task))[0]
        st.subheader(f"Deploy the best: {best.algorithm} · v{best.version}")
        ui.deploy_form(store, best, key="train_deploy")
