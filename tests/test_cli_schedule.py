"""`modeldeck schedule`: set, show --json, pause, resume, policies, errors on stderr."""

from __future__ import annotations

import pytest

from core import deployments, registry
from core.store import Store
from tests.cli_helpers import run, run_json


@pytest.fixture
def name(trained_store: Store) -> str:
    model = registry.list_models(trained_store)[0]
    return deployments.deploy(trained_store, model.id, "staging", actor="tester").name


def test_schedule_set_show_pause_resume(
    capsys: pytest.CaptureFixture[str], trained_store: Store, name: str
) -> None:
    shown = run_json(capsys, "schedule", name, "--cron", "0 6 * * 1", "--tz", "Europe/Berlin")
    assert {k: shown[k] for k in ("expression", "timezone", "paused", "description")} == {
        "expression": "0 6 * * 1",
        "timezone": "Europe/Berlin",
        "paused": False,
        "description": "At 06:00 on Monday",
    }
    assert len(shown["next"]) == 5 and all("T06:00:00+0" in t for t in shown["next"])
    assert run_json(capsys, "schedule", name, "--pause")["paused"] is True
    assert run_json(capsys, "schedule", name, "--show")["next"] == []
    resumed = run_json(capsys, "schedule", name, "--resume")
    assert resumed["paused"] is False and resumed["timezone"] == "Europe/Berlin"
    preset = run_json(
        capsys, "schedule", name, "--preset", "hourly", "--catch-up", "skip", "--max-attempts", "3"
    )
    assert (preset["expression"], preset["timezone"]) == ("0 * * * *", "Europe/Berlin")
    assert (preset["catch_up"], preset["overlap"], preset["max_attempts"]) == ("skip", "skip", 3)
    assert run_json(capsys, "schedule", name, "--overlap", "wait")["overlap"] == "wait"
    code, out, _ = run(capsys, "schedule", name)
    assert code == 0 and "At the start of every hour" in out and "next: " in out


def test_schedule_errors_go_to_stderr(
    capsys: pytest.CaptureFixture[str], trained_store: Store, name: str
) -> None:
    code, out, err = run(capsys, "schedule", name, "--cron", "0 25 * * *")
    assert (code, out) == (2, "")
    assert "error: Invalid cron expression '0 25 * * *': the hour field ('25') is wrong." in err
    code, _, err = run(capsys, "schedule", name, "--cron", "@daily", "--tz", "Mars/Olympus")
    assert code == 2 and "error: Unknown time zone 'Mars/Olympus'." in err
    code, _, err = run(capsys, "schedule", name, "--show")
    assert code == 2 and f"error: Deployment '{name}' has no schedule." in err
    code, _, err = run(capsys, "schedule", "nope", "--pause")
    assert code == 2 and "error: No deployment 'nope'." in err
