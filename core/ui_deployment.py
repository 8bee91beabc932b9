"""The deployment page's panels: general, pipeline, versions, runs. Streamlit only; calls core."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import (
    deployments,
    incremental,
    pipeline,
    registry,
    runs,
    sidecars,
    ui,
    ui_connections,
    ui_validation,
)
from core.entities import ACCESS_LEVELS, Deployment, Run
from core.store import Store
from core.workspace import save_upload


def _model_link(store: Store, model_id: str | None, label: str) -> None:
    if not model_id:
        st.caption(f"{label}: none")
        return
    model = registry.get_model(store, model_id)
    st.page_link("pages/model.py", query_params={"id": model.id}, icon=":material/insights:",
                 label=f"{label}: {model.algorithm} v{model.version} ({model.id})")


def general(store: Store, d: Deployment) -> None:
    """Environment, current models, status and access; promote and delete."""
    cols = st.columns(4)
    cols[0].metric("Environment", d.environment)
    cols[1].metric("Current version", f"v{d.current.number}" if d.current else "none")
    cols[2].metric("Status", deployments.status(store, d).split(":")[0])
    cols[3].metric("Access", d.access)
    if d.current:
        _model_link(store, d.current.main_model_id, "Main model")
        _model_link(store, d.current.challenger_model_id, "Challenger")
    access = st.selectbox("Who may call it", ACCESS_LEVELS, index=ACCESS_LEVELS.index(d.access),
                          key=f"access_{d.id}", help="Enforced by the API once serving lands.")
    if access != d.access:
        with ui.guarded():
            deployments.set_access(store, d.name, access)
            st.rerun()
    if d.environment == "staging":
        with st.container(border=True):
            st.markdown("**Promote to production**")
            copy = {w: st.checkbox(f"Copy the {w}", value=True, key=f"copy_{w}_{d.id}")
                    for w in ("pipeline", "schedule", "report")}
            allowed, reason = ui_validation.promotion_checks(store, d)
            if st.button("Promote to production", type="primary", key=f"promote_{d.id}",
                         disabled=not allowed):
                with ui.guarded():
                    prod = deployments.promote(store, d.name, copy_pipeline=copy["pipeline"],
                                               copy_schedule=copy["schedule"],
                                               copy_report=copy["report"],
                                               override_reason=reason)
                    st.success(f"{prod.name} now serves version {prod.current.number}.")
    with st.expander("Delete this deployment"):
        st.caption("Runs and their results stay downloadable until you purge them.")
        typed = st.text_input(f"Type '{d.name}' to confirm", key=f"delete_confirm_{d.id}")
        if st.button("Delete", disabled=typed != d.name, key=f"delete_{d.id}"):
            with ui.guarded():
                deployments.delete_deployment(store, d.name, confirm=typed)
                st.query_params.clear()
                st.switch_page("pages/deployments.py")


def _source_editor(store: Store, d: Deployment, source: dict[str, Any]) -> dict[str, Any]:
    kinds = ["file", "sql", "postgres"]
    kind = st.radio("Source", kinds, horizontal=True, key=f"src_kind_{d.id}",
                    index=kinds.index(source.get("kind")) if source.get("kind") in kinds else 0,
                    format_func={"file": "File or glob", "sql": "DuckDB SQL over files",
                                 "postgres": "PostgreSQL query"}.get)
    if kind == "postgres":
        return ui_connections.source_fields(store, d, source)
    if kind == "sql":
        sql = st.text_area("Source query", value=source.get("sql", ""), key=f"src_sql_{d.id}",
                           help="A SELECT over files in the workspace, e.g. "
                           "SELECT * FROM read_csv('exports/*.csv')")
        st.caption(incremental.SQL_PARAMETERS_HELP)
        return {"kind": "sql", "sql": sql}
    upload = st.file_uploader("Upload a file to score", type=["csv", "parquet", "json"],
                              key=f"src_upload_{d.id}")
    path = source.get("path", "")
    if upload is not None:
        path = str(save_upload(store.workspace, upload.name, upload.getvalue()))
    path = st.text_input("Path or glob (inside the workspace)", value=path,
                         key=f"src_path_{d.id}_{path}")
    only_new = st.checkbox("Only new data", value=bool(source.get("incremental")),
                           key=f"src_incremental_{d.id}", help=incremental.FILES_HELP)
    return {"kind": "file", "path": path, **({"incremental": True} if only_new else {})}


def _transforms_editor(d: Deployment, transforms: list[dict[str, str]]) -> list[dict[str, str]]:
    key = f"transforms_{d.id}"
    if key not in st.session_state:
        st.session_state[key] = [dict(t) for t in transforms]
    edited = []
    for i, block in enumerate(st.session_state[key]):
        with st.container(border=True):
            name = st.text_input("Transform name", value=block["name"], key=f"{key}_n{i}")
            sql = st.text_area("SELECT over `input`", value=block["sql"], key=f"{key}_s{i}")
            if not st.button("Remove", key=f"{key}_rm{i}"):
                edited.append({"name": name, "sql": sql})
    if st.button("Add a transform", key=f"{key}_add"):
        edited.append({"name": f"transform_{len(edited) + 1}", "sql": "SELECT * FROM input"})
    if edited != st.session_state[key]:
        st.session_state[key] = edited
        st.rerun()
    return edited


def _sinks_editor(d: Deployment, sinks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_kind = {s["kind"]: s for s in sinks}
    out = []
    folder = by_kind.get("folder", {})
    if st.checkbox("Also write to a folder", value="folder" in by_kind, key=f"sink_f_{d.id}"):
        left, right = st.columns([3, 1])
        out.append({"kind": "folder",
                    "path": left.text_input("Folder", folder.get("path", f"exports/{d.name}"),
                                            key=f"sink_fp_{d.id}"),
                    "format": right.selectbox("Format", ["parquet", "csv"],
                                              key=f"sink_ff_{d.id}")})
    table = by_kind.get("duckdb_table", {})
    if st.checkbox("Also write to a DuckDB table", value="duckdb_table" in by_kind,
                   key=f"sink_t_{d.id}"):
        a, b, c = st.columns([2, 1, 1])
        out.append({"kind": "duckdb_table",
                    "path": a.text_input("DuckDB file", table.get("path", "exports/scores.duckdb"),
                                         key=f"sink_tp_{d.id}"),
                    "table": b.text_input("Table", table.get("table", d.name.replace("-", "_")),
                                          key=f"sink_tt_{d.id}"),
                    "mode": c.selectbox("Mode", ["append", "replace"], key=f"sink_tm_{d.id}")})
    postgres_sink = ui_connections.sink_fields(ui.get_store(), d, by_kind.get("postgres"))
    return out + ([postgres_sink] if postgres_sink else [])


def pipeline_editor(store: Store, d: Deployment) -> None:
    """Source, transforms, locked model block, sinks; preview and save."""
    current = d.pipeline
    source = _source_editor(store, d, current.get("source", {}))
    st.markdown("**Transformations** (DuckDB SELECTs over `input`; they cannot read files)")
    transforms = _transforms_editor(d, current.get("transforms", []))
    main = d.current.main_model_id if d.current else "none"
    challenger = (d.current.challenger_model_id if d.current else None) or "none"
    st.info(f"**Model block (locked)**: main {main}, challenger {challenger}. To change the "
            "model, deploy another one or roll back on the Versions tab.", icon="🔒")
    label = st.text_input("Label column (metrics when present)",
                          value=current.get("label_column") or "", key=f"label_{d.id}")
    st.markdown("**Sinks** (the run's Parquet results are always kept)")
    sinks = _sinks_editor(d, current.get("sinks", []))
    candidate = {"source": source, "transforms": transforms, "sinks": sinks,
                 "label_column": label or None}
    left, right = st.columns(2)
    if left.button("Preview", key=f"preview_{d.id}"):
        model = registry.get_model(store, d.current.main_model_id) if d.current else None
        shown = pipeline.preview(store.workspace, candidate, model.schema if model else None,
                                 params=incremental.preview_params(store, d.id))
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
                st.success("The output fits the model's schema"
                           + (f"; extra columns kept: {', '.join(shown.check.extra)}"
                              if shown.check.extra else "."))
            else:
                st.error(shown.check.message())
    if right.button("Save pipeline", type="primary", key=f"save_{d.id}"):
        with ui.guarded():
            deployments.update_pipeline(
                store, d.name, pipeline.validate_pipeline(candidate, store.workspace))
            st.success("Pipeline saved. It applies to the next run.")


def versions_table(store: Store, d: Deployment) -> None:
    """Every version; "make current" on another one is a rollback."""
    for v in deployments.list_versions(store, d.id):
        is_current = d.current is not None and v.id == d.current.id
        cols = st.columns([1, 3, 3, 2, 2])
        cols[0].markdown(f"**v{v.number}**" + (" (current)" if is_current else ""))
        cols[1].caption(f"main {v.main_model_id}")
        cols[2].caption(f"challenger {v.challenger_model_id or 'none'}")
        cols[3].caption(f"{v.created_by}, {v.created_at:%Y-%m-%d %H:%M}")
        if not is_current and cols[4].button("Make current", key=f"rollback_{v.id}"):
            with ui.guarded():
                deployments.rollback(store, d.name, v.number)
                st.rerun()


def runs_panel(store: Store, d: Deployment) -> None:
    """Run now, and the runs with their status (refreshed while any is in flight)."""
    worker = sidecars.worker_status(store.workspace)
    if not worker.is_alive:
        st.warning(f"The worker is not running ({worker.detail}): queued runs wait for it. "
                   "Start it with `modeldeck worker` (or `make run`).")
    override = st.text_input("Score another file instead (optional path or glob)",
                             key=f"run_source_{d.id}")
    if st.button("Run now", type="primary", key=f"run_{d.id}"):
        with ui.guarded():
            run = runs.enqueue_run(store, d.name, source_override=(
                {"kind": "file", "path": override} if override else None))
            st.toast(f"Queued run {run.id}.")
    found = runs.list_runs(store, d.name)
    if any(not r.is_finished for r in found):
        _live_runs(store, d.name)  # polls only while something is queued or running
    else:
        _runs_table(found)


@st.fragment(run_every=2)
def _live_runs(store: Store, name: str) -> None:
    found = runs.list_runs(store, name)
    if all(r.is_finished for r in found):
        st.rerun()  # everything ended: redraw the page once, without the timer
    for r in found:
        if not r.is_finished:
            st.progress(r.progress, text=f"{r.id}: {r.status} · {r.message}")
    _runs_table(found)


def _runs_table(found: list[Run]) -> None:
    if not found:
        st.caption("No run yet.")
        return
    st.dataframe(pd.DataFrame([{
        "run": f"results?run={r.id}", "status": r.status, "trigger": r.trigger,
        "queued (UTC)": r.queued_at, "rows": "" if r.rows_out is None else f"{r.rows_out:,}",
        "by": r.queued_by, "error": r.error or ""} for r in found]), hide_index=True,
        column_config={
            "run": st.column_config.LinkColumn("run", display_text=r"results\?run=(.*)")})


def schedule_panel(store: Store, d: Deployment) -> None:
    """Cron expression (or a preset) and time zone with a live preview; pause/resume; save."""
    from core import scheduler  # cronsim only where schedules are shown

    current = scheduler.get_schedule(store, d.name)  # fresh: `d` may predate a rerun
    if current is not None:
        state = "paused" if current.is_paused else "active"
        st.markdown(f"**Current schedule** ({state}): `{current.cron}` in {current.timezone}"
                    f" — {scheduler.describe(current.cron)}")
        label = "Resume" if current.is_paused else "Pause"
        if st.button(label, key=f"sched_toggle_{d.id}"):
            with ui.guarded():
                (scheduler.resume if current.is_paused else scheduler.pause)(store, d.name)
                st.rerun()
    else:
        st.caption("No schedule: runs start only when someone queues them.")
    presets = ["custom", *scheduler.PRESETS]
    preset = st.radio("Preset", presets, horizontal=True, key=f"sched_preset_{d.id}")
    default = scheduler.PRESETS.get(preset) or (current.cron if current else "0 6 * * 1")
    cron = st.text_input("Cron expression (minute hour day-of-month month day-of-week)",
                         value=default, key=f"sched_cron_{d.id}_{preset}")
    zones = scheduler.time_zones()
    zone = current.timezone if current and current.timezone in zones else "UTC"
    tz = st.selectbox("Time zone", zones, index=zones.index(zone), key=f"sched_tz_{d.id}")
    with ui.guarded():
        st.info(scheduler.describe(cron))
        st.caption("Next runs: " + ", ".join(
            f"{t:%a %Y-%m-%d %H:%M %Z}" for t in scheduler.next_times(cron, tz)))
    base = current or scheduler.Schedule(cron=cron)
    a, b, c = st.columns(3)
    catch_up = a.selectbox("Missed slots (worker down)", scheduler.CATCH_UP,
                           index=scheduler.CATCH_UP.index(base.catch_up),
                           key=f"sched_catch_{d.id}", help="one: a single catch-up run")
    overlap = b.selectbox("Slot while a run is in flight", scheduler.OVERLAP,
                          index=scheduler.OVERLAP.index(base.overlap), key=f"sched_ov_{d.id}")
    attempts = c.number_input("Attempts if the worker dies", 1, 10, base.max_attempts,
                              key=f"sched_att_{d.id}", help="1 = no retry")
    if st.button("Save schedule", type="primary", key=f"sched_save_{d.id}"):
        with ui.guarded():
            saved = scheduler.set_schedule(store, d.name, cron, tz, catch_up=catch_up,
                                           overlap=overlap, max_attempts=int(attempts))
            st.success(f"Schedule saved: {scheduler.describe(saved.cron)} ({saved.timezone}).")
    slots = scheduler.list_slots(store, d.name)
    if slots:
        st.markdown("**Recent slots**")
        st.dataframe(pd.DataFrame(slots), hide_index=True)
