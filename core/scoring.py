"""Scoring: batches through the main and challenger models into the run's results files.

`RunScorer` takes the pipeline's batches one by one: model frame, predictions, confidence,
input quality, statistics (core.run_metrics), and a result batch appended to each results
file under a temporary name, renamed into place by `commit()` (DESIGN.md, storage rule 3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import pipeline
from core.engine import model_input
from core.engine.classes import label_texts
from core.engine.metrics import ModelStats, Vocabulary
from core.engine.predict import Scored, confidence_kind, score
from core.engine.profiles import plain
from core.entities import Model
from core.workspace import RunFolder, atomic_path

RESULT_COLUMNS = ("_row", "prediction", "confidence", "input_quality", "challenger_prediction")


# ---------------------------------------------------------------------------- result rows
def column_plan(
    input_names: list[str], key: str | None, proba_names: list[str]
) -> list[tuple[str, str]]:
    """(input column, result column) for the original columns, the key first.

    An input column whose name a result column takes (`prediction`, `proba_yes`, …) is kept
    as `input_<name>`, so nothing the user sent is lost.
    """
    reserved = {*RESULT_COLUMNS, *proba_names}
    taken = reserved | set(input_names)
    ordered = ([key] if key in input_names else []) + [c for c in input_names if c != key]
    plan = []
    for name in ordered:
        out = name
        if name in reserved:
            while out in taken:
                out = f"input_{out}"
            taken.add(out)
        plan.append((name, out))
    return plan


def feature_column(model: Model, name: str, columns: Sequence[str]) -> str | None:
    """The results column that holds input column `name`, as `column_plan` named it (one named
    like a result column became input_<name>); None when the results lack it."""
    column = name
    if name in {*RESULT_COLUMNS, *(proba_name(c) for c in model.schema.classes)}:
        column = f"input_{name}"
        while column not in columns and len(column) < len(name) + 60:
            column = f"input_{column}"
    return column if column in columns else None


def result_batch(
    batch: pa.RecordBatch,
    first_row: int,
    scored: Scored,
    quality: np.ndarray,
    plan: list[tuple[str, str]],
    *,
    has_key: bool,
    challenger: Scored | None = None,
) -> pa.RecordBatch:
    """`_row`, key, prediction, confidence, input_quality, proba_*, [challenger], originals."""
    n = batch.num_rows
    names = ["_row"]
    arrays: list[pa.Array] = [pa.array(np.arange(first_row, first_row + n, dtype=np.int64))]
    originals = [(out, batch.column(src)) for src, out in plan]
    if has_key:
        key_name, key_values = originals.pop(0)
        names.append(key_name)
        arrays.append(key_values)
    names += ["prediction", "confidence", "input_quality"]
    arrays += [
        _predictions(scored),
        pa.array(scored.confidence, from_pandas=True),
        pa.array(np.asarray(quality, dtype=np.float64), from_pandas=True),
    ]
    for i, cls in enumerate(scored.classes):
        assert scored.proba is not None  # predict.score gives classes only with probabilities
        names.append(proba_name(cls))
        arrays.append(pa.array(scored.proba[:, i]))
    if challenger is not None:
        names.append("challenger_prediction")
        arrays.append(_predictions(challenger))
    names += [out for out, _ in originals]
    arrays += [values for _, values in originals]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def proba_name(cls: Any) -> str:
    return f"proba_{cls}"


def _predictions(scored: Scored) -> pa.Array:
    if scored.codes is not None:  # classes looked up in Arrow: no Python object per row
        return pa.array(list(scored.classes)).take(pa.array(scored.codes))
    return _array(scored.prediction)


def _array(values: np.ndarray) -> pa.Array:
    if values.dtype == object:
        return pa.array(values.tolist(), from_pandas=True)
    return pa.array(values, from_pandas=True)


# ---------------------------------------------------------------------------- a whole run
@dataclass(frozen=True)
class Loaded:
    """A model of the run's deployment version, with its fitted estimator."""

    model: Model
    estimator: Any
    role: str  # main | challenger


