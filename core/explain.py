"""Explanations of a run's predictions: local SHAP for opened rows, global mean |SHAP| per run.

`explain_rows` reads only the asked rows from `runs/<id>/<which>.parquet`, explains them with
the explainer core.explainers picks for the model, and caches each explanation as a small JSON
file under `runs/<id>/explanations/` (written atomically), so reopening a row reads one file.
`global_importance` explains a sample of the run's rows, stratified by predicted class, and
stores mean |SHAP| per original feature as `runs/<id>/importance_<which>.json`; the worker calls
`after_run` for it once a run has succeeded, as its own step that never changes the run's
outcome. Until the file exists the importance is "computing".

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import results
from core.entities import Model, Progress, Run, no_progress
from core.errors import InvalidInput, ModelDeckError, NotFound
from core.model_input import to_model_frame
from core.profiles import plain
from core.registry import background_sample, get_model, load_estimator
from core.runs import result_path, results_dir
from core.scoring import RESULT_COLUMNS, proba_name
from core.store import Store, Tx, with_files
from core.workspace import atomic_write_bytes

if TYPE_CHECKING:  # core.explainers imports shap (~3 s): only when something is computed
    from core.explainers import Attribution, ModelExplainer

log = logging.getLogger("modeldeck.explain")

GLOBAL_SAMPLE = 1000
AGNOSTIC_SAMPLE = 100  # Kernel SHAP costs ~0.25 s a row: a smaller sample, said in the note
MAX_ROWS = 100  # rows per explain_rows call
CHUNK_ROWS = 100  # global step: rows explained between two progress calls
CACHE_MODELS = 4
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
        return cls(**{**data, "contributions": tuple(Contribution(**c)
                                                     for c in data["contributions"])})


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


def model_explainer(store: Store, model: Model) -> ModelExplainer:
    """The explainer of a model, built once per process (a few most recent are kept).

    Raises ArtifactError when the model's file is missing or changed.
    """
    from core.explainers import ModelExplainer

    key = (str(store.workspace.home), model.id, model.sha256)
    with _lock:
        if key in _explainers:
            _explainers.move_to_end(key)
            return _explainers[key]
    built = ModelExplainer(load_estimator(store, model), model.schema,
                           background_sample(store, model))
    with _lock:
        _explainers[key] = built
        while len(_explainers) > CACHE_MODELS:
            _explainers.popitem(last=False)
    return built


# ---------------------------------------------------------------------------- reading rows
_readable_runs: dict[tuple[str, str, str], Run] = {}


def _readable(store: Store, run_id: str, which: str) -> Run:
    """results.readable, remembered per process for runs whose results were readable once.

    A finished run's row only changes when it is purged, which removes its files: so while
    the results file exists the remembered run is current, and a reopened explanation costs
    no store connection (25-34 ms, DESIGN.md traps). Raises as results.readable does.
    """
    key = (str(store.workspace.home), run_id, which)
    run = _readable_runs.get(key)
    if run is not None and result_path(store.workspace, run.id, which).exists():
        return run
    run, _ = results.readable(store, run_id, which)
    _readable_runs[key] = run
    return run


_models: dict[tuple[str, str], Model] = {}


def _model_of(store: Store, run: Run, which: str) -> Model:
    """The run's main or challenger model; model rows never change, so kept per process."""
    key = (str(store.workspace.home), run.summary[which]["model_id"])
    if key not in _models:
        _models[key] = get_model(store, key[1])
    return _models[key]


def _feature_columns(model: Model, columns: list[str]) -> dict[str, str]:
    """Feature name -> its column in the results file (a clashing name became input_<name>)."""
    reserved = {*RESULT_COLUMNS, *(proba_name(c) for c in model.schema.classes)}
    found = {}
    for name in model.schema.feature_names:
        column = name
        if name in reserved:
            column = f"input_{name}"
            while column not in columns and len(column) < len(name) + 60:
                column = f"input_{column}"
        found[name] = column
    return found


