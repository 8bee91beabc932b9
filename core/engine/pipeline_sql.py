"""The DuckDB side of pipelines: confined connections, source queries, the transform chain.

Two in-memory connections do the reading. The *source* connection may reach the allowed roots
only, and not ModelDeck's metadata file. The *transform* connection has external file access
disabled and sees the source only as the Arrow stream `source_input`; transforms run there as
nested CTEs, each reading `input`. So a transform cannot read any file, and a SQL source cannot
read outside the allowed folders. DuckDB's errors come back as PipelineErrors naming the block.

This module and core/store.py are the only DuckDB users: store.py owns the metadata file, this
one only ever opens in-memory connections over data files (DESIGN.md storage rule 2).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from core.engine import sql_limits, tables
from core.errors import DatasetError, InvalidInput, PipelineError
from core.store import memory_database
from core.workspace import ALLOWED_ROOTS_ENV, BY_NAME_ONLY, DB_NAME, OWN_DIRS, Workspace

Connection = duckdb.DuckDBPyConnection
READERS = {
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".txt": "read_csv",
    ".parquet": "read_parquet",
    ".pq": "read_parquet",
    ".json": "read_json",
    ".ndjson": "read_json",
    ".jsonl": "read_json",
}
COMPRESSED = (".gz", ".zst")
SOURCE_TABLE = "source_input"
READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError)
Labels = dict[str | None, str]  # block name (None: the transforms as a whole) -> its label
_LINE = re.compile(r"^LINE (\d+):", re.MULTILINE)
_STREAM_FAILED = re.compile(
    rf"reading the stream registered as '{SOURCE_TABLE}' failed: "
    r"(?:\w+: )?"
)
T = TypeVar("T")


# ---------------------------------------------------------------------------- statements
def check_select(con: Connection, sql: Any, label: str, block: str) -> str:
    """The SQL as one SELECT statement (trailing semicolons and comments cut)."""
    example = (
        "SELECT * FROM read_csv('exports/*.csv')"
        if block == "source"
        else ("SELECT * FROM input WHERE age >= 0")
    )
    if not isinstance(sql, str) or not sql.strip():
        raise PipelineError(f"{label} is empty.", f"Write one SELECT, e.g. {example}.", block)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise PipelineError(
            f"{label} failed: {excerpt(str(exc))}", hint_for(str(exc), block), block
        ) from exc
    if len(statements) != 1:
        raise PipelineError(
            f"{label} holds {len(statements)} statements; it must be exactly one SELECT.",
            f"Keep a single query, e.g. {example}.",
            block,
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise PipelineError(
            f"{label} is a {kind.name} statement; only SELECT (or WITH … SELECT) is allowed.",
            "Blocks only read rows: results are written by the run and its sinks, and "
            f"COPY, ATTACH, INSTALL, SET and the like are refused. Write e.g. {example}.",
            block,
        )
    return strip_trailing(sql)


def strip_trailing(sql: str) -> str:
    """The SQL without trailing semicolons and comments (it gets embedded in a CTE)."""
    end = len(sql)
    for start, kind in reversed(duckdb.tokenize(sql)):
        text = sql[start:end].strip()
        if kind == duckdb.token_type.comment or (text and not text.strip(";")):
            end = start
        else:
            break
    return sql[:end].strip()


# ---------------------------------------------------------------------------- sources
def confine(ws: Workspace, path: str, matched_by: str | None = None) -> Path:
    """`Workspace.confine` for a source path (or a match of the pattern `matched_by`),
    refusing as a PipelineError of the source."""
    try:
        return ws.confine(path, matched_by=matched_by)
    except InvalidInput as exc:  # outside the roots, or a root that is itself refused
        message = exc.message
        if message.startswith("The path "):
            message = f"The source path {message.removeprefix('The path ')}"
        raise PipelineError(message, exc.hint, "source", step=exc.step) from exc


def data_suffix(path: str) -> str:
    name = Path(path).name.lower()
    for ext in COMPRESSED:
        name = name.removesuffix(ext)
    return Path(name).suffix


def reader_for(path: str) -> tuple[str, str]:
    """DuckDB's reader for a path's suffix, and its options (for CSV, core.tables' rules: the
    file is read as it was when it trained a model)."""
    suffix = data_suffix(path)
    if suffix not in READERS:
        raise PipelineError(
            f"The source '{path}' is not a CSV, TSV, Parquet or JSON file (judged by its suffix).",
            f"Name files ending in {', '.join(READERS)} (a glob works too, e.g. "
            "exports/*.csv), or use a SQL source.",
            "source",
        )
    return READERS[suffix], tables.csv_options(path) if READERS[suffix] == "read_csv" else ""


def source_files(ws: Workspace, path: str) -> list[str]:
    """The files a file/upload source names; raises PipelineError naming the path if none."""
    pattern = confine(ws, path)
    hint = (
        f"Check the path (relative paths start at the workspace, {ws.home}); upload the "
        "file again, or point the source at another file."
    )
    if glob.has_magic(path):
        files = sorted(p for p in map(Path, glob.glob(str(pattern), recursive=True)) if p.is_file())
        if not files:
            raise PipelineError(f"No file matches the source '{path}'.", hint, "source")
        # A 0-byte file among many is one being written (or a failed export): it holds no
        # rows yet, and an incremental source takes it once it has some.
        files = [f for f in files if f.stat().st_size > 0] or files[:1]
    elif pattern.is_dir():
        raise PipelineError(
            f"The source '{path}' is a folder.",
            f"Name the files, e.g. {path.rstrip('/')}/*.parquet.",
            "source",
        )
    elif not pattern.is_file():
        raise PipelineError(f"The source file '{path}' does not exist.", hint, "source")
    else:
        files = [pattern]
    matched_by = path if glob.has_magic(path) else None
    return [checked(linked(ws, f, matched_by)) for f in files]


def checked(file: str) -> str:
    """The file, refused (as a source error naming it) when empty or its header repeats a name."""
    try:
        tables.check_file(Path(file))
    except DatasetError as exc:
        raise PipelineError(exc.message, exc.hint, "source", step=exc.step) from exc
    return file


def linked(ws: Workspace, file: Path, matched_by: str | None = None) -> str:
    """The file's real path, refused when it is a link leading outside the allowed roots (or,
    as a match of the pattern `matched_by`, into ModelDeck's own folders)."""
    try:
        return str(ws.confine(file, matched_by=matched_by))
    except InvalidInput as exc:
        if ws.own_folder(file.resolve()) is not None:  # the message says which and why
            raise PipelineError(exc.message, exc.hint, "source", step=exc.step) from exc
        where = (
            "one of ModelDeck's private files"
            if ws.is_secret(file.resolve())
            else "outside the workspace and the allowed folders"
        )
        raise PipelineError(
            f"The source file '{file}' links to '{file.resolve()}', {where}.",
            exc.hint,
            "source",
            step=exc.step,
        ) from exc


