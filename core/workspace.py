"""The workspace: one data directory, its folder layout, atomic writes and path confinement."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

DEFAULT_HOME = Path(__file__).resolve().parent.parent / "data"
DB_NAME = "modeldeck.duckdb"
log = logging.getLogger("modeldeck.workspace")
CHANGES_MARKER = "store.changed"
ALLOWED_ROOTS_ENV = "MODELDECK_ALLOWED_ROOTS"
PRIVATE_DIR = "private"  # DuckDB's temporary files: no source reads it, no sink writes it
# Folders whose files ModelDeck writes itself and references from the metadata: never a sink
# or a report copy target (labels/ is core/ground_truth.py's LABELS_DIR).
PENDING_DIR = "pending"  # one empty file per finished run whose after-run steps are to do
OWN_DIRS = (
    "datasets",
    "artifacts",
    "runs",
    "logs",
    "uploads",
    "labels",
    "predictions",
    "usage",
    PRIVATE_DIR,
    PENDING_DIR,
)
# Of those, the folders where a user's path may name one file exactly: a dataset's snapshot, a
# run's results, an upload (paths the app shows a project's members, under random ids). They
# hold every project's files, so a pattern never reaches into them; the other own folders
# (models' pickles, the API's log of every deployment, labels, usage) are never read as data.
BY_NAME_ONLY = ("datasets", "runs", "uploads")


@dataclass(frozen=True)
class RunFolder:
    """`runs/<run_id>/`: the one place its layout is written. Every file a run and the steps
    after it keep is named here; removing the folder removes all of them."""

    path: Path

    def results(self, which: str = "main") -> Path:
        """The main or challenger results (core/scoring.py writes them)."""
        return self.path / f"{which}.parquet"

    def sample(self, which: str = "main") -> Path:
        """The rows sampled while scoring, for global explanations (core/scoring.py)."""
        return self.path / f"sample_{which}.parquet"

    def drift_counts(self, model_id: str | None = None) -> Path:
        """Bucket counts against the run's own model, or against `model_id` (core/drift.py)."""
        return self.path / f"drift_counts{f'_{model_id}' if model_id else ''}.json"

    def explanation(self, which: str, row: int, tag: str) -> Path:
        """One row's cached local explanation (core/explain.py)."""
        return self.path / "explanations" / f"{which}-{row}-{tag}.json"

    def importance(self, which: str) -> Path:
        """The run's global importance (core/explain.py)."""
        return self.path / f"importance_{which}.json"

    def shap_sample(self, which: str) -> Path:
        """The SHAP values behind the global importance (core/explain.py)."""
        return self.path / f"shap_{which}.parquet"

    def report(self) -> Path:
        """The run's HTML report (core/reports.py)."""
        return self.path / "report.html"

    def production(self) -> Path:
        """A validation's scoring of production's model on the same rows (core/validation.py)."""
        return self.path / "production"


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

    def run_folder(self, run_id: str) -> RunFolder:
        """`runs/<run_id>/` and the files in it."""
        return RunFolder(self.runs_dir / run_id)

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    @property
    def private_dir(self) -> Path:
        return self.home / PRIVATE_DIR

    @property
    def pending_dir(self) -> Path:
        return self.home / PENDING_DIR

    def ensure(self) -> Workspace:
        for folder in (
            self.datasets_dir,
            self.artifacts_dir,
            self.runs_dir,
            self.logs_dir,
            self.uploads_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def artifact_dir(self, model_id: str) -> Path:
        return self.artifacts_dir / model_id

    def allowed_roots(self) -> list[Path]:
        """Roots a UI user may read files from: the workspace plus $MODELDECK_ALLOWED_ROOTS.

        Raises InvalidInput naming a root that would expose the store, its key, its WAL or
        DuckDB's temporary files (a folder above the workspace, or inside its private folder).
        """
        extra = os.environ.get(ALLOWED_ROOTS_ENV, "")
        roots = [Path(p).expanduser().resolve() for p in extra.split(os.pathsep) if p]
        for root in roots:
            self._check_root(root)
        return [self.home, *(r for r in roots if r != self.home)]

    def _check_root(self, root: Path) -> None:
        home = self.home.resolve()
        private = self.private_dir.resolve()
        if (
            (home != root and home.is_relative_to(root))
            or root.is_relative_to(private)
            or (root.parent == home and root.name.startswith(DB_NAME))
        ):
            raise InvalidInput(
                f"The allowed root '{root}' in {ALLOWED_ROOTS_ENV} contains or lies inside "
                f"ModelDeck's private files (the store {self.db_path.name}, its key and "
                f"temporary files in {home}), so no source may read from it.",
                f"List folders beside or inside the workspace instead, e.g. {root / 'shared'} "
                "(the workspace itself is always readable, its private files excepted).",
            )

    def is_own(self, path: Path) -> bool:
        """Whether a resolved path is the workspace itself, one of ModelDeck's own folders
        (or inside one), or a file of the store (the metadata file, its WAL, its key)."""
        if path == self.home.resolve() or self.is_secret(path):
            return True
        return self.own_folder(path) is not None

    def output_path(self, path: str | os.PathLike[str]) -> Path:
        """A folder or file ModelDeck may write into for a user (a report copy, a sink):
        within the allowed roots, and never the workspace itself nor one of its own files or
        folders (InvalidInput)."""
        resolved = self._within_roots(path)
        if self.is_own(resolved):
            raise InvalidInput(
                f"'{path}' is among ModelDeck's own files and folders ({resolved}); nothing "
                "is written there for you.",
                f"Choose a folder of your own, e.g. {self.home / 'exports'}.",
            )
        return resolved

    def duckdb_temp_dir(self) -> Path:
        """A fresh folder name for one DuckDB database's spill files, inside the private
        folder (DuckDB creates it when it first spills and removes it when closed)."""
        parent = self.private_dir / "tmp"
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return parent / f"{os.getpid()}-{secrets.token_hex(4)}"

    def remove_dead_temp_dirs(self) -> list[Path]:
        """Remove the DuckDB spill folders of processes that no longer exist (a SIGKILLed
        executor never closes its databases); returns what was removed."""
        removed = []
        parent = self.private_dir / "tmp"
        for folder in parent.iterdir() if parent.is_dir() else ():
            pid = folder.name.split("-", 1)[0]
            if pid.isdigit() and not is_running(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def confine(self, path: str | os.PathLike[str], *, matched_by: str | None = None) -> Path:
        """Resolve `path` (relative to the workspace) and refuse it outside the allowed roots,
        when it is one of the private files (the store, its key, DuckDB's temporary files), or
        inside ModelDeck's own folders other than by the exact name of a file in BY_NAME_ONLY.
        `matched_by`: the pattern `path` is a match of, which may not reach any own folder."""
        resolved = self.refuse_secret(path, self._within_roots(path))
        own = self.own_folder(resolved)
        if own is None:
            return resolved
        if matched_by is not None:
            raise InvalidInput(
                f"The pattern '{matched_by}' matches '{path}', in ModelDeck's own folder {own}/,"
                " which holds every project's files.",
                "Keep the files to read in a folder of your own (e.g. exports/) and point the"
                " pattern there, or name one file exactly.",
            )
        if own not in BY_NAME_ONLY:
            raise InvalidInput(
                f"The path '{path}' is in ModelDeck's own folder {own}/, which is never read"
                " as data.",
                "Read a file of your own: upload it, or keep it in a folder such as exports/.",
            )
        if glob.has_magic(str(path)):
            raise InvalidInput(
                f"The path '{path}' is a pattern in ModelDeck's own folder {own}/, which holds"
                " every project's files.",
                "Name one file exactly (an upload's or a run's path, as the app shows it), or"
                " keep the files in a folder of your own (e.g. exports/) and point the pattern"
                " there.",
            )
        return resolved

    def own_folder(self, resolved: Path) -> str | None:
        """The own folder (OWN_DIRS) a resolved path lies in, if any."""
        home = self.home.resolve()
        return next((n for n in OWN_DIRS if resolved.is_relative_to(home / n)), None)

    def refuse_secret(self, path: str | os.PathLike[str], resolved: Path | None = None) -> Path:
        """The resolved path, unless it is one of the private files (then InvalidInput): the
        rule even the unconfined CLI follows."""
        if resolved is None:
            raw = Path(path).expanduser()
            resolved = (raw if raw.is_absolute() else Path.cwd() / raw).resolve()
        if self.is_secret(resolved):
            raise InvalidInput(
                f"The path '{path}' is one of ModelDeck's private files ({resolved}).",
                "The store, its key and DuckDB's temporary files are never read as data; "
                "choose a data file.",
            )
        return resolved

    def _within_roots(self, path: str | os.PathLike[str]) -> Path:
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

    def secret_file(self, suffix: str, make: Callable[[], bytes], create: bool) -> bytes | None:
        """The contents of the store's private file `<store>.<suffix>` (a key beside the store,
        never readable as data); made by `make` when missing and `create` (mode 0600,
        atomically, once across processes: the first writer wins), else None when missing."""
        path = self.home / f"{DB_NAME}.{suffix}"
        if path.exists():
            return path.read_bytes().strip()
        if not create:
            return None
        self.home.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.home)  # mode 0600
        try:
            os.write(fd, make())
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process was first: theirs wins
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return path.read_bytes().strip()

    def touch_marker(self, name: str) -> None:
        """Write a new random token to the marker file `name` (a hint to other processes that
        something changed; call after the commit). Only a hint, so a marker that cannot be
        written is logged, never raised. A token, not an mtime: two touches within the
        filesystem's timestamp granularity still differ."""
        try:
            atomic_write_bytes(self.home / name, secrets.token_hex(8).encode())
        except OSError as exc:
            log.warning("could not touch the marker %s in %s: %s", name, self.home, exc)

    def changed(self) -> None:
        """Touch CHANGES_MARKER: the store's deployments, keys, users or roles changed (every
        audited change does, after its commit), so a process that keeps them in memory (the
        API) reloads them."""
        self.touch_marker(CHANGES_MARKER)

    def read_marker(self, name: str) -> bytes | None:
        """The marker's current token (None before the first touch); a few microseconds."""
        try:
            return (self.home / name).read_bytes()
        except OSError:
            return None

    def is_secret(self, path: Path) -> bool:
        """Whether a resolved path is the store, its WAL or key, or in the private folder."""
        home = self.home.resolve()
        return (path.parent == home and path.name.startswith(DB_NAME)) or path.is_relative_to(
            self.private_dir.resolve()
        )


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


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