def _read_rows(store: Store, run: Run, which: str, wanted: Sequence[Any], by: By,
               key_column: str | None) -> pa.Table:
    path = str(result_path(store.workspace, run.id, which))
    if by == "key":
        where, params = _key_filter(path, str(key_column), wanted)
    else:
        where, params = "_row", [_row_number(w) for w in wanted]

    def read(tx: Tx) -> pa.Table:
        marks = ", ".join("?" * len(params)) or "NULL"
        return tx.arrow(f"SELECT * FROM read_parquet(?) WHERE {where} IN ({marks})"
                        " ORDER BY _row", [path, *params])

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
        return _quote(key_column), numbers
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _quote(key_column), [str(w) for w in wanted]
    return f"CAST({_quote(key_column)} AS VARCHAR)", [str(w) for w in wanted]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row_number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"'{value}' is not a row number.",
                           "Give the row's number as shown in the _row column.") from exc


def _model_frame(table: pa.Table, model: Model) -> pd.DataFrame:
    mapping = _feature_columns(model, table.column_names)
    renamed = pa.table({name: table.column(col) for name, col in mapping.items()})
    return to_model_frame(renamed.combine_chunks().to_batches()[0], model.schema)


# ---------------------------------------------------------------------------- local
def explain_rows(store: Store, run_id: str, keys_or_rows: Sequence[Any], which: str = "main",
                 class_: Any = None, *, by: By = "auto") -> list[Explanation]:
    """Explanations of the given rows of a run, in the order asked; cached per row and class.

    `by="auto"` matches prediction keys when the run has a key column, else row numbers
    (`_row`). `class_` defaults to each row's predicted class. Raises NotFound for a row or
    class that is not in the run, Conflict/InvalidInput for a run without readable results
    (failed, queued, purged, no rows).
    """
    run = _readable(store, run_id, which)  # raises for unreadable runs
    wanted = list(dict.fromkeys(keys_or_rows))
    if not wanted or len(wanted) > MAX_ROWS:
        raise InvalidInput(f"Explain between 1 and {MAX_ROWS} rows at a time.",
                           "Pick the rows to explain.")
    model = _model_of(store, run, which)
    key_column = run.summary.get("columns", {}).get("key")
    by = ("key" if key_column else "row") if by == "auto" else by
    if by == "key" and not key_column:
        raise InvalidInput(f"Run {run.id} has no prediction key column.",
                           "Give row numbers (the _row column) instead.")
    table = _read_rows(store, run, which, wanted, by, key_column)
    found = table.column("_row" if by == "row" else key_column).to_pylist()
    found_text = {str(v) for v in found}
    missing = [w for w in wanted if str(w) not in found_text]
    if missing:
        what = "row number" if by == "row" else f"row with {key_column}"
        raise NotFound(what, str(missing[0]), f"Run {run.id} has {run.rows_out:,} rows; "
                       "pick one from the results table.")
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
        out.update(_compute(store, run, which, model, table.take(pending), pending, class_,
                            key_column))
    by_ident = {str(rows[i][key_column if by == "key" else "_row"]): e for i, e in out.items()}
    return [by_ident[str(w)] for w in wanted]


def _class_of(model: Model, row: dict[str, Any], class_: Any) -> Any:
    if model.task == "regression":
        return None
    classes = list(model.schema.classes)
    chosen = row["prediction"] if class_ is None else class_
    for c in classes:
        if str(c) == str(chosen):
            return c
    raise NotFound("class", str(chosen), f"Classes of this model: {', '.join(map(str, classes))}.")


def _cache_path(store: Store, run: Run, which: str, row: int, class_: Any) -> Any:
    tag = "value" if class_ is None else hashlib.sha1(repr(class_).encode()).hexdigest()[:12]
    return results_dir(store.workspace, run.id) / "explanations" / f"{which}-{row}-{tag}.json"


def _read_cache(store: Store, run: Run, which: str, row: int, class_: Any) -> Explanation | None:
    path = _cache_path(store, run, which, row, class_)
    try:
        return Explanation.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None  # absent or unreadable: compute again


def _compute(store: Store, run: Run, which: str, model: Model, table: pa.Table,
             positions: list[int], class_: Any, key_column: str | None
             ) -> dict[int, Explanation]:
    explainer = model_explainer(store, model)
    frame = _model_frame(table, model)
    attribution = explainer.explain(frame)
    out = {}
    for n, (pos, row) in enumerate(zip(positions, table.to_pylist(), strict=True)):
        chosen = _class_of(model, row, class_)
        explanation = _one(run, which, model, explainer, attribution, n, frame.iloc[n], row,
                           chosen, key_column)
        atomic_write_bytes(_cache_path(store, run, which, row["_row"], chosen),
                           json.dumps(explanation.to_dict(), default=str).encode())
        out[pos] = explanation
    return out


