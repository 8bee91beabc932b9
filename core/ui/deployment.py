"""The deployment page's panels: general, pipeline, versions, runs. Streamlit only; calls core."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import audit, deployments, incremental, pipeline, promotion, registry, runs, ui
from core.entities import ACCESS_LEVELS, Deployment, Run
from core.errors import NotFound
from core.store import Store
from core.ui import charts, tables
from core.ui import connections as ui_connections
from core.ui import form as ui_form
from core.ui import validation as ui_validation
from core.ui.keys import has_new_key, key_panel
from core.worker import sidecars
from core.workspace import save_upload

SECTION_TITLES = {
    "general": "General",
    "monitoring": "Monitoring",
    "predictions": "Predictions",
    "versions": "Versions",
    "usage": "Usage",
    "pipeline": "Pipeline",
    "runs": "Runs",
    "schedule": "Schedule",
    "validation": "Validation",
    "challenger": "Challenger",
    "drift": "Drift",
    "audit": "Audit log",
}
TRAINING_SOURCE = (
    "**Run now scores the training data** (the snapshot the model was trained "
    "on, label included): the deployment's source is still the one it was "
    "created with."
)
PICK_KEY = "deployment_pick"
SECTION_KEY = "deployment_section"


def _follow_pick() -> None:
    st.query_params["name"] = st.session_state[PICK_KEY]


def _explain_missing(store: Store, name: str) -> None:
    try:
        hidden = deployments.get_deployment(store, name)
    except NotFound:
        hidden = None
    if hidden is not None and ui.no_access(store, hidden.project_id, f"deployment {name}"):
        return
    deleted = audit.deletion(store, name)
    if deleted is None:
        ui.show_error(NotFound("deployment", name, "Choose one of the deployments below."))
        return
    st.warning(
        f"**Deployment '{name}' was deleted** on {deleted.logged_at:%Y-%m-%d %H:%M} UTC"
        f" by {deleted.actor}. Its runs and their results are kept.",
        icon="🗑️",
    )
    st.page_link(
        "pages/results.py",
        query_params={"deployment": name},
        label=f"Open the kept runs of {name}",
        icon=":material/table_view:",
    )


def pick_deployment(store: Store) -> Deployment:
    """The deployment named in the URL, read in this run (never a copy kept by a widget).

    A deleted or unknown name is said so, and nothing else is shown in its place until the user
    picks a deployment. Stops the page when there is none to show.
    """
    wanted = st.query_params.get("name") or ""
    found = ui.cached_read(deployments.list_deployments, store, visible_to=ui.actor())
    if not found and wanted:  # say why this link shows nothing before "nothing deployed"
        _explain_missing(store, wanted)
        st.stop()
    found = found or ui.require_deployments(store)
    by_name = {d.name: d for d in found}
    missing = bool(wanted) and wanted not in by_name
    if missing:
        _explain_missing(store, wanted)
        st.session_state.pop(PICK_KEY, None)
    elif wanted:
        st.session_state[PICK_KEY] = wanted  # a link to another deployment wins
    name = st.selectbox(
        "Deployment",
        list(by_name),
        key=PICK_KEY,
        on_change=_follow_pick,
        index=None if missing else 0,
        placeholder="Choose a deployment",
        format_func=lambda n: f"{n} ({by_name[n].environment})",
    )
    if name is None:
        st.stop()
    st.query_params["name"] = name
    return by_name[name]


def _follow_section() -> None:
    st.query_params["section"] = st.session_state[SECTION_KEY]


def section_picker(sections: list[str]) -> str:
    """The section shown, kept in the URL as `section`; only that section computes."""
    wanted = st.query_params.get("section")
    st.session_state[SECTION_KEY] = wanted if wanted in sections else sections[0]
    section = st.segmented_control(
        "Section",
        sections,
        key=SECTION_KEY,
        required=True,
        on_change=_follow_section,
        format_func=SECTION_TITLES.__getitem__,
        label_visibility="collapsed",
    )
    assert section is not None  # required, and its state is set just above
    st.query_params["section"] = section
    return section


ACCESS_WORDS = {
    "public": "anyone may call the API and use the form, without a key or a login",
    "instance": "any active user of this ModelDeck, with their API key or logged in",
    "project": "only the collaborators of the project, with their API key or logged in",
}


def _models_summary(store: Store, d: Deployment) -> None:
    """The deployed models: algorithm and version, holdout metrics, what serves them."""
    assert d.current is not None
    rows = []
    statuses = ui_form.model_statuses(store, d)
    for role, model_id in (
        ("main", d.current.main_model_id),
        ("challenger", d.current.challenger_model_id),
    ):
        if not model_id:
            continue
        model = ui.cached_read(registry.get_model, store, model_id)
        headline = charts.headline_metric(model.task)
        value = model.metrics.get(headline)
        rows.append(
            {
                "role": role,
                "model": ui.model_label(model),
                f"holdout {headline}": "not measured" if value is None else f"{value:.4f}",
                "trained": f"{model.created_at:%Y-%m-%d}",
                **statuses.get(role, {}),
            }
        )
    tables.small_table(rows)
    st.caption(
        "API: whether the API holds the model, and how long it took to load and warm up. Calls:"
        f" what this version was called over the last {ui_form.HEALTH_HOURS} h; failed: refused"
        " for their input, or the model raised (the last error says which). Live metrics, once"
        " true labels arrive, are on the Challenger section; drift on Drift."
    )


def _model_link(store: Store, model_id: str | None, label: str) -> None:
    if not model_id:
        st.caption(f"{label}: none")
        return
    model = ui.cached_read(registry.get_model, store, model_id)
    st.page_link(
        "pages/model.py",
        query_params={"id": model.id},
        icon=":material/insights:",
        label=f"{label}: {ui.model_label(model)}",
    )


def general(store: Store, d: Deployment) -> None:
    """Environment, current models, status and access; promote and delete."""
    # four metrics: with five, "2026-12-07" and "production" were cut short at 1,280 px
    cols = st.columns(4)
    cols[0].metric("Environment", d.environment)
    cols[1].metric("Current version", f"v{d.current.number}" if d.current else "none")
    cols[2].metric("Status", deployments.status(store, d).split(":")[0])
    cols[3].metric("Access", d.access)
    running = ui_form.api_running(store, d)
    st.caption(f"Created {d.created_at:%Y-%m-%d %H:%M} UTC · API: {running.words}")
    ui_form.share_box(store, d)
    if d.current:
        _model_link(store, d.current.main_model_id, "Main model")
        _model_link(store, d.current.challenger_model_id, "Challenger")
        _models_summary(store, d)
    st.caption(f"Access **{d.access}**: {ACCESS_WORDS.get(d.access, d.access)}.")
    _access_picker(store, d)
    keys_box = st.expander(
        "Call it over the API: API keys",
        expanded=has_new_key(d),
        key=f"keys_open_{d.id}",
        on_change="rerun",
    )
    if keys_box.open:
        with keys_box:
            _api_keys(store, d)
    if d.environment == "staging":
        why = ui.denied(store, d.project_id, "promote")
        with st.container(border=True):
            st.markdown("**Promote to production**")
            ui.say_denied(why)
            copy = {
                w: st.checkbox(
                    f"Copy the {w}", value=True, key=f"copy_{w}_{d.id}", disabled=bool(why)
                )
                for w in ("pipeline", "schedule", "report")
            }
            sinks = _production_sinks(store, d) if copy["pipeline"] and not why else None
            allowed, reason = ui_validation.promotion_checks(store, d)
            if st.button(
                "Promote to production",
                type="primary",
                key=f"promote_{d.id}",
                disabled=not allowed or bool(why),
                help=why,
            ):
                with ui.guarded():
                    prod = promotion.promote(
                        store,
                        d.name,
                        copy_pipeline=copy["pipeline"],
                        copy_schedule=copy["schedule"],
                        copy_report=copy["report"],
                        override_reason=reason,
                        sinks=sinks,
                        actor=ui.actor(),
                    )
                    assert prod.current is not None  # promote always makes a new version
                    st.success(f"{prod.name} now serves version {prod.current.number}.")
                    st.page_link(
                        "pages/deployment.py",
                        query_params={"name": prod.name},
                        label=f"Open {prod.name}",
                        icon=":material/deployed_code:",
                    )
    why = ui.denied(store, d.project_id, "delete")
    # Its form, like the keys', runs only while open: General is the page a deep link opens
    # first (cold: 1.59 s drawn against 1.78 with both forms always run, ui_bench).
    delete_box = st.expander("Delete this deployment", key=f"delete_open_{d.id}", on_change="rerun")
    if not delete_box.open:
        return
    with delete_box:
        st.caption("Runs and their results stay downloadable until you purge them.")
        ui.say_denied(why)
        typed = st.text_input(
            f"Type '{d.name}' to confirm", key=f"delete_confirm_{d.id}", disabled=bool(why)
        )
        if st.button(
            "Delete", disabled=typed != d.name or bool(why), key=f"delete_{d.id}", help=why
        ):
            with ui.guarded():
                promotion.delete_deployment(store, d.name, confirm=typed, actor=ui.actor())
                ui.flash(
                    f"Deleted {d.name}. Its runs and their results are kept: Run results "
                    "lists them."
                )
                st.query_params.clear()
                st.switch_page("pages/deployments.py")


def _api_keys(store: Store, d: Deployment) -> None:
    """The addresses to call and the deployment's key generator (its expander is open)."""
    address = ui.api_url(store)
    st.markdown(
        f"`POST {address}/v1/deployments/{d.name}/invocations` (MLflow's scoring "
        f"protocol) or `POST {address}/v2/models/{d.name}/infer` (Open Inference); "
        f"[API documentation]({address}/docs)."
    )
    key_panel(store, d)


