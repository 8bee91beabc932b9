"""The API's status file (issue 17 item 15): what the serving process publishes per deployment,
and when the app calls a deployment "running" (fresh heartbeat, live pid, listed warm)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest

from core import api_status, deployments, registry, serving
from core.api_status import ApiState, Served
from core.entities import Deployment
from core.store import Store, utcnow
from core.workspace import Workspace


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _state(d: Deployment, **changes: object) -> ApiState:
    assert d.current is not None
    served = {d.name: Served(d.name, d.id, d.current.number, True)}
    fields: dict[str, object] = {
        "pid": os.getpid(),
        "started_at": utcnow(),
        "heartbeat_at": utcnow(),
        "deployments": served,
    }
    return ApiState(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
def deployed(trained_store: Store) -> Deployment:
    model = registry.list_models(trained_store)[0]
    return deployments.deploy(
        trained_store, model.id, "staging", name="churn-staging", actor="tester"
    )


def test_a_written_file_reads_back_whole(store: Store) -> None:
    ws = store.workspace
    state = ApiState(
        os.getpid(), utcnow(), utcnow(), {"a": Served("a", "dep_1", 3, False, "boom")}, None
    )
    path = api_status.write(ws, state)
    assert path == ws.home / "run" / f"api-{os.getpid()}.json"
    assert api_status.read_states(ws) == [state]
    assert not list(path.parent.glob("*.tmp")), "temp name + rename leaves no temp file"
    (path.parent / "api-99.json").write_text("{not json")  # a torn or foreign file is skipped
    assert api_status.read_states(ws) == [state]


def test_fresh_stale_and_dead(deployed: Deployment) -> None:
    now = utcnow()
    fresh = _state(deployed)
    assert api_status.running([fresh], deployed, now) == api_status.Running(True, "running", 1)
    stale = _state(deployed, heartbeat_at=now - timedelta(seconds=api_status.FRESH_SECONDS + 1))
    dead = _state(deployed, pid=_dead_pid())
    for states in ([], [stale], [dead]):
        verdict = api_status.running(states, deployed, now)
        assert not verdict.is_running
        assert (verdict.words, verdict.stopped) == ("not running: the API is stopped", True)
    assert api_status.running([dead, fresh], deployed, now).is_running  # one live process is enough


def test_not_answering_for_one_deployment_says_why(deployed: Deployment) -> None:
    failed = Served(deployed.name, "", None, False, "The model file is missing.")
    verdict = api_status.running([_state(deployed, deployments={deployed.name: failed})], deployed)
    assert verdict == api_status.Running(
        False, "API not answering for this deployment: The model file is missing."
    )
    unlisted = api_status.running([_state(deployed, deployments={})], deployed)
    assert unlisted.words.startswith("API not answering for this deployment: not loaded yet")
    reload = _state(deployed, deployments={}, reload_error="StoreBusy: locked")
    assert api_status.running([reload], deployed).words.endswith("StoreBusy: locked")
    assert deployed.current is not None
    old = Served(deployed.name, deployed.id, deployed.current.number - 1, True)
    behind = api_status.running([_state(deployed, deployments={deployed.name: old})], deployed)
    assert behind.is_running and behind.words == "running v0 (switching to v1)"
    # a deployment deleted and made again under the same name is not the one served
    other = Served(deployed.name, "dep_other", 1, True)
    assert not api_status.running(
        [_state(deployed, deployments={deployed.name: other})], deployed
    ).is_running


def test_the_catalog_publishes_its_deployments_and_removes_its_file(
    trained_store: Store, deployed: Deployment
) -> None:
    catalog = serving.Catalog(trained_store)
    catalog.start()
    try:
        [state] = api_status.read_states(trained_store.workspace)
        assert state.pid == os.getpid() and state.is_fresh()
        served = state.deployments[deployed.name]
        assert (served.name, served.deployment_id, served.version, served.is_warm) == (
            deployed.name,
            deployed.id,
            1,
            True,
        )
        assert deployed.current is not None
        assert served.models == {"main": deployed.current.main_model_id}
        assert served.load_seconds["main"] > 0
        assert api_status.running([state], deployed).is_running
        [words] = api_status.model_states([state], deployed).values()
        assert re.fullmatch(r"loaded \(\d+\.\d\d s\)", words), words
    finally:
        catalog.stop()
    assert api_status.read_states(trained_store.workspace) == []
    verdict = api_status.running(api_status.read_states(trained_store.workspace), deployed)
    assert verdict.words.startswith("not running: the API is stopped")
    assert api_status.model_states([], deployed) == {"main": "not loaded: the API is stopped"}


def test_a_deployment_the_api_cannot_load_is_published_with_its_error(
    trained_store: Store, deployed: Deployment
) -> None:
    assert deployed.current is not None
    model = registry.get_model(trained_store, deployed.current.main_model_id)
    (trained_store.workspace.home / model.artifact_path).unlink()
    publisher = api_status.Publisher(trained_store.workspace)
    publisher.beat(serving.load_snapshot(trained_store), None, force=True)
    [state] = api_status.read_states(trained_store.workspace)
    served = state.deployments[deployed.name]
    assert not served.is_warm and served.error
    verdict = api_status.running([state], deployed)
    assert verdict.words.startswith("API not answering for this deployment: ")
    assert "missing" in verdict.words.lower()
    [words] = api_status.model_states([state], deployed).values()
    assert words.startswith("not loaded: ") and "missing" in words.lower()
    publisher.stop()


def test_a_challenger_is_loaded_beside_the_main_model_and_an_old_model_is_not(
    trained_store: Store, deployed: Deployment
) -> None:
    """Per role: the current version's models as the API holds them; a status file still
    listing the previous version's model does not count as the current one loaded."""
    main, challenger = registry.list_models(trained_store)[:2]
    both = deployments.deploy(
        trained_store, main.id, "staging", name="churn-two", challenger_id=challenger.id,
        actor="tester",
    )  # fmt: skip
    publisher = api_status.Publisher(trained_store.workspace)
    publisher.beat(serving.load_snapshot(trained_store), None, force=True)
    states = api_status.read_states(trained_store.workspace)
    words = api_status.model_states(states, both)
    assert set(words) == {"main", "challenger"}
    assert all(w.startswith("loaded (") for w in words.values())
    second = api_status.ApiState(**{**vars(states[0]), "pid": os.getppid()})
    assert api_status.model_states([*states, second], both)["main"].startswith(
        "loaded in 2 processes ("
    )
    swapped = deployments.deploy(
        trained_store, challenger.id, "staging", name="churn-two", challenger_id=main.id,
        actor="tester",
    )  # fmt: skip
    assert api_status.model_states(states, swapped) == {
        "main": "not loaded yet",
        "challenger": "not loaded yet",
    }
    publisher.stop()


