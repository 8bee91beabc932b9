"""The Validation tab and the promotion gate's checks. Streamlit only; calls core.validation
and core.gate. The tab queues validations for the worker (the UI never scores data itself)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import explain, promotion, registry, ui, validation
from core.engine.profiles import plain_number
from core.entities import Deployment
from core.store import Store
from core.ui import explain as ui_explain
from core.ui import monitoring_charts
from core.worker import sidecars
from core.workspace import save_upload

ROLES = ("main", "challenger", "production")


# ---------------------------------------------------------------------------- figures
def _start(store: Store, d: Deployment) -> None:
    why = ui.denied(store, d.project_id, "validate")
    if why:
        ui.say_denied(why)
        return
    with st.expander("Validate on labelled data", expanded=True):
        upload = st.file_uploader(
            "Upload a labelled file", type=["csv", "parquet", "json"], key=f"val_upload_{d.id}"
        )
        path = st.text_input("…or a path or glob inside the workspace", key=f"val_path_{d.id}")
        target = (
            registry.get_model(store, d.current.main_model_id).schema.target if d.current else ""
        )
        label = st.text_input("Label column", value=target, key=f"val_label_{d.id}")
        if st.button("Validate", type="primary", key=f"val_start_{d.id}"):
            with ui.guarded():
                if upload is not None:
                    path = str(save_upload(store.workspace, upload.name, upload.getvalue()))
                v = validation.start_validation(store, d.name, path, label, actor=ui.actor())
                note = (
                    ""
                    if sidecars.worker_status(store.workspace).is_alive
                    else (" The worker is not running: start it with `modeldeck worker`.")
                )
                st.success(f"Validation {v.id} queued; the worker runs it.{note}")


def _headline(v: validation.Validation) -> dict[str, Any]:
    metrics = (v.report.get("main") or {}).get("metrics") or {}
    return {
        k: metrics.get(k)
        for k in ("accuracy", "f1", "roc_auc", "mae", "rmse", "r2")
        if k in metrics
    }


def _listing(found: list[validation.Validation], d: Deployment) -> None:
    st.dataframe(
        [
            {
                "id": v.id,
                "version": f"v{v.version_number}",
                "status": v.status,
                "when (UTC)": v.created_at,
                "by": v.created_by,
                "data": v.dataset_path,
                "label": v.label_column,
                **_headline(v),
            }
            for v in found
        ],
        hide_index=True,
        key=f"val_list_{d.id}",
    )


def _metrics_table(store: Store, report: dict[str, Any]) -> None:
    names = ui.model_names(store)  # production's model may belong to another experiment
    rows = []
    for role in ROLES:
        part = report.get(role)
        if part:
            rows.append(
                {
                    "model": f"{role}: {ui.named(names, part['model_id'])}",
                    **{k: v for k, v in (part.get("metrics") or {}).items() if k != "rows"},
                    "note": part.get("error") or "",
                }
            )
    st.dataframe(rows, hide_index=True)


def _per_model(report: dict[str, Any], key: str) -> None:
    for role in ROLES:
        part = report.get(role)
        if not part or part.get("error"):
            continue
        if part.get("confusion"):
            ui.chart(
                monitoring_charts.confusion_figure(part["confusion"], f"{role}: confusion matrix"),
                key=f"{key}_cm_{role}",
            )
            st.dataframe(
                [{**c, "class": str(c["class"])} for c in part["per_class"]],
                hide_index=True,
                key=f"{key}_pc_{role}",
            )
            st.caption(
                "Macro: "
                + ", ".join(f"{k} {v:.4f}" for k, v in part["macro"].items() if v is not None)
            )
        if part.get("residuals"):
            ui.chart(
                monitoring_charts.residual_figure(part["residuals"], f"{role}: residuals"),
                key=f"{key}_res_{role}",
            )


def _errors(store: Store, v: validation.Validation, key: str) -> None:
    errors = v.report["error_analysis"]
    st.markdown(
        f"**Error analysis**: overall {errors['measure']} {errors['overall']:.4f}; "
        f"slices of at least {errors['min_slice_rows']} rows, highest first."
    )
    st.dataframe(errors["slices"], hide_index=True, key=f"{key}_slices")
    worst = errors["worst_rows"]
    if not worst:
        return
    by: explain.By = "key" if errors.get("key") else "row"
    event = st.dataframe(
        [_worst_row(r, has_key=by == "key") for r in worst],
        hide_index=True,
        key=f"{key}_worst",
        on_select="rerun",
        selection_mode="single-row",
    )
    st.page_link(
        "pages/results.py",
        query_params={"run": v.run_id},
        label=f"All rows of this validation (run {v.run_id})",
        icon=":material/table:",
    )
    chosen = [i for i in (event.selection.rows if event else []) if i < len(worst)]
    if not chosen:
        st.caption("Select a worst row (the box at its left) to see why the model predicted it.")
        return
    with ui.guarded():
        [e] = explain.explain_rows(store, v.run_id, [worst[chosen[0]][by]], "main", None, by=by)
        ui_explain.show_explanation(e, registry.get_model(store, e.model_id))


def _worst_row(row: dict[str, Any], has_key: bool) -> dict[str, Any]:
    """A worst row as a person reads it: no empty key column, plain numbers."""

    def shown(value: Any) -> Any:
        if isinstance(value, float):
            return plain_number(value)
        return "" if value is None else str(value)

    return {k: shown(v) if k != "row" else v for k, v in row.items() if k != "key" or has_key}


def _report(store: Store, v: validation.Validation) -> None:
    key = f"val_{v.id}"
    if v.status == "queued":
        _waiting(store, v.id)
        return
    if v.status == "failed":
        st.error(f"**Validation {v.id} failed.** {v.error}", icon="⚠️")
        return
    report = v.report
    st.caption(
        f"v{v.version_number} on {v.dataset_path} (SHA-256 {v.dataset_sha256[:12]}…), "
        f"{report['rows']:,} rows, label '{v.label_column}'."
    )
    _metrics_table(store, report)
    latency, throughput = report["latency"], report["throughput"]
    cols = st.columns(3)
    cols[0].metric("Single-row p50", f"{latency['p50_ms']:.1f} ms")
    cols[1].metric("Single-row p99", f"{latency['p99_ms']:.1f} ms")
    cols[2].metric("Batch throughput", f"{throughput['rows_per_second'] or 0:,.0f} rows/s")
    _per_model(report, key)
    _errors(store, v, key)


@st.fragment(run_every=2)
def _waiting(store: Store, validation_id: str) -> None:
    """Polls while the validation is in flight; redraws the whole tab once it has ended."""
    v = validation.get_validation(store, validation_id)
    if v.status != "queued":
        st.rerun()  # the report (and the listing's status) in one redraw, without the timer
    st.info(
        f"Validation {v.id} is waiting for the worker or running. This shows the report "
        "by itself when it is done.",
        icon="⏳",
    )


def _comparison(found: list[validation.Validation], chosen: validation.Validation) -> None:
    same = [
        v for v in found if v.status == "succeeded" and v.dataset_sha256 == chosen.dataset_sha256
    ]
    if len(same) < 2 and not (chosen.report.get("production") or {}).get("metrics"):
        return
    st.markdown("**Across versions, on the same data**")
    rows = [{"version": f"v{v.version_number}", "validation": v.id, **_headline(v)} for v in same]
    production = chosen.report.get("production") or {}
    if production.get("metrics"):
        rows.append(
            {
                "version": f"production v{production['version']}",
                "validation": chosen.id,
                **{k: production["metrics"].get(k) for k in _headline(chosen)},
            }
        )
    st.dataframe(rows, hide_index=True, key=f"val_compare_{chosen.id}")


def _thresholds(store: Store, d: Deployment) -> None:
    current = ui.cached_read(promotion.get_thresholds, store, d.name)
    keys = {
        "max_metric_drop": f"gate_drop_{d.id}",
        "max_error_increase": f"gate_rise_{d.id}",
        "latency_budget_ms": f"gate_budget_{d.id}",
    }
    for name, key in keys.items():  # the stored values, also right after a save
        st.session_state[key] = getattr(current, name)

    def save() -> str:  # a callback: the gate's checks render with the saved thresholds
        now = st.session_state
        saved = promotion.set_thresholds(
            store, d.name, promotion.Thresholds(*(now[k] for k in keys.values())), actor=ui.actor()
        )
        return (
            f"Gate thresholds saved: metric drop at most {saved.max_metric_drop:g}, error "
            f"increase at most {saved.max_error_increase:.1%}, p99 latency at most "
            f"{saved.latency_budget_ms:g} ms."
        )

    with st.expander("Promotion gate thresholds"), st.form(f"gate_thresholds_{d.id}"):
        a, b, c = st.columns(3)
        a.number_input(
            "Max metric drop (points)",
            0.0,
            1.0,
            step=0.005,
            format="%.3f",
            help="Accuracy, F1, ROC-AUC, R2",
            key=keys["max_metric_drop"],
        )
        b.number_input(
            "Max error increase (relative)",
            0.0,
            None,
            step=0.005,
            format="%.3f",
            help="MAE and RMSE; 0.01 = 1 %",
            key=keys["max_error_increase"],
        )
        c.number_input(
            "Latency budget p99 (ms)", 0.1, None, step=10.0, key=keys["latency_budget_ms"]
        )
        why = ui.denied(store, d.project_id, "gate-thresholds")
        ui.say_denied(why)
        st.form_submit_button(
            "Save thresholds", on_click=ui.act, args=(save,), disabled=bool(why), help=why
        )


def validation_tab(store: Store, d: Deployment) -> None:
    """Validate on labelled data; stored reports."""
    if d.current is None:
        st.info("Deploy a model first: a validation scores the current version.")
        return
    _start(store, d)
    if d.environment == "staging":
        _thresholds(store, d)
    found = ui.cached_read(validation.list_validations, store, d.name)
    if not found:
        st.info(
            f"No validation yet. Give a labelled file above, or run `modeldeck validate "
            f"{d.name} --data PATH`."
        )
        return
    _listing(found, d)
    # Pick an id, not a Validation: a selectbox hands back the object of an earlier run, which
    # kept showing "queued" after the validation had finished. No status in the label either:
    # the browser kept showing the label of the option as first drawn ("queued") after the
    # report had arrived (the listing above and the report below say the status).
    by_id = {v.id: v for v in found}
    chosen = by_id[
        st.selectbox(
            "Report",
            list(by_id),
            key=f"val_pick_{d.id}",
            format_func=lambda i: (
                f"{i} · v{by_id[i].version_number} · {by_id[i].created_at:%Y-%m-%d %H:%M}"
            ),
        )
    ]
    _report(store, chosen)
    if chosen.status == "succeeded":
        _comparison(found, chosen)


# ---------------------------------------------------------------------------- gate
def promotion_checks(store: Store, d: Deployment) -> tuple[bool, str | None]:
    """Show each gate check; returns (may promote, override reason or None).

    While a check fails, promoting needs a typed reason (audited as the override's reason).
    """
    checks = ui.cached_read(promotion.check_gate, store, d.name)
    for c in checks:
        st.markdown(f"{'✅' if c.passed else '❌'} **{c.name}**: {c.detail}")
        if not c.passed and c.fix:
            st.caption(f"How to fix: {ui.with_step(c.fix, c.step)}")
    if not promotion.failing(checks):
        return True, None
    why = ui.denied(store, d.project_id, "override-gate")
    reason = st.text_area(
        "Override reason (required while a check fails; kept in the audit log)",
        key=f"gate_override_{d.id}",
        disabled=bool(why),
        help=why,
    )
    return bool(reason.strip()), reason.strip() or None
