"""How ModelDeck reads a data file: one rule for the file that trains a model and the file it
scores.

A CSV (or TSV) is read by DuckDB's reader with the same options when it registers a dataset
(the training side: DuckDB -> Arrow -> a Parquet snapshot) and when a pipeline's file source
feeds a run (DuckDB -> Arrow batches). The rules:
- A header row is required; duplicate names (also names equal once Unicode-normalised) are
  refused with the name, never renamed (`income.1`, `income_1`).
- Column names are Unicode-normalised to NFC: a decomposed `é` (e + U+0301, as macOS and some
  exporters write it) and a composed one name the same column.
- The sniffer may pick BIGINT, DOUBLE, DATE, TIMESTAMP or VARCHAR, never BOOLEAN: DuckDB would
  read `yes`/`no`, `Y`/`N`, `T`/`F` and `true`/`false` as booleans, so a yes/no column would be
  text in one reader and true/false in another (DESIGN.md, traps). Such columns stay text.
- `inf`/`-inf` in a number column stay infinite here; the model input counts them as out of
  range (core/model_input.py), training treats them as missing (core/training.py).
- An empty file (0 bytes, or only whitespace) and a header without rows are refused with the
  file named.
Parquet keeps its own types; only its column names are normalised and checked.

This module is one of the three DuckDB users (with core/store.py and core/pipeline_sql.py): it
opens in-memory connections that may read only the one file asked for.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import DatasetError
from core.store import memory_database

TYPE_CANDIDATES = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
DELIMITERS = (",", ";", "\t", "|")
EMPTY_HINT = "Export the table again, with a header row and at least one data row."


@functools.lru_cache(maxsize=4096)
def nfc(name: str) -> str:
    """A column name in Unicode's composed form (NFC); kept, as the API checks the same few
    names on every call (about 60 per one-row request)."""
    return unicodedata.normalize("NFC", name)


def duplicates(names: Iterable[str]) -> list[str]:
    """Names that occur more than once once normalised, in order of first occurrence."""
    seen: dict[str, int] = {}
    for name in names:
        key = nfc(str(name))
        seen[key] = seen.get(key, 0) + 1
    return [name for name, count in seen.items() if count > 1]


def csv_options(path: str | os.PathLike[str], *, full_scan: bool = False) -> str:
    """The options of DuckDB's read_csv after the path, e.g. ", header = true, ...", for the
    file `path` (or the first file of a glob: its header line gives the delimiter).

    The header is the first line, the delimiter the one it uses (`,` `;` tab or `|`) and
    fields are quoted with `"` (doubled inside, as RFC 4180 and spreadsheets write them):
    left to itself, DuckDB's sniffer skips lines until the rows look regular, so a ragged
    file lost its header and rows silently. `full_scan` makes the sniffer read every row
    before it settles a column's type (training reads the whole file anyway); runs sniff the
    default sample and fail with the column named if a later value does not fit.
    """
    delimiter = _delimiter(Path(path))
    options = [
        ", header = true",
        "skip = 0",
        "quote = '\"'",
        "escape = '\"'",
        "delim = '" + ("\\t" if delimiter == "\t" else delimiter) + "'",
        "auto_type_candidates = [" + ", ".join(f"'{t}'" for t in TYPE_CANDIDATES) + "]",
    ]
    if full_scan:
        options.append("sample_size = -1")
    return ", ".join(options)


def _delimiter(path: Path, first: str | None = None) -> str:
    """The delimiter of a CSV: tab for .tsv, else the one its header line (`first`, read here
    when not given) uses most; `,` when there is no line to judge by."""
    if _suffix(path) == ".tsv":
        return "\t"
    if first is None and not path.name.lower().endswith(".zst"):
        try:
            first = _first_line(path)
        except OSError:  # a glob, or not there (yet): the reader will say so
            first = ""
    return max(DELIMITERS, key=first.count) if first else ","


def _suffix(path: str | os.PathLike[str]) -> str:
    name = Path(path).name.lower()
    for ext in (".gz", ".zst"):
        name = name.removesuffix(ext)
    return Path(name).suffix


def check_file(path: Path, label: str | None = None) -> None:
    """Refuse an empty file or a CSV whose header repeats a name; raises DatasetError."""
    label = label or path.name
    if path.stat().st_size == 0:
        raise DatasetError(f"The file '{label}' is empty (0 bytes).", EMPTY_HINT)
    if _suffix(path) in CSV_SUFFIXES and not path.name.lower().endswith(".zst"):
        header = read_header(path)  # (zstd: no reader here; DuckDB reads those itself)
        if header is None:
            raise DatasetError(f"The file '{label}' is empty.", EMPTY_HINT)
        check_names(header, label)


def check_names(names: Iterable[str], label: str) -> None:
    """Refuse duplicate (or normalised-equal) column names, naming them."""
    repeated = duplicates(names)
    if repeated:
        raise DatasetError(
            f"'{label}' has duplicate column names: {', '.join(repeated)}.",
            "Give every column a unique name in the header row (names that differ only in "
            "how an accent is encoded count as the same name).",
        )


def _first_line(path: Path) -> str:
    """The first non-blank line of a (possibly gzipped) text file ("" when there is none)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as raw:
        # Line by line (a buffered read of a few KB): a run checks every file of a glob.
        for number in range(100):
            line = raw.readline(1 << 20)
            if not line:
                break
            text = line.decode("utf-8-sig" if number == 0 else "utf-8", errors="replace")
            if text.strip():
                return text.rstrip("\r\n")
    return ""


