"""Importing an already-trained model: load it safely, describe it against a reference dataset.

An import needs a reference dataset with the target column: the schema, the training profile and
the SHAP background come from its rows, and its metrics are measured on them (they are labelled
"reference" metrics, since we cannot know which rows the model was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import is_classifier, is_regressor

from core.datasets import get_dataset, load_frame
from core.engine import profiles
from core.engine.artifacts import inspect_bytes, load_bytes
from core.entities import DEFAULT_PROJECT, Model, Progress, no_progress
from core.errors import ArtifactError, SchemaMismatch
from core.registry import (
    NewModel,
    discard_artifacts,
    record_version,
    save_artifact_bytes,
)
from core.store import Store, new_id
from core.training import (
    BACKGROUND_ROWS,
    check_access,
    class_values,
    evaluate,
    finite_features,
    has_label,
    plain_params,
    plan_training,
)


@dataclass(frozen=True)
class ImportRequest:
    filename: str
    data: bytes
    dataset_id: str
    target: str
    task: str | None = None
    key_column: str | None = None
    features: list[str] | None = None
    trust_pickle: bool = False
    trusted_types: tuple[str, ...] = ()
    project: str = DEFAULT_PROJECT
    experiment: str | None = None


def import_model(
    store: Store, request: ImportRequest, progress: Progress = no_progress, *, actor: str
) -> Model:
    """Load, check and register an imported model as a new version with one model.

    Raises UntrustedArtifact before loading anything untrusted, ArtifactError for files that
    are not usable models, SchemaMismatch when the model does not fit the reference data.
    """
    check_access(
        store,
        get_dataset(store, request.dataset_id),
        request.project,
        actor=actor,
        action="import-model",
    )
    progress(0.05, f"Checking {request.filename}")
    check = inspect_bytes(request.filename, request.data)
    estimator = load_bytes(
        request.filename,
        request.data,
        trusted_types=request.trusted_types,
        trust_pickle=request.trust_pickle,
    )
    dataset = get_dataset(store, request.dataset_id)
    frame = load_frame(store, dataset)
    progress(0.3, f"Describing the model against {dataset.name}")
    features = _model_features(estimator, frame, request)
    plan = plan_training(
        frame,
        request.target,
        task=request.task or _model_task(estimator),
        features=features,
        key_column=request.key_column,
    )
    labelled = frame[has_label(frame[plan.target])]
    X = finite_features(labelled, plan.features)
    y = labelled[plan.target] if plan.task == "regression" else class_values(labelled[plan.target])
    classes = [profiles.plain(c) for c in getattr(estimator, "classes_", plan.classes)]
    try:
        metrics, predictions = evaluate(estimator, X, y, plan.task, classes)
    except Exception as exc:  # any failure to predict means the model and data do not fit
        raise SchemaMismatch(
            f"The model could not predict the reference dataset '{dataset.name}': "
            f"{type(exc).__name__}: {exc}",
            "Choose the dataset the model was trained on (same columns and types).",
        ) from exc
    metrics["reference_rows"] = len(X)
    schema = profiles.build_schema(
        X, plan.features, plan.target, plan.task, classes, plan.key_column
    )
    profile = profiles.build_profile(X, schema, pd.Series(predictions))
    background = X.sample(min(BACKGROUND_ROWS, len(X)), random_state=0)
    model_id = new_id("mdl")
    progress(0.8, "Storing the model")
    path, digest, size = save_artifact_bytes(
        store, model_id, request.data, check.format, background
    )
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    new = NewModel(
        id=model_id,
        algorithm=type(final).__name__,
        task=plan.task,
        origin="imported",
        params=plain_params(estimator),
        metrics=metrics,
        schema=schema.to_dict(),
        profile=profile,
        artifact_path=path,
        artifact_format=check.format,
        trusted_types=list(request.trusted_types),
        sha256=digest,
        size_bytes=size,
        train_seconds=0.0,
    )
    try:
        _, models = record_version(
            store,
            project=request.project,
            experiment={
                "name": request.experiment or f"{dataset.name} (imported)",
                "target": plan.target,
                "task": plan.task,
                "features": plan.features,
                "key_column": plan.key_column,
            },
            dataset_id=dataset.id,
            settings={
                "imported_from": Path(request.filename).name,
                "format": check.format,
                "features": plan.features,
                "key_column": plan.key_column,
                "reference_rows": len(X),
            },
            models=[new],
            actor=actor,
            action="import-model",
        )
    except BaseException:
        discard_artifacts(store, [model_id])
        raise
    progress(1.0, "Done")
    return models[0]


def _model_task(estimator: Any) -> str | None:
    if is_regressor(estimator):
        return "regression"
    if is_classifier(estimator) and hasattr(estimator, "classes_"):
        return "binary" if len(estimator.classes_) == 2 else "multiclass"
    return None


def _model_features(
    estimator: Any, frame: pd.DataFrame, request: ImportRequest
) -> list[str] | None:
    """The model's own feature names when it records them, else the request's (or defaults)."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return request.features
    names = [str(n) for n in names]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise SchemaMismatch(
            f"The model expects columns the reference dataset lacks: {', '.join(missing[:10])}.",
            "Choose the dataset the model was trained on.",
        )
    if request.target in names:
        raise ArtifactError(
            f"The model takes the target '{request.target}' as an input.",
            "Choose the column the model predicts as the target.",
        )
    return names
