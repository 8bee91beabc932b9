"""The model registry: projects > experiments > versions > models, and model artifacts.

Artifacts are written under `artifacts/<model_id>/` before their metadata row, atomically, with
their SHA-256 recorded; every load recomputes the hash and refuses a file that changed.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from core import access, projects
from core.engine import predict
from core.entities import Experiment, Model, Version
from core.errors import ArtifactError, InvalidInput, NotFound
from core.store import Store, Tx, new_id, utcnow
from core.workspace import atomic_path

_MODEL_SELECT = """
SELECT m.*, p.name AS project, e.name AS experiment, v.number AS version,
       e.id AS experiment_id, e.project_id AS project_id
FROM models m
JOIN versions v ON v.id = m.version_id
JOIN experiments e ON e.id = v.experiment_id
JOIN projects p ON p.id = e.project_id
"""


# ---------------------------------------------------------------------------- experiments
def list_experiments(
    store: Store, project_id: str | None = None, *, visible_to: str | None = None
) -> list[Experiment]:
    """Experiments, optionally of one project, by name; with `visible_to`, only those of
    projects that user may read."""

    def read(tx: Tx) -> list[Experiment]:
        visible = access.sql_filter(tx, visible_to)
        rows = tx.execute(
            "SELECT * FROM experiments WHERE (? IS NULL OR project_id = ?)"
            f" AND {access.visible_sql()}"
            " ORDER BY name",
            [project_id, project_id, visible, visible],
        )
        return [Experiment.from_row(r) for r in rows]

    return store.read(read)


def get_experiment(store: Store, experiment_id: str) -> Experiment:
    """One experiment; raises NotFound."""
    row = store.query("SELECT * FROM experiments WHERE id = ?", [experiment_id]).first()
    if row is None:
        raise NotFound("experiment", experiment_id)
    return Experiment.from_row(row)


def list_versions(store: Store, experiment_id: str) -> list[Version]:
    """An experiment's versions, newest first."""
    rows = store.query(
        "SELECT * FROM versions WHERE experiment_id = ? ORDER BY number DESC", [experiment_id]
    )
    return [Version.from_row(r) for r in rows]


# ---------------------------------------------------------------------------- models
def list_models(
    store: Store,
    *,
    experiment_id: str | None = None,
    version_id: str | None = None,
    visible_to: str | None = None,
) -> list[Model]:
    """Models, newest first, optionally of one experiment or one version; with `visible_to`,
    only those of projects that user may read."""

    def read(tx: Tx) -> list[Model]:
        visible = access.sql_filter(tx, visible_to)
        rows = tx.execute(
            _MODEL_SELECT + " WHERE (? IS NULL OR e.id = ?) AND (? IS NULL OR v.id = ?)"
            f" AND {access.visible_sql('e.project_id')}"
            " ORDER BY m.created_at DESC, m.id",
            [experiment_id, experiment_id, version_id, version_id, visible, visible],
        )
        return [Model.from_row(r) for r in rows]

    return store.read(read)


# A model's row never changes once written (nothing updates or deletes models), so a process
# keeps the rows it read: the worker and the API read the same few models for every run or
# call, and each read would cost a store connection (~30 ms). Keyed by the store's file.
_MODELS: dict[tuple[str, str], Model] = {}
_MODELS_KEPT = 1024
# Loaded estimators, by model and artifact file state (re-verified when the file changes).
_ESTIMATORS: dict[tuple[str, str], tuple[tuple[int, int, int], Any]] = {}
_ESTIMATORS_KEPT = 8


def clear_cache() -> None:
    """Forget the kept model rows and estimators (after editing the store by hand)."""
    _MODELS.clear()
    _ESTIMATORS.clear()


