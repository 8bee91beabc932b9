"""The workspace: one data directory, its folder layout, atomic writes and path confinement."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

DEFAULT_HOME = Path(__file__).resolve().parent.parent / "data"
DB_NAME = "modeldeck.duckdb"
ALLOWED_ROOTS_ENV = "MODELDECK_ALLOWED_ROOTS"


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Creating the object touches nothing; `ensure()` makes folders."""

    home: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        """The workspace at `home`, else $MODELDECK_HOME, else the repository's `data/`."""
        chosen = home or os.environ.get("MODELDECK_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    def ensure(self) -> Workspace:
        for folder in (self.datasets_dir, self.artifacts_dir, self.runs_dir, self.logs_dir,
                       self.uploads_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def artifact_dir(self, model_id: str) -> Path:
        return self.artifacts_dir / model_id

    def allowed_roots(self) -> list[Path]:
        """Roots a UI user may read files from: the workspace plus $MODELDECK_ALLOWED_ROOTS."""
        extra = os.environ.get(ALLOWED_ROOTS_ENV, "")
        roots = [self.home] + [Path(p).expanduser().resolve() for p in extra.split(os.pathsep) if p]
        return roots

    def confine(self, path: str | os.PathLike[str]) -> Path:
        """Resolve `path` (relative to the workspace) and refuse it outside the allowed roots."""
        raw = Path(path).expanduser()
        resolved = (raw if raw.is_absolute() else self.home / raw).resolve()
        roots = self.allowed_roots()
        if not any(resolved.is_relative_to(root) for root in roots):
            shown = ", ".join(str(r) for r in roots)
            raise InvalidInput(
                f"The path '{path}' is outside the workspace and the allowed folders ({shown}).",
                f"Copy the file into {self.home}, upload it, or ask the administrator to add its "
                f"folder to {ALLOWED_ROOTS_ENV}.",
            )
        return resolved


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it into place atomically.

    A crash or an exception leaves either the old file or none, never half a file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    """Write `data` to `target` atomically and return the target."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def save_upload(workspace: Workspace, filename: str, data: bytes) -> Path:
    """Store an uploaded file under uploads/<token>/ (atomically); return its workspace path.

    Only the file's base name is kept, so a crafted name cannot climb out of the folder.
    """
    name = Path(filename).name.strip() or "upload"
    if name in (".", ".."):
        raise InvalidInput(f"'{filename}' is not a usable file name.", "Rename the file.")
    target = workspace.uploads_dir / secrets.token_hex(6) / name
    atomic_write_bytes(target, data)
    return target.relative_to(workspace.home)
