"""Schedules: cron expressions on deployments, and the due slots the worker turns into runs.

A schedule lives in the deployment's `schedule` JSON (so promotion copies it): `cron`,
`timezone`, `paused`, `since` (naive UTC ISO time it was set or resumed: no slot before it is
due), and the policies `catch_up` (one | skip), `overlap` (skip | wait) and `max_attempts`
(retries of a run whose worker died; 1 = off). Cron parsing, explanations and next times are
cronsim's (DESIGN.md, traps); only the @daily-style aliases are ours.

Each slot the worker decides is one row of `schedule_slots`, keyed (deployment, slot): the run
and its slot row are inserted in one transaction and the key refuses a second decision, so a
slot yields exactly one run however many workers compute it. After a commit that queued a run
or changed a schedule, the queue marker (core/runs.py) is touched so idle workers look now.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from core import access, audit, runs
from core.deployments import get_deployment
from core.errors import InvalidInput, Step
from core.store import Store, Tx, utcnow

log = logging.getLogger("modeldeck.scheduler")

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
PRESETS = {"hourly": "0 * * * *", "daily": "0 6 * * *", "weekly": "0 6 * * 1"}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
CATCH_UP = ("one", "skip")
OVERLAP = ("skip", "wait")
LATE_AFTER = timedelta(minutes=5)  # a slot decided later than this was missed, not just slow
MAX_COUNTED = 1000  # missed slots counted for the message, no more (every-minute crons)
KEEP_SLOTS = timedelta(days=30)  # decided slots kept for the Schedule tab; older ones pruned


@dataclass(frozen=True)
class Schedule:
    """A deployment's schedule as stored in its `schedule` JSON."""

    cron: str
    timezone: str = "UTC"
    paused: bool = False
    since: str = ""
    catch_up: str = "one"
    overlap: str = "skip"
    max_attempts: int = 1

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Schedule | None:
        """The schedule of a deployment's JSON, or None when it has no cron expression."""
        if not value.get("cron"):
            return None
        known = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        return cls(**known)

    @property
    def is_paused(self) -> bool:
        return bool(self.paused)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SlotDecision:
    """What the worker decided for one deployment's due slot."""

    deployment_name: str
    slot_at: datetime  # naive UTC
    outcome: str  # queued | skipped
    run_id: str | None
    note: str


# ---------------------------------------------------------------------------- cron and zones
def normalize_cron(expression: str) -> str:
    """The five-field form of `expression` (aliases expanded); raises InvalidInput naming the
    field that is wrong."""
    text = " ".join((expression or "").split())
    text = ALIASES.get(text.lower(), text)
    parts = text.split()
    example = "e.g. '0 6 * * 1' (06:00 every Monday), or @hourly, @daily, @weekly, @monthly"
    if len(parts) != 5:
        raise InvalidInput(
            f"Invalid cron expression '{expression}': it has {len(parts)} fields, a cron "
            "expression has 5 (minute hour day-of-month month day-of-week).",
            f"Write {example}.",
        )
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise InvalidInput(
            _field_message(expression, parts, str(exc)),
            f"Allowed: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or "
            f"JAN-DEC, day-of-week 0-7 or SUN-SAT; {example}.",
        ) from exc
    return text


def _field_message(expression: str, parts: list[str], error: str) -> str:
    for index, name in enumerate(FIELDS):  # cronsim says "Bad <field>"
        if error.lower() == f"bad {name}":
            return (
                f"Invalid cron expression '{expression}': the {name} field "
                f"('{parts[index]}') is wrong."
            )
    return f"Invalid cron expression '{expression}': {error}."


def get_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; raises InvalidInput when no such zone exists."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"Unknown time zone '{name}'.",
            "Use an IANA name such as UTC, Europe/Berlin or America/New_York.",
        ) from exc


def time_zones() -> list[str]:
    """Every IANA zone name, UTC first."""
    return ["UTC", *sorted(z for z in available_timezones() if z != "UTC")]


def describe(cron: str) -> str:
    """A human-readable preview of a cron expression, e.g. "At 06:00 on Monday"."""
    return CronSim(normalize_cron(cron), datetime(2000, 1, 1)).explain()


def next_times(
    cron: str, tz: str = "UTC", n: int = 5, after: datetime | None = None
) -> list[datetime]:
    """The next `n` times (aware, in `tz`) after `after` (naive UTC; default now)."""
    zone = get_zone(tz)
    start = _aware_utc(after or utcnow()).astimezone(zone)
    found = CronSim(normalize_cron(cron), start)
    return [next(found) for _ in range(n)]