def source_query(ws: Workspace, source: dict[str, str]) -> str:
    """The SELECT that reads a validated source block, every path absolute and confined."""
    if source["kind"] == "sql":
        return absolute_sql_paths(ws, source["sql"], must_exist=True)
    function, options = reader_for(source["path"])
    files = source_files(ws, source["path"])
    if function == "read_csv":  # the delimiter of the first file's header
        options = tables.csv_options(files[0])
    if len(files) > 1:
        options += ", union_by_name = true"
    return f"SELECT * FROM {function}([{', '.join(map(quote, files))}]{options})"


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def absolute_sql_paths(ws: Workspace, sql: str, must_exist: bool = False) -> str:
    """The SQL with every data-file literal ('x.csv', 'exports/*.parquet') confined and made
    absolute: DuckDB resolves relative paths against the process's folder, not the workspace."""
    pieces, last = [], 0
    for start, kind in duckdb.tokenize(sql):
        if kind != duckdb.token_type.string_const or sql[start] != "'":
            continue
        end = _literal_end(sql, start)
        value = sql[start + 1 : end - 1].replace("''", "'")
        if "://" in value or data_suffix(value) not in READERS:
            continue
        path = confine(ws, value)
        matches = glob.glob(str(path), recursive=True) if glob.has_magic(value) else []
        for match in matches:  # a pattern never reaches into ModelDeck's own folders
            if ws.own_folder(Path(match).resolve()) is not None:
                confine(ws, match, matched_by=value)
        if must_exist and not (matches if glob.has_magic(value) else path.is_file()):
            raise PipelineError(
                f"The source SQL reads '{value}', and no such file exists.",
                f"Check the path (relative paths start at the workspace, {ws.home}).",
                "source",
            )
        pieces += [sql[last:start], quote(str(path))]
        last = end
    return "".join(pieces) + sql[last:]


def _literal_end(sql: str, start: int) -> int:
    i = start + 1
    while i < len(sql):
        if sql[i] == "'":
            if sql[i + 1 : i + 2] != "'":
                return i + 1
            i += 1
        i += 1
    return len(sql)


