"""The workspace: where it is, its folders, atomic writes, and confining user paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import InvalidInput
from core.workspace import (
    ALLOWED_ROOTS_ENV,
    DB_NAME,
    DEFAULT_HOME,
    Workspace,
    atomic_path,
    atomic_write_bytes,
)


def test_resolve_prefers_argument_then_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDECK_HOME", str(tmp_path / "from_env"))
    assert Workspace.resolve(tmp_path / "given").home == (tmp_path / "given").resolve()
    assert Workspace.resolve().home == (tmp_path / "from_env").resolve()
    monkeypatch.delenv("MODELDECK_HOME")
    assert Workspace.resolve().home == DEFAULT_HOME.resolve()


def test_creating_a_workspace_touches_nothing_until_ensure(tmp_path: Path) -> None:
    workspace = Workspace.resolve(tmp_path / "ws")
    assert not workspace.home.exists()
    workspace.ensure()
    for folder in ("datasets", "artifacts", "runs", "logs", "uploads"):
        assert (workspace.home / folder).is_dir()
    assert workspace.db_path == workspace.home / DB_NAME
    assert workspace.artifact_dir("mdl_1") == workspace.home / "artifacts" / "mdl_1"
    assert workspace.dataset_dir("ds_1") == workspace.home / "datasets" / "ds_1"


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_path_replaces_the_file_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    atomic_write_bytes(target, b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # readers see the old file until the rename
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_path_keeps_the_old_file_when_the_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temp file left


def test_atomic_path_leaves_no_file_when_the_first_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- confinement
@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.delenv(ALLOWED_ROOTS_ENV, raising=False)
    workspace = Workspace.resolve(tmp_path / "ws").ensure()
    (workspace.uploads_dir / "in.csv").write_text("a\n1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a\n1\n")
    return workspace


def _assert_refused(workspace: Workspace, path: str | Path) -> None:
    with pytest.raises(InvalidInput) as info:
        workspace.confine(path)
    assert f"'{path}' is outside the workspace" in info.value.message
    assert str(workspace.home) in info.value.message
    assert ALLOWED_ROOTS_ENV in info.value.hint
    assert info.value.status == 422


def test_confine_accepts_paths_inside_the_workspace(workspace: Workspace) -> None:
    inside = workspace.uploads_dir / "in.csv"
    assert workspace.confine("uploads/in.csv") == inside
    assert workspace.confine(inside) == inside
    assert workspace.confine("uploads/../uploads/in.csv") == inside
    assert workspace.confine("exports/*.csv") == workspace.home / "exports" / "*.csv"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("uploads/*.csv", "is a pattern in ModelDeck's own folder uploads/"),
        ("runs/*/results.parquet", "is a pattern in ModelDeck's own folder runs/"),
        ("datasets/**/data.parquet", "is a pattern in ModelDeck's own folder datasets/"),
        ("predictions/compacted/x.parquet", "own folder predictions/, which is never read"),
        ("artifacts/mdl_1/model.joblib", "own folder artifacts/, which is never read"),
        ("labels/x.csv", "own folder labels/, which is never read"),
    ],
)
def test_confine_keeps_other_projects_files_out_of_reach(
    workspace: Workspace, path: str, words: str
) -> None:
    """ModelDeck's own folders hold every project's files: a file of datasets/, runs/ or
    uploads/ is read by its exact name only (as the app shows it to the project's members),
    the rest never; a pattern's match in any of them is refused too."""
    with pytest.raises(InvalidInput) as refused:
        workspace.confine(path)
    assert words in refused.value.message
    assert "exports/" in (refused.value.hint or "")
    exact = workspace.uploads_dir / "tok" / "new.csv"
    assert workspace.confine("uploads/tok/new.csv") == exact
    with pytest.raises(InvalidInput) as matched:
        workspace.confine("uploads/tok/new.csv", matched_by="*/*/new.csv")
    assert matched.value.message == (
        "The pattern '*/*/new.csv' matches 'uploads/tok/new.csv', in ModelDeck's own folder"
        " uploads/, which holds every project's files."
    )


def test_confine_refuses_an_absolute_path_outside(workspace: Workspace, tmp_path: Path) -> None:
    _assert_refused(workspace, tmp_path / "outside" / "secret.csv")
    _assert_refused(workspace, "/etc/passwd")


def test_confine_refuses_a_dotdot_escape(workspace: Workspace) -> None:
    _assert_refused(workspace, "../outside/secret.csv")
    _assert_refused(workspace, "uploads/../../outside/secret.csv")


def test_confine_refuses_a_sibling_with_the_same_prefix(
    workspace: Workspace, tmp_path: Path
) -> None:
    sibling = tmp_path / "ws2"
    sibling.mkdir()
    _assert_refused(workspace, sibling / "x.csv")


def test_confine_refuses_a_symlink_leading_outside(workspace: Workspace, tmp_path: Path) -> None:
    (workspace.uploads_dir / "link.csv").symlink_to(tmp_path / "outside" / "secret.csv")
    (workspace.uploads_dir / "linkdir").symlink_to(tmp_path / "outside")
    _assert_refused(workspace, "uploads/link.csv")
    _assert_refused(workspace, "uploads/linkdir/secret.csv")


def test_allowed_roots_extend_the_confinement(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join([str(tmp_path / "outside"), str(other)]))
    assert workspace.allowed_roots() == [
        workspace.home,
        (tmp_path / "outside").resolve(),
        other.resolve(),
    ]
    secret = tmp_path / "outside" / "secret.csv"
    assert workspace.confine(secret) == secret.resolve()
    assert workspace.confine("../outside/secret.csv") == secret.resolve()
    _assert_refused(workspace, tmp_path / "elsewhere.csv")
