"""Schedules: validation, previews, due slots, catch-up, overlap, pause, retry, two workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core import audit, deployments, execution, promotion, runs, scheduler
from core.entities import Deployment
from core.errors import InvalidInput, NotFound
from core.store import Store
from core.worker import loop as worker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def deployed(deploy_churn: Callable[..., Deployment]) -> Deployment:
    return deploy_churn("linear")


def first_slot(store: Store, name: str) -> datetime:
    """The first slot (naive UTC) after the schedule was set."""
    schedule = scheduler.get_schedule(store, name)
    since = datetime.fromisoformat(schedule.since)
    [slot] = scheduler.next_times(schedule.cron, schedule.timezone, 1, after=since)
    return slot.astimezone(scheduler.get_zone("UTC")).replace(tzinfo=None)


def slot_rows(store: Store) -> list[dict[str, object]]:
    return store.query("SELECT * FROM schedule_slots ORDER BY slot_at").dicts()


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("cron", "field", "value"),
    [
        ("61 * * * *", "minute", "61"),
        ("0 25 * * *", "hour", "25"),
        ("0 0 32 * *", "day-of-month", "32"),
        ("0 0 * 13 *", "month", "13"),
        ("0 6 * * MON-FUNDAY", "day-of-week", "MON-FUNDAY"),
    ],
)
def test_an_invalid_cron_expression_names_the_field(
    trained_store: Store, deployed: Deployment, cron: str, field: str, value: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        scheduler.set_schedule(trained_store, deployed.name, cron, "UTC", actor="tester")
    assert caught.value.message == (
        f"Invalid cron expression '{cron}': the {field} field ('{value}') is wrong."
    )
    assert "minute 0-59" in caught.value.hint
    assert scheduler.get_schedule(trained_store, deployed.name) is None


def test_a_cron_expression_needs_five_fields() -> None:
    with pytest.raises(InvalidInput) as caught:
        scheduler.normalize_cron("0 6 * *")
    assert caught.value.message == (
        "Invalid cron expression '0 6 * *': it has 4 fields, a cron "
        "expression has 5 (minute hour day-of-month month "
        "day-of-week)."
    )


def test_a_time_zone_that_does_not_exist(trained_store: Store, deployed: Deployment) -> None:
    for zone in ("Mars/Olympus", "../etc/passwd"):
        with pytest.raises(InvalidInput) as caught:
            scheduler.set_schedule(trained_store, deployed.name, "0 6 * * 1", zone, actor="tester")
        assert caught.value.message == f"Unknown time zone '{zone}'."
    assert scheduler.get_schedule(trained_store, deployed.name) is None


def test_aliases_presets_and_descriptions() -> None:
    assert scheduler.normalize_cron("@daily") == "0 0 * * *"
    assert scheduler.normalize_cron(" @Weekly ") == "0 0 * * 0"
    assert scheduler.describe("0 6 * * 1") == "At 06:00 on Monday"
    assert scheduler.describe(scheduler.PRESETS["hourly"]) == "At the start of every hour"
    assert scheduler.describe("@monthly") == "At 00:00 on the first day of every month"


def test_next_times_in_a_time_zone_across_daylight_saving_changes() -> None:
    spring = scheduler.next_times(
        "30 2 * * *", "Europe/Berlin", 3, after=datetime(2026, 3, 27, 12, 0)
    )
    assert [t.isoformat() for t in spring] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night: once, at 03:00
        "2026-03-30T02:30:00+02:00",
    ]
    autumn = scheduler.next_times(
        "30 2 * * *", "Europe/Berlin", 3, after=datetime(2026, 10, 24, 12, 0)
    )
    assert [t.isoformat() for t in autumn] == [  # 02:30 happens twice on the 25th: one run
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    hours = scheduler.next_times(
        "0 9 * * *", "America/New_York", 2, after=datetime(2026, 3, 7, 12, 0)
    )
    assert [t.utcoffset() for t in hours] == [timedelta(hours=-5), timedelta(hours=-4)]


# ---------------------------------------------------------------------------- settings
def test_set_pause_resume_and_show_are_stored_and_audited(
    trained_store: Store, deployed: Deployment
) -> None:
    saved = scheduler.set_schedule(
        trained_store, deployed.name, "@weekly", "Europe/Berlin", actor="tester"
    )
    assert (saved.cron, saved.timezone, saved.paused) == ("0 0 * * 0", "Europe/Berlin", False)
    stored = deployments.get_deployment(trained_store, deployed.name).schedule
    assert stored["cron"] == "0 0 * * 0" and stored["catch_up"] == "one"
    assert stored["overlap"] == "skip" and stored["max_attempts"] == 1
    shown = scheduler.show(trained_store, deployed.name, now=datetime(2026, 1, 1))
    assert shown["description"] == "At 00:00 on Sunday" and shown["paused"] is False
    assert shown["next"][:2] == ["2026-01-04T00:00:00+01:00", "2026-01-11T00:00:00+01:00"]
    assert len(shown["next"]) == 5
    assert scheduler.pause(trained_store, deployed.name, actor="tester").is_paused
    assert scheduler.show(trained_store, deployed.name)["next"] == []
    assert not scheduler.resume(trained_store, deployed.name, actor="tester").is_paused
    actions = [e.action for e in audit.list_entries(trained_store, deployed.name)]
    assert actions[:3] == ["schedule-resume", "schedule-pause", "schedule"]


def test_pause_without_a_schedule_and_unknown_deployments(
    trained_store: Store, deployed: Deployment
) -> None:
    with pytest.raises(InvalidInput) as caught:
        scheduler.pause(trained_store, deployed.name, actor="tester")
    assert caught.value.message == f"Deployment '{deployed.name}' has no schedule."
    with pytest.raises(NotFound) as missing:
        scheduler.set_schedule(trained_store, "nope", "@daily", actor="tester")
    assert missing.value.message == "No deployment 'nope'."
    with pytest.raises(InvalidInput) as policy:
        scheduler.set_schedule(
            trained_store, deployed.name, "@daily", catch_up="all", actor="tester"
        )
    assert policy.value.message == "Unknown catch-up policy 'all'."


def test_promotion_copies_the_schedule(trained_store: Store, deployed: Deployment) -> None:
    staging = scheduler.set_schedule(
        trained_store,
        deployed.name,
        "0 6 * * 1",
        "Europe/Berlin",
        overlap="wait",
        max_attempts=3,
        actor="tester",
    )
    production = promotion.promote(
        trained_store,
        deployed.name,
        override_reason="the gate is tested in test_gate.py",
        actor="tester",
    )
    copied = scheduler.get_schedule(trained_store, production.name)
    assert (copied.cron, copied.timezone, copied.overlap, copied.max_attempts) == (
        "0 6 * * 1",
        "Europe/Berlin",
        "wait",
        3,
    )
    assert copied.since >= staging.since  # active from the promotion: no catch-up before it


# ---------------------------------------------------------------------------- due slots
def test_a_due_slot_queues_exactly_one_scheduled_run(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    assert scheduler.enqueue_due(trained_store, slot - timedelta(seconds=1)) == []
    assert scheduler.next_due(trained_store, slot - timedelta(minutes=1)) == slot
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=2))
    assert (decision.slot_at, decision.outcome) == (slot, "queued")
    assert scheduler.enqueue_due(trained_store, slot + timedelta(seconds=3)) == []
    [run] = runs.list_runs(trained_store, deployed.name)
    assert (run.id, run.trigger, run.status) == (decision.run_id, "schedule", "queued")
    assert worker.run_once(trained_store, "w1")
    assert runs.get_run(trained_store, run.id).status == "succeeded"


def test_queued_slots_and_schedule_changes_touch_the_queue_marker(
    trained_store: Store, deployed: Deployment
) -> None:
    workspace = trained_store.workspace
    before = runs.read_queue_marker(workspace)
    scheduler.set_schedule(
        trained_store, deployed.name, "@hourly", actor="tester"
    )  # idle workers re-sync
    changed = runs.read_queue_marker(workspace)
    assert changed is not None and changed != before
    slot = first_slot(trained_store, deployed.name)
    assert scheduler.enqueue_due(trained_store, slot - timedelta(seconds=1)) == []
    assert runs.read_queue_marker(workspace) == changed  # nothing queued, nothing to wake for
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=1))
    assert decision.run_id is not None and runs.read_queue_marker(workspace) != changed


def test_missed_slots_give_one_catch_up_run(trained_store: Store, deployed: Deployment) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    later = slot + timedelta(hours=3, minutes=10)  # no worker for three hours
    [decision] = scheduler.enqueue_due(trained_store, later)
    assert decision.slot_at == slot + timedelta(hours=3) and decision.outcome == "queued"
    assert decision.note == (
        f"catch-up run for slot {decision.slot_at:%Y-%m-%d %H:%M} UTC; "
        "3 earlier slot(s) missed and not run; queued 600 s after its slot"
    )
    assert [r.trigger for r in runs.list_runs(trained_store, deployed.name)] == ["schedule"]
    entry = audit.list_entries(trained_store, deployed.name)[0]
    assert entry.action == "schedule-catch-up" and entry.reason == decision.note
    assert scheduler.enqueue_due(trained_store, later + timedelta(minutes=1)) == []


def test_missed_slots_with_catch_up_skip_run_nothing(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", catch_up="skip", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(hours=2, minutes=30))
    assert decision.outcome == "skipped" and decision.run_id is None
    assert decision.note.endswith(
        "missed while no worker was running, with 2 earlier slot(s) (catch-up policy: skip)"
    )
    assert runs.list_runs(trained_store, deployed.name) == []
    assert audit.list_entries(trained_store, deployed.name)[0].action == "schedule-skip"
    [on_time] = scheduler.enqueue_due(trained_store, slot + timedelta(hours=3, seconds=5))
    assert on_time.outcome == "queued"  # the next slot, on time, runs as usual


def test_a_slot_while_a_run_is_in_flight_is_skipped_and_says_so(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    manual = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=1))
    assert decision.outcome == "skipped"
    assert decision.note == (
        f"slot {slot:%Y-%m-%d %H:%M} UTC skipped: run {manual.id} of this "
        "deployment was still queued (overlap policy: skip)"
    )
    assert [r.id for r in runs.list_runs(trained_store, deployed.name)] == [manual.id]
    assert [s["outcome"] for s in scheduler.list_slots(trained_store, deployed.name)] == ["skipped"]


def test_a_slot_waits_for_the_run_in_flight_with_overlap_wait(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", overlap="wait", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    runs.enqueue_run(trained_store, deployed.name, actor="tester")
    assert scheduler.enqueue_due(trained_store, slot + timedelta(seconds=1)) == []
    assert scheduler.next_due(trained_store, slot + timedelta(seconds=2)) == slot  # still due
    assert worker.run_once(trained_store, "w1")
    [decision] = scheduler.enqueue_due(trained_store, slot + timedelta(seconds=30))
    assert decision.outcome == "queued" and decision.slot_at == slot


def test_a_paused_schedule_queues_nothing_and_resumes_without_catch_up(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "* * * * *", actor="tester")
    scheduler.pause(trained_store, deployed.name, actor="tester")
    slot = first_slot(trained_store, deployed.name)
    assert scheduler.enqueue_due(trained_store, slot + timedelta(minutes=30)) == []
    assert scheduler.next_due(trained_store) is None
    resumed = scheduler.resume(trained_store, deployed.name, actor="tester")
    since = datetime.fromisoformat(resumed.since)
    assert scheduler.enqueue_due(trained_store, since) == []  # paused slots are not caught up
    [decision] = scheduler.enqueue_due(trained_store, since + timedelta(seconds=61))
    assert decision.note.startswith("run for slot")


def test_a_run_whose_worker_died_is_retried_per_policy(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@daily", max_attempts=2, actor="tester")
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    for attempt in (1, 2):
        claimed = execution.claim_next_run(trained_store, f"dying-{attempt}", lease_seconds=0.001)
        assert (claimed.id, claimed.attempt) == (queued.id, attempt)
        time.sleep(0.01)  # let the lease run out
        assert runs.expire_leases(trained_store) == [queued.id]
        again = runs.get_run(trained_store, queued.id)
        if attempt == 1:
            assert again.status == "queued" and again.message.endswith(
                "queued again (attempt 2 of 2)"
            )
    failed = runs.get_run(trained_store, queued.id)
    assert failed.status == "failed" and failed.error.startswith("worker lost (lease expired")


def test_without_a_retry_policy_a_lost_run_fails(
    trained_store: Store, deployed: Deployment
) -> None:
    queued = runs.enqueue_run(trained_store, deployed.name, actor="tester")
    execution.claim_next_run(trained_store, "dying", lease_seconds=0.001)
    time.sleep(0.01)
    runs.expire_leases(trained_store)
    assert runs.get_run(trained_store, queued.id).status == "failed"


def test_the_worker_loop_queues_and_executes_a_due_slot(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "* * * * *", actor="tester")
    trained_store.execute(
        "UPDATE deployments SET schedule = json_merge_patch(schedule, ?) WHERE id = ?",
        ['{"since": "2000-01-01T00:00:00"}', deployed.id],
    )
    worker.run_forever(trained_store, once=True)
    [run] = runs.list_runs(trained_store, deployed.name)
    assert (run.trigger, run.status) == ("schedule", "succeeded")


# ---------------------------------------------------------------------------- two workers
ENQUEUE_SCRIPT = """
import sys
from datetime import datetime
from core import scheduler
from core.store import Store
store = Store.open(sys.argv[1])
decided = []
for text in sys.argv[2:]:
    for _ in range(5):
        decided += scheduler.enqueue_due(store, datetime.fromisoformat(text))
