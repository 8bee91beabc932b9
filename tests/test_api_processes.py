"""`modeldeck api --processes N`: N single-worker servers accept on one socket, each with its
own models and status file, and stopping the command stops them all (issue 17 item 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core import api_status, deployments, registry
from core.datasets import churn_frame
from core.store import Store
from tests.test_api import _free_port, call

ROOT = Path(__file__).resolve().parents[1]


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_processes_share_one_port_and_stop_together(trained_store: Store) -> None:
    store = trained_store
    main = registry.list_models(store)[0]
    d = deployments.deploy(store, main.id, "staging", name="shared", actor="tester")
    deployments.set_access(store, d.name, "public", actor="tester")
    port = _free_port()
    env = {
        **os.environ,
        "MODELDECK_HOME": str(store.workspace.home),
        "MODELDECK_ADMIN_PASSWORD": "a long test password",
    }
    parent = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "api", "--processes", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # both servers warm: each keeps its own status file
            fresh = [s for s in api_status.read_states(store.workspace) if s.is_fresh()]
            if len(fresh) == 2 and _ready(base):
                break
            assert time.monotonic() < deadline, "two API processes did not come up"
            assert parent.poll() is None, "the command ended"
            time.sleep(0.2)
        assert all(s.deployments["shared"].is_warm for s in fresh)
        # each publishes the address it answers at, which the app shows callers
        assert {s.address for s in fresh} == {base}
        assert api_status.api_url(fresh) == base
        rows = churn_frame(n_rows=3, seed=2).drop(columns=["churn"])
        body = {"dataframe_records": rows.to_dict(orient="records")}
        answers = [call(f"{base}/v1/deployments/shared/invocations", body) for _ in range(12)]
        assert {status for status, _ in answers} == {200}
        assert len({tuple(a["predictions"]) for _, a in answers}) == 1  # the same model
        pids = {s.pid for s in fresh}
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
    for pid in pids:  # the servers ended with the command
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, f"server {pid} outlived the command"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_processes_must_be_one_or_more(trained_store: Store) -> None:
    env = {**os.environ, "MODELDECK_HOME": str(trained_store.workspace.home)}
    env["MODELDECK_ADMIN_PASSWORD"] = "a long test password"
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "api", "--processes", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--processes takes 1 or more" in done.stderr


def test_a_thread_count_that_is_no_number_stops_the_api_before_it_starts(
    trained_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli_helpers import run

    monkeypatch.setenv("MODELDECK_HOME", str(trained_store.workspace.home))
    monkeypatch.setenv("MODELDECK_API_THREADS", "all")
    code, _, err = run(capsys, "api", "--port", str(_free_port()))
    assert code != 0
    assert "MODELDECK_API_THREADS is 'all'" in err and "whole number of threads" in err
    assert not api_status.read_states(trained_store.workspace)  # no server came up
