"""Deployments: deploy a model to staging or production, its versions, roll back, change its
pipeline, report settings and access. Promoting and deleting are in core/promotion.py.

A deployment pins its models through deployment versions; exactly one is current. Every change
here is one transaction that also writes its audit entry, so the log never disagrees with the
state. The pipeline's model block is not stored at all: it is always the current version's model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, overload

from core import access, audit
from core.datasets import get_dataset
from core.entities import (
    ACCESS_LEVELS,
    ENVIRONMENTS,
    Deployment,
    DeploymentVersion,
    LivePeriod,
    Model,
)
from core.errors import ArtifactError, Conflict, InvalidInput, NotFound, Step
from core.pipeline import validate_pipeline
from core.registry import get_experiment, get_model, load_estimator, verify_artifact
from core.store import Store, Tx, new_id, utcnow

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def slug(text: str) -> str:
    """A URL-safe deployment name from free text: lowercase, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50] or "deployment"


def default_pipeline(store: Store, model: Model) -> dict[str, Any]:
    """The pipeline copied from training: the training dataset as source, a Parquet sink."""
    experiment = get_experiment(store, model.experiment_id)
    dataset = get_dataset(store, experiment.dataset_id)
    return {
        "source": {"kind": "file", "path": dataset.snapshot_path},
        "transforms": [],
        "sinks": [],  # the run's own Parquet results are always written
        "label_column": experiment.target,  # used for metrics when the source has it
    }


def scores_training_data(store: Store, deployment: Deployment) -> bool:
    """True while the pipeline's source is still the training snapshot it was created with."""
    source = deployment.pipeline.get("source") or {}
    if source.get("kind") != "file":
        return False
    experiment = get_experiment(store, deployment.experiment_id)
    return source.get("path") == get_dataset(store, experiment.dataset_id).snapshot_path


# ---------------------------------------------------------------------------- reading
def _version(row: dict[str, Any] | None) -> DeploymentVersion | None:
    return DeploymentVersion(**row) if row else None


def load_deployment(tx: Tx, name_or_id: str) -> Deployment | None:
    """A deployment by name (else by id) with its current version, inside the caller's
    transaction; None when there is none."""
    row = tx.execute(
        "SELECT * FROM deployments WHERE name = ? OR id = ? ORDER BY name = ? DESC LIMIT 1",
        [name_or_id, name_or_id, name_or_id],
    ).first()
    if row is None:
        return None
    current = tx.execute(
        "SELECT * FROM deployment_versions WHERE id = ?", [row["current_version_id"]]
    ).first()
    return Deployment.from_row(row, _version(current))


def load_versions(tx: Tx, version_ids: Sequence[str]) -> dict[str, DeploymentVersion]:
    """Deployment versions by id (the pins a run was queued with), inside the caller's
    transaction; ids that no longer exist are left out."""
    if not version_ids:
        return {}
    marks = ", ".join("?" * len(version_ids))
    rows = tx.execute(f"SELECT * FROM deployment_versions WHERE id IN ({marks})", list(version_ids))
    return {r["id"]: DeploymentVersion(**r) for r in rows}


def retry_limits(tx: Tx, deployment_ids: Sequence[str]) -> dict[str, int]:
    """Each deployment's `max_attempts` (the retry policy in its schedule; 1 without one);
    a deleted deployment's runs get 1."""
    limits = dict.fromkeys(deployment_ids, 1)
    if deployment_ids:
        marks = ", ".join("?" * len(deployment_ids))
        for row in tx.execute(
            "SELECT id, coalesce(TRY_CAST(json_extract_string(schedule, '$.max_attempts')"
            f" AS INTEGER), 1) AS limit_ FROM deployments WHERE id IN ({marks})",
            list(deployment_ids),
        ):
            limits[row["id"]] = row["limit_"]
    return limits


def get_deployment(store: Store, name: str) -> Deployment:
    """One deployment by name (or id); raises NotFound."""
    found = store.read(lambda tx: load_deployment(tx, name))
    if found is None:
        raise NotFound("deployment", name)
    return found