def _readable(ws: Workspace, named: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Directories and files a source may read: the allowed roots, with the workspace listed
    entry by entry so that the metadata file (its WAL, its key) and ModelDeck's own folders
    (every project's datasets, runs and uploads, the models, the API's log; DuckDB's temporary
    files) stay out of reach, except the files of those `named` exactly (`own_files`). Raises
    InvalidInput for a root that would reach them (Workspace.allowed_roots)."""
    home = ws.home.resolve()
    dirs, files = [], list(named)
    for root in ws.allowed_roots():
        if root.resolve() != home:
            dirs.append(str(root).rstrip("/") + "/")
        elif home.is_dir():
            for entry in home.iterdir():
                if entry.name in OWN_DIRS:
                    continue
                if entry.is_dir():
                    dirs.append(f"{entry}/")
                elif not entry.name.startswith(DB_NAME):
                    files.append(str(entry))
    return dirs, files


def own_files(ws: Workspace, source_sql: str) -> list[str]:
    """The files of ModelDeck's own folders a source's SQL names exactly (its literals, made
    absolute by `source_query`): a training snapshot, a run's results, an upload."""
    named = []
    for start, kind in duckdb.tokenize(source_sql):
        if kind != duckdb.token_type.string_const or source_sql[start] != "'":
            continue
        value = source_sql[start + 1 : _literal_end(source_sql, start) - 1].replace("''", "'")
        if not value.startswith("/") or glob.has_magic(value):
            continue
        resolved = Path(value).resolve()
        if ws.own_folder(resolved) in BY_NAME_ONLY and resolved.is_file():
            named.append(str(resolved))
    return sorted(set(named))


# Opening an in-memory DuckDB costs ~15 ms, a cursor on an open one ~5 us: a worker scoring
# many small runs keeps one confined database per allow-list and hands out cursors. Cursors
# share the locked settings (external access off can not be turned back on) but not temporary
# objects, and a cursor per use keeps threads apart (DESIGN.md, traps: duckdb 2.0).
_SOURCE_DBS: dict[tuple[tuple[str, ...], tuple[str, ...], str], Connection] = {}
_SOURCE_DBS_MAX = 4
_SOURCE_DBS_LOCK = threading.Lock()


@contextlib.contextmanager
def source_connection(
    ws: Workspace, memory: str = sql_limits.DEFAULT_MEMORY, source_sql: str = ""
) -> Iterator[Connection]:
    """An in-memory connection that can read only the allowed folders, and the files of
    ModelDeck's own folders that `source_sql` names exactly, with DuckDB's memory limit
    `memory` (a fresh cursor on a database kept per allow-list and limit: the list is re-read
    from the workspace on every call)."""
    try:
        dirs, files = _readable(ws, own_files(ws, source_sql))
    except InvalidInput as exc:
        raise PipelineError(exc.message, exc.hint, "source", step=exc.step) from exc
    key = (tuple(dirs), tuple(files), memory)
    with _SOURCE_DBS_LOCK:
        base = _SOURCE_DBS.get(key)
        if base is None:
            base = memory_database(ws, memory)
            # In this order: the allow-lists cannot change once external access is off.
            base.execute("SET allowed_directories = ?", [dirs])
            base.execute("SET allowed_paths = ?", [files])
            base.execute("SET enable_external_access = false")
            while len(_SOURCE_DBS) >= _SOURCE_DBS_MAX:  # dropped, not closed: a cursor in
                _SOURCE_DBS.pop(next(iter(_SOURCE_DBS)))  # another thread may still read
            _SOURCE_DBS[key] = base
        con = base.cursor()
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def transform_connection(
    ws: Workspace, memory: str = sql_limits.DEFAULT_MEMORY
) -> Iterator[Connection]:
    """An in-memory connection that can touch no file: transforms see only `input` (its spill
    files go to the workspace's private folder; DuckDB's memory limit is `memory`)."""
    con = memory_database(ws, memory)
    try:
        con.execute("SET enable_external_access = false")
        yield con
    finally:
        con.close()


# ---------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Chain:
    """The SQL of the source stream followed by transforms, and the lines each one occupies
    (so an error's `LINE n` points back at its block)."""

    sql: str = f"SELECT * FROM {SOURCE_TABLE}"
    spans: tuple[tuple[int, int, str], ...] = ()  # (first line, last line, transform name)

    def then(self, name: str, sql: str) -> Chain:
        # A transform with its own WITH cannot follow ours directly; as a subquery it can, and
        # it still sees `input`.
        wrapped = _starts_with_with(sql)
        body = f"SELECT * FROM (\n{sql}\n)" if wrapped else sql
        first = self.sql.count("\n") + 4 + wrapped
        spans = tuple((a + 1, b + 1, n) for a, b, n in self.spans)
        return Chain(
            f"WITH input AS (\n{self.sql}\n)\n{body}",
            (*spans, (first, first + sql.count("\n"), name)),
        )

    def limited(self, rows: int) -> Chain:
        """The first `rows` rows (the block lines move down by one)."""
        return Chain(
            f"SELECT * FROM (\n{self.sql}\n)\nLIMIT {rows}",
            tuple((a + 1, b + 1, n) for a, b, n in self.spans),
        )

    def locate(self, line: int) -> tuple[str, int] | None:
        for first, last, name in self.spans:
            if first <= line <= last:
                return name, line - first + 1
        return None


def source_chain(sql: str) -> Chain:
    return Chain(sql, ((1, sql.count("\n") + 1, "source"),))


def _starts_with_with(sql: str) -> bool:
    for start, kind in duckdb.tokenize(sql):
        if kind != duckdb.token_type.comment:
            return re.match(r"WITH\b", sql[start:], re.IGNORECASE) is not None
    return False


def failure(
    exc: BaseException, labels: Labels, block: str | None, chain: Chain | None = None
) -> PipelineError:
    """A DuckDB or Arrow error as a PipelineError naming the block it came from."""
    text = str(exc).strip()
    streamed = _STREAM_FAILED.search(text)
    located = _LINE.search(text)
    where = chain.locate(int(located.group(1))) if chain and located else None
    if streamed:
        block, text = "source", text[streamed.end() :]
    elif where and located:
        block = where[0]
        text = _renumber(text, located, where[1])
    limited = sql_limits.limit_error(text, block)  # stopped by a time or memory limit
    if limited is not None:
        return limited
    return PipelineError(
        f"{labels.get(block, labels[None])} failed: {excerpt(text)}", hint_for(text, block), block
    )


def _renumber(text: str, match: re.Match[str], line: int) -> str:
    """`LINE n:` of the whole chain as the line within the block (caret kept aligned)."""
    new = f"LINE {line}:"
    shift = len(match.group(0)) - len(new)
    rest = text[match.end() :].split("\n", 2)
    if len(rest) > 1 and rest[1].startswith(" " * shift):
        rest[1] = rest[1][shift:]
    return text[: match.start()] + new + "\n".join(rest)


def excerpt(text: str, limit: int = 1200) -> str:
    """DuckDB's message without its long advice: the first paragraph and the LINE pointer."""
    paragraphs = [p.strip("\n") for p in text.split("\n\n") if p.strip()]
    kept = "\n\n".join(paragraphs[:1] + [p for p in paragraphs[1:] if p.startswith("LINE ")])
    return kept if len(kept) <= limit else kept[:limit] + " …"


def hint_for(text: str, block: str | None) -> str:
    is_source = block == "source"
    if "file system operations are disabled" in text or "Permission Error" in text:
        return (
            f"A source may read only files inside the workspace and the folders listed in "
            f"{ALLOWED_ROOTS_ENV}, and in ModelDeck's own folders (datasets/, runs/, uploads/)"
            " only a file named exactly; copy or upload the file there."
            if is_source
            else "Transforms cannot read files: they select FROM input, the previous block's "
            "rows. Read other files in a SQL source block instead."
        )
    if "Parser Error" in text:
        return "Fix the SQL syntax (DuckDB's dialect); LINE counts from the block's first line."
    if "No files found" in text:
        return "Check the path; relative paths start at the workspace folder."
    if "Catalog Error" in text and not is_source:
        return "A transform reads FROM input (the rows of the block before it)."
    if "Binder Error" in text:
        return "Check the column names against the preview of the block before."
    if "Conversion Error" in text:
        return (
            "Clean or cast the column in a transform (TRY_CAST gives NULL instead of "
            "failing)"
            + (
                ", or read the CSV in a SQL source with read_csv(..., types = {...})"
                if is_source
                else ""
            )
            + "."
        )
    return "Preview the pipeline to find the block and the rows that cause it."


def attempt(
    action: Callable[[], T], labels: Labels, block: str | None, chain: Chain | None = None
) -> T:
    """`action()`, with a DuckDB or Arrow error raised as the PipelineError of its block."""
    try:
        return action()
    except READ_ERRORS as exc:
        raise failure(exc, labels, block, chain) from exc


def compile_chain(
    con: Connection, transforms: list[dict[str, str]], schema: pa.Schema, labels: Labels
) -> Chain:
    """Bind the transforms one by one over an empty stand-in of the source, so that an error
    names the first block that has it; nothing is read."""
    con.register(SOURCE_TABLE, schema.empty_table())
    chain = Chain()
    for block in transforms:
        chain = chain.then(block["name"], block["sql"])
        attempt(functools.partial(con.sql, chain.sql), labels, block["name"], chain)
    return chain
