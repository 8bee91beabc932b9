"""Explanations of a run's predictions: local SHAP for opened rows, global mean |SHAP| per run.

`explain_rows` reads only the asked rows from `runs/<id>/<which>.parquet`, explains them with
the explainer core.explainers picks for the model, and caches each explanation as a small JSON
file under `runs/<id>/explanations/` (written atomically), so reopening a row reads one file.
`global_importance` explains a sample of the run's rows, stratified by predicted class, and
stores mean |SHAP| per original feature as `runs/<id>/importance_<which>.json`, with each
sampled row's feature values and SHAP values beside it (`shap_<which>.parquet`, for the
beeswarm and dependence views); the worker calls `after_run` for it once a run has succeeded,
as its own step that never changes the run's outcome. Until the file exists the importance is
"computing". `model_importance` does the same once per model over the rows its metrics were
measured on (the rebuilt holdout), stored under `artifacts/<model_id>/`.

Every contribution is on one scale, named in the result (log-odds, logit, probability, value),
and base value + sum of contributions = output on that scale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import results, scoring
from core.datasets import get_dataset, load_frame
from core.engine.classes import class_texts, label_texts
from core.engine.model_input import finite, to_model_frame
from core.engine.profiles import plain
from core.entities import Model, Progress, Run, no_progress
from core.errors import DatasetError, InvalidInput, ModelDeckError, NotFound
from core.registry import background_sample, cached_estimator, get_model, list_versions
from core.runs import result_path, run_folder
from core.scoring import Loaded, feature_column, proba_name
from core.store import Store, Tx, quote_identifier, with_files
from core.workspace import atomic_path, atomic_write_bytes

if TYPE_CHECKING:  # core.explainers imports shap (~3 s): only when something is computed
    from core.engine.explainers import Attribution, ModelExplainer

log = logging.getLogger("modeldeck.explain")

GLOBAL_SAMPLE = 1000
AGNOSTIC_SAMPLE = 100  # Kernel SHAP costs ~0.25 s a row: a smaller sample, said in the note
MAX_ROWS = 100  # rows per explain_rows call
CACHE_MODELS = 4
VALUE, SHAP, SAMPLE_META = "value:", "shap:", "modeldeck.shap_sample"  # the sample's columns
By = Literal["auto", "key", "row"]


@dataclass(frozen=True)
class Contribution:
    """One original feature's share of the output, with the row's value (None = missing)."""

    feature: str
    value: Any
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """Why the model gave one row its output: base value + contributions = output (on `scale`)."""

    run_id: str
    which: str
    row: int
    key: Any
    model_id: str
    algorithm: str
    explainer: str
    scale: str
    class_: Any
    prediction: Any
    probability: float | None
    base_value: float
    output: float
    contributions: tuple[Contribution, ...]  # largest |contribution| first
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "contributions": [asdict(c) for c in self.contributions]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        return cls(
            **{**data, "contributions": tuple(Contribution(**c) for c in data["contributions"])}
        )


@dataclass(frozen=True)
class Importance:
    """Mean |SHAP| per original feature over a sample of a run's rows (largest first)."""

    run_id: str
    which: str
    model_id: str
    explainer: str
    scale: str
    rows: int
    features: tuple[tuple[str, float], ...]
    by_class: dict[str, dict[str, float]]
    seconds: float
    note: str = ""
    error: str | None = None


# ---------------------------------------------------------------------------- explainers
_explainers: OrderedDict[tuple[str, str, str], ModelExplainer] = OrderedDict()
_lock = threading.Lock()


def model_explainer(store: Store, model: Model, estimator: Any = None) -> ModelExplainer:
    """The explainer of a model, built once per process (a few most recent are kept).

    `estimator`: the model already loaded (and checked) by the caller; otherwise the
    process's kept estimator (registry.cached_estimator), so in the worker the global step
    reuses the model the run was just scored with. Raises ArtifactError when the model's file
    is missing or changed.
    """
    from core.engine.explainers import ModelExplainer

    key = (str(store.workspace.home), model.id, model.sha256)
    with _lock:
        if key in _explainers:
            _explainers.move_to_end(key)
            return _explainers[key]
    built = ModelExplainer(
        cached_estimator(store, model) if estimator is None else estimator,
        model.schema,
        lambda: background_sample(store, model),
    )
    with _lock:
        _explainers[key] = built
        while len(_explainers) > CACHE_MODELS:
            _explainers.popitem(last=False)
    return built