def _aware_utc(naive: datetime) -> datetime:
    return naive.replace(tzinfo=ZoneInfo("UTC"))


def _naive_utc(aware: datetime) -> datetime:
    return aware.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def latest_slot(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest slot at or before `now` (naive UTC in and out), or None."""
    zone = get_zone(schedule.timezone)
    start = _aware_utc(now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)
    try:  # reverse iteration ticks one second back first: slots <= now
        return _naive_utc(next(CronSim(schedule.cron, start, reverse=True)))
    except StopIteration:
        return None


def count_slots(schedule: Schedule, after: datetime, before: datetime) -> int:
    """Slots strictly between two naive UTC times, counted up to MAX_COUNTED."""
    found = CronSim(schedule.cron, _aware_utc(after).astimezone(get_zone(schedule.timezone)))
    count = 0
    for slot in found:
        if _naive_utc(slot) >= before or count >= MAX_COUNTED:
            break
        count += 1
    return count


# ---------------------------------------------------------------------------- settings
def get_schedule(store: Store, name: str) -> Schedule | None:
    """A deployment's schedule, or None when it has none; raises NotFound."""
    return Schedule.from_dict(get_deployment(store, name).schedule)


def _save(
    store: Store,
    name: str,
    action: str,
    change: Callable[[Schedule | None], Schedule],
    actor: str,
) -> Schedule:
    """Apply `change(old_json) -> new Schedule` and audit it, in one transaction."""
    deployment = get_deployment(store, name)

    def write(tx: Tx) -> Schedule:
        access.require(tx, actor, deployment.project_id, "schedule")
        row = tx.execute("SELECT schedule FROM deployments WHERE id = ?", [deployment.id]).first()
        before = Schedule.from_dict(_loads(row["schedule"] if row else "{}"))
        after = change(before)
        tx.execute(
            "UPDATE deployments SET schedule = ?, updated_at = ? WHERE id = ?",
            [after.to_dict(), utcnow(), deployment.id],
        )
        audit.record(
            tx,
            actor=actor,
            action=action,
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            before=before.to_dict() if before else None,
            after=after.to_dict(),
        )
        return after

    saved = store.write(write)
    runs.touch_queue_marker(store.workspace)  # idle workers re-read the schedules now
    return saved


def _loads(text: Any) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) else dict(text or {})


def _check_policy(catch_up: str | None, overlap: str | None, max_attempts: int | None) -> None:
    if catch_up is not None and catch_up not in CATCH_UP:
        raise InvalidInput(
            f"Unknown catch-up policy '{catch_up}'.",
            "Use 'one' (one run for missed slots) or 'skip'.",
        )
    if overlap is not None and overlap not in OVERLAP:
        raise InvalidInput(
            f"Unknown overlap policy '{overlap}'.",
            "Use 'skip' (drop a slot while a run is in flight) or 'wait'.",
        )
    if max_attempts is not None and not 1 <= max_attempts <= 10:
        raise InvalidInput(
            f"max attempts must be between 1 and 10, not {max_attempts}.",
            "1 means no retry; 3 retries a run twice if its worker dies.",
        )


def set_schedule(
    store: Store,
    name: str,
    cron: str,
    tz: str = "UTC",
    *,
    catch_up: str | None = None,
    overlap: str | None = None,
    max_attempts: int | None = None,
    actor: str,
) -> Schedule:
    """Set (or replace) a deployment's cron schedule, active from now; audited, one transaction.

    Raises InvalidInput for a bad expression (naming the field), zone or policy; policies left
    None keep their current value. No slot before now becomes due.
    """
    expression = normalize_cron(cron)
    get_zone(tz)
    _check_policy(catch_up, overlap, max_attempts)

    def change(before: Schedule | None) -> Schedule:
        base = before or Schedule(cron=expression)
        return replace(
            base,
            cron=expression,
            timezone=tz,
            paused=False,
            since=utcnow().isoformat(),
            catch_up=catch_up or base.catch_up,
            overlap=overlap or base.overlap,
            max_attempts=max_attempts or base.max_attempts,
        )

    return _save(store, name, "schedule", change, actor)


def set_policy(
    store: Store,
    name: str,
    *,
    catch_up: str | None = None,
    overlap: str | None = None,
    max_attempts: int | None = None,
    actor: str,
) -> Schedule:
    """Change a scheduled deployment's catch-up, overlap or retry policy; audited."""
    _check_policy(catch_up, overlap, max_attempts)

    def change(before: Schedule | None) -> Schedule:
        base = _require(name, before)
        return replace(
            base,
            catch_up=catch_up or base.catch_up,
            overlap=overlap or base.overlap,
            max_attempts=max_attempts or base.max_attempts,
        )

    return _save(store, name, "schedule", change, actor)


