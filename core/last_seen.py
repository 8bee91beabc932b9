"""When each login session was last used, kept outside the store.

The idle limit needs a session's last-seen time refreshed while it is used (at most once a
minute: users.TOUCH_SECONDS). Written into `modeldeck.duckdb`, that refresh would move
Store.version() and so drop every read the UI keeps, for every user, once a minute per active
session. So the refresh goes to one small file per session, `private/sessions/<digest>` (the
session's id in the store: the SHA-256 of its token), holding the time as ISO text, written to a
temporary name and renamed into place (DESIGN.md storage rule 3). The session row keeps the
time it was created at; a session's last-seen time is the later of the two.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

from core.workspace import Workspace, atomic_write_bytes

LAST_SEEN_DIR = "sessions"
log = logging.getLogger("modeldeck.sessions")


def _path(workspace: Workspace, session_id: str) -> Path:
    return workspace.private_dir / LAST_SEEN_DIR / session_id


def read(workspace: Workspace, session_id: str) -> datetime | None:
    """The refreshed last-seen time of a session (naive UTC), None when never refreshed."""
    try:
        return datetime.fromisoformat(_path(workspace, session_id).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def write(workspace: Workspace, session_id: str, at: datetime) -> bool:
    """Record that the session was seen at `at`, atomically; False when the file could not be
    written (logged), so the caller can keep the time another way."""
    path = _path(workspace, session_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(path, at.isoformat().encode("ascii"))
    except OSError as exc:
        log.warning("could not write the last-seen time %s: %s", path, exc)
        return False
    return True


def forget(workspace: Workspace, session_id: str) -> None:
    """Remove a session's file (it ended)."""
    with contextlib.suppress(OSError):
        _path(workspace, session_id).unlink(missing_ok=True)


def prune(workspace: Workspace, idle: timedelta) -> int:
    """Remove the files not refreshed for longer than `idle` (their sessions are past the idle
    limit, as the store's own times are older still); returns how many. Never raises."""
    folder = workspace.private_dir / LAST_SEEN_DIR
    cutoff = time.time() - idle.total_seconds()
    removed = 0
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed
