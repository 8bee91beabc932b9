"""The one rule for reading a data file (core/tables.py): the file that trains a model and
the file it scores are read the same way, every awkward shape refused with its name."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from core import datasets, pipeline
from core.engine import profiles, tables
from core.errors import DatasetError, PipelineError
from core.workspace import Workspace
from tests import zoo


def _arrow_kind(dtype: pa.DataType) -> str:
    """The feature kind a run's Arrow column has (as core.profiles names a pandas column)."""
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype):
        return "numeric"
    if pa.types.is_temporal(dtype):
        return "datetime"
    return "categorical"


@pytest.mark.parametrize("label", zoo.LABELS)
def test_training_and_runs_read_every_zoo_file_alike(tmp_path: Path, label: str) -> None:
    ws = Workspace.resolve(tmp_path).ensure()
    path = tmp_path / "incoming" / f"{label}.csv"
    path.parent.mkdir()
    zoo.write_csv(zoo.table(label), str(path))
    trained = datasets.read_table(path)  # the training side: the dataset's snapshot
    kinds = {c.name: c.kind for c in profiles.describe_columns(trained)}
    with pipeline.open_input(
        ws, {"source": {"kind": "file", "path": f"incoming/{label}.csv"}}
    ) as reader:
        scored = reader.read_all()  # the run side
    assert scored.column_names == list(trained.columns)
    assert {f.name: _arrow_kind(f.type) for f in scored.schema} == kinds
    # yes/no, true/false and Y/N stay text on both sides; names are NFC; dates are dates.
    for name in ("home_owner", "verified", "cosigner"):
        assert kinds[name] == "categorical" and set(trained[name].dropna()) <= {
            "yes",
            "no",
            "true",
            "false",
            "Y",
            "N",
        }
    assert zoo.COMPOSED in kinds and zoo.DECOMPOSED not in kinds
    assert kinds["opened"] == "datetime" and kinds["income"] == "numeric"
    assert trained[zoo.COMPOSED].abs().max() == float("inf")


def test_a_ragged_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DatasetError) as caught:
        tables.read_file(path)
    assert caught.value.message == (
        "'ragged.csv' could not be read as CSV: line 3 has 4 fields, the header 2."
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file 'f.csv' is empty (0 bytes)."),
        (b"\n  \n", "The file 'f.csv' is empty."),
        (b"a,b\n", "'f.csv' has no data rows."),
        (b"income,age,income\n1,2,3\n", "'f.csv' has duplicate column names: income."),
        ("caf\u00e9,cafe\u0301\n1,2\n".encode(), "'f.csv' has duplicate column names: café."),
    ],
    ids=["0-byte", "blank", "header-only", "duplicate", "same-once-normalised"],
)
def test_unusable_files_are_refused_on_both_sides(
    tmp_path: Path, content: bytes, message: str
) -> None:
    ws = Workspace.resolve(tmp_path).ensure()
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as caught:
        datasets.read_table(path)
    assert caught.value.message == message
    if message.endswith("has no data rows."):
        return  # a run of a header-only file is a run of 0 rows ("no new data")
    with pytest.raises(PipelineError) as refused:
        with pipeline.open_input(ws, {"source": {"kind": "file", "path": "f.csv"}}):
            pass
    assert refused.value.message == message


def test_csv_options_follow_the_header(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("a;b\n1;yes\n2;no\n")
    options = tables.csv_options(path)
    assert "delim = ';'" in options and "'BOOLEAN'" not in options and "skip = 0" in options
    table = tables.read_file(path)
    assert table.column_names == ["a", "b"] and table.column("b").to_pylist() == ["yes", "no"]