# ---------------------------------------------------------------------------- reading rows
_readable_runs: OrderedDict[tuple[str, str, str], Run] = OrderedDict()
READABLE_RUNS_KEPT = 256  # a run row is small; a session reopens a handful


def _readable(store: Store, run_id: str, which: str) -> Run:
    """results.readable, remembered per process for runs whose results were readable once.

    A finished run's row only changes when it is purged, which removes its files: so while
    the results file exists the remembered run is current, and a reopened explanation costs
    no store connection (25-34 ms, DESIGN.md traps). Raises as results.readable does.
    """
    key = (str(store.workspace.home), run_id, which)
    run = _readable_runs.get(key)
    path = result_path(store.workspace, run_id, which)
    if run is not None and path.exists():
        results.check_intact(run, path)  # a footer read: a file damaged since is named
        return run
    run, _ = results.readable(store, run_id, which)
    _readable_runs[key] = run
    while len(_readable_runs) > READABLE_RUNS_KEPT:
        _readable_runs.popitem(last=False)  # the oldest
    return run


def _model_of(store: Store, run: Run, which: str) -> Model:
    """The run's main or challenger model (registry.get_model keeps model rows per process)."""
    return get_model(store, run.summary[which]["model_id"])


def _feature_columns(model: Model, columns: list[str]) -> dict[str, str]:
    """Feature name -> its column in the results file (see scoring.feature_column)."""
    return {n: feature_column(model, n, columns) or n for n in model.schema.feature_names}


def _read_rows(
    store: Store, run: Run, which: str, wanted: Sequence[Any], by: By, key_column: str | None
) -> pa.Table:
    path = str(result_path(store.workspace, run.id, which))
    if by == "key":
        where, params = _key_filter(path, str(key_column), wanted)
    else:
        where, params = "_row", [_row_number(w) for w in wanted]

    def read(tx: Tx) -> pa.Table:
        marks = ", ".join("?" * len(params)) or "NULL"
        return tx.arrow(
            f"SELECT * FROM read_parquet(?) WHERE {where} IN ({marks}) ORDER BY _row",
            [path, *params],
        )

    return with_files(read)


def _key_filter(path: str, key_column: str, wanted: Sequence[Any]) -> tuple[str, list[Any]]:
    """The key column compared in its own type when it is text or integer, so the Parquet
    row groups' min/max statistics skip most of a large file; as text otherwise."""
    kind = pq.read_schema(path).field(key_column).type
    if pa.types.is_integer(kind):
        numbers = []
        for w in wanted:
            try:
                numbers.append(int(str(w)))
            except ValueError:
                continue  # cannot be an integer key: reported as not found
        return quote_identifier(key_column), numbers
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return quote_identifier(key_column), [str(w) for w in wanted]
    return f"CAST({quote_identifier(key_column)} AS VARCHAR)", [str(w) for w in wanted]


def _row_number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"'{value}' is not a row number.", "Give the row's number as shown in the _row column."
        ) from exc


def _model_frame(table: pa.Table, model: Model) -> pd.DataFrame:
    mapping = _feature_columns(model, table.column_names)
    renamed = pa.table({name: table.column(col) for name, col in mapping.items()})
    return finite(to_model_frame(renamed.combine_chunks().to_batches()[0], model.schema))