def _production_sinks(store: Store, d: Deployment) -> list[dict[str, Any]]:
    """Production's own sinks (staging's, renamed for production), editable before promoting."""
    proposed = ui.cached_read(promotion.production_sinks, store, d.name)
    if not proposed:
        return []
    st.caption("Production writes to its own sinks, never into staging's:")
    out = []
    for i, sink in enumerate(proposed):
        field = "path" if sink["kind"] == "folder" else "table"
        label = f"{sink['kind'].replace('_', ' ')} {field}" + (
            f" (in {sink['path']})" if field == "table" and sink.get("path") else ""
        )
        value = st.text_input(label, value=sink[field], key=f"prod_sink_{d.id}_{i}")
        out.append({**sink, field: value.strip()})
    return out


def _access_picker(store: Store, d: Deployment) -> None:
    key = f"access_{d.id}"
    st.session_state[key] = d.access  # the store's value, also when changed elsewhere

    def change() -> str:
        chosen = st.session_state[key]
        deployments.set_access(store, d.name, chosen, actor=ui.actor())
        return f"Access of {d.name} changed to '{chosen}' (was '{d.access}')."

    # A callback fires once per user change, before the page renders: one change, one write.
    why = ui.denied(store, d.project_id, "set-access")
    st.selectbox(
        "Who may call it",
        ACCESS_LEVELS,
        key=key,
        on_change=ui.act,
        args=(change,),
        disabled=bool(why),
        help=why
        or "Enforced by the API on every call. public: anyone, no key; instance: a key of "
        "any active user; project: a key of a collaborator of this project.",
    )


