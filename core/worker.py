"""The worker sidecar. For now it only writes a heartbeat; runs land with the deployments issue."""

from __future__ import annotations

import json
import os
import time

from core.sidecars import HEARTBEAT_FILE
from core.store import Store, utcnow
from core.workspace import atomic_write_bytes

HEARTBEAT_SECONDS = 5.0


def write_heartbeat(store: Store) -> None:
    """Record that this worker is alive (a small file, so the UI never waits on the store)."""
    beat = {"pid": os.getpid(), "at": utcnow().isoformat() + "Z", "runs_in_flight": 0}
    atomic_write_bytes(store.workspace.home / HEARTBEAT_FILE, json.dumps(beat).encode())


def run_forever(store: Store, *, once: bool = False) -> None:
    """Heartbeat loop until interrupted (or one beat with `once`)."""
    print(f"ModelDeck worker on {store.workspace.home}: no pipelines to run yet.", flush=True)
    while True:
        write_heartbeat(store)
        if once:
            return
        time.sleep(HEARTBEAT_SECONDS)