def list_deployments(store: Store, *, visible_to: str | None = None) -> list[Deployment]:
    """Every deployment with its current version, by name; one read. With `visible_to`, only
    those of projects that user may read."""

    def read(tx: Tx) -> list[Deployment]:
        visible = access.visible_projects(tx, visible_to) if visible_to is not None else None
        versions = {
            r["id"]: r
            for r in tx.execute(
                "SELECT v.* FROM deployment_versions v JOIN deployments d"
                " ON d.current_version_id = v.id"
            )
        }
        rows = tx.execute("SELECT * FROM deployments ORDER BY name")
        return [
            Deployment.from_row(r, _version(versions.get(r["current_version_id"])))
            for r in rows
            if access.keep_visible(visible, r["project_id"])
        ]

    return store.read(read)


def list_versions(store: Store, deployment_id: str) -> list[DeploymentVersion]:
    """A deployment's versions, newest first."""
    rows = store.query(
        "SELECT * FROM deployment_versions WHERE deployment_id = ? ORDER BY number DESC",
        [deployment_id],
    )
    return [DeploymentVersion(**r) for r in rows]


LIVE_ACTIONS = ("deploy", "rollback", "swap", "promote")  # the changes of the current version


def live_history(store: Store, deployment_id: str) -> list[LivePeriod]:
    """Which version was served from when to when, oldest first, from the audit log (every
    change of the current version writes its entry in the same transaction)."""
    rows = list(
        store.query(
            "SELECT e.logged_at, e.actor, e.action, v.number, v.main_model_id,"
            " v.challenger_model_id FROM audit_log e JOIN deployment_versions v"
            " ON v.deployment_id = e.deployment_id"
            " AND v.number = TRY_CAST(json_extract(e.after, '$.version') AS INTEGER)"
            f" WHERE e.deployment_id = ? AND e.action IN ({', '.join('?' * len(LIVE_ACTIONS))})"
            " ORDER BY e.logged_at, e.id",
            [deployment_id, *LIVE_ACTIONS],
        )
    )
    periods: list[LivePeriod] = []
    for i, r in enumerate(rows):
        until = rows[i + 1]["logged_at"] if i + 1 < len(rows) else None
        periods.append(
            LivePeriod(
                r["number"],
                r["main_model_id"],
                r["challenger_model_id"],
                r["logged_at"],
                until,
                r["actor"],
                r["action"],
            )
        )
    return periods


# ---------------------------------------------------------------------------- changing
def check_models(
    store: Store, main_id: str, challenger_id: str | None
) -> tuple[Model, Model | None]:
    main = get_model(store, main_id)
    challenger = get_model(store, challenger_id) if challenger_id else None
    if challenger is not None:
        if challenger.id == main.id:
            raise InvalidInput(
                "The challenger is the main model.",
                "Choose another model of the experiment as challenger.",
            )
        if challenger.experiment_id != main.experiment_id:
            raise InvalidInput(
                f"The challenger {challenger.id} belongs to experiment '{challenger.experiment}',"
                f" the main model to '{main.experiment}'.",
                "A challenger must be a model of the same experiment (any version).",
            )
    for model in (main, challenger):
        if model is not None:
            load_estimator(store, model)  # "deployed" means loadable: fail now, not at run time
    return main, challenger


def add_version(
    tx: Tx, deployment_id: str, main_id: str, challenger_id: str | None, actor: str
) -> dict[str, Any]:
    number = tx.execute(
        "SELECT coalesce(max(number), 0) + 1 FROM deployment_versions WHERE deployment_id = ?",
        [deployment_id],
    ).scalar()
    version = {
        "id": new_id("dv"),
        "deployment_id": deployment_id,
        "number": number,
        "main_model_id": main_id,
        "challenger_model_id": challenger_id,
        "created_by": actor,
        "created_at": utcnow(),
    }
    tx.execute(
        "INSERT INTO deployment_versions VALUES ($id, $deployment_id, $number,"
        " $main_model_id, $challenger_model_id, $created_by, $created_at)",
        version,
    )
    tx.execute(
        "UPDATE deployments SET current_version_id = ?, updated_at = ? WHERE id = ?",
        [version["id"], utcnow(), deployment_id],
    )
    return version


@overload
def pins(version: None) -> None: ...
@overload
def pins(version: DeploymentVersion | dict[str, Any]) -> dict[str, Any]: ...
def pins(version: DeploymentVersion | dict[str, Any] | None) -> dict[str, Any] | None:
    if version is None:
        return None
    get = version.get if isinstance(version, dict) else lambda k: getattr(version, k)
    return {
        "version": get("number"),
        "main": get("main_model_id"),
        "challenger": get("challenger_model_id"),
    }