def _source_editor(store: Store, d: Deployment, source: dict[str, Any]) -> dict[str, Any]:
    kinds = ["file", "sql", "postgres"]
    given = source.get("kind")
    kind = st.radio(
        "Source",
        kinds,
        horizontal=True,
        key=f"src_kind_{d.id}",
        index=kinds.index(given) if given in kinds else 0,
        format_func={
            "file": "File or glob",
            "sql": "DuckDB SQL over files",
            "postgres": "PostgreSQL query",
        }.__getitem__,
    )
    if kind == "postgres":
        return ui_connections.source_fields(store, d, source)
    if kind == "sql":
        sql = st.text_area(
            "Source query",
            value=source.get("sql", ""),
            key=f"src_sql_{d.id}",
            help="A SELECT over files in the workspace, e.g. "
            "SELECT * FROM read_csv('exports/*.csv')",
        )
        st.caption(incremental.SQL_PARAMETERS_HELP)
        return {"kind": "sql", "sql": sql}
    path_key = f"src_path_{d.id}"
    upload = st.file_uploader(
        "Upload a file to score", type=["csv", "parquet", "json"], key=f"src_upload_{d.id}"
    )
    if upload is not None and st.session_state.get(f"{path_key}_file") != upload.file_id:
        # Saved once per upload (reruns hand the same file back), then it is just a path.
        st.session_state[f"{path_key}_file"] = upload.file_id
        st.session_state[path_key] = str(
            save_upload(store.workspace, upload.name, upload.getvalue())
        )
    st.session_state.setdefault(path_key, source.get("path", ""))
    path = st.text_input("Path or glob (inside the workspace)", key=path_key)
    only_new = st.checkbox(
        "Only new data",
        value=bool(source.get("incremental")),
        key=f"src_incremental_{d.id}",
        help=incremental.FILES_HELP,
    )
    return {"kind": "file", "path": path, **({"incremental": True} if only_new else {})}