def _require(name: str, schedule: Schedule | None) -> Schedule:
    if schedule is None:
        raise InvalidInput(
            f"Deployment '{name}' has no schedule.",
            "Set one first.",
            step=Step("set-schedule", name),
        )
    return schedule


def pause(store: Store, name: str, *, actor: str) -> Schedule:
    """Stop the schedule producing runs (queued runs still execute); audited, idempotent."""
    return _save(
        store,
        name,
        "schedule-pause",
        lambda before: replace(_require(name, before), paused=True),
        actor,
    )


def resume(store: Store, name: str, *, actor: str) -> Schedule:
    """Resume a paused schedule from now (the paused slots yield no catch-up run); audited."""

    def change(before: Schedule | None) -> Schedule:
        schedule = _require(name, before)
        if not schedule.is_paused:
            return schedule
        return replace(schedule, paused=False, since=utcnow().isoformat())

    return _save(store, name, "schedule-resume", change, actor)


def show(store: Store, name: str, now: datetime | None = None) -> dict[str, Any]:
    """A schedule as JSON: expression, timezone, paused, description, next five times, policies.

    Raises NotFound for an unknown deployment, InvalidInput when it has no schedule.
    """
    schedule = _require(name, get_schedule(store, name))
    upcoming = [] if schedule.is_paused else next_times(schedule.cron, schedule.timezone, after=now)
    return {
        "deployment": name,
        "expression": schedule.cron,
        "timezone": schedule.timezone,
        "paused": schedule.is_paused,
        "description": describe(schedule.cron),
        "next": [t.isoformat() for t in upcoming],
        "catch_up": schedule.catch_up,
        "overlap": schedule.overlap,
        "max_attempts": schedule.max_attempts,
    }


