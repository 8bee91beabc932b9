"""Status of the sidecar processes (worker, API), read without touching the store's lock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from core.api_status import DEFAULT_URL
from core.store import utcnow
from core.workspace import Workspace

HEARTBEAT_FILE = "worker.heartbeat"
STALE_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class SidecarStatus:
    name: str
    is_alive: bool
    detail: str


def worker_status(workspace: Workspace) -> SidecarStatus:
    """Alive when the worker's heartbeat file is fresher than STALE_AFTER_SECONDS."""
    path = workspace.home / HEARTBEAT_FILE
    try:
        beat = json.loads(path.read_text())
        at = datetime.fromisoformat(beat["at"].rstrip("Z"))
    except (OSError, ValueError, KeyError):
        return SidecarStatus("worker", False, "no heartbeat yet: start it with `modeldeck worker`")
    age = (utcnow() - at).total_seconds()
    if age > STALE_AFTER_SECONDS:
        return SidecarStatus("worker", False, f"last heartbeat {age:.0f} s ago")
    return SidecarStatus(
        "worker", True, f"heartbeat {age:.0f} s ago, {beat.get('runs_in_flight', 0)} runs"
    )


def api_status(base_url: str = DEFAULT_URL, timeout: float = 0.3) -> SidecarStatus:
    """Alive when GET /health answers ok within `timeout` seconds."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return SidecarStatus("API", False, f"not answering at {base_url}")
    return SidecarStatus("API", body.get("status") == "ok", f"answering at {base_url}")