def _transforms_editor(d: Deployment, transforms: list[dict[str, str]]) -> list[dict[str, str]]:
    """The transform blocks being edited (kept in session state until saved). Add and Remove
    are callbacks, so the page renders the changed list in the same run; each block keeps its
    own widget keys, so removing one never shifts another's text into its place."""
    key = f"transforms_{d.id}"
    if key not in st.session_state:
        st.session_state[key] = [{"id": i, **t} for i, t in enumerate(transforms)]
    blocks: list[dict[str, Any]] = st.session_state[key]

    def remove(block_id: int) -> None:
        st.session_state[key] = [b for b in st.session_state[key] if b["id"] != block_id]

    def add() -> None:
        found = st.session_state[key]
        number = max((b["id"] for b in found), default=-1) + 1
        name = f"transform_{len(found) + 1}"
        st.session_state[key] = [*found, {"id": number, "name": name, "sql": "SELECT * FROM input"}]

    for block in blocks:
        with st.container(border=True):
            block["name"] = st.text_input(
                "Transform name", value=block["name"], key=f"{key}_n{block['id']}"
            )
            block["sql"] = st.text_area(
                "SELECT over `input`", value=block["sql"], key=f"{key}_s{block['id']}"
            )
            st.button("Remove", key=f"{key}_rm{block['id']}", on_click=remove, args=(block["id"],))
    st.button("Add a transform", key=f"{key}_add", on_click=add)
    return [{"name": b["name"], "sql": b["sql"]} for b in blocks]