class Output:
    """One results file, written under a temporary name and renamed into place."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.tmp")
        self.writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            # Dictionary-encode text only: trying it on float columns costs half the write
            # time and gains nothing.
            text = [
                f.name
                for f in batch.schema
                if pa.types.is_string(f.type)
                or pa.types.is_large_string(f.type)
                or pa.types.is_dictionary(f.type)
            ]
            self.writer = pq.ParquetWriter(
                self.tmp, batch.schema, compression="snappy", use_dictionary=text or False
            )
        elif batch.schema != self.writer.schema:
            batch = batch.cast(self.writer.schema)
        self.writer.write_batch(batch)

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


SAMPLE_ROWS = 1000  # rows per results file kept for the global explanation (explain.py)


def row_keys(rows: np.ndarray) -> np.ndarray:
    """A pseudo-random uint64 key per row number (splitmix64): the same in every process, so
    "the k smallest keys" is a reproducible simple random sample of k rows."""
    z = rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stratified_quotas(counts: dict[Any, int], size: int) -> dict[Any, int]:
    """Rows to take per group for a sample of `size`: each group in its share of the rows
    (largest remainders round it to exactly `size`), at least one per group (so a sample can
    exceed `size` by a few rare groups); every row when there are no more than `size`."""
    total = sum(counts.values())
    if total <= size:
        return dict(counts)
    exact = {g: size * n / total for g, n in counts.items() if n}
    quotas = {g: int(q) for g, q in exact.items()}
    by_remainder = sorted(exact, key=lambda g: exact[g] - quotas[g], reverse=True)
    for g in by_remainder[: size - sum(quotas.values())]:
        quotas[g] += 1
    return {g: min(counts[g], max(1, q)) for g, q in quotas.items()}


class Sampler:
    """A stratified random sample of a results file, kept while the file is written, so the
    global explanation step reads ~1,000 rows instead of scanning the whole file.

    Per group (the predicted class; one group for a regression) it keeps the `size` rows with
    the smallest row_keys (a bottom-k sample: uniform within the group); at the end each group
    is trimmed to its share of the rows (stratified_quotas). Any smaller sample is the same
    rule with a smaller size, so explain can take one from this one exactly.
    """

    def __init__(self, target: Path, size: int = SAMPLE_ROWS) -> None:
        self.target, self.size = target, size
        self.kept: dict[int, tuple[np.ndarray, pa.Table]] = {}
        self.counts: dict[int, int] = {}

    def add(self, batch: pa.RecordBatch, groups: np.ndarray | None, first_row: int) -> None:
        keys = row_keys(np.arange(first_row, first_row + batch.num_rows))
        groups = np.zeros(batch.num_rows, dtype=np.int64) if groups is None else groups
        table = pa.Table.from_batches([batch])
        for group in np.unique(groups):
            mask = groups == group
            self.counts[int(group)] = self.counts.get(int(group), 0) + int(mask.sum())
            old = self.kept.get(int(group))
            if old is not None and len(old[0]) >= self.size:
                mask &= keys < old[0].max()  # only rows that would enter the bottom k
            picked = np.flatnonzero(mask)
            if not len(picked):
                continue
            new_keys, new = keys[picked], table.take(picked)
            if old is not None:
                new_keys = np.concatenate([old[0], new_keys])
                new = pa.concat_tables([old[1], new.cast(old[1].schema)])
            if len(new_keys) > self.size:
                smallest = np.argpartition(new_keys, self.size - 1)[: self.size]
                new_keys, new = new_keys[smallest], new.take(smallest)
            self.kept[int(group)] = (new_keys, new)

    def commit(self) -> dict[str, int]:
        """Write the sample (rows in `_row` order) next to the results; what it holds."""
        quotas = stratified_quotas(self.counts, self.size)
        parts = []
        for group, (keys, table) in self.kept.items():
            parts.append(table.take(np.argsort(keys, kind="stable")[: quotas.get(group, 0)]))
        if not parts:
            return {}
        sample = pa.concat_tables(parts)
        sample = sample.take(pc.sort_indices(sample, [("_row", "ascending")]))
        with atomic_path(self.target) as tmp:
            pq.write_table(sample, tmp, compression="none")
        return {"size": self.size, "rows": sample.num_rows, "path": self.target.name}


class RunScorer:
    """Scores a run's batches with its main and challenger models, keeping its statistics.

    Built from the first batch, which is the sample for the schema check: SchemaMismatch
    names every problem column. A challenger that cannot read the input is skipped (it runs
    in shadow) and the summary's notes say why.
    """

    def __init__(
        self,
        main: Loaded,
        challenger: Loaded | None,
        first: pa.RecordBatch,
        label: str | None,
        folder: Path,
        time: Any,
    ) -> None:
        schema = first.schema
        check = pipeline.check_schema(schema, main.model.schema, sample=first)
        check.raise_for_problems()
        self.main, self.challenger, self.notes, self.time = main, challenger, [], time
        if challenger is not None:
            other = pipeline.check_schema(schema, challenger.model.schema, sample=first)
            if not other.is_ok:
                self.notes.append(f"Challenger skipped: {other.message()}")
                self.challenger = None
        self.extra, self.task = list(check.extra), main.model.task
        self.label = label if label and label in schema.names else None
        key = main.model.schema.key_column
        self.has_key = bool(key and key in schema.names)
        self.plan = column_plan(
            schema.names, key, [proba_name(c) for c in main.model.schema.classes]
        )
        self.vocabulary = Vocabulary(main.model.schema.classes)
        self.roles = {"main": main, **({"challenger": self.challenger} if self.challenger else {})}
        self.stats = {role: ModelStats(self.task, self.vocabulary) for role in self.roles}
        self.outputs = {role: Output(RunFolder(folder).results(role)) for role in self.roles}
        layout = RunFolder(folder)
        self.samplers = {role: Sampler(layout.sample(role)) for role in self.roles}
        self.rows, self.agreement, self.quality_sum = 0, 0.0, 0.0
        self.quality_counts: dict[str, Any] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        """Score one batch and append its result rows."""
        schema = self.main.model.schema
        with self.time("prepare"):
            frame = pipeline.to_model_frame(batch, schema)
        scored = {}
        for role, loaded in self.roles.items():
            with self.time(f"predict_{role}"):
                own = (
                    frame
                    if loaded.model.schema == schema
                    else pipeline.to_model_frame(batch, loaded.model.schema)
                )
                scored[role] = score(loaded.estimator, own, self.task, role)
        with self.time("quality"):
            per_row, counts = pipeline.input_quality(frame, schema, self.main.model.profile)
            quality = np.asarray(per_row, dtype=np.float64)
        is_classes = self.task != "regression"
        codes = {
            role: self.vocabulary.predictions(s) if is_classes else None
            for role, s in scored.items()
        }
        with self.time("statistics"):
            self._count(batch, scored, codes, quality, counts)
        with self.time("write"):
            for role, result in scored.items():
                written = result_batch(
                    batch,
                    self.rows,
                    result,
                    quality,
                    self.plan,
                    has_key=self.has_key,
                    challenger=scored.get("challenger") if role == "main" else None,
                )
                self.outputs[role].write(written)
                self.samplers[role].add(written, codes[role], self.rows)
        self.rows += batch.num_rows

    def _count(
        self,
        batch: pa.RecordBatch,
        scored: dict[str, Scored],
        codes: dict[str, np.ndarray | None],
        quality: np.ndarray,
        counts: dict[str, int],
    ) -> None:
        is_classes = self.task != "regression"
        labels = labelled = None
        if self.label is not None:
            column = batch.column(self.label)
            labelled = np.asarray(pc.is_valid(column))
            values = column.filter(pc.is_valid(column)).to_numpy(zero_copy_only=False)
            labels = (
                self.vocabulary.codes(label_texts(values, self.main.model.schema.classes))
                if is_classes
                else values
            )
        for role, result in scored.items():
            self.stats[role].add(result, codes[role], labels, labelled)
        if "challenger" in scored:
            main, other = scored["main"].prediction, scored["challenger"].prediction
            self.agreement += (
                float(np.sum(codes["main"] == codes["challenger"]))
                if is_classes
                else float(np.abs(main - other).sum())
            )
        self.quality_sum += float(np.nansum(quality))
        model_input.add_counts(self.quality_counts, counts)

    def commit(self) -> None:
        """Write the explanation samples, then rename every results file into place."""
        self.samples = {role: sampler.commit() for role, sampler in self.samplers.items()}
        for output in self.outputs.values():
            output.commit()

    def discard(self) -> None:
        for output in self.outputs.values():
            output.discard()
        if not getattr(self, "samples", None):  # not committed: no sample either
            for sampler in self.samplers.values():
                sampler.target.unlink(missing_ok=True)

    def column_roles(self) -> dict[str, Any]:
        """Which result columns are what, for the results page's show/hide toggles."""
        estimator = self.main.estimator
        classes = (
            getattr(estimator, "classes_", [])
            if self.task != "regression" and hasattr(estimator, "predict_proba")
            else []
        )
        originals = [out for _, out in self.plan]
        return {
            "key": originals[0] if self.has_key else None,
            "prediction": ["prediction", "confidence", "input_quality"],
            "probabilities": [proba_name(plain(c)) for c in classes],
            "challenger": ["challenger_prediction"] if self.challenger else [],
            "original": originals[1:] if self.has_key else originals,
        }

    def summary(self, home: Path) -> dict[str, Any]:
        """The run's summary JSON (see core.runs)."""
        models = {
            role: {
                "model_id": loaded.model.id,
                "algorithm": loaded.model.algorithm,
                "confidence_kind": confidence_kind(loaded.estimator, self.task),
                **self.stats[role].result(),
                "sample": getattr(self, "samples", {}).get(role) or None,
            }
            for role, loaded in self.roles.items()
        }
        if "challenger" in models:
            key = "mean_abs_difference" if self.task == "regression" else "agreement_rate"
            models["challenger"][key] = round(self.agreement / self.rows, 6)
        return {
            "rows": self.rows,
            "task": self.task,
            "label_column": self.label,
            "main": models["main"],
            "challenger": models.get("challenger"),
            "input_quality": {
                "mean": round(self.quality_sum / self.rows, 6),
                **self.quality_counts,
            },
            "extra_columns": self.extra,
            "notes": self.notes,
            "columns": self.column_roles(),
            "results": {
                role: str(out.target.relative_to(home)) for role, out in self.outputs.items()
            },
            "results_written": True,
        }