def _signed(attribution: Attribution, class_: Any) -> tuple[int, float]:
    """(output index, sign) giving `class_`'s output (a binary negative class is negated)."""
    if class_ is not None and class_ == attribution.negative:
        return 0, -1.0
    outputs = list(attribution.outputs)
    return (outputs.index(class_) if class_ in outputs else 0), 1.0


def _one(run: Run, which: str, model: Model, explainer: ModelExplainer,
         attribution: Attribution, n: int, values: pd.Series, row: dict[str, Any],
         class_: Any, key_column: str | None) -> Explanation:
    k, sign = _signed(attribution, class_)
    contributions = sorted(
        (Contribution(name, _plain(values[name]), sign * float(attribution.values[n, j, k]))
         for j, name in enumerate(explainer.features)),
        key=lambda c: -abs(c.contribution))
    missing = [c.feature for c in contributions if c.value is None]
    note = explainer.note
    if missing:
        note = (note + " " if note else "") + (
            f"Missing in this row: {', '.join(missing)}; the model's pipeline imputed them, "
            "and their contributions are those of the imputed values.")
    probability = row.get(proba_name(class_)) if class_ is not None else None
    return Explanation(
        run_id=run.id, which=which, row=int(row["_row"]),
        key=_plain(row.get(key_column)) if key_column else None, model_id=model.id,
        algorithm=model.algorithm, explainer=explainer.name, scale=explainer.scale,
        class_=_plain(class_), prediction=_plain(row.get("prediction")),
        probability=None if probability is None else float(probability),
        base_value=sign * float(attribution.base[k]),
        output=sign * float(attribution.output[n, k]), contributions=tuple(contributions),
        note=note)


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
def importance_path(store: Store, run_id: str, which: str) -> Any:
    return results_dir(store.workspace, run_id) / f"importance_{which}.json"


def get_importance(store: Store, run_id: str, which: str = "main") -> Importance | None:
    """The stored global importance of a run, or None while it is being computed."""
    if which not in results.WHICH:
        raise InvalidInput(f"Unknown results '{which}'.",
                           f"Choose one of: {', '.join(results.WHICH)}.")
    try:
        data = json.loads(importance_path(store, run_id, which).read_text())
    except (OSError, ValueError):
        return None
    return Importance(**{**data, "features": tuple(tuple(f) for f in data["features"])})


def global_importance(store: Store, run_id: str, which: str = "main",
                      sample: int = GLOBAL_SAMPLE, progress: Progress = no_progress
                      ) -> Importance:
    """Compute and store mean |SHAP| per original feature over a stratified sample of a run.

    Idempotent (recomputes and replaces the file). Raises Conflict/InvalidInput for a run
    without readable results, InvalidInput for a sample size below 1.
    """
    if sample < 1:
        raise InvalidInput(f"The sample size must be at least 1, not {sample}.",
                           f"The default is {GLOBAL_SAMPLE} rows.")
    started = time.perf_counter()
    run, _ = results.readable(store, run_id, which)
    model = _model_of(store, run, which)
    explainer = model_explainer(store, model)
    note = explainer.note
    if explainer.kind == "agnostic" and sample > AGNOSTIC_SAMPLE:
        sample = AGNOSTIC_SAMPLE
        note = (note + " " if note else "") + (
            f"Model-agnostic SHAP is slow, so {AGNOSTIC_SAMPLE} rows were sampled.")
    table = sample_rows(store, run, which, sample, model.task != "regression")
    attribution = _explain_in_chunks(explainer, _model_frame(table, model), progress)
    features = explainer.features
    chosen = _chosen_values(attribution, table, model)
    mean_abs = np.abs(chosen).mean(axis=0)
    by_class = {}
    if len(attribution.outputs) > 1:
        by_class = {str(c): dict(zip(features, np.abs(attribution.values[:, :, k]).mean(axis=0)
                                     .round(10).tolist(), strict=True))
                    for k, c in enumerate(attribution.outputs)}
    ranked = sorted(zip(features, mean_abs.round(10).tolist(), strict=True),
                    key=lambda f: -f[1])
    result = Importance(run.id, which, model.id, explainer.name, explainer.scale, table.num_rows,
                        tuple(ranked), by_class, round(time.perf_counter() - started, 4), note)
    _write_importance(store, result)
    return result


