"""The metadata store: migrations, transactions, the cross-process lock and its retry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from core import store as store_module
from core.errors import StoreBusy
from core.store import Rows, Store, Tx, list_migrations, query_files, utcnow, with_files
from core.workspace import CHANGES_MARKER, Workspace

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = [number for number, _, _ in list_migrations()]

# Migration 0001 creates the Default project; these tests count the ones they make.
USER_PROJECTS = "FROM projects WHERE id <> 'prj_default'"


def _schema(store: Store) -> dict[str, list[tuple[str, str]]]:
    """Every table's columns and types, to compare two stores' schemas."""
    rows = store.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position"
    )
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        out.setdefault(row["table_name"], []).append((row["column_name"], row["data_type"]))
    return out


def _bare_store(path: Path) -> Store:
    """A store on an empty workspace, not migrated (Store.open would migrate it)."""
    return Store(Workspace(path).ensure())


def _add_project(tx: Tx, name: str) -> None:
    tx.execute("INSERT INTO projects VALUES (?, ?, '', ?)", [name, name, utcnow()])


# ---------------------------------------------------------------------------- migrations
def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = list_migrations()
    assert NUMBERS == list(range(1, len(found) + 1))
    for _, name, sql in found:
        assert name and sql.strip()


def test_open_applies_every_migration_once(store: Store) -> None:
    assert store.schema_version() == NUMBERS[-1]
    applied = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in applied] == NUMBERS
    assert store.migrate() == []
    assert Store.open(store.workspace.home).migrate() == []
    assert len(store.query("SELECT * FROM schema_migrations")) == len(NUMBERS)


def test_registry_tables_exist_after_migration(store: Store) -> None:
    assert {"projects", "datasets", "experiments", "versions", "models"} <= set(_schema(store))


@pytest.mark.parametrize("start", [0, *NUMBERS[:-1]])
def test_migrate_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    stepwise = _bare_store(tmp_path / "stepwise")
    assert stepwise.migrate(upto=start) == [n for n in NUMBERS if n <= start]
    assert stepwise.schema_version() == start
    assert stepwise.migrate() == [n for n in NUMBERS if n > start]
    assert stepwise.schema_version() == NUMBERS[-1]

    direct = _bare_store(tmp_path / "direct")
    direct.migrate()
    assert _schema(stepwise) == _schema(direct)


# ---------------------------------------------------------------------------- transactions
def test_write_returns_the_function_value_and_commits(store: Store) -> None:
    def write(tx: Tx) -> int:
        _add_project(tx, "a")
        _add_project(tx, "b")
        return 7

    assert store.write(write) == 7
    assert store.query(f"SELECT name {USER_PROJECTS} ORDER BY name").rows == [("a",), ("b",)]


def test_write_that_raises_rolls_back_every_statement(store: Store) -> None:
    def write(tx: Tx) -> None:
        _add_project(tx, "first")
        _add_project(tx, "second")
        raise RuntimeError("stop half-way")

    with pytest.raises(RuntimeError, match="stop half-way"):
        store.write(write)
    assert store.query(f"SELECT count(*) {USER_PROJECTS}").scalar() == 0
    store.write(lambda tx: _add_project(tx, "after"))  # the store is usable again
    assert store.query(f"SELECT name {USER_PROJECTS}").rows == [("after",)]


def test_failing_statement_rolls_back_the_earlier_ones(store: Store) -> None:
    store.write(lambda tx: _add_project(tx, "taken"))

    def write(tx: Tx) -> None:
        _add_project(tx, "new")
        _add_project(tx, "taken")  # duplicate primary key

    with pytest.raises(Exception, match=r"(?i)duplicate key"):
        store.write(write)
    assert store.query(f"SELECT name {USER_PROJECTS}").rows == [("taken",)]


def test_version_moves_with_every_write_and_never_with_a_read(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "RACY_SECONDS", 0)
    seen = [store.version()]
    store.query("SELECT count(*) FROM schema_migrations")
    assert store.version() == seen[-1]
    for sql in ("CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES (1)", "DELETE FROM t"):
        store.execute(sql)
        assert store.version() not in seen, sql
        seen.append(store.version())
    monkeypatch.setattr(store_module, "RACY_SECONDS", 3600)
    assert store.version() is None, "just written: nothing may be kept"


def test_rows_helpers_and_json_parameters(store: Store) -> None:
    store.execute(
        "INSERT INTO datasets VALUES ($id, 'n', 'upload', 's', 'p', 'h', 3, $columns, $at,"
        " 'prj_default')",
        {"id": "ds_1", "columns": [{"name": "x", "dtype": "int64"}], "at": utcnow()},
    )
    rows = store.query("SELECT id, columns, n_rows FROM datasets")
    assert isinstance(rows, Rows) and len(rows) == 1
    assert rows.first() == {
        "id": "ds_1",
        "columns": '[{"name": "x", "dtype": "int64"}]',
        "n_rows": 3,
    }
    assert rows.dicts() == [rows.first()] and list(rows) == rows.dicts()
    assert store.query("SELECT id FROM datasets WHERE id = 'none'").first() is None
    assert store.query("SELECT id FROM datasets WHERE id = 'none'").scalar() is None


def test_query_files_reads_parquet_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(path)
    assert query_files("SELECT sum(x) FROM read_parquet(?)", [str(path)]).scalar() == 6


# ---------------------------------------------------------------------------- processes
HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test says so
    con.close()
""")