def read_header(path: Path) -> list[str] | None:
    """The header row's names (None for a file of only whitespace), parsed as CSV with the
    delimiter csv_options gives DuckDB."""
    first = _first_line(path)
    if not first:
        return None
    return next(csv.reader(io.StringIO(first), delimiter=_delimiter(path, first)))


def normalized(table: pa.Table, label: str = "The table") -> pa.Table:
    """The table with NFC column names; raises DatasetError if two names then coincide."""
    names = [nfc(n) for n in table.column_names]
    check_names(table.column_names, label)
    return table if names == table.column_names else table.rename_columns(names)


def normalized_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with NFC field names."""
    return pa.schema([f.with_name(nfc(f.name)) for f in schema], metadata=schema.metadata)


def normalized_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """A reader whose batches carry NFC column names (the same reader when they already do)."""
    schema = normalized_schema(reader.schema)
    if schema.names == reader.schema.names:
        return reader
    names = schema.names

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.rename_columns(names)

    return pa.RecordBatchReader.from_batches(schema, batches())


def read_file(path: Path, label: str | None = None) -> pa.Table:
    """A whole CSV/TSV/Parquet file by the rules above; raises DatasetError naming the file."""
    label = label or path.name
    check_file(path, label)
    if _suffix(path) in PARQUET_SUFFIXES:
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(
                f"'{label}' could not be read as Parquet: {_first_error_line(exc)}",
                "Check that it is a valid Parquet file.",
            ) from exc
    else:
        table = _read_csv(path, label)
        header = [nfc(n) for n in read_header(path) or []]
        if [nfc(n) for n in table.column_names] != header:
            raise DatasetError(
                f"'{label}' could not be read as CSV: its header names {len(header)} columns "
                f"but its rows were read as {table.num_columns}.",
                "Check that every line has as many fields as the header (quote fields that "
                "hold the delimiter).",
            )
    table = normalized(table, label)
    if table.num_columns == 0 or table.num_rows == 0:
        raise DatasetError(
            f"'{label}' has no data rows.",
            "A dataset needs a header row and at least one data row.",
        )
    return table


def read_bytes(data: bytes, filename: str) -> pa.Table:
    """File contents (an upload) read as `read_file` reads a file of that name."""
    with tempfile.TemporaryDirectory(prefix="modeldeck-upload-") as folder:
        path = Path(folder) / Path(filename).name
        path.write_bytes(data)
        return read_file(path, filename)


def _read_csv(path: Path, label: str) -> pa.Table:
    con = memory_database()  # spill files in the workspace's private folder
    try:
        # This connection may read the one file and nothing else.
        con.execute("SET allowed_paths = ?", [[str(path)]])
        con.execute("SET enable_external_access = false")
        literal = "'" + str(path).replace("'", "''") + "'"
        return con.sql(
            f"SELECT * FROM read_csv({literal}{csv_options(path, full_scan=True)})"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise DatasetError(
            f"'{label}' could not be read as CSV: "
            f"{(_ragged(path) or _first_error_line(exc)).rstrip('.')}.",
            "Check that it is UTF-8 text with one header row and the same number of fields "
            "on every line.",
        ) from exc
    finally:
        con.close()


def _ragged(path: Path) -> str | None:
    """Where a CSV's lines stop matching its header ("line 3 has 4 fields, ..."), if they do."""
    delimiter = _delimiter(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=delimiter, strict=True)
            width = len(next(reader, []))
            for row in reader:
                if row and len(row) != width:
                    return f"line {reader.line_num} has {len(row)} fields, the header {width}"
    except csv.Error as exc:
        return f"line {reader.line_num}: {exc}"
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    return None


def _first_error_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
