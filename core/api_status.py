"""Whether the API answers for each deployment, told by the API process itself.

Each API process keeps a small status file, `run/api-<pid>.json` in the workspace, written
atomically (temp name + rename) by the catalog's follow thread: its pid, a heartbeat time
refreshed every HEARTBEAT_SECONDS, and per deployment the version it serves, whether its models
are loaded and warm, and the error that kept it from loading. The app reads these files to show
"running" beside "deployed" without calling the API over HTTP (whose address the app may not
know) and without touching the store. A file counts while its heartbeat is fresher than
FRESH_SECONDS and its process is alive; a stopped API removes its file, a killed one leaves a
stale file that the next reader ignores and the next API process removes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import orjson

from core.entities import Deployment
from core.store import utcnow
from core.workspace import Workspace, atomic_write_bytes, is_running

RUN_DIR = "run"
DEFAULT_URL = "http://127.0.0.1:8000"  # `modeldeck api` without --port
URL_ENV = "MODELDECK_API_URL"  # the address callers use (set by `modeldeck api`, or by hand)
HEARTBEAT_SECONDS = 3.0  # how often a serving process rewrites its file
FRESH_SECONDS = 15.0  # a heartbeat older than this means the process hangs or is gone


@dataclass(frozen=True)
class Served:
    """One deployment as an API process serves it (or failed to)."""

    name: str
    deployment_id: str
    version: int | None
    is_warm: bool
    error: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # role -> id of the model loaded warm
    load_seconds: dict[str, float] = field(default_factory=dict)  # role -> load and warm-up


@dataclass(frozen=True)
class ApiState:
    """One API process's status file."""

    pid: int
    started_at: datetime
    heartbeat_at: datetime
    deployments: dict[str, Served] = field(default_factory=dict)
    reload_error: str | None = None
    address: str | None = None  # the base URL callers reach this process at, when known

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> ApiState:
        raw = orjson.loads(data)
        return cls(
            pid=int(raw["pid"]),
            started_at=datetime.fromisoformat(raw["started_at"]),
            heartbeat_at=datetime.fromisoformat(raw["heartbeat_at"]),
            deployments={k: Served(**v) for k, v in raw.get("deployments", {}).items()},
            reload_error=raw.get("reload_error"),
            address=raw.get("address"),
        )

    def is_fresh(self, now: datetime | None = None) -> bool:
        """Heartbeat within FRESH_SECONDS and the process alive."""
        age = ((now or utcnow()) - self.heartbeat_at).total_seconds()
        return age < FRESH_SECONDS and is_running(self.pid)


def folder(workspace: Workspace) -> Path:
    return workspace.home / RUN_DIR


def status_path(workspace: Workspace, pid: int | None = None) -> Path:
    return folder(workspace) / f"api-{os.getpid() if pid is None else pid}.json"


def write(workspace: Workspace, state: ApiState) -> Path:
    """Write a process's status file atomically (a reader sees the old file or the new one)."""
    return atomic_write_bytes(status_path(workspace, state.pid), state.to_json())