@pytest.mark.slow
def test_store_busy_when_another_process_holds_the_file(store: Store, tmp_path: Path) -> None:
    parquet = tmp_path / "bulk.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(parquet)
    db = str(store.workspace.db_path)
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        impatient = Store(store.workspace, lock_timeout=0.3)
        with pytest.raises(StoreBusy) as info:
            impatient.write(lambda tx: _add_project(tx, "blocked"))
        assert db in info.value.message and "locked by another process" in info.value.message
        assert info.value.hint and info.value.status == 503
        with pytest.raises(StoreBusy):
            impatient.query("SELECT 1")
        # Bulk files are read without the store's lock (DESIGN.md, storage rule 2).
        assert query_files("SELECT count(*) FROM read_parquet(?)", [str(parquet)]).scalar() == 2
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    store.write(lambda tx: _add_project(tx, "after"))
    assert store.query(f"SELECT name {USER_PROJECTS}").rows == [("after",)]


WRITER = textwrap.dedent("""
    import sys
    from core.store import Store, utcnow

    home, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store.open(home)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(count):
        name = f"{tag}-{i}"
        store.write(lambda tx, name=name: tx.execute(
            "INSERT INTO projects VALUES (?, ?, '', ?)", [name, name, utcnow()]))
    print("done", flush=True)
""")


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(store: Store) -> None:
    count = 50
    home = str(store.workspace.home)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, home, tag, str(count)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready", writer.stderr
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.strip() == "done" and "Traceback" not in err
    names = {r["name"] for r in store.query(f"SELECT name {USER_PROJECTS}")}
    assert names == {f"{tag}-{i}" for tag in ("a", "b") for i in range(count)}


def test_a_one_off_scan_gets_its_own_memory_limit(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(path)

    def limit_and_sum(tx: Tx) -> tuple[str, int]:
        limit = tx.execute("SELECT current_setting('memory_limit')").scalar()
        return limit, tx.execute("SELECT sum(x) FROM read_parquet(?)", [str(path)]).scalar()

    assert with_files(limit_and_sum, memory_limit="400MB") == ("381.4 MiB", 6)
    assert with_files(limit_and_sum)[0] == "953.6 MiB"  # the shared database is untouched


def test_after_commit_callbacks_run_once_after_a_commit_and_never_after_a_rollback(
    store: Store,
) -> None:
    seen: list[int] = []

    def change(tx: Tx, fail: bool) -> None:
        tx.execute("INSERT INTO projects VALUES ('prj_x', 'X', '', ?)", [utcnow()])
        # another connection sees the row when the callback runs: it ran after the commit
        tx.after_commit(
            lambda: seen.append(len(store.query("SELECT 1 FROM projects WHERE id = 'prj_x'")))
        )
        tx.after_commit(store.workspace.changed)
        tx.after_commit(store.workspace.changed)  # the same callback twice: once
        if fail:
            raise ValueError("roll back")

    before = store.workspace.read_marker(CHANGES_MARKER)  # the fixture's users touched it
    with pytest.raises(ValueError):
        store.write(lambda tx: change(tx, fail=True))
    assert seen == [] and store.workspace.read_marker(CHANGES_MARKER) == before
    store.write(lambda tx: change(tx, fail=False))
    assert seen == [1]
    first = store.workspace.read_marker(CHANGES_MARKER)
    assert first not in (None, before)
    store.write(lambda tx: tx.after_commit(store.workspace.changed))
    assert store.workspace.read_marker(CHANGES_MARKER) not in (None, first)