def deploy(
    store: Store,
    model_id: str,
    environment: str,
    *,
    name: str | None = None,
    challenger_id: str | None = None,
    actor: str,
) -> Deployment:
    """Deploy a model (and challenger) as a new current version; creates the deployment if new.

    Without a name, an experiment has one deployment per environment: the first deploy creates
    it with the training pipeline, later ones only switch the models. One transaction.
    """
    if environment not in ENVIRONMENTS:
        raise InvalidInput(
            f"Unknown environment '{environment}'.", f"Choose one of: {', '.join(ENVIRONMENTS)}."
        )
    if name is not None and not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"'{name}' is not a valid deployment name.",
            "Use lowercase letters, digits and dashes (it becomes a URL).",
        )
    permission = f"deploy-{environment}"
    project_id = get_model(store, model_id).project_id
    store.read(lambda tx: access.require(tx, actor, project_id, permission))  # before loading
    main, challenger = check_models(store, model_id, challenger_id)
    pipeline = default_pipeline(store, main)

    def write(tx: Tx) -> str:
        access.require(tx, actor, project_id, permission)
        existing = (
            load_deployment(tx, name)
            if name
            else find_in_environment(tx, main.experiment_id, environment)
        )
        if existing is not None and (
            existing.experiment_id != main.experiment_id or existing.environment != environment
        ):
            raise Conflict(
                f"Deployment '{existing.name}' serves another experiment or environment "
                f"({existing.environment}).",
                "Choose another name.",
            )
        if existing is None:
            existing = create_deployment(
                tx, name or free_name(tx, main, environment), main, environment, pipeline
            )
        version = add_version(
            tx, existing.id, main.id, challenger.id if challenger else None, actor
        )
        audit.record(
            tx,
            actor=actor,
            action="deploy",
            deployment_id=existing.id,
            deployment_name=existing.name,
            before=pins(existing.current),
            after=pins(version),
        )
        return existing.id

    return get_deployment(store, store.write(write))


def find_in_environment(tx: Tx, experiment_id: str, environment: str) -> Deployment | None:
    row = tx.execute(
        "SELECT id FROM deployments WHERE experiment_id = ? AND environment = ?"
        " ORDER BY created_at LIMIT 1",
        [experiment_id, environment],
    ).first()
    return load_deployment(tx, row["id"]) if row else None


def free_name(tx: Tx, model: Model, environment: str) -> str:
    return free_name_from(tx, f"{slug(model.experiment)}-{environment}")


def free_name_from(tx: Tx, base: str) -> str:
    taken = {
        r["name"]
        for r in tx.execute("SELECT name FROM deployments WHERE name LIKE ?", [base + "%"])
    }
    return next(n for n in (base, *(f"{base}-{i}" for i in range(2, 1000))) if n not in taken)