def read_states(workspace: Workspace) -> list[ApiState]:
    """Every API status file that can be read (fresh or not); unreadable ones are skipped."""
    found = []
    for path in sorted(folder(workspace).glob("api-*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append(ApiState.from_json(path.read_bytes()))
    return found


# ---------------------------------------------------------------------------- writing
class _Model(Protocol):
    @property
    def id(self) -> str: ...


class _Endpoint(Protocol):
    @property
    def deployment(self) -> Deployment: ...
    @property
    def version(self) -> int: ...
    @property
    def main(self) -> _Model: ...
    @property
    def challenger(self) -> _Model | None: ...
    @property
    def load_seconds(self) -> dict[str, float]: ...


class _Snapshot(Protocol):
    @property
    def endpoints(self) -> Mapping[str, _Endpoint]: ...
    @property
    def failures(self) -> Mapping[str, str]: ...


class Publisher:
    """The heartbeat of one serving process: `beat` rewrites its file when due (or forced)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.pid = os.getpid()
        self.started_at = utcnow()
        self.address = os.environ.get(URL_ENV) or None
        self._last = 0.0
        self._swept = False

    def beat(
        self, snapshot: _Snapshot | None, reload_error: str | None, force: bool = False
    ) -> None:
        """Publish the snapshot's deployments when HEARTBEAT_SECONDS have passed (or `force`).
        Only a hint for the app: a file that cannot be written is skipped, never raised."""
        if not force and time.monotonic() - self._last < HEARTBEAT_SECONDS:
            return
        self._last = time.monotonic()
        served = list(served_of(snapshot)) if snapshot is not None else []
        state = ApiState(
            self.pid,
            self.started_at,
            utcnow(),
            {s.name: s for s in served},
            reload_error,
            self.address,
        )
        with contextlib.suppress(OSError):
            if not self._swept:
                remove_dead(self.workspace)
                self._swept = True
            write(self.workspace, state)

    def stop(self) -> None:
        """Remove this process's file: the API stopped answering."""
        status_path(self.workspace, self.pid).unlink(missing_ok=True)


def served_of(snapshot: _Snapshot) -> Iterable[Served]:
    """What a snapshot serves (warm: loaded and warmed up by a predict) and what it could not."""
    for name, e in snapshot.endpoints.items():
        models = {"main": e.main.id} | ({"challenger": e.challenger.id} if e.challenger else {})
        yield Served(name, e.deployment.id, e.version, True, None, models, dict(e.load_seconds))
    for name, error in snapshot.failures.items():
        yield Served(name, "", None, False, error)


def remove_dead(workspace: Workspace) -> None:
    """Remove the files of API processes that are gone (killed: they could not remove them)."""
    for path in folder(workspace).glob("api-*.json"):
        pid = path.stem.removeprefix("api-")
        if pid.isdigit() and not is_running(int(pid)):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- reading
def api_url(states: list[ApiState], now: datetime | None = None) -> str:
    """The address callers reach the API at: the one a running API process publishes (the
    port it was started on, or the address set in MODELDECK_API_URL for it), else this
    process's MODELDECK_API_URL, else the default."""
    for state in sorted(states, key=lambda s: s.heartbeat_at, reverse=True):
        if state.address and state.is_fresh(now):
            return state.address.rstrip("/")
    return (os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


@dataclass(frozen=True)
class Running:
    """Whether the API answers for one deployment, in words for the app."""

    is_running: bool
    words: str
    version: int | None = None
    stopped: bool = False  # no API process runs: the front end says how to start one


def running(states: list[ApiState], d: Deployment, now: datetime | None = None) -> Running:
    """ "running" when a live API process with a fresh heartbeat lists the deployment warm;
    otherwise why not: the API is stopped, or it could not load this deployment."""
    fresh = [s for s in states if s.is_fresh(now)]
    if not fresh:
        return Running(False, "not running: the API is stopped", stopped=True)
    if d.current is None:
        return Running(False, "not running: the deployment has no current version")
    served = [s.deployments[d.name] for s in fresh if d.name in s.deployments]
    warm = [s for s in served if s.is_warm and s.deployment_id == d.id]
    if warm:
        version = max(s.version or 0 for s in warm)
        if version != d.current.number:
            return Running(True, f"running v{version} (switching to v{d.current.number})", version)
        return Running(True, "running", version)
    errors = [s.error for s in served if s.error]
    reload_error = next((s.reload_error for s in fresh if s.reload_error), None)
    why = errors[0] if errors else reload_error or "not loaded yet (the API reloads within seconds)"
    return Running(False, f"API not answering for this deployment: {why}")


def model_states(
    states: list[ApiState], d: Deployment, now: datetime | None = None
) -> dict[str, str]:
    """By role ("main", "challenger"), whether the API has the current version's model loaded,
    in words: loaded (in how many processes, when more than one; the longest load and warm-up
    time), or why not."""
    if d.current is None:
        return {}
    pins = {"main": d.current.main_model_id, "challenger": d.current.challenger_model_id}
    fresh = [s for s in states if s.is_fresh(now)]
    served = [s.deployments[d.name] for s in fresh if d.name in s.deployments]
    words = {}
    for role, model_id in pins.items():
        if not model_id:
            continue
        loaded = [s for s in served if s.is_warm and s.models.get(role) == model_id]
        if loaded:
            took = max(s.load_seconds.get(role, 0.0) for s in loaded)
            words[role] = "loaded" if len(loaded) == 1 else f"loaded in {len(loaded)} processes"
            words[role] += f" ({took:.2f} s)" if took else ""
        elif not fresh:
            words[role] = "not loaded: the API is stopped"
        else:
            errors = [s.error for s in served if s.error]
            words[role] = f"not loaded: {errors[0]}" if errors else "not loaded yet"
    return words
