"""Trust boundaries around the workspace's secrets: no allowed root, SQL source, sink, report
copy or artifact load reaches the store, its key, its WAL or DuckDB's temporary files.

Real DuckDB over real files in a temp workspace; the artifact test swaps a real file between
two reads the way an attacker with write access to artifacts/ would.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core import connections, datasets, pipeline, registry, reports, sinks
from core import store as store_mod
from core.engine import artifacts
from core.engine.pipeline_sql import source_connection, transform_connection
from core.entities import Deployment
from core.errors import InvalidInput, PipelineError, UntrustedArtifact
from core.store import Store
from core.workspace import ALLOWED_ROOTS_ENV, Workspace

FRAME = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})


def _refused(ws: Workspace, spec: dict[str, Any], *parts: str) -> PipelineError:
    with pytest.raises(PipelineError) as info, pipeline.open_input(ws, spec) as reader:
        reader.read_all()
    for part in parts:
        assert part in str(info.value), str(info.value)
    return info.value


def _sql(query: str) -> dict[str, Any]:
    return {"source": {"kind": "sql", "sql": query}}


@pytest.fixture
def keyed(store: Store) -> Store:
    """A workspace whose key file exists (a stored password) and whose store has a row."""
    connections.encrypt(store.workspace, "s3cret")
    assert connections.key_path(store.workspace).is_file()
    return store


# ---------------------------------------------------------------------------- item 1
def test_an_allowed_root_above_the_workspace_is_refused_naming_it(
    keyed: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = keyed.workspace
    ancestor = ws.home.parent
    FRAME.to_csv(ancestor / "shared.csv", index=False)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(ancestor))
    with pytest.raises(InvalidInput) as info:
        ws.allowed_roots()
    assert f"The allowed root '{ancestor}' in {ALLOWED_ROOTS_ENV}" in info.value.message
    assert "private files" in info.value.message and "beside or inside" in info.value.hint
    key, db = connections.key_path(ws), ws.db_path
    for query in (
        f"SELECT * FROM read_text('{key}')",
        f"SELECT * FROM read_blob('{db}')",
        f"SELECT * FROM read_blob('{db}.wal')",
        f"SELECT * FROM read_csv('{ancestor}/shared.csv')",
    ):
        error = _refused(ws, _sql(query), f"The allowed root '{ancestor}'")
        assert error.block == "source"
    # The preview says so too instead of raising.
    shown = pipeline.preview(ws, _sql(f"SELECT * FROM read_text('{key}')"), None)
    assert shown.stages[0].error and f"The allowed root '{ancestor}'" in shown.stages[0].error


@pytest.mark.parametrize(
    "root",
    ["/", "{home}/private", "{home}/private/tmp", "{home}/modeldeck.duckdb.key", "{home}/.."],
)
def test_every_root_reaching_the_secrets_is_refused(
    store: Store, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = store.workspace
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, root.format(home=ws.home))
    with pytest.raises(InvalidInput, match="contains or lies inside ModelDeck's private"):
        ws.confine("uploads/x.csv")


def test_the_workspace_itself_and_its_neighbours_stay_usable_roots(
    keyed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = keyed.workspace
    shared = tmp_path / "shared"
    shared.mkdir()
    FRAME.to_csv(shared / "d.csv", index=False)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join([str(ws.home), str(shared)]))
    assert ws.allowed_roots() == [ws.home, shared.resolve()]
    with pipeline.open_input(ws, _sql(f"SELECT * FROM read_csv('{shared}/d.csv')")) as reader:
        assert reader.read_all().num_rows == 2
    # The workspace listed explicitly is still read entry by entry: its secrets stay out.
    for target in (connections.key_path(ws), ws.db_path):
        _refused(
            ws, _sql(f"SELECT * FROM read_blob('{target}')"), "file system operations are disabled"
        )


def test_a_symlink_in_an_allowed_root_cannot_lead_to_the_secrets(
    keyed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = keyed.workspace
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ws").symlink_to(ws.home)
    (shared / "key.csv").symlink_to(connections.key_path(ws))
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, str(shared))
    for target in (
        shared / "ws" / "modeldeck.duckdb.key",
        shared / "key.csv",
        shared / "ws" / "modeldeck.duckdb",
    ):
        error = str(_refused(ws, _sql(f"SELECT * FROM read_blob('{target}')")))
        # DuckDB refuses the resolved path; a data-file name is refused by us even earlier.
        assert "file system operations are disabled" in error or "private files" in error
    _refused(
        ws,
        {"source": {"kind": "file", "path": str(shared / "key.csv")}},
        "is one of ModelDeck's private files",
    )


def test_no_confined_read_takes_a_private_file_as_data(keyed: Store) -> None:
    ws = keyed.workspace
    (ws.home / "key.csv").symlink_to(connections.key_path(ws))
    for path in ("modeldeck.duckdb.key", "key.csv", "modeldeck.duckdb", "private/x.csv"):
        with pytest.raises(InvalidInput, match="is one of ModelDeck's private files"):
            ws.confine(path)
    with pytest.raises(InvalidInput, match="private files"):
        datasets.add_path(keyed, "key.csv", confined=True, actor="tester")
    _refused(ws, _sql("SELECT * FROM read_csv('key.csv')"), "private files")
    _refused(
        ws,
        {"source": {"kind": "file", "path": "*.csv"}},
        "key.csv' links to",
        "one of ModelDeck's private files",
    )


def test_the_unconfined_cli_still_never_registers_a_private_file(
    keyed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI reads with the user's own access (docs/cli.md): a path outside the workspace
    # works, the store's key behind a harmless-looking name does not.
    (tmp_path / "key.csv").symlink_to(connections.key_path(keyed.workspace))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="is one of ModelDeck's private files"):
        datasets.add_path(keyed, "key.csv", actor="tester")
    with pytest.raises(InvalidInput, match="private files"):
        datasets.add_path(keyed, str(tmp_path / "*.csv"), actor="tester")
    assert datasets.list_datasets(keyed) == []


def test_file_urls_and_other_schemes_cannot_read_the_secrets(keyed: Store) -> None:
    ws = keyed.workspace
    key = connections.key_path(ws)
    for url in (f"file://{key}", f"file://{ws.db_path}", "file:///etc/passwd"):
        _refused(ws, _sql(f"SELECT * FROM read_text('{url}')"), "The source SQL failed")


# ---------------------------------------------------------------------------- item 2
def _temp_setting(con: Any) -> Path:
    return Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])


def test_duckdb_spills_into_the_private_folder_which_no_source_reads(store: Store) -> None:
    ws = store.workspace
    private = ws.private_dir.resolve()
    with source_connection(ws) as scon, transform_connection(ws) as tcon:
        assert _temp_setting(scon).is_relative_to(private)
        assert _temp_setting(tcon).is_relative_to(private)
    files_temp = store_mod.with_files(
        lambda tx: tx.execute("SELECT current_setting('temp_directory') AS t").scalar()
    )
    assert Path(files_temp).is_relative_to(private)
    limited = store_mod.with_files(
        lambda tx: tx.execute("SELECT current_setting('temp_directory') AS t").scalar(),
        memory_limit="100MB",
    )
    assert Path(limited).is_relative_to(private)
    # A real spill lands there, and a SQL source cannot read it (nor anything else there).
    spill = store_mod.memory_database(ws, "60MB")
    try:
        spill.execute("SET threads = 1")
        spill.execute("SET preserve_insertion_order = false")
        total = spill.execute(
            "SELECT sum(i) FROM (SELECT i FROM range(12000000) t(i) ORDER BY i DESC)"
        ).fetchone()
        assert total == (sum(range(12000000)),)
        spilled = [p for p in ws.private_dir.rglob("*") if p.is_file()]
        assert spilled, "the ORDER BY should have spilled under the private folder"
        _refused(
            ws,
            _sql(f"SELECT * FROM read_blob('{spilled[0]}')"),
            "file system operations are disabled",
        )
    finally:
        spill.close()
    (ws.private_dir / "planted.bin").write_text("a\n1\n")
    _refused(
        ws,
        _sql(f"SELECT * FROM read_blob('{ws.private_dir}/planted.bin')"),
        "file system operations are disabled",
    )


# ---------------------------------------------------------------------------- item 4
@pytest.mark.parametrize(
    "path",
    ["labels/mine", "private/x", "runs", "datasets/x", "artifacts", "logs/x", "uploads/x", "."],
)
def test_no_sink_writes_into_modeldecks_own_folders(
    store: Store, path: str, tmp_path: Path
) -> None:
    spec = {
        "source": {"kind": "file", "path": "d.csv"},
        "sinks": [{"kind": "folder", "path": path}],
    }
    with pytest.raises(PipelineError) as info:
        pipeline.validate_pipeline(spec, store.workspace)
    assert info.value.block == "sink 1"
    assert "ModelDeck's own files" in info.value.message or "outside" in info.value.message
    # A stored sink (older pipeline, edited metadata) is refused when written too.
    results = tmp_path / "main.parquet"
    FRAME.to_parquet(results)
    with pytest.raises(InvalidInput, match="among ModelDeck's own files and folders"):
        sinks.write_sinks(store.workspace, [{"kind": "folder", "path": path}], results, "r")
    if path == ".":  # a DuckDB file of your own beside the store is fine: not the store
        return
    table_sink = {"kind": "duckdb_table", "path": f"{path}/t.duckdb", "table": "t"}
    with pytest.raises(InvalidInput, match="among ModelDeck's own files and folders"):
        sinks.write_sinks(store.workspace, [table_sink], results, "r")


@pytest.mark.parametrize(
    "folder",
    [".", "runs", "datasets", "artifacts", "labels", "logs", "private", "uploads/abc", "{home}"],
)
def test_a_report_is_never_copied_into_modeldecks_own_folders(
    trained_store: Store, deploy_churn: Callable[..., Deployment], folder: str
) -> None:
    deployed = deploy_churn("linear")
    target = folder.format(home=trained_store.workspace.home)
    with pytest.raises(InvalidInput) as info:
        reports.set_report_settings(trained_store, deployed.name, copy_to=target, actor="tester")
    assert "among ModelDeck's own files and folders" in info.value.message
    assert "exports" in info.value.hint
    assert reports.get_report_settings(trained_store, deployed.name).copy_to is None
    assert (
        reports.set_report_settings(
            trained_store, deployed.name, copy_to="exports/reports", actor="tester"
        ).copy_to
        == "exports/reports"
    )


# ---------------------------------------------------------------------------- item 5
class _RunsCode:
    """A pickle payload that writes a marker file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def test_the_hashed_bytes_are_the_loaded_bytes(trained_store: Store, tmp_path: Path) -> None:
    model = registry.list_models(trained_store)[0]
    path = trained_store.workspace.home / model.artifact_path
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(marker))
    opened: list[str] = []

    def swap_on_second_open(event: str, args: tuple[Any, ...]) -> None:
        # Plays an attacker who replaces the file right after the hash check's read.
        if event == "open" and armed and str(args[0]) == str(path):
            opened.append(str(args[0]))
            if len(opened) == 2:
                path.write_bytes(evil)

    armed = True
    sys.addaudithook(swap_on_second_open)
    try:
        estimator = registry.load_estimator(trained_store, model)
    finally:
        armed = False
    assert callable(estimator.predict)
    assert not marker.exists()
    assert len(opened) == 1


def test_a_pickle_that_runs_code_is_never_loaded_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UntrustedArtifact, match="runs any code"):
        artifacts.load_bytes("model.pkl", pickle.dumps(_RunsCode(marker)))
    assert not marker.exists()


def test_spill_folders_of_dead_processes_are_removed_by_the_worker(store: Store) -> None:
    from core.worker import loop as worker

    parent = store.workspace.private_dir / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    dead = parent / "999999999-dead"  # no such pid (above Linux's pid_max)
    alive = parent / f"{os.getpid()}-mine"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "duckdb_temp_storage-0.tmp").write_bytes(b"x" * 1024)
    assert worker.run_once(store, "cleaner") is False  # nothing queued; the check still ran
    assert not dead.exists() and alive.exists()
