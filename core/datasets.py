"""Datasets: read a table from a demo set, an upload or a path, snapshot it to Parquet, list it.

Every registered dataset is an immutable Parquet snapshot under `datasets/<id>/`, so training
and later runs read exactly the rows that were registered, whatever happens to the source file.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn import datasets as sk_datasets

from core import access, projects
from core.engine import tables
from core.entities import DEFAULT_PROJECT, Dataset
from core.errors import DatasetError, NotFound, Step
from core.store import Store, Tx, new_id, utcnow
from core.workspace import atomic_path

READABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
DEMO_TARGETS = {
    "breast_cancer": "diagnosis",
    "wine": "cultivar",
    "diabetes": "progression",
    "customer_churn": "churn",
    "loan_defaults": "default",
}
DEMO_NAMES = tuple(DEMO_TARGETS)


# ---------------------------------------------------------------------------- demo data
def demo_frame(name: str) -> pd.DataFrame:
    """A demo table from a dataset scikit-learn ships, or the generated customer churn table."""
    if name == "customer_churn":
        return churn_frame()
    if name == "loan_defaults":
        return loans_frame()
    loaders = {
        "breast_cancer": sk_datasets.load_breast_cancer,
        "wine": sk_datasets.load_wine,
        "diabetes": sk_datasets.load_diabetes,
    }
    if name not in loaders:
        raise NotFound("demo dataset", name, f"Choose one of: {', '.join(DEMO_NAMES)}.")
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    if name in ("breast_cancer", "wine"):
        # Class names read better than codes in a leaderboard and a prediction form.
        frame["target"] = pd.Series(bunch.target_names[bunch.target], dtype="str").to_numpy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    renamed: pd.DataFrame = frame.rename(columns={"target": DEMO_TARGETS[name]})
    return renamed


def churn_frame(n_rows: int = 5000, seed: int = 7) -> pd.DataFrame:
    """A generated churn table: numeric and categorical columns, missing values, a key column."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n_rows, p=[0.55, 0.25, 0.2])
    internet = rng.choice(["fiber", "dsl", "none"], n_rows, p=[0.45, 0.4, 0.15])
    payment = rng.choice(["card", "bank transfer", "electronic check", "mailed check"], n_rows)
    tenure = rng.integers(0, 72, n_rows)
    monthly = np.round(rng.normal(65, 25, n_rows).clip(18, 120), 2)
    tickets = rng.poisson(1.2, n_rows)
    age = rng.integers(18, 85, n_rows).astype(float)
    logit = (
        -1.2
        + 1.4 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        + 0.6 * (internet == "fiber")
        + 0.5 * (payment == "electronic check")
        - 0.04 * tenure
        + 0.015 * (monthly - 65)
        + 0.35 * tickets
    )
    churned = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{100000 + i}" for i in range(n_rows)],
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "support_tickets": tickets,
            "contract": contract,
            "internet_service": internet,
            "payment_method": payment,
            "churn": np.where(churned, "yes", "no"),
        }
    )
    # Real exports have holes: some ages and payment methods are unknown.
    frame.loc[rng.random(n_rows) < 0.05, "age"] = np.nan
    frame["payment_method"] = frame["payment_method"].where(rng.random(n_rows) >= 0.03)
    return frame


def loans_frame(n_rows: int = 3000, seed: int = 11) -> pd.DataFrame:
    """A generated loan table as exports write them: an integer 0/1 target, a yes/no column,
    non-ASCII categories and holes, so every page is seen with integer labels."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.8, 0.4, n_rows).round(-2)
    score = rng.integers(300, 851, n_rows)
    amount = (rng.gamma(2.0, 6000, n_rows)).round(-2)
    owner = rng.choice(["yes", "no"], n_rows, p=[0.45, 0.55])
    region = rng.choice(["Nord", "Süd", "Île-de-France", "Bretagne"], n_rows)
    logit = (
        -0.8
        - 0.011 * (score - 575)
        + 0.00006 * (amount - 12_000)
        - 0.000012 * (income - 50_000)
        + 0.5 * (owner == "no")
        + 0.3 * (region == "Süd")
    )
    frame = pd.DataFrame(
        {
            "loan_id": [f"L{200000 + i}" for i in range(n_rows)],
            "income": income,
            "credit_score": score,
            "loan_amount": amount,
            "home_owner": owner,
            "region": region,
            "default": (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )
    frame.loc[rng.random(n_rows) < 0.04, "income"] = np.nan
    frame["home_owner"] = frame["home_owner"].where(rng.random(n_rows) >= 0.02)
    return frame


# ---------------------------------------------------------------------------- reading files
def read_table(path: Path) -> pd.DataFrame:
    """Read one CSV/TSV/Parquet file by core.tables' rules (the rules runs read it by);
    raises DatasetError saying what is wrong with it."""
    if not path.is_file():
        raise DatasetError(f"The file '{path}' does not exist.", "Check the path and try again.")
    _check_suffix(path.name)
    return as_frame(tables.read_file(path))


def read_bytes(data: bytes, filename: str) -> pd.DataFrame:
    """Parse file contents (an upload) by the file name's suffix, as read_table would."""
    _check_suffix(filename)
    return as_frame(tables.read_bytes(data, filename))


def _check_suffix(filename: str) -> None:
    if Path(filename).suffix.lower() not in READABLE_SUFFIXES:
        raise DatasetError(
            f"'{filename}' is not a CSV or Parquet file.",
            f"Use one of: {', '.join(READABLE_SUFFIXES)}.",
        )


