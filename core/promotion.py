"""Promotion: a deployment's moves between environments and out of service. Promote a staging
deployment to production behind the gate, and delete a deployment (which cancels its runs,
so it lives above core/runs.py, not in core/deployments.py).

The promotion gate: the checks a staging deployment must pass before it replaces production.

Checks (`check_gate`), each with what was found and how to fix it:
- validation: a succeeded validation of staging's current version exists;
- metrics: no headline metric worse than production's current main model on the same
  validation data by more than the thresholds: accuracy, F1 and ROC-AUC (classification) or
  R2 (regression) by at most `max_metric_drop` points (0.01 = 1 point), MAE and RMSE by at
  most `max_error_increase` relative (0.01 = 1 %);
- schema: production's current main model's inputs (what production's pipeline produces) can
  feed the new main model: every feature present, of the same kind;
- latency: the validated single-row p99 within `latency_budget_ms`.
Thresholds are per deployment (table `gate_thresholds`, migration 0004), defaults below;
changing them is audited. There are no owners yet: an override records the actor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core import access, audit, deployments, runs
from core.deployments import get_deployment
from core.entities import Deployment
from core.errors import Conflict, Forbidden, InvalidInput, Step
from core.pipeline import validate_pipeline
from core.registry import get_model
from core.runs import touch_queue_marker
from core.store import Store, Tx, utcnow
from core.validation import Validation, latest_for_version

HIGHER_IS_BETTER = {
    "binary": ("accuracy", "f1", "roc_auc"),
    "multiclass": ("accuracy", "f1", "roc_auc"),
    "regression": ("r2",),
}
LOWER_IS_BETTER = {"regression": ("mae", "rmse")}


@dataclass(frozen=True)
class Thresholds:
    max_metric_drop: float = 0.01  # absolute, for higher-is-better metrics
    max_error_increase: float = 0.01  # relative, for MAE and RMSE
    latency_budget_ms: float = 100.0  # single-row p99


@dataclass(frozen=True)
class Check:
    """One gate check: whether it passed, what was found, and how to fix a failure."""

    name: str
    passed: bool
    detail: str
    fix: str = ""
    step: Step | None = None  # the action the fix points to, worded by each front end


# ---------------------------------------------------------------------------- thresholds
def get_thresholds(store: Store, name: str) -> Thresholds:
    """A deployment's gate thresholds (the defaults until set)."""
    return _thresholds(store, get_deployment(store, name).id)


def _thresholds(store: Store, deployment_id: str) -> Thresholds:
    row = store.query(
        "SELECT max_metric_drop, max_error_increase, latency_budget_ms"
        " FROM gate_thresholds WHERE deployment_id = ?",
        [deployment_id],
    ).first()
    return Thresholds(**row) if row else Thresholds()


def set_thresholds(
    store: Store,
    name: str,
    thresholds: Thresholds,
    *,
    actor: str,
) -> Thresholds:
    """Store a deployment's gate thresholds; one transaction, audited as `gate-thresholds`.

    Raises InvalidInput for a negative value or a latency budget that is not positive.
    """
    values = asdict(thresholds)
    if min(values.values()) < 0 or thresholds.latency_budget_ms <= 0:
        raise InvalidInput(
            "Gate thresholds must be zero or more, and the latency budget more than 0 ms.",
            "E.g. a drop of 0.01 (1 point), an increase of 0.01 (1 %), 100 ms.",
        )
    d = get_deployment(store, name)
    before = _thresholds(store, d.id)

    def write(tx: Tx) -> None:
        access.require(tx, actor, d.project_id, "gate-thresholds")
        tx.execute(
            "INSERT OR REPLACE INTO gate_thresholds VALUES (?, ?, ?, ?, ?, ?)",
            [d.id, *values.values(), actor, utcnow()],
        )
        audit.record(
            tx,
            actor=actor,
            action="gate-thresholds",
            deployment_id=d.id,
            deployment_name=d.name,
            before=asdict(before),
            after=values,
        )

    store.write(write)
    return thresholds


# ---------------------------------------------------------------------------- checks
def _production(store: Store, d: Deployment) -> Deployment | None:
    row = store.query(
        "SELECT name FROM deployments WHERE experiment_id = ? AND environment ="
        " 'production' AND current_version_id IS NOT NULL"
        " ORDER BY created_at LIMIT 1",
        [d.experiment_id],
    ).first()
    return get_deployment(store, row["name"]) if row else None