# ---------------------------------------------------------------------------- local
def explain_rows(
    store: Store,
    run_id: str,
    keys_or_rows: Sequence[Any],
    which: str = "main",
    class_: Any = None,
    *,
    by: By = "auto",
) -> list[Explanation]:
    """Explanations of the given rows of a run, in the order asked; cached per row and class.

    `by="auto"` matches prediction keys when the run has a key column, else row numbers
    (`_row`). `class_` defaults to each row's predicted class. Raises NotFound for a row or
    class that is not in the run, Conflict/InvalidInput for a run without readable results
    (failed, queued, purged, no rows).
    """
    run = _readable(store, run_id, which)  # raises for unreadable runs
    wanted = list(dict.fromkeys(keys_or_rows))
    if not wanted or len(wanted) > MAX_ROWS:
        raise InvalidInput(
            f"Explain between 1 and {MAX_ROWS} rows at a time.", "Pick the rows to explain."
        )
    model = _model_of(store, run, which)
    key_column = run.summary.get("columns", {}).get("key")
    by = ("key" if key_column else "row") if by == "auto" else by
    if by == "key" and not key_column:
        raise InvalidInput(
            f"Run {run.id} has no prediction key column.",
            "Give row numbers (the _row column) instead.",
        )
    table = _read_rows(store, run, which, wanted, by, key_column)
    found = table.column("_row" if by == "row" else key_column).to_pylist()
    found_text = {str(v) for v in found}
    missing = [w for w in wanted if str(w) not in found_text]
    if missing:
        what = "row number" if by == "row" else f"row with {key_column}"
        raise NotFound(
            what,
            str(missing[0]),
            f"Run {run.id} has {run.rows_out:,} rows; pick one from the results table.",
        )
    out = {}
    pending: list[int] = []
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        cached = _read_cache(store, run, which, row["_row"], _class_of(model, row, class_))
        if cached is not None:
            out[i] = cached
        else:
            pending.append(i)
    if pending:
        out.update(
            _compute(store, run, which, model, table.take(pending), pending, class_, key_column)
        )
    by_ident = {str(rows[i][key_column if by == "key" else "_row"]): e for i, e in out.items()}
    return [by_ident[str(w)] for w in wanted]


def _class_of(model: Model, row: dict[str, Any], class_: Any) -> Any:
    if model.task == "regression":
        return None
    classes = list(model.schema.classes)
    chosen = row["prediction"] if class_ is None else class_
    wanted = label_texts(np.asarray([chosen], dtype=object), classes)[0]  # "2" meets class 2
    for c, text in zip(classes, class_texts(classes), strict=True):
        if text == wanted:
            return c
    raise NotFound("class", str(chosen), f"Classes of this model: {', '.join(map(str, classes))}.")


def _cache_path(store: Store, run: Run, which: str, row: int, class_: Any) -> Any:
    tag = "value" if class_ is None else hashlib.sha1(repr(class_).encode()).hexdigest()[:12]
    return run_folder(store.workspace, run.id).explanation(which, row, tag)


def _read_cache(store: Store, run: Run, which: str, row: int, class_: Any) -> Explanation | None:
    path = _cache_path(store, run, which, row, class_)
    try:
        return Explanation.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None  # absent or unreadable: compute again


def _compute(
    store: Store,
    run: Run,
    which: str,
    model: Model,
    table: pa.Table,
    positions: list[int],
    class_: Any,
    key_column: str | None,
) -> dict[int, Explanation]:
    explainer = model_explainer(store, model)
    frame = _model_frame(table, model)
    attribution = explainer.explain(frame)
    out = {}
    for n, (pos, row) in enumerate(zip(positions, table.to_pylist(), strict=True)):
        chosen = _class_of(model, row, class_)
        explanation = _one(
            run, which, model, explainer, attribution, n, frame.iloc[n], row, chosen, key_column
        )
        atomic_write_bytes(
            _cache_path(store, run, which, row["_row"], chosen),
            json.dumps(explanation.to_dict(), default=str).encode(),
        )
        out[pos] = explanation
    return out


def _signed(attribution: Attribution, class_: Any) -> tuple[int, float]:
    """(output index, sign) giving `class_`'s output (a binary negative class is negated)."""
    if class_ is not None and class_ == attribution.negative:
        return 0, -1.0
    outputs = list(attribution.outputs)
    return (outputs.index(class_) if class_ in outputs else 0), 1.0


