"""Pages stay true after every action (issue 13): each action re-reads what it changed, one
change is one write, and widgets keep what the user chose (AppTest on a real store)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import audit, deployments, promotion, registry, runs, scheduler
from core.store import Store
from core.worker import loop as worker

OpenPage = Callable[..., AppTest]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def deployed(trained_store: Store) -> str:
    main, challenger = (m.id for m in registry.list_models(trained_store))
    return deployments.deploy(
        trained_store, main, "staging", challenger_id=challenger, actor="tester"
    ).name


def test_an_access_change_is_one_audit_entry_and_shows_at_once(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed)
    assert metric(at, "Access") == "project"
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Who may call it")).set_value(
        "public"
    ).run()
    assert not at.exception and not at.error
    assert metric(at, "Access") == "public"
    assert any("changed to 'public'" in s.value for s in at.success)
    at.run()  # an unrelated rerun writes nothing
    changes = [e for e in audit.list_entries(trained_store, deployed) if e.action == "access"]
    assert [(e.before, e.after) for e in changes] == [({"access": "project"}, {"access": "public"})]
    assert deployments.get_deployment(trained_store, deployed).access == "public"


def test_make_current_shows_the_rolled_back_version_at_once(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    first = deployments.get_deployment(trained_store, deployed).current
    main, challenger = (m.id for m in registry.list_models(trained_store))
    deployments.deploy(trained_store, challenger, "staging", actor="tester")  # v2: the other model
    at = open_page("pages/deployment.py", name=deployed, section="versions")
    assert any(m.value == "**v2** (current)" for m in at.markdown)
    button(at, "Make current").click().run()
    assert not at.exception and not at.error
    assert any(m.value == "**v1** (current)" for m in at.markdown)
    assert any("v1 of" in s.value and "current again" in s.value for s in at.success)
    assert [b.key for b in at.button if b.label == "Make current"] != [f"rollback_{first.id}"]
    at = open_page("pages/deployment.py", name=deployed)  # General: the model block follows
    assert metric(at, "Current version") == "v1"
    assert any(main in p.proto.label for p in at.get("page_link"))
    rollbacks = [e for e in audit.list_entries(trained_store, deployed) if e.action == "rollback"]
    assert len(rollbacks) == 1


def test_the_models_are_changed_on_the_versions_section_and_the_history_follows(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    main, challenger = (m.id for m in registry.list_models(trained_store))
    names = {m.id: f"{m.algorithm} · v{m.version}" for m in registry.list_models(trained_store)}
    at = open_page("pages/deployment.py", name=deployed, section="versions")
    assert button(at, "Make these live").disabled  # the models live now are picked
    pick = next(s for s in at.selectbox if s.label.startswith("Main model"))
    pick.set_value(challenger).run()
    other = next(s for s in at.selectbox if s.label.startswith("Challenger"))
    assert other.options == ["none", names[main]]  # the main model cannot be its challenger
    other.set_value(main).run()
    button(at, "Make these live").click().run()
    assert not at.exception and not at.error
    assert any(m.value == "**v2** (current)" for m in at.markdown)
    assert any("Version v2 is live" in s.value for s in at.success)
    now = deployments.get_deployment(trained_store, deployed).current
    assert (now.number, now.main_model_id, now.challenger_model_id) == (2, challenger, main)
    history = next(d for d in at.dataframe if "made current by" in d.value.columns).value
    assert history["version"].tolist() == ["v2", "v1"]
    assert history["until (UTC)"].tolist()[0] == "now"
    assert history["made current by"].tolist() == ["tester (deploy)", "tester (deploy)"]
    assert button(at, "Make these live").disabled  # the pickers now show what is live


def test_models_are_named_by_algorithm_and_version(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    by_id = {m.id: f"{m.algorithm} · v{m.version}" for m in registry.list_models(trained_store)}
    current = deployments.get_deployment(trained_store, deployed).current
    main, challenger = by_id[current.main_model_id], by_id[current.challenger_model_id]
    at = open_page("pages/deployments.py")
    row = at.dataframe[0].value.iloc[0]
    assert (row["main model"], row["challenger"]) == (main, challenger)
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    assert any(f"main {main} ({current.main_model_id})" in i.value for i in at.info)
    at = open_page("pages/deployment.py", name=deployed, section="versions")
    assert any(f"main **{main}**" in c.value for c in at.caption)
    at = open_page("pages/deployment.py", name=deployed, section="challenger")
    assert any(f"Make **{challenger}**" in m.value for m in at.markdown)


def test_save_schedule_shows_the_saved_schedule(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    assert any("No schedule" in c.value for c in at.caption)
    button(at, "Save schedule").click().run()
    assert not at.exception and not at.error
    assert any("Schedule saved" in s.value for s in at.success)
    assert not any("No schedule" in c.value for c in at.caption)
    assert any("Current schedule" in m.value and "0 6 * * 1" in m.value for m in at.markdown)
    assert scheduler.get_schedule(trained_store, deployed) is not None


def test_results_column_toggles_stick(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    at = open_page("pages/results.py", run=run.id)
    for label, picks in (
        ("Input columns", (["age", "contract"], ["age"])),
        ("Prediction columns", (["prediction", "confidence"], ["prediction"])),
    ):
        for chosen in picks:  # the second change used to be undone
            key = next(m.key for m in at.multiselect if m.label == label)
            at.multiselect(key=key).set_value(chosen).run()
            assert at.multiselect(key=key).value == chosen
            at.run()
            assert at.multiselect(key=key).value == chosen
    assert set(at.dataframe[0].value.columns) == {"customer_id", "prediction", "age"}


def test_an_upload_to_score_is_saved_once(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    at.file_uploader[0].upload("new.csv", b"customer_id,age\n1,30\n", "text/csv")
    at.run()
    path = next(t for t in at.text_input if t.label.startswith("Path or glob")).value
    assert path.startswith("uploads/") and path.endswith("new.csv")
    button(at, "Add a transform").click().run()
    at.run()
    assert next(t for t in at.text_input if t.label.startswith("Path or glob")).value == path
    saved = list((trained_store.workspace.home / "uploads").rglob("new.csv"))
    assert len(saved) == 1


def test_a_deleted_deployment_link_says_so_and_links_its_runs(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    other = registry.list_models(trained_store)[0].id
    deployments.deploy(
        trained_store, other, "production", actor="tester"
    )  # another one stays listed
    promotion.delete_deployment(trained_store, deployed, confirm=deployed, actor="tester")
    at = open_page("pages/deployment.py", name=deployed)
    assert not at.exception
    assert any(f"Deployment '{deployed}' was deleted" in w.value for w in at.warning)
    assert not at.metric  # nothing of another deployment is shown in its place
    link = next(p for p in at.get("page_link") if "kept runs" in p.proto.label)
    assert link.proto.page == "results" and link.proto.query_string == f"deployment={deployed}"
    at = open_page("pages/results.py", deployment=deployed)
    assert at.selectbox(key="results_pick").options == [
        f"{deployed} · succeeded · {runs.get_run(trained_store, run.id).queued_at:%Y-%m-%d %H:%M}"
        f" ({run.id})"
    ]


def test_an_unknown_deployment_link_is_explained_and_shows_no_other(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name="nope")
    assert any("No deployment 'nope'" in e.value for e in at.error)
    assert not at.metric and not at.exception
    at.selectbox(key="deployment_pick").set_value(deployed).run()
    assert metric(at, "Environment") == "staging"
    assert at.query_params["name"] == deployed


def test_a_new_deployment_says_it_scores_the_training_data(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    for section in ("runs", "pipeline"):
        at = open_page("pages/deployment.py", name=deployed, section=section)
        notes = [e.value for e in (*at.warning, *at.info)]
        assert any("Run now scores the training data" in n for n in notes), (section, notes)
    d = deployments.get_deployment(trained_store, deployed)
    deployments.update_pipeline(
        trained_store,
        deployed,
        {**d.pipeline, "source": {"kind": "file", "path": "incoming/*.csv"}},
        actor="tester",
    )
    at = open_page("pages/deployment.py", name=deployed, section="runs")
    assert not any("training data" in w.value for w in at.warning)


def test_the_promote_box_proposes_production_sinks(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    d = deployments.get_deployment(trained_store, deployed)
    deployments.update_pipeline(
        trained_store,
        deployed,
        {**d.pipeline, "sinks": [{"kind": "folder", "path": f"exports/{deployed}"}]},
        actor="tester",
    )
    at = open_page("pages/deployment.py", name=deployed)
    field = next(t for t in at.text_input if t.label == "folder path")
    assert field.value == "exports/churn-production"
    field.set_value("exports/live").run()
    at.text_area(
        key=next(t.key for t in at.text_area if t.label.startswith("Override reason"))
    ).set_value("sinks tested here").run()
    button(at, "Promote to production").click().run()
    assert not at.exception and not at.error
    production = deployments.get_deployment(trained_store, "churn-production")
    assert production.pipeline["sinks"][0]["path"] == "exports/live"
    link = next(p for p in at.get("page_link") if p.proto.label == "Open churn-production")
    assert link.proto.query_string == "name=churn-production"


def test_run_now_checks_another_file_on_click(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="runs")
    at.text_input(
        key=next(t.key for t in at.text_input if t.label.startswith("Score another"))
    ).set_value("incoming/nope.csv").run()
    button(at, "Run now").click().run()
    assert any("The source file 'incoming/nope.csv' does not exist." in e.value for e in at.error)
    assert runs.list_runs(trained_store, deployed) == []  # nothing queued to fail later


def test_delete_says_what_happened(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    other = registry.list_models(trained_store)[0].id
    deployments.deploy(trained_store, other, "production", actor="tester")
    at = open_page("pages/deployment.py", name=deployed)
    d = deployments.get_deployment(trained_store, deployed)
    at.session_state[f"delete_open_{d.id}"] = True  # the user opens "Delete this deployment"
    at.run()
    at.text_input(key=next(t.key for t in at.text_input if "to confirm" in t.label)).set_value(
        deployed
    ).run()
    button(at, "Delete").click().run()
    assert any(f"Deleted {deployed}" in s.value for s in at.success)
    assert at.title[0].value == "Deployments"


def test_a_cron_error_shows_its_asterisks(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    next(t for t in at.text_input if t.label.startswith("Cron expression")).set_value(
        "61 * * * *"
    ).run()
    assert any("'61 \\* \\* \\* \\*'" in e.value for e in at.error), [e.value for e in at.error]


def test_results_page_number_and_box_metrics_follow_the_view(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    at = open_page("pages/results.py", run=run.id)
    at.number_input(key="results_page").set_value(99).run()
    assert any("page 12 of 12 (page 99 asked: there are only 12)" in c.value for c in at.caption), [
        c.value for c in at.caption
    ]  # 600 rows, 50 a page
    assert len(at.dataframe[0].value) == 600 - 11 * 50
    summary = runs.get_run(trained_store, run.id).summary
    at.radio(key="results_which").set_value("challenger").run()
    confidence = summary["challenger"]["mean_confidence"]
    assert metric(at, "Mean confidence (challenger)") == f"{confidence:.3f}"


def test_a_validation_is_not_the_last_run(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    import pandas as pd

    from core import datasets, validation

    path = trained_store.workspace.home / "labelled" / "val.parquet"
    path.parent.mkdir()
    pd.DataFrame(datasets.churn_frame(n_rows=200, seed=3)).to_parquet(path, index=False)
    validation.start_validation(trained_store, deployed, "labelled/val.parquet", actor="tester")
    at = open_page("pages/deployments.py")
    assert list(at.dataframe[0].value["last run"]) == ["never"]


def test_a_registered_dataset_is_shown_and_offered_for_training(
    store: Store, open_page: OpenPage
) -> None:
    from core import datasets

    datasets.add_demo(store, datasets.DEMO_NAMES[0], actor="tester")
    at = open_page("pages/datasets.py")
    first = at.selectbox(key="ds_show").value
    at.selectbox(key="ds_demo").set_value(datasets.DEMO_NAMES[1]).run()
    next(b for b in at.button if b.label == "Register demo set").click().run()
    assert not at.exception and not at.error
    added = next(d for d in datasets.list_datasets(store) if d.id != first)
    assert at.selectbox(key="ds_show").value == added.id  # not the one shown before
    link = next(p for p in at.get("page_link") if p.proto.label.startswith("Train on"))
    assert link.proto.page == "train" and link.proto.query_string == f"dataset={added.id}"


def test_model_parameters_and_artifact_read_as_tables(
    trained_store: Store, open_page: OpenPage
) -> None:
    model = registry.list_models(trained_store)[0]
    at = open_page("pages/model.py", id=model.id)
    at.session_state["model_tabs"] = "Parameters"  # only the open tab renders
    at.run()
    assert not at.get("json")
    params = at.dataframe[-1].value
    assert set(params["parameter"]) == set(model.params)
    assert "None" not in set(params["value"]) and "null" not in set(params["value"])
    at.session_state["model_tabs"] = "Artifact"
    at.run()
    artifact = dict(
        zip(at.dataframe[-1].value["field"], at.dataframe[-1].value["value"], strict=True)
    )
    assert artifact["sha256"] == model.details()["artifact"]["sha256"]


def test_results_and_the_model_picker_name_models_by_algorithm_and_version(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    current = deployments.get_deployment(trained_store, deployed).current
    models = {m.id: m for m in registry.list_models(trained_store)}
    main, challenger = models[current.main_model_id], models[current.challenger_model_id]
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    at = open_page("pages/results.py", run=run.id)
    caption = at.caption[0].value
    assert f"main {main.algorithm} · v{main.version} ({main.id})" in caption, caption
    assert f"challenger {challenger.algorithm} · v{challenger.version}" in caption
    assert at.radio(key="results_which").options == [
        f"main: {main.algorithm} · v{main.version} ({main.id})",
        f"challenger: {challenger.algorithm} · v{challenger.version} ({challenger.id})",
    ]
    at = open_page("pages/model.py")
    options = at.selectbox(key="model_pick").options
    assert all(" · v1 (mdl_" in o for o in options), options
    shown = models[at.query_params["id"]]
    assert at.subheader[0].value == f"{shown.algorithm} · v1 · {shown.experiment}"


def test_removing_a_transform_keeps_the_others_text(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    button(at, "Add a transform").click().run()
    button(at, "Add a transform").click().run()
    names = [t for t in at.text_input if t.label == "Transform name"]
    assert [t.value for t in names] == ["transform_1", "transform_2"]
    names[1].set_value("keep me").run()
    next(b for b in at.button if b.label == "Remove").click().run()  # the first block
    assert not at.exception
    assert [t.value for t in at.text_input if t.label == "Transform name"] == ["keep me"]
    at.run()
    assert [t.value for t in at.text_input if t.label == "Transform name"] == ["keep me"]


def test_saving_thresholds_says_so_and_shows_them_at_once(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    assert runs.get_run(trained_store, run.id).status == "succeeded"
    at = open_page("pages/deployment.py", name=deployed, section="drift")
    inputs = {n.label: n for n in at.number_input}
    inputs["Moderate from"].set_value(0.2)
    inputs["Drifted from"].set_value(0.4)
    button(at, "Save thresholds").click().run()
    assert not at.exception and not at.error
    assert any(
        "PSI thresholds saved: moderate from 0.2, drifted from 0.4" in s.value for s in at.success
    )
    assert [n.value for n in at.number_input if n.label.endswith("from")] == [0.2, 0.4]
    at.run()
    saved = [e for e in audit.list_entries(trained_store, deployed) if "threshold" in e.action]
    assert len(saved) == 1, [e.action for e in saved]

    at = open_page("pages/deployment.py", name=deployed, section="validation")
    inputs = {n.label: n for n in at.number_input}
    inputs["Latency budget p99 (ms)"].set_value(250.0)
    button(at, "Save thresholds").click().run()
    assert not at.exception and not at.error
    assert any("p99 latency at most 250 ms" in s.value for s in at.success)
    assert next(n for n in at.number_input if n.label.startswith("Latency")).value == 250.0


def test_purge_says_what_it_did(trained_store: Store, deployed: str, open_page: OpenPage) -> None:
    run = runs.enqueue_run(trained_store, deployed, actor="tester")
    assert worker.run_once(trained_store)
    at = open_page("pages/results.py", run=run.id)
    button(at, "Purge results").click().run()
    assert not at.exception
    assert any(f"Purged the result files of run {run.id}" in s.value for s in at.success)
    assert runs.get_run(trained_store, run.id).purged_at is not None


def test_swap_names_the_swapped_models(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    names = {m.id: f"{m.algorithm} · v{m.version}" for m in registry.list_models(trained_store)}
    before = deployments.get_deployment(trained_store, deployed).current
    at = open_page("pages/deployment.py", name=deployed, section="challenger")
    at.checkbox(key=next(c.key for c in at.checkbox if c.label.startswith("I want"))).check().run()
    button(at, "Swap main and challenger").click().run()
    assert not at.exception
    note = next(s.value for s in at.success if s.value.startswith("Swapped"))
    assert f"main {names[before.challenger_model_id]} ({before.challenger_model_id})" in note
    assert any(f"Make **{names[before.main_model_id]}**" in m.value for m in at.markdown)
    assert button(at, "Swap main and challenger").disabled  # a second swap asks again


def links(at: AppTest) -> dict[str, str]:
    return {p.proto.label: f"{p.proto.page}?{p.proto.query_string}" for p in at.get("page_link")}


def test_empty_states_and_actions_say_what_to_do_next(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="predictions")
    assert any(i.value.startswith("No runs yet") for i in at.info)
    assert links(at)["Run it now in the Runs section"] == f"deployment?name={deployed}&section=runs"
    at = open_page("pages/deployment.py", name=deployed, section="runs")
    assert any(i.value.startswith("No run yet: press **Run now**") for i in at.info)
    button(at, "Run now").click().run()
    [queued] = runs.list_runs(trained_store, deployed)
    assert any(f"Queued run {queued.id}" in s.value for s in at.success)
    assert links(at)[f"Open run {queued.id} (its results appear when it ends)"] == (
        f"results?run={queued.id}"
    )
    at = open_page("pages/deployment.py", name=deployed, section="pipeline")
    button(at, "Save pipeline").click().run()
    assert links(at)["Run it now in the Runs section"] == f"deployment?name={deployed}&section=runs"
    assert worker.run_once(trained_store)
    at = open_page("pages/results.py", run=queued.id)
    at.slider(key="results_qual").set_value(1.0).run()
    at.slider(key="results_conf").set_value(1.0).run()
    assert any(i.value.startswith("No row matches these filters") for i in at.info)


def test_an_empty_workspace_says_where_to_start(store: Store, open_page: OpenPage) -> None:
    at = open_page("pages/model.py")
    assert at.info[0].value.startswith("No model yet: train models on a dataset, or import")
    assert set(links(at)) >= {"Train models", "Import a model"}
    at = open_page("pages/train.py")
    assert at.info[0].value.startswith("No dataset yet: register one")