def _validation_check(d: Deployment, v: Validation | None) -> Check:
    how = f"Validate '{d.name}' on a labelled file."
    if v is None:
        return Check(
            "validation",
            False,
            f"No validation yet of version v{d.current.number if d.current else '?'}.",
            how,
            Step("validate", d.name),
        )
    if v.status == "queued":
        return Check(
            "validation",
            False,
            f"Validation {v.id} is still running.",
            "Wait for it to finish (the worker runs it).",
        )
    if v.status != "succeeded":
        return Check(
            "validation",
            False,
            f"Validation {v.id} failed: {v.error}",
            how,
            Step("validate", d.name),
        )
    return Check(
        "validation",
        True,
        f"Validated on {v.dataset_path} ({v.report['rows']:,} rows,"
        f" label '{v.label_column}') by {v.created_by}.",
    )


def _compare(
    task: str, mine: dict[str, Any], theirs: dict[str, Any], limits: Thresholds
) -> tuple[list[str], list[str]]:
    """(worse beyond the threshold, within it) metric descriptions."""
    worse: list[str] = []
    fine: list[str] = []
    for metric in HIGHER_IS_BETTER.get(task, ()):
        a, b = mine.get(metric), theirs.get(metric)
        if a is None or b is None:
            continue
        text = f"{metric} {a:.4f} vs {b:.4f}"
        (worse if b - a > limits.max_metric_drop + 1e-12 else fine).append(text)
    for metric in LOWER_IS_BETTER.get(task, ()):
        a, b = mine.get(metric), theirs.get(metric)
        if a is None or b is None:
            continue
        text = f"{metric} {a:.4g} vs {b:.4g}"
        limit = abs(b) * (1 + limits.max_error_increase)
        (worse if a > limit + 1e-12 else fine).append(text)
    return worse, fine


def _metrics_check(
    v: Validation | None, production: Deployment | None, limits: Thresholds
) -> Check:
    if production is None or production.current is None:
        return Check("metrics", True, "No production deployment yet: nothing to compare with.")
    if v is None or v.status != "succeeded":
        return Check(
            "metrics",
            False,
            "Not compared with production: no validation.",
            "Validate the current version first.",
        )
    theirs = v.report.get("production") or {}
    current = production.current.main_model_id
    if theirs.get("model_id") != current:
        return Check(
            "metrics",
            False,
            f"Production's main model is now {current}; the validation compared with another one.",
            "Validate again, to compare with production's current model.",
        )
    if theirs.get("error"):
        return Check(
            "metrics",
            False,
            f"Production's model could not score the validation data: {theirs['error']}",
            "Validate on data both models can read, or override with a reason.",
        )
    worse, fine = _compare(
        v.report["task"], v.report["main"]["metrics"] or {}, theirs.get("metrics") or {}, limits
    )
    allowed = (
        f"at most {limits.max_metric_drop:g} lower, errors at most "
        f"{limits.max_error_increase:.0%} higher"
    )
    if worse:
        return Check(
            "metrics",
            False,
            f"Worse than production ({current}) beyond the "
            f"threshold ({allowed}): {'; '.join(worse)}.",
            "Train a better model, or override with a reason.",
        )
    return Check(
        "metrics",
        True,
        f"Not worse than production ({current}) beyond the "
        f"threshold ({allowed}): {'; '.join(fine) or 'no shared metric'}.",
    )


def _schema_check(store: Store, d: Deployment, production: Deployment | None) -> Check:
    if production is None or production.current is None or d.current is None:
        return Check("schema", True, "No production deployment yet: no input to match.")
    new = get_model(store, d.current.main_model_id).schema
    old = {f.name: f for f in get_model(store, production.current.main_model_id).schema.features}
    missing = [f.name for f in new.features if f.name not in old]
    changed = [
        f"{f.name} ({old[f.name].kind} -> {f.kind})"
        for f in new.features
        if f.name in old and old[f.name].kind != f.kind
    ]
    if missing or changed:
        parts = (
            [f"needs columns production's input lacks: {', '.join(missing)}"] if missing else []
        ) + ([f"kind changed: {', '.join(changed)}"] if changed else [])
        return Check(
            "schema",
            False,
            "The new model " + "; ".join(parts) + ".",
            "Promote with the pipeline copied (it must produce these columns), or "
            "override with a reason.",
        )
    return Check(
        "schema",
        True,
        f"Production's input has all {len(new.features)} features "
        "of the new model, of the same kinds.",
    )