def _one(
    run: Run,
    which: str,
    model: Model,
    explainer: ModelExplainer,
    attribution: Attribution,
    n: int,
    values: pd.Series,
    row: dict[str, Any],
    class_: Any,
    key_column: str | None,
) -> Explanation:
    k, sign = _signed(attribution, class_)
    contributions = sorted(
        (
            Contribution(name, _plain(values[name]), sign * float(attribution.values[n, j, k]))
            for j, name in enumerate(explainer.features)
        ),
        key=lambda c: -abs(c.contribution),
    )
    missing = [c.feature for c in contributions if c.value is None]
    note = explainer.note
    if missing:
        note = (note + " " if note else "") + (
            f"Missing in this row: {', '.join(missing)}; the model's pipeline imputed them, "
            "and their contributions are those of the imputed values."
        )
    probability = row.get(proba_name(class_)) if class_ is not None else None
    return Explanation(
        run_id=run.id,
        which=which,
        row=int(row["_row"]),
        key=_plain(row.get(key_column)) if key_column else None,
        model_id=model.id,
        algorithm=model.algorithm,
        explainer=explainer.name,
        scale=explainer.scale,
        class_=_plain(class_),
        prediction=_plain(row.get("prediction")),
        probability=None if probability is None else float(probability),
        base_value=sign * float(attribution.base[k]),
        output=sign * float(attribution.output[n, k]),
        contributions=tuple(contributions),
        note=note,
    )


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return plain(value)


# ---------------------------------------------------------------------------- global
def importance_path(store: Store, run_id: str, which: str) -> Path:
    return run_folder(store.workspace, run_id).importance(which)


def sample_path(store: Store, run_id: str, which: str) -> Path:
    """The global step's per-row SHAP values beside its importance file."""
    return run_folder(store.workspace, run_id).shap_sample(which)


def get_importance(store: Store, run_id: str, which: str = "main") -> Importance | None:
    """The stored global importance of a run, or None while it is being computed."""
    _check_which(which)
    return _read_importance(importance_path(store, run_id, which))


def get_shap_sample(store: Store, run_id: str, which: str = "main") -> ShapSample | None:
    """The per-row SHAP values behind a run's global importance (None until computed, or for
    importance files older than the sample file)."""
    _check_which(which)
    return _read_sample(sample_path(store, run_id, which))


def _check_which(which: str) -> None:
    if which not in results.WHICH:
        raise InvalidInput(
            f"Unknown results '{which}'.", f"Choose one of: {', '.join(results.WHICH)}."
        )


def _read_importance(path: Path) -> Importance | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Importance(**{**data, "features": tuple(tuple(f) for f in data["features"])})


def global_importance(
    store: Store,
    run_id: str,
    which: str = "main",
    sample: int = GLOBAL_SAMPLE,
    progress: Progress = no_progress,
) -> Importance:
    """Compute and store mean |SHAP| per original feature over a stratified sample of a run.

    Idempotent (recomputes and replaces the files). Raises Conflict/InvalidInput for a run
    without readable results, InvalidInput for a sample size below 1.
    """
    _check_sample(sample)
    run, _ = results.readable(store, run_id, which)
    return run_importance(store, run, which, sample, progress)


def _check_sample(sample: int) -> None:
    if sample < 1:
        raise InvalidInput(
            f"The sample size must be at least 1, not {sample}.",
            f"The default is {GLOBAL_SAMPLE} rows.",
        )


def run_importance(
    store: Store,
    run: Run,
    which: str,
    sample: int = GLOBAL_SAMPLE,
    progress: Progress = no_progress,
    loaded: Loaded | None = None,
) -> Importance:
    """global_importance for a run already read (the worker's step: no store connection when
    `loaded` is the model the run was scored with)."""
    started = time.perf_counter()
    model = loaded.model if loaded is not None else _model_of(store, run, which)
    explainer = model_explainer(store, model, loaded.estimator if loaded else None)
    sample, note = _sample_size(explainer, sample)
    columns = [
        "_row",
        "prediction",
        *_feature_columns(
            model, pq.read_schema(result_path(store.workspace, run.id, which)).names
        ).values(),
    ]
    table = sample_rows(store, run, which, sample, model.task != "regression", columns)
    result, rows = _explain_sample(
        explainer,
        _model_frame(table, model),
        table.column("prediction").to_pylist(),
        table.column("_row").to_numpy(),
        progress,
    )
    importance = replace(
        result,
        run_id=run.id,
        which=which,
        model_id=model.id,
        note=note,
        seconds=round(time.perf_counter() - started, 4),
    )
    _write_results(
        importance_path(store, run.id, which), sample_path(store, run.id, which), importance, rows
    )
    return importance