def _explain_in_chunks(explainer: ModelExplainer, frame: pd.DataFrame,
                       progress: Progress) -> Attribution:
    """explainer.explain in chunks, reporting progress (a worker refreshes its heartbeat)."""
    parts = []
    for start in range(0, len(frame), CHUNK_ROWS):
        parts.append(explainer.explain(frame.iloc[start:start + CHUNK_ROWS]))
        progress(min(1.0, (start + CHUNK_ROWS) / len(frame)), "explaining the sample")
    first = parts[0]
    return replace(first, values=np.concatenate([p.values for p in parts]),
                   output=np.concatenate([p.output for p in parts]))


def _chosen_values(attribution: Attribution, table: pa.Table, model: Model) -> np.ndarray:
    """Each row's SHAP values for its predicted class (the one output for regression/binary)."""
    if len(attribution.outputs) == 1:
        return attribution.values[:, :, 0]
    index = {str(c): k for k, c in enumerate(attribution.outputs)}
    picks = [index.get(str(p), 0) for p in table.column("prediction").to_pylist()]
    return attribution.values[np.arange(len(picks)), :, picks]


def _write_importance(store: Store, result: Importance) -> None:
    data = {**asdict(result), "features": [list(f) for f in result.features]}
    atomic_write_bytes(importance_path(store, result.run_id, result.which),
                       json.dumps(data).encode())


def sample_rows(store: Store, run: Run, which: str, size: int, stratified: bool) -> pa.Table:
    """About `size` rows of a run's results, each predicted class in its share (at least one).

    One scan: a deterministic hash of `_row` against a per-class rate, then trimmed per class.
    """
    path = str(result_path(store.workspace, run.id, which))
    total = run.rows_out or 0

    def read(tx: Tx) -> pa.Table:
        if not stratified or total <= size:
            rate_sql, params = "?", [min(1.0, 1.5 * size / max(total, 1) + 1e-9)]
        else:
            counts = tx.execute("SELECT CAST(prediction AS VARCHAR) AS p, count(*) AS n"
                                " FROM read_parquet(?) GROUP BY ALL", [path]).dicts()
            cases, params = [], []
            for c in counts:  # oversample by half so the trim below rarely runs short
                quota = max(1, round(size * c["n"] / total))
                cases.append("WHEN CAST(prediction AS VARCHAR) = ? THEN ?")
                params += [c["p"], min(1.0, 1.5 * quota / c["n"] + 10 / c["n"])]
            rate_sql = f"CASE {' '.join(cases)} ELSE 0 END"
        return tx.arrow(f"SELECT * FROM read_parquet(?) WHERE (hash(_row) % 1000000) / 1e6"
                        f" < {rate_sql} ORDER BY _row", [path, *params])

    table = with_files(read)
    if table.num_rows <= size:
        return table
    frame_keys = pd.Series([str(p) for p in table.column("prediction").to_pylist()]) \
        if stratified else pd.Series(["all"] * table.num_rows)
    keep: list[int] = []
    for _, group in frame_keys.groupby(frame_keys, sort=False):
        quota = max(1, round(size * len(group) / table.num_rows))
        keep += group.index[:quota].tolist()
    return table.take(sorted(keep))


def after_run(store: Store, run: Run, progress: Progress = no_progress) -> None:
    """The worker's step after a run: global importance of each results file of a succeeded
    run. Never raises: a failure is stored in the importance file (and logged), the run stays
    as it ended."""
    if run.status != "succeeded" or not run.summary.get("results_written"):
        return
    for which in results.WHICH:
        if not result_path(store.workspace, run.id, which).exists():
            continue
        try:
            global_importance(store, run.id, which, progress=progress)
        except Exception as exc:  # the run's outcome must not depend on this step
            if not isinstance(exc, ModelDeckError):
                log.exception("global importance of run %s (%s) failed", run.id, which)
            model_id = (run.summary.get(which) or {}).get("model_id", "")
            _write_importance(store, Importance(
                run.id, which, model_id, "", "", 0, (), {}, 0.0,
                error=f"Global importance could not be computed: {exc}"))