def as_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas, dates as datetimes (not Python objects)."""
    frame: pd.DataFrame = table.to_pandas(date_as_object=False)
    return frame


def check_frame(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Refuse tables with no rows or unusable column names; return it with NFC string names."""
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DatasetError(
            f"'{label}' has no data rows.",
            "A dataset needs a header row and at least one data row.",
        )
    tables.check_names(map(str, frame.columns), label)
    return frame.rename(columns=lambda c: tables.nfc(str(c)))


def read_path(pattern: str) -> pd.DataFrame:
    """Read a file, or every file matching a glob, as one table."""
    paths = (
        sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
    )
    if not paths:
        raise DatasetError(f"No file matches '{pattern}'.", "Check the folder and the pattern.")
    frames = [read_table(p) for p in paths]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------- registry
def register_frame(
    store: Store,
    frame: pd.DataFrame,
    *,
    name: str,
    kind: str,
    source: str,
    project: str = DEFAULT_PROJECT,
    actor: str,
) -> Dataset:
    """Snapshot `frame` to Parquet (atomically) and record it in `project`; one transaction.
    The actor needs the editor role there (or creates the project)."""
    projects.check(store, project, actor=actor, action="add-dataset")
    frame = check_frame(frame, name)
    dataset_id = new_id("ds")
    target = store.workspace.dataset_dir(dataset_id) / "data.parquet"
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    columns = [{"name": c, "dtype": str(frame[c].dtype)} for c in frame.columns]
    row = {
        "id": dataset_id,
        "name": name,
        "kind": kind,
        "source": source,
        "snapshot_path": str(target.relative_to(store.workspace.home)),
        "sha256": digest,
        "n_rows": len(frame),
        "columns": columns,
        "created_at": utcnow(),
    }

    def write(tx: Tx) -> None:
        row["project_id"] = projects.ensure_project(
            tx, project, actor=actor, action="add-dataset"
        ).id
        tx.execute(
            "INSERT INTO datasets VALUES ($id, $name, $kind, $source, $snapshot_path, $sha256,"
            " $n_rows, $columns, $created_at, $project_id)",
            row,
        )

    try:
        store.write(write)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Dataset.from_row(row)


def add_demo(store: Store, name: str, *, project: str = DEFAULT_PROJECT, actor: str) -> Dataset:
    """Register one of the demo tables."""
    return register_frame(
        store, demo_frame(name), name=name, kind="demo", source=name, project=project, actor=actor
    )


def add_upload(
    store: Store, filename: str, data: bytes, *, project: str = DEFAULT_PROJECT, actor: str
) -> Dataset:
    """Register an uploaded file's contents; the name is the file's stem."""
    frame = read_bytes(data, filename)
    return register_frame(
        store,
        frame,
        name=Path(filename).stem,
        kind="upload",
        source=filename,
        project=project,
        actor=actor,
    )


def add_path(
    store: Store,
    path: str,
    *,
    name: str | None = None,
    confined: bool = False,
    project: str = DEFAULT_PROJECT,
    actor: str,
) -> Dataset:
    """Register a file or glob. `confined` (the UI) refuses paths outside the allowed roots."""
    if confined:
        given, path = path, str(store.workspace.confine(path))
        for match in glob.glob(path) if glob.has_magic(path) else ():
            # a match may be a symlink leading outside, or a file of ModelDeck's own folders
            store.workspace.confine(match, matched_by=given)
    else:  # the CLI reads with the user's own access, but never the store's files as data
        for match in glob.glob(path) if glob.has_magic(path) else (path,):
            store.workspace.refuse_secret(match)
    frame = read_path(str(Path(path).expanduser()))
    label = name or Path(path).stem.replace("*", "all")
    return register_frame(
        store, frame, name=label, kind="path", source=path, project=project, actor=actor
    )


def list_datasets(store: Store, *, visible_to: str | None = None) -> list[Dataset]:
    """Datasets, newest first; with `visible_to`, only those of projects that user may read."""

    def read(tx: Tx) -> list[Dataset]:
        rows = tx.execute("SELECT * FROM datasets ORDER BY created_at DESC, id")
        visible = access.visible_projects(tx, visible_to) if visible_to is not None else None
        return [Dataset.from_row(r) for r in rows if access.keep_visible(visible, r["project_id"])]

    return store.read(read)


def get_dataset(store: Store, dataset_id: str) -> Dataset:
    """One dataset by id; raises NotFound."""
    row = store.query("SELECT * FROM datasets WHERE id = ?", [dataset_id]).first()
    if row is None:
        raise NotFound("dataset", dataset_id)
    return Dataset.from_row(row)


def find_dataset(
    store: Store, id_or_path: str, *, project: str = DEFAULT_PROJECT, actor: str
) -> Dataset:
    """A dataset by id or name the actor may read, else a demo set by name or a file path,
    registered on the fly in `project`."""
    row = store.query(
        "SELECT * FROM datasets WHERE id = ? OR name = ? ORDER BY created_at DESC LIMIT 1",
        [id_or_path, id_or_path],
    ).first()
    if row is not None:
        store.read(lambda tx: access.require(tx, actor, row["project_id"], "read"))
        return Dataset.from_row(row)
    if id_or_path in DEMO_NAMES:
        return add_demo(store, id_or_path, project=project, actor=actor)
    if glob.has_magic(id_or_path) or Path(id_or_path).expanduser().exists():
        return add_path(store, id_or_path, project=project, actor=actor)
    raise NotFound(
        "dataset",
        id_or_path,
        "Give a dataset's id or name, a demo name "
        f"({', '.join(DEMO_NAMES)}), or the path of a CSV/Parquet file.",
        step=Step("list-datasets"),
    )


def load_frame(store: Store, dataset: Dataset) -> pd.DataFrame:
    """The dataset's snapshot as a DataFrame."""
    return pd.read_parquet(store.workspace.home / dataset.snapshot_path)