def _sample_size(explainer: ModelExplainer, sample: int) -> tuple[int, str]:
    note = explainer.note
    if explainer.kind == "agnostic" and sample > AGNOSTIC_SAMPLE:
        sample = AGNOSTIC_SAMPLE
        note = (note + " " if note else "") + (
            f"Model-agnostic SHAP is slow, so {AGNOSTIC_SAMPLE} rows were sampled."
        )
    return sample, note


def _explain_sample(
    explainer: ModelExplainer,
    frame: pd.DataFrame,
    predictions: list[Any],
    row_numbers: np.ndarray,
    progress: Progress,
) -> tuple[Importance, pa.Table]:
    """Mean |SHAP| of each row's predicted class (the one output for regression/binary), per
    class output for multiclass, and the rows' values and SHAP values as a table."""
    attribution = explainer.explain(frame, lambda f: progress(f, "explaining the sample"))
    features = explainer.features
    picks = _picks(attribution, predictions)
    everyone = np.arange(len(frame))
    chosen = attribution.values[everyone, :, picks]
    by_class = {}
    if len(attribution.outputs) > 1:
        by_class = {
            str(c): dict(
                zip(
                    features,
                    np.abs(attribution.values[:, :, k]).mean(axis=0).round(10).tolist(),
                    strict=True,
                )
            )
            for k, c in enumerate(attribution.outputs)
        }
    ranked = sorted(
        zip(features, np.abs(chosen).mean(axis=0).round(10).tolist(), strict=True),
        key=lambda f: -f[1],
    )
    classes = [attribution.outputs[k] for k in picks]
    columns: dict[str, Any] = {
        "_row": pa.array(row_numbers, pa.int64()),
        "_class": pa.array([None if c is None else str(c) for c in classes], pa.string()),
        "_base": pa.array(attribution.base[picks], pa.float64()),
        "_output": pa.array(attribution.output[everyone, picks], pa.float64()),
    }
    for j, name in enumerate(features):
        column = frame[name]
        columns[VALUE + name] = pa.array(  # NaN -> null: missing
            column, pa.string() if name in explainer.categorical else pa.float64(), from_pandas=True
        )
        columns[SHAP + name] = pa.array(chosen[:, j], pa.float64())
    table = pa.table(columns).replace_schema_metadata(
        {
            SAMPLE_META: json.dumps(
                {
                    "scale": explainer.scale,
                    "features": features,
                    "categorical": sorted(explainer.categorical),
                }
            )
        }
    )
    result = Importance(
        "", "", "", explainer.name, explainer.scale, len(frame), tuple(ranked), by_class, 0.0
    )
    return result, table


def _picks(attribution: Attribution, predictions: list[Any]) -> np.ndarray:
    """The output explained for each row: its predicted class's, or the one output."""
    if len(attribution.outputs) == 1:
        return np.zeros(len(predictions), dtype=np.int64)
    index = {str(c): k for k, c in enumerate(attribution.outputs)}
    return np.asarray([index.get(str(p), 0) for p in predictions], dtype=np.int64)


def _write_results(
    importance_file: Path, sample_file: Path, result: Importance, rows: pa.Table | None
) -> None:
    """The sample first, then the importance file whose presence says "done"."""
    if rows is None:
        sample_file.unlink(missing_ok=True)  # an older sample would not match the error
    else:
        with atomic_path(sample_file) as tmp:
            pq.write_table(rows, tmp, compression="none", write_statistics=False)  # small
    data = {**asdict(result), "features": [list(f) for f in result.features]}
    atomic_write_bytes(importance_file, json.dumps(data).encode())