def list_slots(store: Store, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest decided slots of a deployment (queued or skipped, with the reason)."""
    return store.query(
        "SELECT slot_at, outcome, run_id, note, decided_at FROM schedule_slots"
        " WHERE deployment_name = ? ORDER BY slot_at DESC LIMIT ?",
        [name, limit],
    ).dicts()


def prune_slots(store: Store, keep: timedelta = KEEP_SLOTS, now: datetime | None = None) -> int:
    """Delete decided slots older than `keep`, except each deployment's latest; the count.

    Safe for exactly-once: a slot at or before a deployment's latest decided slot is never
    decided again (`_active` takes max(slot_at) as the reference), so only that row must stay.
    An every-minute schedule decides 43,200 slots in 30 days; without pruning the table (and
    the worker's reads of it) would grow forever.
    """
    cutoff = (now or utcnow()) - keep
    return len(
        store.write(
            lambda tx: tx.execute(
                "DELETE FROM schedule_slots s WHERE slot_at < ? AND slot_at < (SELECT max(slot_at)"
                " FROM schedule_slots l WHERE l.deployment_id = s.deployment_id) RETURNING slot_at",
                [cutoff],
            )
        )
    )


# ---------------------------------------------------------------------------- due slots
def next_due(store: Store, now: datetime | None = None) -> datetime | None:
    """The earliest time (naive UTC) any active schedule has a slot to decide; one read.

    The worker sleeps until then (re-reading now and then for changed schedules); a slot
    already due gives a time <= now.
    """
    now = now or utcnow()
    due: list[datetime] = []
    for schedule, _, reference in store.read(_active):
        if schedule.is_paused:
            continue
        slot = latest_slot(schedule, now)
        if slot is not None and slot > reference:
            due.append(slot)
            continue
        upcoming = next_times(schedule.cron, schedule.timezone, n=1, after=now)
        due.append(_naive_utc(upcoming[0]))
    return min(due, default=None)


def _active(tx: Tx) -> list[tuple[Schedule, dict[str, Any], datetime]]:
    """Scheduled deployments with a version: (schedule, row, last decided slot or since)."""
    rows = tx.execute(
        "SELECT d.id, d.name, d.schedule, d.created_at, max(s.slot_at) AS last"
        " FROM deployments d LEFT JOIN schedule_slots s ON s.deployment_id = d.id"
        " WHERE d.current_version_id IS NOT NULL"
        " GROUP BY d.id, d.name, d.schedule, d.created_at ORDER BY d.name"
    )
    out = []
    for row in rows:
        try:
            schedule = Schedule.from_dict(_loads(row["schedule"]))
        except (TypeError, ValueError):
            log.warning("deployment %s has an unreadable schedule; ignored", row["name"])
            continue
        if schedule is None:
            continue
        since = datetime.fromisoformat(schedule.since) if schedule.since else row["created_at"]
        out.append((schedule, row, max(since, row["last"] or since)))
    return out


def enqueue_due(
    store: Store, now: datetime | None = None, actor: str = access.SCHEDULER
) -> list[SlotDecision]:
    """Decide every due slot: queue one run (trigger "schedule") or skip it, saying why.

    For each active schedule only the latest slot <= now that is newer than the last decided
    one counts, so missed slots give one catch-up run (policy `one`) or none (`skip`), never
    a burst. A deployment with a run queued or running skips the slot (`overlap` skip) or
    leaves it due until that run ends (`wait`). One transaction: exactly once across workers.
    """
    now = now or utcnow()
    decisions = store.write(lambda tx: _decide_all(tx, now, actor))
    if any(d.run_id for d in decisions):
        runs.touch_queue_marker(store.workspace)  # after the commit: other workers wake too
    return decisions


def _decide_all(tx: Tx, now: datetime, actor: str) -> list[SlotDecision]:
    decisions = []
    busy = {
        r["deployment_id"]: r
        for r in tx.execute(
            "SELECT deployment_id, arg_min(id, queued_at) AS run_id,"
            " arg_min(status, queued_at) AS status FROM runs"
            " WHERE status IN ('queued', 'running') GROUP BY deployment_id"
        )
    }
    for schedule, row, reference in _active(tx):
        if schedule.is_paused:
            continue
        try:
            slot = latest_slot(schedule, now)
        except InvalidInput as exc:  # a zone removed from tzdata: say so, keep the others
            log.warning("schedule of %s: %s", row["name"], exc.message)
            continue
        if slot is None or slot <= reference:
            continue
        decision = _decide(tx, schedule, row, slot, reference, now, busy.get(row["id"]), actor)
        if decision is not None:
            decisions.append(decision)
    return decisions


def _decide(
    tx: Tx,
    schedule: Schedule,
    row: dict[str, Any],
    slot: datetime,
    reference: datetime,
    now: datetime,
    in_flight: dict[str, Any] | None,
    actor: str,
) -> SlotDecision | None:
    missed = count_slots(schedule, reference, slot)
    late = now - slot > LATE_AFTER
    stamp = f"{slot:%Y-%m-%d %H:%M} UTC"
    if in_flight is not None:
        if schedule.overlap == "wait":
            return None  # stays due; decided once the run in flight ends
        note = (
            f"slot {stamp} skipped: run {in_flight['run_id']} of this deployment was "
            f"still {in_flight['status']} (overlap policy: skip)"
        )
        return _record(tx, row, slot, None, note, "schedule-skip", actor)
    if late and schedule.catch_up == "skip":
        note = (
            f"slot {stamp} skipped: missed while no worker was running"
            + (f", with {missed} earlier slot(s)" if missed else "")
            + " (catch-up policy: skip)"
        )
        return _record(tx, row, slot, None, note, "schedule-skip", actor)
    run_id = runs.insert_run(tx, row["id"], "schedule", None, actor)
    if missed or late:
        verb = "catch-up run" if schedule.catch_up == "one" else "run"
        note = (
            f"{verb} for slot {stamp}"
            + (
                f"; {missed}{'+' if missed >= MAX_COUNTED else ''} earlier slot(s) missed "
                "and not run"
                if missed
                else ""
            )
            + (f"; queued {int((now - slot).total_seconds())} s after its slot" if late else "")
        )
        return _record(tx, row, slot, run_id, note, "schedule-catch-up", actor)
    return _record(tx, row, slot, run_id, f"run for slot {stamp}", None, actor)


def _record(
    tx: Tx,
    row: dict[str, Any],
    slot: datetime,
    run_id: str | None,
    note: str,
    action: str | None,
    actor: str,
) -> SlotDecision | None:
    """Insert the slot row; the key refuses a slot another worker already decided."""
    inserted = tx.execute(
        "INSERT INTO schedule_slots VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        " RETURNING slot_at",
        [row["id"], slot, row["name"], "queued" if run_id else "skipped", run_id, note, utcnow()],
    )
    if not inserted:
        if run_id is not None:
            runs.discard_queued(tx, run_id)
        return None
    if action is not None:
        audit.record(
            tx,
            actor=actor,
            action=action,
            deployment_id=row["id"],
            deployment_name=row["name"],
            after={"slot_at": slot.isoformat(), "run_id": run_id},
            reason=note,
        )
    log.info("%s: %s", row["name"], note)
    return SlotDecision(row["name"], slot, "queued" if run_id else "skipped", run_id, note)
