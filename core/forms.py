"""A deployment's prediction form: the fields built from its model's schema and training profile,
who may use it, and one row scored exactly as the API scores it (and logged like an API call).

The form's row goes through the API's own path: a `dataframe_records` body read by
`payloads.read_mlflow`, then `serving.answer` (the run's schema check, coercion and
`predict.score`, with the row's SHAP explanation), so the form and the API give the same
prediction for the same row. Its record in the prediction log is the API's
(`serving.main_record`) with source "form", no key and the user who submitted it.
"""

from __future__ import annotations

import math
import secrets
import unicodedata
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
import pyarrow as pa

from core import access, audit, deployments, projects, registry, serving, shadow
from core.engine import payloads
from core.engine.profiles import plain_number
from core.entities import Deployment, FeatureSchema, Model
from core.errors import Forbidden, InvalidInput, ModelDeckError, NotFound, Unauthorized
from core.explain import Contribution, Explanation
from core.store import Store

PAGE = "form"  # the app's url path of the form (pages/form.py)
FieldKind = Literal["number", "integer", "flag", "category"]


def form_path(name: str) -> str:
    """The form's address relative to the app's root: `form?name=<deployment>`."""
    return f"{PAGE}?{urllib.parse.urlencode({'name': name})}"


@dataclass(frozen=True)
class Field:
    """One input of the form: its widget kind, default (None: empty), training range and hint."""

    name: str
    kind: FieldKind
    default: Any
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    hint: str = ""

    def out_of_range(self, value: Any) -> bool:
        """A number outside the training range (the model then extrapolates)."""
        if self.kind not in ("number", "integer") or value is None:
            return False
        return (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        )


def fields(model: Model) -> list[Field]:
    """The form's fields, in the schema's order, with defaults from the training profile: the
    median of a number (rounded for integers), the most frequent category, the more frequent
    of true/false."""
    stats = model.profile.get("features", {})
    return [_field(f, stats.get(f.name) or {}) for f in model.schema.features]


def _field(feature: FeatureSchema, stats: dict[str, Any]) -> Field:
    missing = float(stats.get("missing_rate") or 0.0)
    missing_words = f"; missing in {_percent(missing)} of training rows" if missing else ""
    if feature.kind == "categorical":
        made = _category(feature, stats)
    elif feature.dtype in ("bool", "boolean"):
        share = stats.get("mean")
        hint = f"true in {_percent(share)} of training rows" if share is not None else ""
        made = Field(feature.name, "flag", share is not None and share >= 0.5, hint=hint)
    else:
        made = _number(feature, stats)
    return replace(made, hint=made.hint + missing_words)


def _category(feature: FeatureSchema, stats: dict[str, Any]) -> Field:
    """A select box of the known categories, on the most frequent one."""
    frequencies: dict[str, float] = stats.get("frequencies") or {}
    mode = max(frequencies, key=frequencies.__getitem__) if frequencies else None
    categories = feature.categories
    first = categories[0] if categories else None
    chosen = mode if mode in categories else first
    common = f", most common: {mode} ({_percent(frequencies[mode])})" if mode else ""
    hint = f"{len(categories)} known categories{common}"
    return Field(feature.name, "category", chosen, categories=categories, hint=hint)


def _number(feature: FeatureSchema, stats: dict[str, Any]) -> Field:
    """A number input on the training median (rounded for an integer column)."""
    low, high = stats.get("min"), stats.get("max")
    median = training_median(stats)
    integer = feature.dtype.lower().lstrip("u").startswith("int")
    default = median if median is None else round(median) if integer else _readable(median)
    hint = (
        f"training range {plain_number(low)} to {plain_number(high)}"
        if low is not None and high is not None
        else "no training values"
    )
    if default is not None:
        hint += f", median {plain_number(default)}"
    kind: FieldKind = "integer" if integer else "number"
    return Field(feature.name, kind, default, low, high, hint=hint)


def training_median(stats: dict[str, Any]) -> float | None:
    """The training median from the profile's quantile bins: the middle edge when all ten
    deciles are distinct, else interpolated where the bins' cumulative share reaches one half."""
    edges: list[float] = stats.get("edges") or []
    fractions: list[float] = stats.get("fractions") or []
    if not edges:
        return None
    if len(edges) == 11:  # np.quantile's deciles: edge 5 is the median itself
        return float(edges[5])
    reached = 0.0
    for i, share in enumerate(fractions[: len(edges) - 1]):
        if share > 0 and reached + share >= 0.5:
            return float(edges[i] + (0.5 - reached) / share * (edges[i + 1] - edges[i]))
        reached += share
    return float(edges[-1])


def _readable(x: float) -> float:
    """A default a person reads: six significant digits (64.26, not 64.25999999999999)."""
    return float(f"{x:.6g}")


def _percent(share: float) -> str:
    return f"{share:.0%}".replace("%", " %") if share >= 0.01 else "under 1 %"


# ---------------------------------------------------------------------------- who may use it
def find(store: Store, name: str) -> Deployment:
    """The deployment of a form link; NotFound saying whether it was deleted (and when) or
    never existed."""
    try:
        return deployments.get_deployment(store, name)
    except NotFound:
        pass
    deleted = audit.deletion(store, name)
    if deleted is None:
        raise NotFound("deployment", name, "Check the link: there is no such deployment.")
    raise NotFound(
        "deployment",
        name,
        f"It was deleted on {deleted.logged_at:%Y-%m-%d %H:%M} UTC, so its form is gone too.",
    )