def _sinks_editor(d: Deployment, sinks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_kind = {s["kind"]: s for s in sinks}
    out = []
    folder = by_kind.get("folder", {})
    if st.checkbox("Also write to a folder", value="folder" in by_kind, key=f"sink_f_{d.id}"):
        left, right = st.columns([3, 1])
        out.append(
            {
                "kind": "folder",
                "path": left.text_input(
                    "Folder", folder.get("path", f"exports/{d.name}"), key=f"sink_fp_{d.id}"
                ),
                "format": right.selectbox("Format", ["parquet", "csv"], key=f"sink_ff_{d.id}"),
            }
        )
    table = by_kind.get("duckdb_table", {})
    if st.checkbox(
        "Also write to a DuckDB table", value="duckdb_table" in by_kind, key=f"sink_t_{d.id}"
    ):
        a, b, c = st.columns([2, 1, 1])
        out.append(
            {
                "kind": "duckdb_table",
                "path": a.text_input(
                    "DuckDB file", table.get("path", "exports/scores.duckdb"), key=f"sink_tp_{d.id}"
                ),
                "table": b.text_input(
                    "Table", table.get("table", d.name.replace("-", "_")), key=f"sink_tt_{d.id}"
                ),
                "mode": c.selectbox("Mode", ["append", "replace"], key=f"sink_tm_{d.id}"),
            }
        )
    postgres_sink = ui_connections.sink_fields(ui.get_store(), d, by_kind.get("postgres"))
    return out + ([postgres_sink] if postgres_sink else [])


def pipeline_editor(store: Store, d: Deployment) -> None:
    """Source, transforms, locked model block, sinks; preview and save. Read-only (the stored
    pipeline as JSON) for those who may not change it."""
    current = d.pipeline
    why = ui.denied(store, d.project_id, "edit-pipeline")
    if why:
        ui.say_denied(why)
        st.json(current)
        return
    if ui.cached_read(deployments.scores_training_data, store, d):
        st.info(
            TRAINING_SOURCE + " Set the data to score here: upload a file, give a path or "
            "glob, a SQL query or a PostgreSQL query, then **Save pipeline**.",
            icon=":material/info:",
        )
    source = _source_editor(store, d, current.get("source", {}))
    st.markdown("**Transformations** (DuckDB SELECTs over `input`; they cannot read files)")
    transforms = _transforms_editor(d, current.get("transforms", []))
    names = ui.model_names(store, d.experiment_id)
    main = d.current.main_model_id if d.current else None
    challenger = d.current.challenger_model_id if d.current else None
    st.info(
        f"**Model block (locked)**: main {ui.named(names, main)}, challenger "
        f"{ui.named(names, challenger)}. To change the model, deploy another one or roll "
        "back in the Versions section.",
        icon="🔒",
    )
    label = st.text_input(
        "Label column (metrics when present)",
        value=current.get("label_column") or "",
        key=f"label_{d.id}",
    )
    st.markdown("**Sinks** (the run's Parquet results are always kept)")
    sinks = _sinks_editor(d, current.get("sinks", []))
    candidate = {
        "source": source,
        "transforms": transforms,
        "sinks": sinks,
        "label_column": label or None,
    }
    left, right = st.columns(2)
    if left.button("Preview", key=f"preview_{d.id}"):
        model = registry.get_model(store, d.current.main_model_id) if d.current else None
        shown = pipeline.preview(
            store.workspace,
            candidate,
            model.schema if model else None,
            params=incremental.preview_params(store, d.id),
        )
        for stage in shown.stages:
            st.caption(f"After **{stage.name}**")
            if stage.error:
                st.error(stage.error)
            else:
                st.dataframe(stage.frame, hide_index=True)
        for note in shown.notes:
            st.warning(note)
        if shown.check is not None:
            if shown.check.is_ok:
                st.success(
                    "The output fits the model's schema"
                    + (
                        f"; extra columns kept: {', '.join(shown.check.extra)}"
                        if shown.check.extra
                        else "."
                    )
                )
            else:
                st.error(shown.check.message())
    if right.button("Save pipeline", type="primary", key=f"save_{d.id}"):
        with ui.guarded():
            deployments.update_pipeline(
                store,
                d.name,
                pipeline.validate_pipeline(candidate, store.workspace),
                actor=ui.actor(),
            )
            st.success("Pipeline saved. It applies to the next run.")
            ui.section_link(d, "runs", "Run it now in the Runs section")


def versions_table(store: Store, d: Deployment) -> None:
    """Change the models, every version ("make current" on another one is a rollback) and
    which version was live when."""
    names = ui.model_names(store, d.experiment_id)
    _models_picker(store, d, names)
    st.subheader("Versions")
    why = ui.denied(store, d.project_id, "rollback")
    ui.say_denied(why)
    for v in ui.cached_read(deployments.list_versions, store, d.id):
        is_current = d.current is not None and v.id == d.current.id
        cols = st.columns([1, 3, 3, 2, 2])
        cols[0].markdown(f"**v{v.number}**" + (" (current)" if is_current else ""))
        cols[1].caption(f"main {ui.named(names, v.main_model_id, strong=True)}")
        cols[2].caption(f"challenger {ui.named(names, v.challenger_model_id, strong=True)}")
        cols[3].caption(f"{v.created_by}, {v.created_at:%Y-%m-%d %H:%M}")
        if not is_current:
            cols[4].button(
                "Make current",
                key=f"rollback_{v.id}",
                disabled=bool(why),
                help=why,
                on_click=ui.act,
                args=(lambda n=v.number: _rollback(store, d, n),),
            )
    _live_history(store, d, names)


def _models_picker(store: Store, d: Deployment, names: dict[str, str]) -> None:
    """Pick the main model and the challenger among every model of the experiment (any
    version): a new version, live at once."""
    st.subheader("Models")
    current = d.current
    ids = list(names)
    if not ids or current is None:
        st.info("This experiment has no models left to serve. Train or import one first.")
        return
    why = ui.denied(store, d.project_id, f"deploy-{d.environment}")
    main_at = ids.index(current.main_model_id) if current.main_model_id in ids else 0
    cols = st.columns(2)
    main = cols[0].selectbox(
        "Main model (answers every call)",
        ids,
        index=main_at,
        format_func=lambda i: names[i],
        key=f"main_pick_{d.id}_{current.id}",
        disabled=bool(why),
    )
    others: list[str | None] = [None, *(i for i in ids if i != main)]
    challenger = cols[1].selectbox(
        "Challenger (scored in shadow, never returned)",
        others,
        index=others.index(current.challenger_model_id)
        if current.challenger_model_id in others
        else 0,
        format_func=lambda i: "none" if i is None else names[i],
        key=f"challenger_pick_{d.id}_{current.id}",
        disabled=bool(why),
    )
    unchanged = (main, challenger) == (current.main_model_id, current.challenger_model_id)
    st.button(
        "Make these live",
        type="primary",
        disabled=bool(why) or unchanged,
        help=why or ("These are the models live now." if unchanged else None),
        on_click=ui.act,
        args=(lambda: _change_models(store, d, main, challenger, names),),
    )
    ui.say_denied(why)


def _change_models(
    store: Store, d: Deployment, main: str, challenger: str | None, names: dict[str, str]
) -> str:
    after = deployments.deploy(
        store, main, d.environment, name=d.name, challenger_id=challenger, actor=ui.actor()
    )
    assert after.current is not None
    return (
        f"Version v{after.current.number} is live: main {names[main]}, challenger"
        f" {names[challenger] if challenger else 'none'}. The API serves it within a second;"
        " the next run uses it."
    )


def _live_history(store: Store, d: Deployment, names: dict[str, str]) -> None:
    st.subheader("What was live when")
    periods = ui.cached_read(deployments.live_history, store, d.id)
    if not periods:
        st.caption("No version has been made current yet.")
        return
    st.dataframe(
        [
            {
                "version": f"v{p.version}",
                "main": names.get(p.main_model_id, p.main_model_id),
                "challenger": names.get(p.challenger_model_id, p.challenger_model_id)
                if p.challenger_model_id
                else "none",
                "from (UTC)": f"{p.since:%Y-%m-%d %H:%M:%S}",
                "until (UTC)": f"{p.until:%Y-%m-%d %H:%M:%S}" if p.until else "now",
                "made current by": f"{p.by} ({p.how})",
            }
            for p in reversed(periods)
        ],
        hide_index=True,
    )


def _rollback(store: Store, d: Deployment, number: int) -> str:
    after = deployments.rollback(store, d.name, number, actor=ui.actor())
    assert after.current is not None  # the version rolled back to
    main = registry.get_model(store, after.current.main_model_id)
    return (
        f"Version v{number} of {d.name} is current again (main {ui.model_label(main)}); "
        "callers get it from their next request."
    )


def runs_panel(store: Store, d: Deployment) -> None:
    """Run now, and the runs with their status (refreshed while any is in flight)."""
    worker = sidecars.worker_status(store.workspace)
    if not worker.is_alive:
        st.warning(
            f"The worker is not running ({worker.detail}): queued runs wait for it. "
            "Start it with `modeldeck worker` (or `make run`)."
        )
    if ui.cached_read(deployments.scores_training_data, store, d):
        st.warning(
            TRAINING_SOURCE + " Set your own source in the Pipeline section, or give a file below.",
            icon=":material/info:",
        )
    why = ui.denied(store, d.project_id, "run")
    ui.say_denied(why)
    override = st.text_input(
        "Score another file instead (optional path or glob)",
        key=f"run_source_{d.id}",
        disabled=bool(why),
    )
    if st.button("Run now", type="primary", key=f"run_{d.id}", disabled=bool(why), help=why):
        with ui.guarded():
            source = pipeline.check_file_source(store.workspace, override) if override else None
            run = runs.enqueue_run(store, d.name, source_override=source, actor=ui.actor())
            st.success(f"Queued run {run.id}; it is listed below while it runs.")
            st.page_link(
                "pages/results.py",
                query_params={"run": run.id},
                label=f"Open run {run.id} (its results appear when it ends)",
                icon=":material/table_view:",
            )
    found = ui.cached_read(runs.list_runs, store, d.name)
    if any(not r.is_finished for r in found):
        _live_runs(store, d.name)  # polls only while something is queued or running
    else:
        _runs_table(found)


@st.fragment(run_every=2)
def _live_runs(store: Store, name: str) -> None:
    found = ui.cached_read(runs.list_runs, store, name)
    if all(r.is_finished for r in found):
        st.rerun()  # everything ended: redraw the page once, without the timer
    for r in found:
        if not r.is_finished:
            st.progress(r.progress, text=f"{r.id}: {r.status} · {r.message}")
    _runs_table(found)


def _runs_table(found: list[Run]) -> None:
    if not found:
        st.info(
            "No run yet: press **Run now** above, or give the deployment a schedule in the "
            "Schedule section."
        )
        return
    ui.link_table(
        [
            {
                "run": f"results?run={r.id}",
                "status": r.status,
                "trigger": r.trigger,
                "queued (UTC)": r.queued_at,
                "rows": "" if r.rows_out is None else f"{r.rows_out:,}",
                "by": r.queued_by,
                "error": r.error or "",
            }
            for r in found
        ],
        "run",
        key="runs_table",
    )


def _current_schedule(store: Store, d: Deployment, current: Any) -> None:
    from core import scheduler

    if current is None:
        st.caption(
            "No schedule: runs start only when someone queues them. Set one below to run "
            "it on its own."
        )
        return
    state = "paused" if current.is_paused else "active"
    st.markdown(
        f"**Current schedule** ({state}): `{current.cron}` in {current.timezone}"
        f" — {scheduler.describe(current.cron)}"
    )

    def toggle() -> str:
        (scheduler.resume if current.is_paused else scheduler.pause)(
            store, d.name, actor=ui.actor()
        )
        return f"Schedule {'resumed' if current.is_paused else 'paused'}."

    why = ui.denied(store, d.project_id, "schedule")
    st.button(
        "Resume" if current.is_paused else "Pause",
        key=f"sched_toggle_{d.id}",
        disabled=bool(why),
        help=why,
        on_click=ui.act,
        args=(toggle,),
    )


@st.fragment
def _cron_editor(store: Store, d: Deployment, current: Any) -> tuple[str, str]:
    """Preset, cron expression and time zone with the live preview; typing reruns only this
    fragment (Save reads the typed values from session state). Returns (cron, time zone)."""
    from core import scheduler

    ui.recheck_access(store, d.project_id)
    presets = ["custom", *scheduler.PRESETS]
    preset = st.radio("Preset", presets, horizontal=True, key=f"sched_preset_{d.id}")
    default = scheduler.PRESETS.get(preset) or (current.cron if current else "0 6 * * 1")
    cron = st.text_input(
        "Cron expression (minute hour day-of-month month day-of-week)",
        value=default,
        key=f"sched_cron_{d.id}_{preset}",
    )
    zones = scheduler.time_zones()
    zone = current.timezone if current and current.timezone in zones else "UTC"
    tz = st.selectbox("Time zone", zones, index=zones.index(zone), key=f"sched_tz_{d.id}")
    with ui.guarded():
        st.info(scheduler.describe(cron))
        st.caption(
            "Next runs: "
            + ", ".join(f"{t:%a %Y-%m-%d %H:%M %Z}" for t in scheduler.next_times(cron, tz))
        )
    return str(cron), str(tz)


def schedule_panel(store: Store, d: Deployment) -> None:
    """Cron expression (or a preset) and time zone with a live preview; pause/resume; save."""
    from core import scheduler  # cronsim only where schedules are shown

    current = ui.cached_read(scheduler.get_schedule, store, d.name)  # `d` may predate a rerun
    _current_schedule(store, d, current)
    cron, tz = _cron_editor(store, d, current)
    base = current or scheduler.Schedule(cron=cron)
    a, b, c = st.columns(3)
    catch_up = a.selectbox(
        "Missed slots (worker down)",
        scheduler.CATCH_UP,
        index=scheduler.CATCH_UP.index(base.catch_up),
        key=f"sched_catch_{d.id}",
        help="one: a single catch-up run",
    )
    overlap = b.selectbox(
        "Slot while a run is in flight",
        scheduler.OVERLAP,
        index=scheduler.OVERLAP.index(base.overlap),
        key=f"sched_ov_{d.id}",
    )
    attempts = c.number_input(
        "Attempts if the worker dies",
        1,
        10,
        base.max_attempts,
        key=f"sched_att_{d.id}",
        help="1 = no retry",
    )

    def save() -> str:  # a callback: the page then renders the saved schedule at once
        now = st.session_state  # the widgets' values of this click, not of the last render
        chosen = now.get(f"sched_cron_{d.id}_{now.get(f'sched_preset_{d.id}')}", cron)
        saved = scheduler.set_schedule(
            store,
            d.name,
            chosen,
            now.get(f"sched_tz_{d.id}", tz),
            catch_up=now.get(f"sched_catch_{d.id}", catch_up),
            overlap=now.get(f"sched_ov_{d.id}", overlap),
            max_attempts=int(now.get(f"sched_att_{d.id}", attempts)),
            actor=ui.actor(),
        )
        return f"Schedule saved: {scheduler.describe(saved.cron)} ({saved.timezone})."

    why = ui.denied(store, d.project_id, "schedule")
    ui.say_denied(why)
    st.button(
        "Save schedule",
        type="primary",
        key=f"sched_save_{d.id}",
        on_click=ui.act,
        args=(save,),
        disabled=bool(why),
        help=why,
    )
    slots = ui.cached_read(scheduler.list_slots, store, d.name)
    if slots:
        st.markdown("**Recent slots**")
        st.dataframe(pd.DataFrame(slots), hide_index=True)