@dataclass(frozen=True, eq=False)
class ShapSample:
    """The rows behind a global importance: per row and original feature its value (None =
    missing) and SHAP value, for the output explained (`_class`): base + sum = output."""

    scale: str
    features: tuple[str, ...]
    categorical: frozenset[str]
    table: pa.Table  # _row, _class, _base, _output, value:<feature>..., shap:<feature>...

    @property
    def rows(self) -> int:
        rows: int = self.table.num_rows
        return rows

    def values(self, feature: str) -> list[Any]:
        values: list[Any] = self.table.column(VALUE + feature).to_pylist()
        return values

    def shap(self, feature: str) -> np.ndarray:
        shap: np.ndarray = self.table.column(SHAP + feature).to_numpy()
        return shap

    def column(self, name: str) -> np.ndarray:
        column: np.ndarray = self.table.column(name).to_numpy(zero_copy_only=False)
        return column

    def ranked(self) -> list[str]:
        """Features by mean |SHAP| over the sample, largest first."""
        return sorted(self.features, key=lambda f: -float(np.abs(self.shap(f)).mean()))


def _read_sample(path: Path) -> ShapSample | None:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    meta = json.loads((table.schema.metadata or {}).get(SAMPLE_META.encode(), b"{}"))
    return ShapSample(
        meta.get("scale", ""),
        tuple(meta.get("features", ())),
        frozenset(meta.get("categorical", ())),
        table,
    )


def sample_rows(
    store: Store, run: Run, which: str, size: int, stratified: bool, columns: Sequence[str] = ()
) -> pa.Table:
    """About `size` rows of a run's results, each predicted class in its share (at least one),
    with `columns` only (default: all).

    From the sample scoring kept (scoring.Sampler: no scan of the results) when it holds at
    least `size` rows' worth; else one scan: a deterministic hash of `_row` against a
    per-class rate (from the class counts in the run's summary), then trimmed per class.
    """
    kept = _kept_sample(store, run, which, size, stratified, columns)
    if kept is not None:
        return kept
    selected = ", ".join(quote_identifier(c) for c in columns) or "*"
    path = str(result_path(store.workspace, run.id, which))
    total = run.rows_out or 0
    fallback = min(1.0, 1.5 * size / max(total, 1) + 1e-9)
    counts = (run.summary.get(which) or {}).get("class_counts") or {}
    cases, params = [], []
    if stratified and total > size:
        for label, n in counts.items():  # oversample by half so the trim rarely runs short
            if n:
                quota = max(1, round(size * n / total))
                cases.append("WHEN CAST(prediction AS VARCHAR) = ? THEN ?")
                params += [label, min(1.0, 1.5 * quota / n + 10 / n)]
    rate_sql = f"CASE {' '.join(cases)} ELSE ? END" if cases else "?"

    def read(tx: Tx) -> pa.Table:
        return tx.arrow(
            f"SELECT {selected} FROM read_parquet(?)"
            " WHERE (hash(_row) % 1000000) / 1e6"
            f" < {rate_sql} ORDER BY _row",
            [path, *params, fallback],
        )

    table = with_files(read)
    if table.num_rows <= size:
        return table
    labels = (
        [str(p) for p in table.column("prediction").to_pylist()]
        if stratified
        else ["all"] * table.num_rows
    )
    return table.take(_stratified_take(labels, size))