def _latency_check(v: Validation | None, limits: Thresholds) -> Check:
    if v is None or v.status != "succeeded":
        return Check(
            "latency", False, "Not measured: no validation.", "Validate the current version first."
        )
    p99 = v.report["latency"]["p99_ms"]
    budget = limits.latency_budget_ms
    if p99 > budget:
        return Check(
            "latency",
            False,
            f"Single-row p99 {p99:.1f} ms is over the budget of {budget:g} ms.",
            "Use a faster model, or raise the budget or override with a reason.",
        )
    return Check("latency", True, f"Single-row p99 {p99:.1f} ms within {budget:g} ms.")


def check_gate(store: Store, staging_name: str) -> list[Check]:
    """Every gate check of promoting `staging_name` now (reads only; raises NotFound)."""
    d = get_deployment(store, staging_name)
    v = latest_for_version(store, d.current.id) if d.current else None
    limits = _thresholds(store, d.id)
    production = _production(store, d)
    return [
        _validation_check(d, v),
        _metrics_check(v, production, limits),
        _schema_check(store, d, production),
        _latency_check(v, limits),
    ]


def failing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]


def outcomes(checks: list[Check]) -> dict[str, str]:
    """The checks as {name: pass | fail: detail}, for the audit log."""
    return {c.name: "pass" if c.passed else f"fail: {c.detail}" for c in checks}


# ---------------------------------------------------------------------------- promoting
def production_name(store: Store, staging: Deployment) -> str:
    """The name promotion gives (or gave) the staging deployment's production counterpart."""
    main = get_model(store, staging.current.main_model_id) if staging.current else None

    def read(tx: Tx) -> str:
        found = deployments.find_in_environment(tx, staging.experiment_id, "production")
        if found is not None or main is None:
            return found.name if found else f"{staging.name}-production"
        return deployments.free_name(tx, main, "production")

    return store.read(read)


def _for_environment(text: str, staging_name: str, production_name: str, sep: str) -> str:
    """A staging sink's path or table renamed for production: the staging deployment's name,
    else the word staging, is replaced; a path naming neither gets the environment appended."""
    if staging_name in text:
        return text.replace(staging_name, production_name)
    if staging_name.replace("-", "_") in text:
        return text.replace(staging_name.replace("-", "_"), production_name.replace("-", "_"))
    if "staging" in text:
        return text.replace("staging", "production")
    return f"{text}{sep}production"


def production_sinks(store: Store, staging_name: str) -> list[dict[str, Any]]:
    """Staging's sinks with their own production paths and tables (what promote proposes), so
    production never writes into staging's folder or table."""
    staging = deployments.get_deployment(store, staging_name)
    target = production_name(store, staging)
    out = []
    for sink in staging.pipeline.get("sinks", []):
        sink = dict(sink)
        if sink.get("kind") == "folder":
            sink["path"] = _for_environment(sink["path"], staging.name, target, "-")
        elif sink.get("table"):
            sink["table"] = _for_environment(sink["table"], staging.name, target, "_")
        out.append(sink)
    return out


