"""Frozen records of the DESIGN vocabulary. No I/O here: stores build them from rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
DEFAULT_PROJECT = "Default"


class Progress(Protocol):
    """A progress sink: `fraction` in [0, 1] and a short text of what is happening."""

    def __call__(self, fraction: float, text: str) -> None: ...


def no_progress(fraction: float, text: str) -> None:
    """A progress sink that ignores everything."""


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    """A local account; `role` is the instance role (admin | member)."""

    id: str
    username: str
    display_name: str
    email: str | None
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def label(self) -> str:
        """How a page names the user: 'Ana Lima (ana)', or the username alone."""
        shown = self.display_name.strip()
        return f"{shown} ({self.username})" if shown and shown != self.username else self.username


@dataclass(frozen=True)
class ApiKey:
    """A user's API key as lists show it: never the key itself, only its first characters."""

    id: str
    user_id: str
    username: str
    name: str
    shown: str
    deployment_id: str | None  # the one deployment it may call, or None for any
    deployment_name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Collaborator:
    """A user's role in a project."""

    project_id: str
    project: str
    user_id: str
    username: str
    display_name: str
    role: str  # owner | editor | viewer
    added_by: str
    added_at: datetime


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    dtype: str


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    kind: str
    source: str
    snapshot_path: str
    sha256: str
    n_rows: int
    columns: tuple[ColumnInfo, ...]
    created_at: datetime
    project_id: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Dataset:
        cols = tuple(ColumnInfo(**c) for c in _json(row["columns"], []))
        return cls(**{**row, "columns": cols})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Experiment:
    id: str
    project_id: str
    name: str
    dataset_id: str
    target: str
    task: Task
    features: tuple[str, ...]
    key_column: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Experiment:
        return cls(**{**row, "features": tuple(_json(row["features"], []))})


@dataclass(frozen=True)
class Version:
    id: str
    experiment_id: str
    number: int
    dataset_id: str
    settings: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Version:
        return cls(**{**row, "settings": _json(row["settings"], {})})


@dataclass(frozen=True)
class FeatureSchema:
    """One input column as the model expects it."""

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSchema:
    """What a model takes in and gives out."""

    features: tuple[FeatureSchema, ...]
    target: str
    task: Task
    classes: tuple[Any, ...] = ()
    key_column: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSchema:
        features = tuple(
            FeatureSchema(**{**f, "categories": tuple(f.get("categories", ()))})
            for f in data["features"]
        )
        return cls(**{**data, "features": features, "classes": tuple(data.get("classes", ()))})


@dataclass(frozen=True)
class Model:
    id: str
    version_id: str
    algorithm: str
    task: Task
    origin: str
    params: dict[str, Any]
    metrics: dict[str, float]
    schema: ModelSchema
    profile: dict[str, Any]
    artifact_path: str
    artifact_format: str
    trusted_types: tuple[str, ...]
    sha256: str
    size_bytes: int
    train_seconds: float
    created_at: datetime
    # Names along the registry path, filled in by the registry's joins.
    project: str = ""
    experiment: str = ""
    version: int = 0
    experiment_id: str = ""
    project_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Model:
        return cls(
            **{
                **row,
                "params": _json(row["params"], {}),
                "metrics": _json(row["metrics"], {}),
                "schema": ModelSchema.from_dict(_json(row["schema"], {})),
                "profile": _json(row["profile"], {}),
                "trusted_types": tuple(_json(row["trusted_types"], [])),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The JSON shape of a model in listings: ids, names, task, metrics, time."""
        return {
            "id": self.id,
            "project": self.project,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "version": self.version,
            "algorithm": self.algorithm,
            "task": self.task,
            "origin": self.origin,
            "metrics": self.metrics,
            "train_seconds": round(self.train_seconds, 4),
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
        }

    def details(self) -> dict[str, Any]:
        """Everything about a model: summary plus params, schema, profile and artifact."""
        return {
            **self.summary(),
            "version_id": self.version_id,
            "params": self.params,
            "schema": self.schema.to_dict(),
            "profile": self.profile,
            "artifact": {
                "path": self.artifact_path,
                "format": self.artifact_format,
                "sha256": self.sha256,
                "trusted_types": list(self.trusted_types),
            },
        }


ENVIRONMENTS = ("staging", "production")
ACCESS_LEVELS = ("public", "instance", "project")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class DeploymentVersion:
    id: str
    deployment_id: str
    number: int
    main_model_id: str
    challenger_model_id: str | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class LivePeriod:
    """One stretch of time a version of a deployment was the one served (`until` None: now)."""

    version: int
    main_model_id: str
    challenger_model_id: str | None
    since: datetime
    until: datetime | None
    by: str  # who made it current
    how: str  # deploy, rollback, swap or promote


@dataclass(frozen=True)
class Deployment:
    """A named endpoint of one experiment in one environment (DESIGN.md vocabulary)."""

    id: str
    name: str
    project_id: str
    experiment_id: str
    environment: str
    access: str
    pipeline: dict[str, Any]
    schedule: dict[str, Any]
    report: dict[str, Any]
    current_version_id: str | None
    created_at: datetime
    updated_at: datetime
    current: DeploymentVersion | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any], current: DeploymentVersion | None = None) -> Deployment:
        return cls(
            **{
                **row,
                "pipeline": _json(row["pipeline"], {}),
                "schedule": _json(row["schedule"], {}),
                "report": _json(row["report"], {}),
                "current": current,
            }
        )


@dataclass(frozen=True)
class Run:
    id: str
    deployment_id: str
    deployment_name: str
    version_id: str
    trigger: str
    status: str
    source_override: dict[str, Any] | None
    pipeline: dict[str, Any]
    progress: float
    message: str
    error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    attempt: int
    rows_in: int | None
    rows_out: int | None
    summary: dict[str, Any]
    queued_by: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    purged_at: datetime | None
    project_id: str | None = None  # None only for runs of deployments deleted before 0009

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Run:
        return cls(
            **{
                **row,
                "source_override": _json(row["source_override"], None),
                "pipeline": _json(row["pipeline"], {}),
                "summary": _json(row["summary"], {}),
            }
        )

    @property
    def is_finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class AuditEntry:
    id: str
    logged_at: datetime
    actor: str
    action: str
    deployment_id: str | None
    deployment_name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    subject: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEntry:
        return cls(
            **{**row, "before": _json(row["before"], None), "after": _json(row["after"], None)}
        )
