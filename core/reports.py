"""Run reports: a self-contained HTML page per run, written after scheduled (or every) runs.

Settings live in the deployment's `report` JSON beside the drift thresholds (so promotion
copies them with the report box ticked): `enabled` (default off), `runs` ("scheduled", the
default, or "all") and `copy_to` (a folder confined to the workspace and the allowed roots).
After a qualifying run ends (succeeded or failed) the worker calls `after_run`, which writes
`runs/<id>/report.html` atomically and copies it to the folder; a copy failure is recorded
on the run's summary (`report.copy_error`), never fails the run, and `after_run` never raises.

The page has no script and fetches nothing: inline CSS, CSS bars and a small inline SVG
histogram (a plotly.js bundle alone would be 4+ MB). Every value goes through html.escape.
It reads the run row, its summary, the stored drift counts (`drift.drift_report` over this
one run, after `drift.after_run`) and the stored global importance: no model is loaded.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core import deployments, drift, explain, runs
from core.entities import Run
from core.errors import InvalidInput, ModelDeckError, NotFound
from core.runs import get_run, result_path, run_folder
from core.store import Store, query_files, utcnow
from core.workspace import Workspace, atomic_path

log = logging.getLogger("modeldeck.reports")

RUN_CHOICES = ("scheduled", "all")
HISTOGRAM_BINS = 20
TOP_FEATURES = 10
TOP_DRIFT = 15


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ReportSettings:
    """A deployment's report settings (its `report` JSON, drift thresholds aside)."""

    enabled: bool = False
    runs: str = "scheduled"  # scheduled | all
    copy_to: str | None = None

    @classmethod
    def from_report(cls, report: dict[str, Any] | None) -> ReportSettings:
        report = report or {}
        return cls(
            bool(report.get("enabled", False)),
            report.get("runs") or "scheduled",
            report.get("copy_to") or None,
        )

    def wants(self, run: Run) -> bool:
        """Whether a finished run of the deployment gets a report written automatically."""
        return (
            self.enabled
            and run.status in ("succeeded", "failed")
            and (self.runs == "all" or run.trigger == "schedule")
        )


def get_report_settings(store: Store, name: str) -> ReportSettings:
    """A deployment's report settings; raises NotFound."""
    row = store.query("SELECT report FROM deployments WHERE name = ?", [name]).first()
    if row is None:
        raise NotFound("deployment", name)
    return ReportSettings.from_report(json.loads(row["report"] or "{}"))