def promote(
    store: Store,
    staging_name: str,
    *,
    copy_pipeline: bool = True,
    copy_schedule: bool = True,
    copy_report: bool = True,
    override_reason: str | None = None,
    sinks: list[dict[str, Any]] | None = None,
    actor: str,
) -> Deployment:
    """Make staging's current models production's current version; one transaction.

    Creates the production deployment on first promotion. Idempotent: promoting models that
    production already serves changes nothing, so two people promoting at once yield one new
    version. Guarded by the promotion gate (the gate): raises Forbidden naming every failing
    check unless a written `override_reason` is given (InvalidInput when it is blank); the
    audit entry keeps the reason and the checks' outcomes. A copied pipeline gets production's
    own sinks: `sinks` as given, else `production_sinks` (staging's, renamed).
    """
    staging = deployments.get_deployment(store, staging_name)
    store.read(lambda tx: access.require(tx, actor, staging.project_id, "promote"))
    if staging.environment != "staging" or staging.current is None:
        raise InvalidInput(
            f"'{staging.name}' is not a staging deployment with a model.",
            "Promote from a staging deployment; deploy to it first.",
        )
    if override_reason is not None and not override_reason.strip():
        raise InvalidInput(
            "An override of the promotion gate needs a written reason.",
            "Say why promoting despite the failing checks is right; it is kept in the audit log.",
        )
    reason = (override_reason or "").strip()
    own_sinks = sinks if sinks is not None else production_sinks(store, staging.name)
    prod_pipeline = validate_pipeline({**staging.pipeline, "sinks": own_sinks}, store.workspace)
    main = get_model(store, staging.current.main_model_id)
    checks = check_gate(store, staging.name)
    failed = failing(checks)
    target = store.read(
        lambda tx: deployments.find_in_environment(tx, staging.experiment_id, "production")
    )
    serving = (
        target is not None
        and target.current is not None
        and (target.current.main_model_id, target.current.challenger_model_id)
        == (staging.current.main_model_id, staging.current.challenger_model_id)
    )
    if failed and reason and not serving:
        store.read(lambda tx: access.require(tx, actor, staging.project_id, "override-gate"))
    if failed and not reason and not serving:
        raise Forbidden(
            f"The promotion gate of '{staging.name}' fails: "
            + " ".join(f"[{c.name}] {c.detail}" for c in failed),
            "Fix them ("
            + " ".join(c.fix for c in failed if c.fix)
            + ") or override the gate with a written reason.",
            step=Step("override-gate", staging.name),
        )

    def write(tx: Tx) -> str:
        access.require(tx, actor, staging.project_id, "promote")
        fresh = deployments.load_deployment(tx, staging.id)
        if fresh is None or fresh.current is None:
            raise Conflict(f"'{staging.name}' changed while promoting.", "Try again.")
        target = deployments.find_in_environment(tx, fresh.experiment_id, "production")
        if target is None:
            target = deployments.create_deployment(
                tx,
                deployments.free_name(tx, main, "production"),
                main,
                "production",
                {**fresh.pipeline, "sinks": prod_pipeline["sinks"]},
            )
        pins = (fresh.current.main_model_id, fresh.current.challenger_model_id)
        if (
            target.current
            and (target.current.main_model_id, target.current.challenger_model_id) == pins
        ):
            return target.id  # already serving these models
        copied = {"pipeline": copy_pipeline, "schedule": copy_schedule, "report": copy_report}
        for column, wanted in copied.items():
            if wanted:
                value = getattr(fresh, column)
                if column == "pipeline":  # production writes to its own sinks
                    value = {**value, "sinks": prod_pipeline["sinks"]}
                if column == "schedule" and value:  # active from now: no catch-up of the
                    value = {**value, "since": utcnow().isoformat()}  # slots before promotion
                tx.execute(f"UPDATE deployments SET {column} = ? WHERE id = ?", [value, target.id])
        version = deployments.add_version(tx, target.id, *pins, actor)
        audit.record(
            tx,
            actor=actor,
            action="promote",
            deployment_id=target.id,
            deployment_name=target.name,
            before=deployments.pins(target.current),
            after={
                **deployments.pins(version),
                "from": fresh.name,
                "copied": copied,
                "gate": outcomes(checks),
                "overridden": bool(failed),
            },
            reason=reason,
        )
        return target.id

    promoted = deployments.get_deployment(store, store.write(write))
    if copy_schedule:
        # A copied schedule is new to the worker: wake it rather than wait for its next sync.
        touch_queue_marker(store.workspace)
    return promoted


# ---------------------------------------------------------------------------- deleting
def delete_deployment(store: Store, name: str, *, confirm: str, actor: str) -> None:
    """Delete a deployment once `confirm` repeats its name; its runs and results stay.

    Queued and running runs are cancelled in the same transaction (the worker stops a running
    one at its next batch). Raises InvalidInput when the confirmation does not match.
    """
    if confirm != name:
        raise InvalidInput(
            f"Type the deployment's name '{name}' to confirm the deletion.",
            "Deleting cannot be undone; the runs' results stay downloadable.",
        )
    deployment = deployments.get_deployment(store, name)

    def write(tx: Tx) -> None:
        access.require(tx, actor, deployment.project_id, "delete")
        runs.cancel_runs_of(tx, deployment.id, "deployment deleted")
        deployments.remove_deployment(tx, deployment.id)
        audit.record(
            tx,
            actor=actor,
            action="delete",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=deployments.pins(deployment.current),
        )

    store.write(write)