print(" ".join(d.slot_at.isoformat() for d in decided) or "-")
"""


@pytest.mark.slow
def test_two_worker_processes_decide_each_slot_exactly_once(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    times = [(slot + timedelta(hours=h, seconds=1)).isoformat() for h in range(3)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUE_SCRIPT, str(trained_store.workspace.home), *times],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in outputs]
    decided = [s for out, _ in outputs for s in out.split() if s != "-"]
    assert sorted(decided) == [(slot + timedelta(hours=h)).isoformat() for h in range(3)]
    rows = slot_rows(trained_store)
    assert [r["slot_at"] for r in rows] == [slot + timedelta(hours=h) for h in range(3)]
    scheduled = [r for r in runs.list_runs(trained_store, deployed.name) if r.trigger == "schedule"]
    assert len(scheduled) == 1  # the later slots were skipped: that run was still queued
    assert [r["outcome"] for r in rows] == ["queued", "skipped", "skipped"]


# ---------------------------------------------------------------------------- store locked
HOLD_SCRIPT = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold_lock(store: Store, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the store's file (a writer's lock) for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(store.workspace.db_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _due_every_minute(store: Store, deployed: Deployment) -> None:
    scheduler.set_schedule(store, deployed.name, "* * * * *", actor="tester")
    store.execute(
        "UPDATE deployments SET schedule = json_merge_patch(schedule, ?) WHERE id = ?",
        ['{"since": "2000-01-01T00:00:00"}', deployed.id],
    )


@pytest.mark.slow
def test_a_store_locked_for_a_few_seconds_delays_the_slot_and_loses_nothing(
    trained_store: Store, deployed: Deployment
) -> None:
    _due_every_minute(trained_store, deployed)
    with _hold_lock(trained_store, 2.0) as holder:
        started = time.monotonic()
        worker.run_forever(trained_store, once=True)  # waits out the lock with backoff
        waited = time.monotonic() - started
        holder.wait(timeout=30)
    assert waited >= 1.0  # it really met the lock
    [run] = runs.list_runs(trained_store, deployed.name)
    assert (run.trigger, run.status) == ("schedule", "succeeded")
    assert [r["outcome"] for r in slot_rows(trained_store)] == ["queued"]


@pytest.mark.slow
def test_a_tick_that_meets_a_longer_lock_gives_up_and_the_next_tick_catches_up(
    trained_store: Store, deployed: Deployment
) -> None:
    _due_every_minute(trained_store, deployed)
    impatient = Store(trained_store.workspace, lock_timeout=0.3)
    tick = worker.Tick(impatient, worker.new_worker_id())
    job = worker._guarded("tick", tick)
    with _hold_lock(trained_store, 2.0) as holder:
        job()  # StoreBusy after 0.3 s: logged, not raised, nothing half-written
        assert holder.poll() is None  # the lock was still held during that tick
        holder.wait(timeout=30)
    assert runs.list_runs(trained_store, deployed.name) == []
    assert slot_rows(trained_store) == []
    job()  # the lock is gone: the same slot is decided once and its run executed
    [run] = runs.list_runs(trained_store, deployed.name)
    assert (run.trigger, run.status) == ("schedule", "succeeded")
    assert [r["outcome"] for r in slot_rows(trained_store)] == ["queued"]


def test_old_slots_are_pruned_but_each_deployments_latest_stays(
    trained_store: Store, deployed: Deployment
) -> None:
    scheduler.set_schedule(trained_store, deployed.name, "@hourly", actor="tester")
    slot = first_slot(trained_store, deployed.name)
    for hours in range(3):
        scheduler.enqueue_due(trained_store, slot + timedelta(hours=hours, seconds=1))
        trained_store.execute("UPDATE runs SET status = 'cancelled' WHERE status = 'queued'")
    assert len(slot_rows(trained_store)) == 3
    later = slot + timedelta(days=40)
    assert scheduler.prune_slots(trained_store, now=later) == 2
    [kept] = slot_rows(trained_store)
    assert kept["slot_at"] == slot + timedelta(hours=2)
    # The pruned slots are not decided again: the next decision is a later slot only.
    decided = scheduler.enqueue_due(trained_store, slot + timedelta(hours=2, minutes=30))
    assert decided == []
    assert scheduler.prune_slots(trained_store, now=later) == 0
