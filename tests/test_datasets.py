"""Datasets: reading files, Parquet snapshots, finding datasets, and every bad input we refuse."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from core import datasets
from core.entities import Dataset
from core.errors import DatasetError, InvalidInput, NotFound, Step
from core.store import Store
from core.workspace import ALLOWED_ROOTS_ENV

State = Callable[[Store], dict[str, object]]
FRAME = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.5, 2.5, None], "label": ["u", "v", "u"]})


def _assert_snapshot(store: Store, dataset: Dataset, expected: pd.DataFrame) -> None:
    snapshot = store.workspace.home / dataset.snapshot_path
    assert snapshot == store.workspace.dataset_dir(dataset.id) / "data.parquet"
    assert hashlib.sha256(snapshot.read_bytes()).hexdigest() == dataset.sha256
    assert dataset.n_rows == len(expected)
    assert dataset.column_names == list(expected.columns)
    loaded = datasets.load_frame(store, dataset)
    pd.testing.assert_frame_equal(loaded, expected.reset_index(drop=True), check_dtype=False)


# ---------------------------------------------------------------------------- registering
def test_csv_path_is_snapshotted(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    FRAME.to_csv(path, index=False)
    dataset = datasets.add_path(store, str(path), actor="tester")
    assert (dataset.name, dataset.kind, dataset.source) == ("people", "path", str(path))
    assert [(c.name, c.dtype) for c in dataset.columns][:2] == [("id", "str"), ("x", "float64")]
    _assert_snapshot(store, dataset, FRAME)
    path.write_text("id,x,label\nz,9,w\n")  # the source changes; the snapshot does not
    _assert_snapshot(store, dataset, FRAME)


def test_tsv_semicolon_and_bom_files_are_read(store: Store, tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("a\tb\n1\tx\n2\ty\n")
    (tmp_path / "semi.csv").write_text("a;b\n1;x\n2;y\n")
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfa,b\n1,x\n2,y\n")
    expected = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    for name in ("t.tsv", "semi.csv", "excel.csv"):
        _assert_snapshot(
            store, datasets.add_path(store, str(tmp_path / name), actor="tester"), expected
        )


def test_parquet_path_is_snapshotted(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    FRAME.to_parquet(path, index=False)
    dataset = datasets.add_path(store, str(path), name="from parquet", actor="tester")
    assert dataset.name == "from parquet"
    _assert_snapshot(store, dataset, FRAME)


def test_glob_concatenates_every_matching_file(store: Store, tmp_path: Path) -> None:
    FRAME.iloc[:2].to_csv(tmp_path / "part1.csv", index=False)
    FRAME.iloc[2:].to_csv(tmp_path / "part2.csv", index=False)
    (tmp_path / "notes.txt").write_text("not part of the glob\n")
    dataset = datasets.add_path(store, str(tmp_path / "part*.csv"), actor="tester")
    assert dataset.name == "partall"
    _assert_snapshot(store, dataset, FRAME)


def test_upload_is_snapshotted_under_the_file_stem(store: Store) -> None:
    dataset = datasets.add_upload(
        store, "sales 2024.csv", FRAME.to_csv(index=False).encode(), actor="tester"
    )
    assert (dataset.name, dataset.kind, dataset.source) == (
        "sales 2024",
        "upload",
        "sales 2024.csv",
    )
    _assert_snapshot(store, dataset, FRAME)


def test_list_and_get_datasets(store: Store) -> None:
    first = datasets.register_frame(
        store, FRAME, name="one", kind="upload", source="one.csv", actor="tester"
    )
    second = datasets.register_frame(
        store, FRAME, name="two", kind="upload", source="two.csv", actor="tester"
    )
    assert [d.id for d in datasets.list_datasets(store)] == [second.id, first.id]
    assert datasets.get_dataset(store, first.id) == first
    with pytest.raises(NotFound) as info:
        datasets.get_dataset(store, "ds_missing")
    assert info.value.message == "No dataset 'ds_missing'."
    assert info.value.step == Step("list-datasets")


def test_demo_frames(store: Store) -> None:
    for name, target in datasets.DEMO_TARGETS.items():
        frame = datasets.demo_frame(name)
        assert target in frame.columns and len(frame) > 100
        assert not any(" " in c for c in frame.columns)
    assert set(datasets.demo_frame("wine")["cultivar"]) == {"class_0", "class_1", "class_2"}
    with pytest.raises(NotFound, match="No demo dataset 'iris'") as info:
        datasets.demo_frame("iris")
    assert "customer_churn" in info.value.hint


def test_churn_frame_has_a_key_categoricals_and_holes() -> None:
    frame = datasets.churn_frame(n_rows=500)
    assert frame["customer_id"].is_unique
    assert frame["age"].isna().any() and frame["payment_method"].isna().any()
    assert set(frame["churn"]) == {"yes", "no"}
    pd.testing.assert_frame_equal(frame, datasets.churn_frame(n_rows=500))  # seeded


# ---------------------------------------------------------------------------- finding
def test_find_dataset_by_id_name_demo_and_path(store: Store, tmp_path: Path) -> None:
    registered = datasets.register_frame(
        store, FRAME, name="people", kind="upload", source="people.csv", actor="tester"
    )
    assert datasets.find_dataset(store, registered.id, actor="tester") == registered
    assert datasets.find_dataset(store, "people", actor="tester") == registered

    wine = datasets.find_dataset(
        store, "wine", actor="tester"
    )  # a demo name registers the demo set once
    assert (wine.kind, wine.name, wine.n_rows) == ("demo", "wine", 178)
    assert datasets.find_dataset(store, "wine", actor="tester") == wine

    path = tmp_path / "fresh.csv"
    FRAME.to_csv(path, index=False)
    from_path = datasets.find_dataset(store, str(path), actor="tester")
    assert (from_path.kind, from_path.name) == ("path", "fresh")
    assert len(datasets.list_datasets(store)) == 3


def test_find_dataset_not_found_says_what_it_accepts(store: Store, state: State) -> None:
    before = state(store)
    with pytest.raises(NotFound) as info:
        datasets.find_dataset(store, "nowhere", actor="tester")
    assert info.value.message == "No dataset 'nowhere'."
    assert info.value.step == Step("list-datasets") and "breast_cancer" in info.value.hint
    assert info.value.status == 404
    assert state(store) == before


# ---------------------------------------------------------------------------- bad files
def _refused_path(
    store: Store,
    state: State,
    path: Path | str,
    *parts: str,
    error: type[Exception] = DatasetError,
    confined: bool = False,
) -> Exception:
    before = state(store)
    with pytest.raises(error) as info:
        datasets.add_path(store, str(path), confined=confined, actor="tester")
    for part in parts:
        assert part in info.value.message, info.value.message
    assert info.value.hint
    assert state(store) == before == {**before, "datasets": 0, "datasets/": []}
    return info.value


def test_empty_file_is_refused(store: Store, state: State, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    _refused_path(store, state, path, "'empty.csv' is empty (0 bytes)")
    with pytest.raises(DatasetError, match="is empty"):
        datasets.add_upload(store, "blank.csv", b"  \n\n", actor="tester")


def test_header_only_csv_is_refused(store: Store, state: State, tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("customer_id,age,churn\n")
    exc = _refused_path(store, state, path, "'header.csv' has no data rows")
    assert "at least one data row" in exc.hint


@pytest.mark.parametrize(
    "content",
    [
        b"a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n",  # a later row is longer
        b"a,b\n1,2,3\n4,5\n",  # the first data row is longer: no silent index
        b'a,b\n"1,2\n',  # an unclosed quote
    ],
    ids=["later-row", "first-row", "quote"],
)
def test_ragged_csv_is_refused(store: Store, state: State, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ragged.csv"
    path.write_bytes(content)
    exc = _refused_path(store, state, path, "'ragged.csv' could not be read as CSV")
    assert "same number of fields" in exc.hint


def test_binary_garbage_is_refused(store: Store, state: State, tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)
    _refused_path(store, state, path, "'garbage.csv' could not be read as CSV")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not really parquet")
    exc = _refused_path(store, state, broken, "'broken.parquet' could not be read as Parquet")
    assert "valid Parquet file" in exc.hint


def test_other_file_types_and_missing_files_are_refused(
    store: Store, state: State, tmp_path: Path
) -> None:
    sheet = tmp_path / "book.xlsx"
    sheet.write_bytes(b"PK\x03\x04 spreadsheet")
    exc = _refused_path(store, state, sheet, "'book.xlsx' is not a CSV or Parquet file")
    assert ".parquet" in exc.hint
    _refused_path(store, state, tmp_path / "absent.csv", "does not exist")
    _refused_path(store, state, tmp_path / "*.parquet", "No file matches")


def test_duplicate_column_names_are_refused(store: Store, state: State) -> None:
    before = state(store)
    for frame, shown in (
        (pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"]), "a"),
        (pd.DataFrame([[1, 2]], columns=[1, "1"]), "1"),
    ):
        with pytest.raises(DatasetError) as info:
            datasets.register_frame(
                store, frame, name="dup", kind="upload", source="dup", actor="tester"
            )
        assert info.value.message == f"'dup' has duplicate column names: {shown}."
        assert "unique name" in info.value.hint
    assert state(store) == before


def test_a_frame_without_rows_or_columns_is_refused(store: Store, state: State) -> None:
    before = state(store)
    for frame in (pd.DataFrame({"a": []}), pd.DataFrame(index=[0, 1])):
        with pytest.raises(DatasetError, match="'nothing' has no data rows"):
            datasets.register_frame(
                store, frame, name="nothing", kind="upload", source="x", actor="tester"
            )
    assert state(store) == before


# ---------------------------------------------------------------------------- confinement
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    FRAME.to_csv(folder / "secret.csv", index=False)
    return folder


def test_confined_path_inside_the_workspace_is_accepted(store: Store) -> None:
    FRAME.to_csv(store.workspace.uploads_dir / "mine.csv", index=False)
    dataset = datasets.add_path(store, "uploads/mine.csv", confined=True, actor="tester")
    assert dataset.source == str(store.workspace.uploads_dir / "mine.csv")
    _assert_snapshot(store, dataset, FRAME)


def test_confined_path_outside_is_refused(store: Store, state: State, outside: Path) -> None:
    exc = _refused_path(
        store,
        state,
        outside / "secret.csv",
        "is outside the workspace",
        error=InvalidInput,
        confined=True,
    )
    assert ALLOWED_ROOTS_ENV in exc.hint
    _refused_path(
        store,
        state,
        "../outside/secret.csv",
        "'../outside/secret.csv' is outside",
        error=InvalidInput,
        confined=True,
    )
    _refused_path(
        store, state, "uploads/../../outside/*.csv", "is outside", error=InvalidInput, confined=True
    )


def test_confined_symlink_escape_is_refused(store: Store, state: State, outside: Path) -> None:
    (store.workspace.uploads_dir / "link.csv").symlink_to(outside / "secret.csv")
    _refused_path(store, state, "uploads/link.csv", "is outside", error=InvalidInput, confined=True)
    # A glob inside the workspace must not pick up a symlinked file from outside either.
    exports = store.workspace.home / "exports"
    exports.mkdir()
    (exports / "link.csv").symlink_to(outside / "secret.csv")
    _refused_path(
        store,
        state,
        "exports/*.csv",
        "exports/link.csv' is outside",
        error=InvalidInput,
        confined=True,
    )


def test_a_confined_pattern_never_registers_another_projects_files(
    store: Store, state: State
) -> None:
    """Every project's run results and uploads lie in ModelDeck's own folders: the Datasets
    page's path reads one of them by its exact name only, never by a pattern."""
    results = store.workspace.runs_dir / "run_b" / "rows.csv"
    results.parent.mkdir(parents=True)
    results.write_text("a,b\n1,2\n")
    _refused_path(
        store,
        state,
        "runs/*/rows.csv",
        "is a pattern in ModelDeck's own folder runs/",
        error=InvalidInput,
        confined=True,
    )
    _refused_path(
        store,
        state,
        "*/*/rows.csv",
        "The pattern '*/*/rows.csv' matches",
        "in ModelDeck's own folder runs/",
        error=InvalidInput,
        confined=True,
    )
    added = datasets.add_path(store, "runs/run_b/rows.csv", confined=True, actor="tester")
    assert added.n_rows == 1  # by its exact name, as the app shows it to the run's project


def test_allowed_roots_admit_a_confined_path(
    store: Store, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join(["/nonexistent", str(outside)]))
    dataset = datasets.add_path(store, str(outside / "secret.csv"), confined=True, actor="tester")
    _assert_snapshot(store, dataset, FRAME)


def test_unconfined_paths_are_for_the_cli_only(store: Store, outside: Path) -> None:
    dataset = datasets.add_path(
        store, str(outside / "secret.csv"), actor="tester"
    )  # confined=False
    _assert_snapshot(store, dataset, FRAME)