def _kept_sample(
    store: Store, run: Run, which: str, size: int, stratified: bool, columns: Sequence[str]
) -> pa.Table | None:
    """`size` rows from the sample scoring kept, or None when there is none big enough (an
    older run, a larger size, or an unstratified request on a classification run)."""
    info = (run.summary.get(which) or {}).get("sample") or {}
    is_classes = run.summary.get("task") not in (None, "regression")
    if not info or info.get("size", 0) < size or stratified != is_classes:
        return None
    path = run_folder(store.workspace, run.id).path / str(info.get("path"))
    try:
        table = pq.read_table(path, columns=list(columns) or None)
    except (OSError, pa.ArrowException):
        return None  # purged or damaged: the scan says what is wrong
    if info["size"] == size or table.num_rows <= size:
        return table
    # A smaller sample is the same rule with a smaller size: the smallest keys of each group.
    groups = (
        [str(p) for p in table.column("prediction").to_pylist()]
        if stratified
        else ["all"] * table.num_rows
    )
    counts = {g: int(n) for g, n in pd.Series(groups).value_counts().items()}
    total = (run.summary.get(which) or {}).get("class_counts") if stratified else None
    quotas = scoring.stratified_quotas(
        {g: int(total.get(g, counts[g])) for g in counts} if total else counts, size
    )
    keys = scoring.row_keys(table.column("_row").to_numpy())
    order = np.lexsort((keys, np.array(groups, dtype=str)))  # by group, then key
    taken: dict[str, int] = {}
    keep = []
    for i in order:
        g = groups[i]
        if taken.get(g, 0) < quotas.get(g, 0):
            taken[g] = taken.get(g, 0) + 1
            keep.append(i)
    return table.take(sorted(keep))


def _stratified_take(labels: Sequence[str], size: int) -> list[int]:
    """Positions of about `size` rows, the first of each label in its share (at least one),
    in their original order."""
    keys = pd.Series(labels)
    keep: list[int] = []
    for _, group in keys.groupby(keys, sort=False):
        keep += group.index[: max(1, round(size * len(group) / len(keys)))].tolist()
    return sorted(keep)


def after_run(
    store: Store, run: Run, progress: Progress = no_progress, loaded: Sequence[Loaded] = ()
) -> None:
    """The worker's step after a run: global importance of each results file of a succeeded
    run. Never raises: a failure is stored in the importance file (and logged), the run stays
    as it ended. `loaded`: the models the run was scored with, so they are not loaded again.
    """
    if run.status != "succeeded" or not run.summary.get("results_written"):
        return
    for which in results.WHICH:
        if not result_path(store.workspace, run.id, which).exists():
            continue
        model_id = (run.summary.get(which) or {}).get("model_id", "")
        mine = next((m for m in loaded if m.model.id == model_id), None)
        try:
            run_importance(store, run, which, progress=progress, loaded=mine)
        except Exception as exc:  # the run's outcome must not depend on this step
            if not isinstance(exc, ModelDeckError):
                log.exception("global importance of run %s (%s) failed", run.id, which)
            _write_results(
                importance_path(store, run.id, which),
                sample_path(store, run.id, which),
                Importance(
                    run.id,
                    which,
                    model_id,
                    "",
                    "",
                    0,
                    (),
                    {},
                    0.0,
                    error=f"Global importance could not be computed: {exc}",
                ),
                None,
            )


# ---------------------------------------------------------------------------- model holdout
def model_importance_path(store: Store, model: Model) -> Path:
    return store.workspace.artifact_dir(model.id) / "importance_holdout.json"


def model_sample_path(store: Store, model: Model) -> Path:
    return store.workspace.artifact_dir(model.id) / "shap_holdout.parquet"


def get_model_importance(store: Store, model: Model) -> Importance | None:
    """The stored global importance of a model over its holdout rows, or None (not yet)."""
    return _read_importance(model_importance_path(store, model))


def get_model_shap_sample(store: Store, model: Model) -> ShapSample | None:
    return _read_sample(model_sample_path(store, model))


# One lock per model id's stripe: two sessions asking for one model's importance compute it
# once; a fixed number of locks keeps this bounded however many models a process sees.
_COMPUTING = tuple(threading.Lock() for _ in range(64))