def set_report_settings(
    store: Store,
    name: str,
    *,
    enabled: bool | None = None,
    runs: str | None = None,
    copy_to: str | None = None,
    actor: str,
) -> ReportSettings:
    """Change a deployment's report settings (None keeps a value, copy_to "" removes the
    folder); one transaction with its audit entry ("report-settings").

    Raises InvalidInput for an unknown `runs` choice or a folder outside the workspace and the
    allowed roots (or naming a file), NotFound for an unknown deployment.
    """
    if runs is not None and runs not in RUN_CHOICES:
        raise InvalidInput(
            f"Unknown report choice '{runs}'.",
            "Write reports after 'scheduled' runs only, or after 'all' runs.",
        )
    if copy_to:
        copy_to = copy_to.strip()
        _copy_folder(store.workspace, copy_to)

    def change(report: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
        before = ReportSettings.from_report(report)
        chosen = {"enabled": enabled, "runs": runs, "copy_to": copy_to}
        after = ReportSettings(
            **{**asdict(before), **{k: v for k, v in chosen.items() if v is not None}}
        )
        after = ReportSettings(after.enabled, after.runs, after.copy_to or None)
        return {**report, **asdict(after)}, asdict(before), asdict(after)

    return ReportSettings.from_report(
        deployments.change_report(
            store, name, "report-settings", change, permission="report", actor=actor
        )
    )


def _copy_folder(ws: Workspace, folder: str) -> Path:
    """The copy-to folder, confined; raises InvalidInput outside the roots, for a file, or for
    one of ModelDeck's own folders."""
    path = ws.output_path(folder)
    if path.exists() and not path.is_dir():
        raise InvalidInput(
            f"The report folder '{folder}' is a file.",
            "Give a folder (it is created when missing), e.g. exports/reports.",
        )
    return path


# ---------------------------------------------------------------------------- writing
def report_path(workspace: Workspace, run_id: str) -> Path:
    """Where a run's report lives: runs/<id>/report.html."""
    return run_folder(workspace, run_id).report()


def after_run(store: Store, run: Run) -> None:
    """The worker's step after a run (after drift.after_run): write its report when the
    deployment's settings ask for one. Never raises (logged)."""
    try:
        row = store.query(
            "SELECT report FROM deployments WHERE id = ?", [run.deployment_id]
        ).first()
        if row is None:  # deleted meanwhile: no settings, no report
            return
        settings = ReportSettings.from_report(json.loads(row["report"] or "{}"))
        if settings.wants(run):
            write_report(store, run, settings.copy_to)
    except Exception:  # the run's outcome must not depend on this step
        log.exception("report of run %s not written", run.id)


def write_report(store: Store, run: Run, copy_to: str | None = None) -> Path:
    """Write the run's report atomically (replacing one), then copy it to `copy_to`; a copy
    failure is recorded on the run's summary, not raised. Returns the report's path."""
    target = report_path(store.workspace, run.id)
    page = build_report(store, run).encode()
    with atomic_path(target) as tmp:
        tmp.write_bytes(page)
    note: dict[str, Any] = {
        "path": str(target.relative_to(store.workspace.home)),
        "bytes": len(page),
        "written_at": utcnow().isoformat(),
    }
    if copy_to:
        try:
            folder = _copy_folder(store.workspace, copy_to)
            copy = folder / f"{run.deployment_name}-{run.id}.html"
            with atomic_path(copy) as tmp:
                shutil.copyfile(target, tmp)
            note["copied_to"] = str(copy)
        except (ModelDeckError, OSError) as exc:
            note["copy_error"] = f"Copying the report to '{copy_to}' failed: {exc}"
            log.warning("run %s: %s", run.id, note["copy_error"])
    store.write(lambda tx: runs.note_on_summary(tx, run.id, "report", note))
    return target


def report_file(store: Store, run_id: str) -> Path:
    """A finished run's report, written now when missing (any trigger, settings or not).

    Raises NotFound for an unknown run, InvalidInput for a run that has not finished.
    """
    run = get_run(store, run_id)
    if not run.is_finished:
        raise InvalidInput(
            f"Run {run.id} is still {run.status}: it has no report yet.",
            "Wait for it to finish, then ask again.",
        )
    path = report_path(store.workspace, run.id)
    return path if path.exists() else write_report(store, run)


# ---------------------------------------------------------------------------- the page
def build_report(store: Store, run: Run) -> str:
    """The run's report as one HTML document (no script, no external resource)."""
    summary = run.summary or {}
    context = _context(store, run)
    sections = [
        _overview(run, summary, context),
        _metrics(summary),
        _predictions(store, run, summary),
        _quality(summary),
        _drift(store, run, summary),
        _importance(store, run, summary),
        _challenger(summary),
        _notes(summary),
    ]
    title = f"{run.deployment_name} · run {run.id} · {run.status}"
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>ModelDeck run report</h1><p class='sub'>{_e(title)}</p>"
        + "".join(s for s in sections if s)
        + f"<footer>Generated {_e(_time(utcnow()))} by ModelDeck.</footer></body></html>"
    )


STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;"
    "color:#1f2933}h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;margin-top:1.8em;"
    "border-bottom:1px solid #d9e2ec}.sub{color:#52606d;margin-top:.2em}"
    "table{border-collapse:collapse;width:100%}td,th{padding:.25em .5em;text-align:left;"
    "border-bottom:1px solid #f0f4f8;vertical-align:top}th{color:#52606d;font-weight:600}"
    ".num{text-align:right;font-variant-numeric:tabular-nums}"
    ".bar{background:#f0f4f8;height:.9em;min-width:8em;border-radius:2px}"
    ".bar span{display:block;height:100%;background:#3e7bfa;border-radius:2px}"
    ".status{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff}"
    ".succeeded,.stable{background:#2f9e44}.failed,.drifted{background:#e03131}"
    ".moderate{background:#f08c00}.cancelled,.n\\/a{background:#868e96}"
    ".error{background:#fff5f5;border-left:4px solid #e03131;padding:.5em 1em}"
    "footer{margin-top:2em;color:#9aa5b1;font-size:.85em}svg rect{fill:#3e7bfa}"
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _time(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else _e(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def _bar(share: float) -> str:
    width = max(0.0, min(float(share), 1.0)) * 100
    return f"<div class='bar'><span style='width:{width:.1f}%'></span></div>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table of already escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _context(store: Store, run: Run) -> dict[str, Any]:
    """Version number, pins, environment and slot time of the run; one read."""
    row = store.query(
        "SELECT v.number, v.main_model_id, v.challenger_model_id, d.environment,"
        " (SELECT max(slot_at) FROM schedule_slots WHERE run_id = $run) AS slot_at"
        " FROM (SELECT 1) AS one LEFT JOIN deployment_versions v ON v.id = $version"
        " LEFT JOIN deployments d ON d.id = $deployment",
        {"run": run.id, "version": run.version_id, "deployment": run.deployment_id},
    ).first()
    return row or {}


def _overview(run: Run, summary: dict[str, Any], context: dict[str, Any]) -> str:
    models = [
        f"{role}: {_e(m.get('model_id'))} ({_e(m.get('algorithm'))})"
        for role in ("main", "challenger")
        if (m := summary.get(role))
    ]
    models = models or [
        _e(f"main: {context.get('main_model_id') or '—'}")
        + (
            _e(f", challenger: {context['challenger_model_id']}")
            if context.get("challenger_model_id")
            else ""
        )
    ]
    seconds = (
        (run.finished_at - run.started_at).total_seconds()
        if (run.finished_at and run.started_at)
        else None
    )
    environment = context.get("environment") or "deleted"
    rows = [
        ("Deployment", _e(f"{run.deployment_name} ({environment})")),
        ("Version", _e(f"v{context['number']}" if context.get("number") else run.version_id)),
        ("Models", "<br>".join(models)),
        ("Trigger", _e(f"{run.trigger} (queued by {run.queued_by})")),
        ("Slot", _e(_time(context.get("slot_at")))),
        ("Queued", _e(_time(run.queued_at))),
        ("Started", _e(_time(run.started_at))),
        ("Finished", _e(_time(run.finished_at))),
        ("Duration", "—" if seconds is None else _e(f"{seconds:.1f} s")),
        ("Rows in / out", f"{_num(run.rows_in)} / {_num(run.rows_out)}"),
        ("Status", f"<span class='status {_e(run.status)}'>{_e(run.status)}</span>"),
    ]
    body = _table(["", ""], [[f"<b>{_e(k)}</b>", v] for k, v in rows])
    if run.error:
        body += f"<p class='error'><b>Why the run {_e(run.status)}:</b> {_e(run.error)}</p>"
    return _section("Run", body)


def _metrics(summary: dict[str, Any]) -> str:
    rows = []
    for role in ("main", "challenger"):
        metrics = (summary.get(role) or {}).get("metrics") or {}
        rows += [
            [_e(role), _e(name), f"<span class='num'>{_num(value)}</span>"]
            for name, value in metrics.items()
            if isinstance(value, int | float)
        ]
    if not rows:
        return ""
    label = summary.get("label_column")
    return _section(
        "Metrics",
        f"<p>Against the label column <b>{_e(label)}</b>.</p>"
        + _table(["Model", "Metric", "Value"], rows),
    )


def _predictions(store: Store, run: Run, summary: dict[str, Any]) -> str:
    main = summary.get("main") or {}
    if main.get("class_counts"):
        counts = main["class_counts"]
        total = sum(counts.values()) or 1
        rows = [
            [_e(k), f"<span class='num'>{n:,}</span>", _e(f"{n / total:.1%}"), _bar(n / total)]
            for k, n in counts.items()
        ]
        return _section("Prediction distribution", _table(["Class", "Rows", "Share", ""], rows))
    if main.get("prediction_summary"):
        stats = ", ".join(
            f"{_e(k)} {_num(v)}" for k, v in main["prediction_summary"].items() if v is not None
        )
        return _section("Prediction distribution", _histogram(store, run) + f"<p>{stats}</p>")
    return ""


def _histogram(store: Store, run: Run) -> str:
    """An inline SVG histogram of the main predictions (regression), from the results file."""
    path = result_path(store.workspace, run.id)
    if not path.exists():
        return ""
    rows = query_files(
        "WITH p AS (SELECT prediction::DOUBLE AS y FROM read_parquet(?)),"
        " r AS (SELECT min(y) AS lo, max(y) AS hi FROM p)"
        " SELECT least(CAST(floor((y - lo) / nullif(hi - lo, 0) * ?) AS INTEGER), ? - 1) AS b,"
        " count(*) AS n, any_value(lo) AS lo, any_value(hi) AS hi FROM p, r"
        " WHERE y IS NOT NULL GROUP BY b ORDER BY b",
        [str(path), HISTOGRAM_BINS, HISTOGRAM_BINS],
    ).dicts()
    if not rows:
        return ""
    counts = {r["b"] or 0: r["n"] for r in rows}
    top = max(counts.values())
    width, height, step = 600, 120, 600 / HISTOGRAM_BINS
    bars = "".join(
        f"<rect x='{b * step + 1:.1f}' y='{height - n / top * height:.1f}' "
        f"width='{step - 2:.1f}' height='{n / top * height:.1f}'><title>{n:,}</title></rect>"
        for b, n in counts.items()
    )
    lo, hi = rows[0]["lo"], rows[0]["hi"]
    return (
        f"<svg role='img' aria-label='histogram of predictions' viewBox='0 0 {width} "
        f"{height}' width='100%' height='{height}'>{bars}</svg>"
        f"<p class='sub'>{HISTOGRAM_BINS} bins from {_num(lo)} to {_num(hi)}.</p>"
    )


def _quality(summary: dict[str, Any]) -> str:
    quality = summary.get("input_quality")
    if not quality or quality.get("mean") is None:
        return ""
    rows = [[_e("Mean input quality"), _num(quality["mean"])]]
    columns = quality.get("columns") or {}
    rows += [
        [_e(label), _num(quality.get(key, 0)) + _e(_columns(columns.get(key)))]
        for key, label in (
            ("missing", "Missing values"),
            ("out_of_range", "Out of training range"),
            ("unseen_category", "Unseen categories"),
        )
    ]
    return _section("Input quality", _table(["", ""], rows))


def _columns(per_column: dict[str, int] | None) -> str:
    """ " (age 2, plan 1)": the columns behind a count, most affected first."""
    if not per_column:
        return ""
    ranked = sorted(per_column.items(), key=lambda item: (-item[1], item[0]))
    return " (" + ", ".join(f"{c} {n:,}" for c, n in ranked[:5]) + ")"


def _drift(store: Store, run: Run, summary: dict[str, Any]) -> str:
    if run.status != "succeeded" or not summary.get("results_written"):
        return ""
    try:
        report = drift.drift_report(store, run.deployment_name, run_id=run.id)
    except (ModelDeckError, OSError) as exc:
        return _section("Drift", f"<p>Not available: {_e(exc)}</p>")
    features = sorted(report.scored, key=lambda f: -(f.psi or 0))[:TOP_DRIFT]
    if report.prediction is not None:
        features.append(report.prediction)
    top = max([f.psi or 0 for f in features] + [report.thresholds.drifted])
    rows = [
        [
            _e(f.name),
            f"<span class='status {_e(f.status)}'>{_e(f.status)}</span>",
            _num(f.psi),
            _bar((f.psi or 0) / top),
            _e(f"{f.distance_kind} {_num(f.distance)}"),
        ]
        for f in features
    ]
    head = (
        f"<p>{len(report.drifted)} of {len(report.scored)} features drifted (PSI "
        f"thresholds {report.thresholds.moderate:g} / {report.thresholds.drifted:g}, "
        f"against the training profile of {_e(report.model_id)}).</p>"
    )
    return _section(
        "Drift",
        head
        + _table(["Feature", "Status", "PSI", "", "Distance"], rows)
        + "".join(f"<p class='sub'>{_e(n)}</p>" for n in report.notes),
    )


def _importance(store: Store, run: Run, summary: dict[str, Any]) -> str:
    if not summary.get("results_written"):
        return ""
    found = explain.get_importance(store, run.id)
    if found is None or found.error or not found.features:
        return ""
    features = found.features[:TOP_FEATURES]
    top = max(v for _, v in features) or 1
    rows = [[_e(name), _num(value), _bar(value / top)] for name, value in features]
    return _section(
        "Global importance",
        f"<p>Mean |SHAP| on the {_e(found.scale)} scale over "
        f"{found.rows:,} rows ({_e(found.explainer)}).</p>"
        + _table(["Feature", "Mean |SHAP|", ""], rows),
    )


def _challenger(summary: dict[str, Any]) -> str:
    challenger = summary.get("challenger")
    if not challenger:
        return ""
    if challenger.get("agreement_rate") is not None:
        text = f"agrees with the main model on {challenger['agreement_rate']:.1%} of rows"
    else:
        text = (
            f"differs from the main model by {_num(challenger.get('mean_abs_difference'))}"
            " on average (mean absolute difference)"
        )
    return _section(
        "Challenger",
        f"<p>{_e(challenger.get('model_id'))} ({_e(challenger.get('algorithm'))}) {_e(text)}.</p>",
    )


def _notes(summary: dict[str, Any]) -> str:
    notes = list(summary.get("notes") or [])
    if not notes:
        return ""
    return _section("Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