def _keep(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache.pop(key, None)
    while len(cache) >= size:
        cache.pop(next(iter(cache)))  # the oldest entry
    cache[key] = value


def get_model(store: Store, model_id: str) -> Model:
    """One model by id (a unique prefix is enough); raises NotFound."""
    cached = _MODELS.get((str(store.workspace.db_path), model_id))
    if cached is not None:
        return cached
    rows = store.query(
        _MODEL_SELECT + " WHERE m.id = ? OR m.id LIKE ? ORDER BY m.id", [model_id, model_id + "%"]
    )
    exact = [r for r in rows if r["id"] == model_id]
    if exact or len(rows) == 1:
        model = Model.from_row((exact or rows.dicts())[0])
        _keep(_MODELS, (str(store.workspace.db_path), model.id), model, _MODELS_KEPT)
        return model
    hint = "Several models start with that; give more characters." if len(rows) else ""
    raise NotFound("model", model_id, hint)


@dataclass(frozen=True)
class NewModel:
    """A fitted model and what the registry records about it, before it has a row."""

    id: str
    algorithm: str
    task: str
    origin: str
    params: dict[str, Any]
    metrics: dict[str, float | None]  # None: undefined on this holdout (e.g. ROC-AUC)
    schema: dict[str, Any]
    profile: dict[str, Any]
    artifact_path: str
    artifact_format: str
    trusted_types: list[str]
    sha256: str
    size_bytes: int
    train_seconds: float


def record_version(
    store: Store,
    *,
    project: str,
    experiment: dict[str, Any],
    dataset_id: str,
    settings: dict[str, Any],
    models: list[NewModel],
    actor: str,
    action: str = "train",
) -> tuple[Version, list[Model]]:
    """Create (or reuse) the experiment, add a version holding `models`; one transaction.
    The actor needs the role for `action` in the project (or creates the project).

    Returns the version and its models as recorded (read back in the same transaction).
    """

    def write(tx: Tx) -> tuple[Version, list[Model]]:
        proj = projects.ensure_project(tx, project, actor=actor, action=action)
        row = tx.execute(
            "SELECT * FROM experiments WHERE project_id = ? AND name = ?",
            [proj.id, experiment["name"]],
        ).first()
        if row is None:
            row = {
                "id": new_id("exp"),
                "project_id": proj.id,
                "dataset_id": dataset_id,
                "created_at": utcnow(),
                **experiment,
            }
            tx.execute(
                "INSERT INTO experiments VALUES ($id, $project_id, $name, $dataset_id,"
                " $target, $task, $features, $key_column, $created_at)",
                row,
            )
        elif (row["target"], row["task"]) != (experiment["target"], experiment["task"]):
            raise InvalidInput(
                f"Experiment '{experiment['name']}' predicts '{row['target']}' ({row['task']}),"
                f" not '{experiment['target']}' ({experiment['task']}).",
                "Choose another experiment name for a different target or task.",
            )
        number = tx.execute(
            "SELECT coalesce(max(number), 0) + 1 FROM versions WHERE experiment_id = ?", [row["id"]]
        ).scalar()
        version = {
            "id": new_id("ver"),
            "experiment_id": row["id"],
            "number": number,
            "dataset_id": dataset_id,
            "settings": settings,
            "created_at": utcnow(),
        }
        tx.execute(
            "INSERT INTO versions VALUES ($id, $experiment_id, $number, $dataset_id,"
            " $settings, $created_at)",
            version,
        )
        for model in models:
            tx.execute(
                "INSERT INTO models VALUES ($id, $version_id, $algorithm, $task, $origin,"
                " $params, $metrics, $schema, $profile, $artifact_path, $artifact_format,"
                " $trusted_types, $sha256, $size_bytes, $train_seconds, $created_at)",
                {**model.__dict__, "version_id": version["id"], "created_at": utcnow()},
            )
        recorded = tx.execute(
            _MODEL_SELECT + " WHERE v.id = ? ORDER BY m.created_at DESC, m.id", [version["id"]]
        )
        return Version.from_row(version), [Model.from_row(r) for r in recorded]

    return store.write(write)


# ---------------------------------------------------------------------------- artifacts
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(
    store: Store, model_id: str, estimator: Any, background: pd.DataFrame
) -> tuple[str, str, int]:
    """Write a fitted model and its SHAP background sample; return (path, sha256, size)."""
    folder = store.workspace.artifact_dir(model_id)
    target = folder / "model.joblib"
    with atomic_path(target) as tmp:
        joblib.dump(estimator, tmp)  # uncompressed: loads faster, and disk is cheap
    with atomic_path(folder / "background.parquet") as tmp:
        background.to_parquet(tmp, index=False)
    return (
        str(target.relative_to(store.workspace.home)),
        sha256_file(target),
        target.stat().st_size,
    )


def save_artifact_bytes(
    store: Store, model_id: str, data: bytes, fmt: str, background: pd.DataFrame
) -> tuple[str, str, int]:
    """Store an imported model file as it is, beside its background sample."""
    folder = store.workspace.artifact_dir(model_id)
    target = folder / f"model.{fmt}"
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    with atomic_path(folder / "background.parquet") as tmp:
        background.to_parquet(tmp, index=False)
    return (str(target.relative_to(store.workspace.home)), sha256_file(target), len(data))


def discard_artifacts(store: Store, model_ids: list[str]) -> None:
    """Remove artifact folders of models whose metadata was never written."""
    for model_id in model_ids:
        shutil.rmtree(store.workspace.artifact_dir(model_id), ignore_errors=True)


def verify_artifact(store: Store, model: Model) -> Path:
    """The artifact's path once it exists and matches its recorded SHA-256 (nothing unpickled).

    Raises ArtifactError when the file is missing or changed.
    """
    read_artifact(store, model)
    return store.workspace.home / model.artifact_path


def read_artifact(store: Store, model: Model) -> bytes:
    """The artifact's bytes, read once and checked against the recorded SHA-256: the bytes that
    were hashed are the bytes a caller loads, so a file swapped after the check is never
    unpickled. Raises ArtifactError when the file is missing or changed."""
    path = store.workspace.home / model.artifact_path
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ArtifactError(
            f"The artifact of model {model.id} is missing ({path}).",
            "Restore the workspace from a backup, or retrain the model.",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != model.sha256:
        raise ArtifactError(
            f"The artifact of model {model.id} changed on disk: its SHA-256 is {actual[:12]}…,"
            f" the registry recorded {model.sha256[:12]}….",
            "Someone or something modified the file; restore it from a backup or retrain. "
            "ModelDeck will not load it.",
        )
    return data


def load_estimator(store: Store, model: Model) -> Any:
    """The fitted estimator of `model`, loaded from the very bytes whose SHA-256 matched the
    record. Raises ArtifactError when the file is missing, changed, or not loadable."""
    # Imported here: core.artifacts pulls in skops, which most callers never need.
    from core.engine.artifacts import load_bytes

    data = read_artifact(store, model)
    path = Path(model.artifact_path)
    name = path.name if path.suffix else f"{path.name}.{model.artifact_format}"
    estimator = load_bytes(name, data, trusted_types=list(model.trusted_types), trust_pickle=True)
    return predict.serial(estimator)  # the same bits in every process (a forest's threads)


def cached_estimator(store: Store, model: Model) -> Any:
    """load_estimator, kept in memory for a process that loads the same models again and again
    (the worker). A kept estimator is reused only while its artifact file is unchanged (size,
    mtime, inode); otherwise the file is verified and loaded again. Never modify the result."""
    path = store.workspace.home / model.artifact_path
    try:
        stat = path.stat()
    except OSError:
        return load_estimator(store, model)  # raises the clear "artifact missing" error
    state = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    key = (str(store.workspace.db_path), model.id)
    kept = _ESTIMATORS.get(key)
    if kept is not None and kept[0] == state:
        return kept[1]
    estimator = load_estimator(store, model)
    _keep(_ESTIMATORS, key, (state, estimator), _ESTIMATORS_KEPT)
    return estimator


def background_sample(store: Store, model: Model) -> pd.DataFrame:
    """The model's stored SHAP background rows (raw feature columns)."""
    return pd.read_parquet(store.workspace.artifact_dir(model.id) / "background.parquet")


def counts(store: Store) -> dict[str, int]:
    """How many projects, datasets, experiments and models the workspace holds; one read."""
    row = store.query(
        "SELECT (SELECT count(*) FROM projects) AS projects,"
        " (SELECT count(*) FROM datasets) AS datasets,"
        " (SELECT count(*) FROM experiments) AS experiments,"
        " (SELECT count(*) FROM models) AS models"
    ).first()
    return dict(row or {})