def create_deployment(
    tx: Tx, name: str, model: Model, environment: str, pipeline: dict[str, Any]
) -> Deployment:
    project_id = tx.execute(
        "SELECT project_id FROM experiments WHERE id = ?", [model.experiment_id]
    ).scalar()
    row = {
        "id": new_id("dep"),
        "name": name,
        "project_id": project_id,
        "experiment_id": model.experiment_id,
        "environment": environment,
        "access": "project",
        "pipeline": pipeline,
        "schedule": {},
        "report": {},
        "current_version_id": None,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    tx.execute(
        "INSERT INTO deployments VALUES ($id, $name, $project_id, $experiment_id,"
        " $environment, $access, $pipeline, $schedule, $report, $current_version_id,"
        " $created_at, $updated_at)",
        row,
    )
    return Deployment.from_row(row)


def rollback(store: Store, name: str, version_number: int, *, actor: str) -> Deployment:
    """Make an earlier version current again (atomically); raises NotFound for a bad number."""
    deployment = get_deployment(store, name)

    def write(tx: Tx) -> None:
        row = tx.execute(
            "SELECT * FROM deployment_versions WHERE deployment_id = ? AND number = ?",
            [deployment.id, version_number],
        ).first()
        access.require(tx, actor, deployment.project_id, "rollback")
        if row is None:
            raise NotFound(
                "version",
                f"{name} v{version_number}",
                "Choose one of the deployment's versions.",
                step=Step("list-versions", name),
            )
        before = load_deployment(tx, deployment.id)
        tx.execute(
            "UPDATE deployments SET current_version_id = ?, updated_at = ? WHERE id = ?",
            [row["id"], utcnow(), deployment.id],
        )
        audit.record(
            tx,
            actor=actor,
            action="rollback",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=pins(before.current if before else None),
            after=pins(row),
        )

    store.write(write)
    return get_deployment(store, name)


def update_pipeline(
    store: Store,
    name: str,
    pipeline: dict[str, Any],
    *,
    actor: str,
) -> Deployment:
    """Replace the pipeline's source, transforms and sinks (never the model block); audited.

    Raises PipelineError naming the block that is wrong (a `model` block among them).
    """
    deployment = get_deployment(store, name)
    pipeline = validate_pipeline(pipeline, store.workspace)

    def write(tx: Tx) -> None:
        from core import connections  # psycopg and cryptography: not on every import

        access.require(tx, actor, deployment.project_id, "edit-pipeline")
        bound = pipeline
        if connections.uses_postgres(pipeline):  # its connections: this project's only
            bound = connections.bind_project(tx, pipeline, deployment.project_id)
        tx.execute(
            "UPDATE deployments SET pipeline = ?, updated_at = ? WHERE id = ?",
            [bound, utcnow(), deployment.id],
        )
        audit.record(
            tx,
            actor=actor,
            action="pipeline",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=deployment.pipeline,
            after=bound,
        )

    store.write(write)
    return get_deployment(store, name)


def change_report(
    store: Store,
    name: str,
    action: str,
    change: Callable[[dict[str, Any]], tuple[dict[str, Any], Any, Any]],
    *,
    permission: str,
    actor: str,
) -> dict[str, Any]:
    """Read-modify-write a deployment's `report` JSON (report settings and drift thresholds,
    which promotion copies together) with its audit entry, in one transaction.

    `change(report)` returns (the new report, what the audit shows before, and after); it may
    raise to refuse. Returns the new report. Raises NotFound for an unknown deployment,
    Forbidden unless the actor may do `permission` (an action of core/access.py).
    """

    def write(tx: Tx) -> dict[str, Any]:
        row = tx.execute(
            "SELECT id, name, report, project_id FROM deployments WHERE name = ?", [name]
        ).first()
        if row is None:
            raise NotFound("deployment", name)
        access.require(tx, actor, row["project_id"], permission)
        report, before, after = change(json.loads(row["report"] or "{}"))
        tx.execute(
            "UPDATE deployments SET report = ?, updated_at = ? WHERE id = ?",
            [report, utcnow(), row["id"]],
        )
        audit.record(
            tx,
            actor=actor,
            action=action,
            deployment_id=row["id"],
            deployment_name=row["name"],
            before=before,
            after=after,
        )
        return report

    return store.write(write)


def set_access(store: Store, name: str, level: str, *, actor: str) -> Deployment:
    """Change who may call the deployment (owners); audited."""
    if level not in ACCESS_LEVELS:
        raise InvalidInput(
            f"Unknown access level '{level}'.", f"Choose one of: {', '.join(ACCESS_LEVELS)}."
        )
    deployment = get_deployment(store, name)

    def write(tx: Tx) -> None:
        access.require(tx, actor, deployment.project_id, "set-access")
        tx.execute(
            "UPDATE deployments SET access = ?, updated_at = ? WHERE id = ?",
            [level, utcnow(), deployment.id],
        )
        audit.record(
            tx,
            actor=actor,
            action="access",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before={"access": deployment.access},
            after={"access": level},
        )

    store.write(write)
    return get_deployment(store, name)


def remove_deployment(tx: Tx, deployment_id: str) -> None:
    """Remove a deployment and its versions inside the caller's transaction (deleting one is
    promotion.delete_deployment, which also cancels its runs and audits)."""
    tx.execute("DELETE FROM deployment_versions WHERE deployment_id = ?", [deployment_id])
    tx.execute("DELETE FROM deployments WHERE id = ?", [deployment_id])


def status(store: Store, deployment: Deployment) -> str:
    """ "deployed" when the current models' artifacts are present and intact, else the problem."""
    if deployment.current is None:
        return "no version"
    try:
        for model_id in (deployment.current.main_model_id, deployment.current.challenger_model_id):
            if model_id:
                verify_artifact(store, get_model(store, model_id))
    except (ArtifactError, NotFound) as exc:
        return f"broken: {exc.message}"
    return "deployed"
