"""Browse projects > experiments > versions > models."""

import streamlit as st

from core import projects as projects_
from core import registry, ui

ui.header("Models", "Every experiment belongs to a project; each training round is a version.")
store = ui.get_store()
projects = ui.cached_read(projects_.list_projects, store, visible_to=ui.actor())
if not projects:
    st.info("You are in no project yet: create one on the People page, or ask an owner to add you.")
    st.page_link("pages/people.py", label="People", icon=":material/group:")
    st.stop()
names = [p.name for p in projects]
busy = {
    e.project_id for e in ui.cached_read(registry.list_experiments, store, visible_to=ui.actor())
}
wanted = st.query_params.get("project")
start = (
    names.index(wanted)
    if wanted in names
    else next((i for i, p in enumerate(projects) if p.id in busy), 0)
)  # the first project with work
project = st.selectbox(
    "Project", projects, format_func=lambda p: p.name, key="models_project", index=start
)
experiments = ui.cached_read(registry.list_experiments, store, project.id)
if not experiments:
    st.info(f"No experiment in {project.name} yet.")
    st.page_link("pages/train.py", label="Train models", icon=":material/model_training:")
    st.stop()

for experiment in experiments:
    st.subheader(experiment.name)
    key_text = f", key `{experiment.key_column}`" if experiment.key_column else ""
    st.caption(
        f"{experiment.task} · target `{experiment.target}` · "
        f"{len(experiment.features)} features{key_text} · {experiment.id}"
    )
    versions = ui.cached_read(registry.list_versions, store, experiment.id)
    version = st.selectbox(
        "Version",
        versions,
        key=f"version_{experiment.id}",
        format_func=lambda v: f"v{v.number} · {v.created_at:%Y-%m-%d %H:%M}",
    )
    board = ui.cached_read(registry.list_models, store, version_id=version.id)
    ui.show_leaderboard(board, key=f"board_{version.id}")
    # Its form runs only while it is open: five closed forms were a third of a cold load.
    deploy = st.expander(
        "Deploy a model of this version", key=f"deploy_open_{version.id}", on_change="rerun"
    )
    if deploy.open:
        with deploy:
            chosen = st.selectbox(
                "Model", board, key=f"deploy_pick_{version.id}", format_func=ui.model_label
            )
            ui.deploy_form(store, chosen, key=f"deploy_{version.id}")
    st.page_link(
        "pages/train.py",
        label="Train a new version",
        query_params={"dataset": experiment.dataset_id, "target": experiment.target},
        icon=":material/model_training:",
    )