def model_importance(
    store: Store, model: Model, sample: int = GLOBAL_SAMPLE, progress: Progress = no_progress
) -> Importance:
    """Mean |SHAP| per feature over the rows the model's metrics were measured on (the
    training holdout, rebuilt; the reference dataset of an imported model), stored once under
    the model's artifact folder: a later call reads the file. Sessions of one process asking
    at once compute it once. Raises DatasetError when the rows cannot be rebuilt,
    ArtifactError when the model cannot be loaded, InvalidInput for a sample below 1.
    """
    _check_sample(sample)
    key = f"{store.workspace.home}:{model.id}".encode()
    with _COMPUTING[int(hashlib.sha256(key).hexdigest(), 16) % len(_COMPUTING)]:
        found = get_model_importance(store, model)
        if found is not None:
            return found
        started = time.perf_counter()
        progress(0.0, "Rebuilding the holdout rows")
        rows, which = evaluation_rows(store, model)
        explainer = model_explainer(store, model)
        size, note = _sample_size(explainer, sample)
        frame = finite(
            to_model_frame(pa.RecordBatch.from_pandas(rows, preserve_index=False), model.schema)
        )
        numbers = rows.index.to_numpy()
        predictions = [None] * len(frame)
        if model.task != "regression":
            predictions = [plain(p) for p in explainer.estimator.predict(frame)]
            note = _check_accuracy(model, rows[model.schema.target], predictions, note)
        if len(frame) > size:
            order = np.random.default_rng(0).permutation(len(frame))
            labels = [str(predictions[i]) for i in order]
            keep = np.sort(order[_stratified_take(labels, size)])
            frame, numbers = frame.iloc[keep].reset_index(drop=True), numbers[keep]
            predictions = [predictions[i] for i in keep]
        progress(0.05, "Explaining the sample")
        result, table = _explain_sample(
            explainer, frame, predictions, numbers, lambda f, t: progress(0.05 + 0.95 * f, t)
        )
        importance = replace(
            result,
            which=which,
            model_id=model.id,
            note=note,
            seconds=round(time.perf_counter() - started, 4),
        )
        _write_results(
            model_importance_path(store, model), model_sample_path(store, model), importance, table
        )
        return importance


def _check_accuracy(model: Model, labels: pd.Series, predictions: list[Any], note: str) -> str:
    """The note, plus a warning when the rebuilt rows do not give the recorded accuracy."""
    recorded = model.metrics.get("accuracy")
    accuracy = float(
        np.mean([str(p) == str(plain(y)) for p, y in zip(predictions, labels, strict=True)])
    )
    if recorded is None or abs(accuracy - recorded) < 1e-6:
        return note
    return (note + " " if note else "") + (
        f"These rows give accuracy {accuracy:.4f}, not the recorded {recorded:.4f}: they may "
        "not be exactly the rows the metrics were measured on."
    )


def evaluation_rows(store: Store, model: Model) -> tuple[pd.DataFrame, str]:
    """(the rows the model's metrics were measured on: features and target, "holdout" |
    "reference").

    A trained model's holdout is rebuilt exactly from its version: the dataset's immutable
    snapshot, the target's labelled rows and the same split (test share, seed, stratified
    for classification); the row count is checked against the one recorded at training. An
    imported model was measured on all labelled rows of its reference dataset.
    """
    version = next(v for v in list_versions(store, model.experiment_id) if v.id == model.version_id)
    dataset = get_dataset(store, version.dataset_id)
    try:
        frame = load_frame(store, dataset)
    except OSError as exc:
        raise DatasetError(
            f"The snapshot of dataset '{dataset.name}' is missing, so the rows "
            f"model {model.id} was measured on cannot be rebuilt.",
            "Restore the workspace's datasets folder from a backup.",
        ) from exc
    target, features = model.schema.target, model.schema.feature_names
    from core.training import labelled_rows, split_holdout  # the rows training saw, its split

    labelled = labelled_rows(frame, features, target, model.task)
    if model.origin == "imported":
        return labelled, "reference"
    settings = version.settings
    _, holdout = split_holdout(
        labelled, target, model.task, settings["test_size"], settings["seed"]
    )
    expected = settings.get("holdout_rows", len(holdout))
    if len(holdout) != expected:
        raise DatasetError(
            f"The holdout of model {model.id} has {len(holdout)} rows, not the "
            f"{expected} it was measured on.",
            "The dataset snapshot changed; retrain the model.",
        )
    return holdout, "holdout"