def test_files_of_dead_processes_are_removed_by_the_next_api(store: Store) -> None:
    ws: Workspace = store.workspace
    gone = ApiState(_dead_pid(), utcnow(), utcnow())
    api_status.write(ws, gone)
    api_status.Publisher(ws).beat(None, None, force=True)
    assert [s.pid for s in api_status.read_states(ws)] == [os.getpid()]


def test_the_address_shown_is_the_running_apis_own(
    trained_store: Store, deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app shows callers the address a running API publishes (its port, or the address
    set for it), not a fixed default; with no API running, MODELDECK_API_URL, else the
    default."""
    monkeypatch.delenv(api_status.URL_ENV, raising=False)
    now = utcnow()
    running = _state(deployed, address="http://127.0.0.1:8123/")
    old = _state(
        deployed,
        address="http://127.0.0.1:9999",
        heartbeat_at=now - timedelta(seconds=api_status.FRESH_SECONDS + 1),
    )
    unknown = _state(deployed)  # started by hand: no address published
    assert api_status.api_url([old, running, unknown], now) == "http://127.0.0.1:8123"
    assert api_status.api_url([old, unknown], now) == api_status.DEFAULT_URL
    monkeypatch.setenv(api_status.URL_ENV, "https://models.example.com/")
    assert api_status.api_url([old], now) == "https://models.example.com"
    publisher = api_status.Publisher(trained_store.workspace)
    assert publisher.address == "https://models.example.com/"
    publisher.beat(None, None, force=True)  # what it writes carries the address
    (mine,) = [s for s in api_status.read_states(trained_store.workspace) if s.pid == os.getpid()]
    assert mine.address == "https://models.example.com/"
