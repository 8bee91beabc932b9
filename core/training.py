"""Training: validate a request against the data, fit scikit-learn pipelines, register them.

A model is a whole sklearn Pipeline (imputation, scaling, one-hot encoding, estimator), so raw
rows go in. Everything is fitted and checked before the registry is written: a failure leaves
no experiment, version, model row or artifact behind.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core import access, projects
from core.datasets import get_dataset, load_frame
from core.engine import profiles
from core.engine.classes import sort_classes
from core.engine.metrics import classification_metrics, regression_metrics
from core.entities import (
    DEFAULT_PROJECT,
    TASKS,
    Dataset,
    Model,
    ModelSchema,
    Progress,
    Task,
    Version,
    no_progress,
)
from core.errors import DatasetError, InvalidInput
from core.registry import NewModel, discard_artifacts, record_version, save_artifact
from core.store import Store, new_id

TEST_SIZE = 0.2
MIN_TRAIN_ROWS = 20
MIN_HOLDOUT_ROWS = 5
BACKGROUND_ROWS = 100
MAX_ONE_HOT = 50  # per column; rarer categories share one "infrequent" column

ALGORITHMS: dict[str, str] = {
    "linear": "Linear model (logistic / ridge regression)",
    "random_forest": "Random forest",
    "hist_gradient_boosting": "Histogram gradient boosting",
    "gradient_boosting": "Gradient boosting",
}
DEFAULT_ALGORITHMS = ("linear", "random_forest", "hist_gradient_boosting")


def make_estimator(algorithm: str, task: Task, seed: int) -> BaseEstimator:
    """The bare estimator for an algorithm name and task; raises InvalidInput for unknown names."""
    is_reg = task == "regression"
    builders = {
        "linear": lambda: Ridge() if is_reg else LogisticRegression(max_iter=2000),
        "random_forest": lambda: (RandomForestRegressor if is_reg else RandomForestClassifier)(
            n_estimators=100, min_samples_leaf=2, n_jobs=-1, random_state=seed
        ),
        "hist_gradient_boosting": lambda: (
            HistGradientBoostingRegressor if is_reg else HistGradientBoostingClassifier
        )(random_state=seed),
        "gradient_boosting": lambda: (
            GradientBoostingRegressor if is_reg else GradientBoostingClassifier
        )(random_state=seed),
    }
    if algorithm not in builders:
        raise InvalidInput(
            f"Unknown algorithm '{algorithm}'.", f"Choose from: {', '.join(ALGORITHMS)}."
        )
    return builders[algorithm]()


def make_pipeline(schema: ModelSchema, algorithm: str, seed: int = 42) -> Pipeline:
    """A raw-rows-in pipeline: impute and (for linear models) scale numbers, one-hot categories.

    Categories are one-hot encoded before every estimator, histogram boosting included, because
    shap's TreeExplainer does not understand HGB's native categorical splits (DESIGN.md, traps).
    """
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    categorical = [f.name for f in schema.features if f.kind == "categorical"]
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if algorithm == "linear":
        num_steps.append(("scale", StandardScaler()))
    cat_steps = [
        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
        (
            "onehot",
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                sparse_output=False,
                max_categories=MAX_ONE_HOT,
            ),
        ),
    ]
    pre = ColumnTransformer(
        [("num", Pipeline(num_steps), numeric), ("cat", Pipeline(cat_steps), categorical)],
        remainder="drop",
        verbose_feature_names_out=True,
    )
    return Pipeline([("preprocess", pre), ("model", make_estimator(algorithm, schema.task, seed))])


# ---------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class TrainingPlan:
    """A validated training request: what will be learned from which columns."""

    target: str
    task: Task
    features: list[str]
    key_column: str | None
    classes: list[Any]
    excluded: dict[str, str] = field(default_factory=dict)  # column -> why it is left out
    dropped_rows: int = 0
    infinite: dict[str, int] = field(default_factory=dict)  # feature -> +/-inf values (missing)


def default_exclusions(
    reports: list[profiles.ColumnReport], target: str, key_column: str | None
) -> dict[str, str]:
    """Columns left out of the features by default, with the reason shown to the user."""
    reasons = {}
    for col in reports:
        if col.name in (target, key_column):
            continue
        if col.is_identifier:
            reasons[col.name] = "identifier (unique per row)"
        elif col.kind == "empty":
            reasons[col.name] = "all values missing"
        elif col.kind == "datetime":
            reasons[col.name] = "date/time columns are not used as features yet"
    return reasons


def default_key(reports: list[profiles.ColumnReport], target: str) -> str | None:
    """The first identifier-like column, offered as the prediction key."""
    for col in reports:
        if col.is_identifier and col.name != target:
            return col.name
    return None


def plan_training(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str | None = None,
    features: list[str] | None = None,
    key_column: str | None = None,
    exclude: list[str] | tuple[str, ...] = (),
) -> TrainingPlan:
    """Validate a request against the data and fill in defaults; raises DatasetError/InvalidInput.

    `key_column=None` picks the first identifier-like column; "" means no key. Pure: reads
    `frame`, writes nothing.
    """
    columns = list(frame.columns)
    _require_columns(columns, [target], "target column")
    reports = profiles.describe_columns(frame)
    if key_column is None:
        key_column = default_key(reports, target)
    if key_column:
        _require_columns(columns, [key_column], "key column")
    _require_columns(columns, list(exclude), "excluded column")
    labelled = frame[has_label(frame[target])]
    y = labelled[target]
    chosen_task = _check_task(y, target, task)
    excluded = default_exclusions(reports, target, key_column)
    excluded.update({c: "excluded by you" for c in exclude})
    if features is None:
        features = [c for c in columns if c not in excluded and c not in (target, key_column)]
    else:
        _require_columns(columns, features, "feature")
        clash = {target, key_column} & set(features)
        if clash:
            raise InvalidInput(
                f"'{clash.pop()}' cannot be a feature: it is the target or key.",
                "Remove it from the feature list.",
            )
    if not features:
        raise DatasetError(
            f"No feature columns are left besides the target '{target}'.",
            "Include at least one column other than the target and the key.",
        )
    classes = sort_classes(class_values(y).unique().tolist()) if chosen_task != "regression" else []
    _check_rows(y, chosen_task, target)
    return TrainingPlan(
        target,
        chosen_task,
        list(features),
        key_column or None,
        classes,
        {c: r for c, r in excluded.items() if c not in features},
        len(frame) - len(labelled),
        _infinite(frame, features),
    )


def has_label(target: pd.Series) -> pd.Series:
    """Rows whose target is present (an infinite number is no label either)."""
    present = target.notna()
    if pd.api.types.is_float_dtype(target):
        present &= ~np.isinf(target.to_numpy(dtype=np.float64, na_value=np.nan))
    return present


def class_values(y: pd.Series) -> pd.Series:
    """The classes of a target as the file meant them: a whole-number float column (what a
    0/1 column with holes becomes once read) as integers, anything else unchanged."""
    if pd.api.types.is_float_dtype(y):
        values = y.to_numpy(dtype=np.float64)
        if np.isfinite(values).all() and (np.mod(values, 1) == 0).all():
            return pd.Series(values.astype(np.int64), index=y.index, name=y.name)
    return y


def _infinite(frame: pd.DataFrame, features: list[str]) -> dict[str, int]:
    """Per numeric feature, how many values are +/-inf (training treats them as missing)."""
    out = {}
    for name in features:
        column = frame[name]
        if pd.api.types.is_float_dtype(column):
            n = int(np.isinf(column.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
            if n:
                out[name] = n
    return out


def labelled_rows(
    frame: pd.DataFrame, features: list[str], target: str, task: Task
) -> pd.DataFrame:
    """The rows a model learns and is measured on: those with a label, the features with
    +/-inf as missing, the target as classes (`class_values`) for classification."""
    labelled = frame[has_label(frame[target])]
    y = labelled[target] if task == "regression" else class_values(labelled[target])
    return finite_features(labelled, features).assign(**{target: y})


def split_holdout(
    rows: pd.DataFrame, target: str, task: Task, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of `labelled_rows`: the one split rule, used to train and
    to rebuild a model's holdout (core/explain.py), so importance is computed on exactly the
    rows the metrics were. Stratified for classification; raises DatasetError when the rows
    cannot be split."""
    stratify = rows[target] if task != "regression" else None
    try:
        train_rows, test_rows = train_test_split(
            rows, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. more classes than holdout rows: the user's data, not a bug
        raise DatasetError(
            f"The rows of '{target}' cannot be split into training and holdout sets: {exc}.",
            "Use more rows or fewer classes, or change the holdout share.",
        ) from exc
    return train_rows, test_rows


def finite_features(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The feature columns with +/-inf as missing values (the imputer fills them)."""
    X = frame[features]
    infinite = _infinite(frame, features)
    if not infinite:
        return X
    X = X.copy()
    for name in infinite:
        X[name] = X[name].replace([np.inf, -np.inf], np.nan)
    return X


def _require_columns(columns: list[str], wanted: list[str], what: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DatasetError(
            f"The {what} '{missing[0]}' is not in the dataset.",
            f"Available columns: {', '.join(columns[:30])}{' …' if len(columns) > 30 else ''}.",
        )


def _check_task(y: pd.Series, target: str, task: str | None) -> Task:
    if task is not None and task not in TASKS:
        raise InvalidInput(f"Unknown task '{task}'.", f"Choose one of: {', '.join(TASKS)}.")
    n_classes = y.nunique()
    if n_classes < 2:
        shown = f"only the value '{y.iloc[0]}'" if n_classes else "no values"
        raise DatasetError(
            f"The target '{target}' has {shown}: there is nothing to learn.",
            "Choose a target column with at least two different values.",
        )
    chosen: Task = task or profiles.guess_task(y)
    if chosen == "regression" and (
        not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)
    ):
        raise DatasetError(
            f"The target '{target}' is not numeric (dtype {y.dtype}, e.g. '{y.iloc[0]}'), so it "
            "cannot be a regression target.",
            "Choose binary or multiclass classification, or a numeric target column.",
        )
    if chosen == "binary" and n_classes != 2:
        raise DatasetError(
            f"The target '{target}' has {n_classes} classes, not 2.",
            "Choose multiclass classification (or regression for a number).",
        )
    if chosen == "multiclass" and n_classes == 2:
        raise DatasetError(
            f"The target '{target}' has exactly 2 classes.", "Choose binary classification."
        )
    return chosen


def _check_rows(y: pd.Series, task: Task, target: str) -> None:
    needed = MIN_TRAIN_ROWS + MIN_HOLDOUT_ROWS
    if len(y) < needed:
        raise DatasetError(
            f"The dataset has {len(y)} rows with a '{target}' value; training needs at least "
            f"{needed} ({MIN_TRAIN_ROWS} to fit and {MIN_HOLDOUT_ROWS} for the holdout).",
            "Use a larger dataset.",
        )
    if task != "regression":
        counts = y.value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise DatasetError(
                f"Class '{rare.index[0]}' of '{target}' has only 1 row; every class needs at "
                "least 2 (one to train on, one to test on).",
                "Add rows of that class, or remove it from the dataset.",
            )


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class TrainRequest:
    """What a user asks the playground (or `modeldeck train`) for."""

    dataset_id: str
    target: str
    task: str | None = None
    features: list[str] | None = None
    key_column: str | None = None
    exclude: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    project: str = DEFAULT_PROJECT
    experiment: str | None = None
    seed: int = 42
    test_size: float = TEST_SIZE


@dataclass(frozen=True)
class TrainingResult:
    version: Version
    models: list[Model]
    plan: TrainingPlan


def evaluate(
    estimator: Any, X: pd.DataFrame, y: pd.Series, task: Task, classes: list[Any]
) -> tuple[dict[str, float | None], np.ndarray]:
    """Holdout metrics of a fitted model and its predictions."""
    if task == "regression":
        pred = estimator.predict(X)
        return regression_metrics(y, pred), pred
    model_classes = list(getattr(estimator, "classes_", []))
    if hasattr(estimator, "predict_proba") and model_classes:
        raw = estimator.predict_proba(X)
        # The class of highest probability is what predict() returns for our estimators;
        # deriving it saves a second pass over the holdout. classes_ keeps the labels' dtype:
        # an object array of Python ints would be "unknown" to sklearn's metrics.
        pred = np.asarray(estimator.classes_)[raw.argmax(axis=1)]
        proba = raw[:, [model_classes.index(c) for c in classes]]
    else:
        pred, proba = estimator.predict(X), None
    return classification_metrics(y, pred, proba, classes, task), pred


def plain_params(estimator: Any) -> dict[str, Any]:
    """The final estimator's hyper-parameters, JSON-safe."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    out = {}
    for key, value in final.get_params(deep=False).items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            out[key] = repr(value)
    return out


def train(
    store: Store, request: TrainRequest, progress: Progress = no_progress, *, actor: str
) -> TrainingResult:
    """Fit each requested algorithm and register them as one new version.

    Raises DatasetError/InvalidInput before fitting, Forbidden unless the actor may read the
    dataset and is an editor of the project; on any failure nothing is recorded.
    """
    for algorithm in request.algorithms:
        make_estimator(algorithm, "binary", request.seed)  # fail fast on unknown names
    if not request.algorithms:
        raise InvalidInput(
            "No algorithm chosen.", f"Pick at least one of: {', '.join(ALGORITHMS)}."
        )
    dataset = get_dataset(store, request.dataset_id)
    check_access(store, dataset, request.project, actor=actor, action="train")
    progress(0.0, f"Reading {dataset.name}")
    frame = load_frame(store, dataset)
    plan = plan_training(
        frame,
        request.target,
        task=request.task,
        features=request.features,
        key_column=request.key_column,
        exclude=request.exclude,
    )
    rows = labelled_rows(frame, plan.features, plan.target, plan.task)
    train_rows, test_rows = split_holdout(
        rows, plan.target, plan.task, request.test_size, request.seed
    )
    X_train, y_train = train_rows[plan.features], train_rows[plan.target]
    X_test, y_test = test_rows[plan.features], test_rows[plan.target]
    schema = profiles.build_schema(
        X_train, plan.features, plan.target, plan.task, plan.classes, plan.key_column
    )
    background = X_train.sample(min(BACKGROUND_ROWS, len(X_train)), random_state=request.seed)
    feature_profile = profiles.build_profile(X_train, schema)  # shared by the version's models
    fitted: list[NewModel] = []
    try:
        for i, algorithm in enumerate(request.algorithms):
            progress(
                0.05 + 0.9 * i / len(request.algorithms),
                f"Training {ALGORITHMS[algorithm]} ({i + 1}/{len(request.algorithms)})",
            )
            fitted.append(
                _fit_one(
                    store,
                    algorithm,
                    schema,
                    plan,
                    request.seed,
                    (X_train, y_train, X_test, y_test),
                    background,
                    feature_profile,
                )
            )
        progress(0.97, "Recording the version")
        version, models = record_version(
            store,
            project=request.project,
            experiment={
                "name": request.experiment or dataset.name,
                "target": plan.target,
                "task": plan.task,
                "features": plan.features,
                "key_column": plan.key_column,
            },
            dataset_id=dataset.id,
            settings=_settings(request, plan, len(X_train), len(X_test)),
            models=fitted,
            actor=actor,
        )
    except BaseException:
        discard_artifacts(store, [m.id for m in fitted])
        raise
    progress(1.0, "Done")
    return TrainingResult(version, models, plan)


def _fit_one(
    store: Store,
    algorithm: str,
    schema: ModelSchema,
    plan: TrainingPlan,
    seed: int,
    split: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    background: pd.DataFrame,
    feature_profile: dict[str, Any],
) -> NewModel:
    X_train, y_train, X_test, y_test = split
    pipeline = make_pipeline(schema, algorithm, seed)
    started = time.perf_counter()
    pipeline.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    metrics, predictions = evaluate(pipeline, X_test, y_test, plan.task, plan.classes)
    metrics["holdout_rows"] = len(X_test)
    profile = {
        **feature_profile,
        "prediction": profiles.prediction_profile(pd.Series(predictions), plan.task),
    }
    model_id = new_id("mdl")
    path, digest, size = save_artifact(store, model_id, pipeline, background)
    return NewModel(
        id=model_id,
        algorithm=algorithm,
        task=plan.task,
        origin="trained",
        params=plain_params(pipeline),
        metrics=metrics,
        schema=schema.to_dict(),
        profile=profile,
        artifact_path=path,
        artifact_format="joblib",
        trusted_types=[],
        sha256=digest,
        size_bytes=size,
        train_seconds=seconds,
    )


def _settings(
    request: TrainRequest, plan: TrainingPlan, n_train: int, n_test: int
) -> dict[str, Any]:
    return {
        **asdict(plan),
        "algorithms": list(request.algorithms),
        "seed": request.seed,
        "test_size": request.test_size,
        "train_rows": n_train,
        "holdout_rows": n_test,
    }


def check_access(store: Store, dataset: Dataset, project: str, *, actor: str, action: str) -> None:
    """Before long work: the actor may read the dataset and do `action` in the project."""
    projects.check(store, project, actor=actor, action=action)
    store.read(lambda tx: access.require(tx, actor, dataset.project_id, "read"))


def default_experiment_name(
    store: Store, dataset: Dataset, target: str, project: str = DEFAULT_PROJECT
) -> str:
    """The dataset's name, or `<dataset> · <target>` when that name already predicts another."""
    from core.registry import list_experiments

    proj = next((p for p in projects.list_projects(store) if p.name == project), None)
    existing = list_experiments(store, proj.id) if proj else []
    same = next((e for e in existing if e.name == dataset.name), None)
    return dataset.name if same is None or same.target == target else f"{dataset.name} · {target}"


@dataclass(frozen=True)
class Suggestion:
    """Form defaults for a target: guessed task, prediction key, columns to leave out."""

    task: Task
    key_column: str | None
    excluded: dict[str, str]


def suggest(frame: pd.DataFrame, target: str) -> Suggestion:
    """Defaults for the training form; never raises (plan_training does the validation)."""
    reports = profiles.describe_columns(frame)
    key = default_key(reports, target)
    y = frame[target].dropna()
    task = profiles.guess_task(y) if len(y) else "regression"
    return Suggestion(task, key, default_exclusions(reports, target, key))