def is_public(store: Store, name: str) -> bool:
    """Whether a form link names an existing public deployment (whose form needs no login)."""
    try:
        return deployments.get_deployment(store, name).access == "public"
    except NotFound:
        return False


def check_access(store: Store, d: Deployment, user: str | None) -> None:
    """Raise unless `user` (None: nobody logged in) may use the form of `d`: public, anyone;
    instance, any active user (Unauthorized without a login); project, a collaborator of the
    deployment's project or an admin (Forbidden naming the access needed)."""
    if d.access == "public":
        return
    if user is None:
        raise Unauthorized(
            f"The prediction form of '{d.name}' is for logged-in users.", "Log in to use it."
        )
    doing = f"use the prediction form of '{d.name}'"
    if d.access == "instance":
        store.read(lambda tx: access.require_user(tx, user, doing))
        return
    if store.read(lambda tx: access.project_role(tx, user, d.project_id)) is None:
        project = projects.get_project(store, d.project_id).name
        raise Forbidden(
            f"The prediction form of '{d.name}' is open to collaborators of project "
            f"{project} only; you are not one.",
            f"Ask an owner of {project} or an admin to add you (a viewer is enough), or ask "
            "an owner of the deployment to make it open to every user.",
        )


def open_form(store: Store, name: str, user: str | None) -> Deployment:
    """The deployment of a form link, once `user` may use its form (`find`, `check_access`)."""
    d = find(store, name)
    check_access(store, d, user)
    return d


# ---------------------------------------------------------------------------- scoring one row
def endpoint(store: Store, d: Deployment) -> serving.Endpoint:
    """The deployment's current models, loaded as the API serves them (the challenger's answer
    is logged beside the main one, never shown)."""
    if d.current is None:
        raise InvalidInput(
            f"Deployment '{d.name}' has no current version, so its form cannot predict.",
            "Deploy a model to it.",
        )
    main = registry.get_model(store, d.current.main_model_id)
    estimator = registry.cached_estimator(store, main)
    challenger = (
        registry.get_model(store, d.current.challenger_model_id)
        if d.current.challenger_model_id
        else None
    )
    return serving.Endpoint(
        d,
        d.current.number,
        main,
        estimator,
        challenger,
        registry.cached_estimator(store, challenger) if challenger else None,
        store.workspace,
    )


@dataclass(frozen=True)
class Prediction:
    """The answer to one submitted form, as the page shows it and the log records it."""

    answer: serving.Answer
    record: dict[str, Any]
    explanation: Explanation | None
    explain_error: str | None = None
    challenger_record: dict[str, Any] | None = None  # logged beside the main one, not shown

    @property
    def prediction(self) -> Any:
        return self.answer.predictions[0]

    @property
    def probabilities(self) -> dict[str, float] | None:
        return self.answer.probabilities[0] if self.answer.probabilities else None


def clean(f: Field, value: Any) -> Any:
    """A widget's value as the row holds it: typed text NFC and stripped (blank: missing)."""
    if isinstance(value, str):
        value = unicodedata.normalize("NFC", value).strip()
        return value or None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def row_table(e: serving.Endpoint, values: dict[str, Any]) -> pa.Table:
    """The row as the API reads a `dataframe_records` body of it."""
    body = orjson.dumps({"dataframe_records": [values]})
    return payloads.read_mlflow(body, payloads.JSON, e.main.schema.feature_names)


def predict(e: serving.Endpoint, values: dict[str, Any], user: str | None) -> Prediction:
    """Score one row as the API would (with its explanation) and build its log record;
    SchemaMismatch/InvalidInput for a row the model cannot take. An explanation that fails
    leaves the prediction standing, with the reason."""
    table = row_table(e, values)
    explain_error = None
    try:
        answered = serving.answer(e, table, explained=True)
    except ModelDeckError:
        raise
    except Exception as exc:  # the explainer's failure must not cost the prediction
        explain_error = f"{type(exc).__name__}: {exc}"[:300]
        answered = serving.answer(e, table)
    record = serving.main_record(
        e, table, answered, request_id=secrets.token_hex(8), key_id=None, source="form"
    ) | {"user": user}
    found = answered.explanations[0] if answered.explanations else None
    return Prediction(
        answered,
        record,
        explanation(e, values, answered, found) if found else None,
        explain_error,
        shadow.challenger_record(e, table, record["request_id"], "form") if e.challenger else None,
    )


def explanation(
    e: serving.Endpoint, values: dict[str, Any], answered: serving.Answer, found: dict[str, Any]
) -> Explanation:
    """The API's explanation of the row as the runs' Explanation, so the app draws it alike."""
    predicted = answered.predictions[0]
    probabilities = answered.probabilities[0] if answered.probabilities else None
    contributions = sorted(
        (Contribution(f, values.get(f), float(v)) for f, v in found["contributions"].items()),
        key=lambda c: -abs(c.contribution),
    )
    missing = [c.feature for c in contributions if c.value is None]
    note = (
        f"Left missing: {', '.join(missing)}; the model's pipeline filled them in as in "
        "training, and their contributions are those of the filled-in values."
        if missing
        else ""
    )
    return Explanation(
        run_id="",
        which="main",
        row=0,
        key=None,
        model_id=e.main.id,
        algorithm=e.main.algorithm,
        explainer="",
        scale=str(found["scale"]),
        class_=None if probabilities is None else predicted,
        prediction=predicted,
        probability=None if probabilities is None else probabilities.get(str(predicted)),
        base_value=float(found["base"]),
        output=float(found["output"]),
        contributions=tuple(contributions),
        note=note,
    )
