"""Accounts, argon2id passwords, login sessions and throttled logins (issue 16), and the
migration of a workspace made before there were users."""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from core import access, audit, datasets, last_seen, projects, users
from core.errors import Conflict, Forbidden, InvalidInput, TooManyAttempts, Unauthorized
from core.store import Store, Tx, utcnow
from core.workspace import Workspace

PASSWORD = "correct horse battery"


@pytest.fixture
def people(store: Store) -> Store:
    """`store` (with the admin tester) plus ana, a member with a password."""
    users.create_user(store, "Lia", password=PASSWORD, display_name="Lia Lima", actor="tester")
    return store


def test_a_password_is_stored_as_argon2id_at_owasps_minimum(people: Store) -> None:
    stored = people.query("SELECT password_hash FROM users WHERE username = 'lia'").scalar()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored
    started = time.perf_counter()
    users.hash_password(PASSWORD)
    assert time.perf_counter() - started < 2  # OWASP's minimum, not the 0.5 s library default


def test_login_starts_a_session_that_survives_and_ends_at_logout(people: Store) -> None:
    done = users.login(people, "LIA ", PASSWORD, client="10.0.0.5")  # names are case-folded
    assert done.user.username == "lia" and done.user.label == "Lia Lima (lia)"
    assert users.resolve_session(people, done.token) == users.get_user(people, "lia")
    assert users.resolve_session(people, done.token) is not None  # a reload, a new tab
    stored = people.query("SELECT id FROM sessions").scalar()
    assert stored != done.token and len(stored) == 64  # only the token's SHA-256 is kept
    assert users.end_session(people, done.token) == "lia"
    assert users.resolve_session(people, done.token) is None
    actions = [e.action for e in audit.list_entries(people, subject="user lia")]
    assert actions == ["logout", "login", "user-add"]


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(people: Store) -> None:
    answers = []
    for name, password in (("lia", "wrong password!"), ("nobody", PASSWORD)):
        with pytest.raises(Unauthorized) as failed:
            users.login(people, name, password, client="c")
        answers.append((failed.value.message, failed.value.hint, failed.value.status))
    assert answers[0] == answers[1] == (users.LOGIN_FAILED, users.LOGIN_FAILED_HINT, 401)
    assert "lia" not in users.LOGIN_FAILED and "nobody" not in users.LOGIN_FAILED


def _median_seconds(store: Store, name: str, tries: int = 5) -> float:
    times = []
    for i in range(tries):
        started = time.perf_counter()
        with pytest.raises(Unauthorized):
            users.login(store, name, f"wrong password {i}", client=f"client-{name}-{i}")
        times.append(time.perf_counter() - started)
        store.execute("DELETE FROM login_failures")
    return statistics.median(times)


def test_an_unknown_user_costs_a_hash_like_a_known_one(people: Store) -> None:
    """The same order of time, so timing does not tell whether a user exists."""
    known, unknown = _median_seconds(people, "lia"), _median_seconds(people, "nobody")
    hash_time = _median_hash_seconds()
    assert unknown > 0.5 * hash_time and known > 0.5 * hash_time
    assert 0.33 < unknown / known < 3


def _median_hash_seconds() -> float:
    hasher, times = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1), []
    digest = hasher.hash("x")
    for _ in range(5):
        started = time.perf_counter()
        with pytest.raises(VerificationError):
            hasher.verify(digest, "y")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_failed_logins_back_off_per_user_and_per_client(
    people: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the login's clock stands still unless the test moves it: a busy box (slow hashes) must
    # not let a 1 s block run out between two calls
    now = [utcnow()]
    monkeypatch.setattr(users, "utcnow", lambda: now[0])
    for i in range(users.FREE_FAILURES):
        with pytest.raises(Unauthorized):
            users.login(people, "lia", f"wrong {i} password", client="10.0.0.9")
    with pytest.raises(TooManyAttempts) as slowed:  # the right password waits too
        users.login(people, "lia", PASSWORD, client="10.0.0.9")
    assert 0 < slowed.value.retry_after <= 1 and slowed.value.status == 429
    assert "Too many failed logins. Try again in 1 s." == slowed.value.message
    with pytest.raises(TooManyAttempts):  # another client, same user: still slowed
        users.login(people, "lia", PASSWORD, client="10.0.0.10")
    with pytest.raises(TooManyAttempts):  # same client, an unknown user: slowed the same way
        users.login(people, "nobody", PASSWORD, client="10.0.0.9")
    now[0] += timedelta(seconds=1.05)
    with pytest.raises(Unauthorized):  # the sixth failure doubles the wait
        users.login(people, "lia", "still wrong!!", client="10.0.0.11")
    with pytest.raises(TooManyAttempts) as doubled:
        users.login(people, "lia", PASSWORD, client="10.0.0.12")
    assert 1 < doubled.value.retry_after <= 2
    people.execute("UPDATE login_failures SET blocked_until = NULL")
    assert users.login(people, "lia", PASSWORD, client="10.0.0.9").user.username == "lia"
    forgiven = people.query("SELECT key FROM login_failures ORDER BY key").dicts()
    assert [r["key"] for r in forgiven] == ["client:10.0.0.11"]  # the user's and this client's
    actions = [e.action for e in audit.list_entries(people, subject="user lia")]
    assert actions.count("login-failed") == 6 and actions.count("login-throttled") == 3


def test_a_disabled_user_cannot_log_in_and_loses_its_sessions(people: Store) -> None:
    first = users.login(people, "lia", PASSWORD)
    users.set_disabled(people, "lia", True, actor="tester")
    assert users.resolve_session(people, first.token) is None
    with pytest.raises(Forbidden, match="This account is disabled"):
        users.login(people, "lia", PASSWORD)
    with pytest.raises(Unauthorized, match="Wrong username or password"):  # no hint it exists
        users.login(people, "lia", "not the password")
    users.set_disabled(people, "lia", False, actor="tester")
    assert users.resolve_session(people, first.token) is None  # ended for good
    assert users.login(people, "lia", PASSWORD).user.username == "lia"


def test_a_session_expires_when_idle_and_at_its_absolute_limit(people: Store) -> None:
    idle, absolute = users.login(people, "lia", PASSWORD), users.login(people, "lia", PASSWORD)
    digest = people.query("SELECT id FROM sessions ORDER BY created_at LIMIT 1").scalar()
    people.execute(
        "UPDATE sessions SET last_seen_at = ? WHERE id = ?",
        [utcnow() - users.idle_limit() - timedelta(seconds=1), digest],
    )
    people.execute(
        "UPDATE sessions SET expires_at = ? WHERE id <> ?",
        [utcnow() - timedelta(seconds=1), digest],
    )
    assert users.resolve_session(people, idle.token) is None
    assert users.resolve_session(people, absolute.token) is None
    assert users.resolve_session(people, "made-up-token") is None
    assert users.resolve_session(people, None) is None


def test_a_password_change_ends_the_other_sessions(people: Store) -> None:
    here, elsewhere = users.login(people, "lia", PASSWORD), users.login(people, "lia", PASSWORD)
    with pytest.raises(Unauthorized, match="current password is wrong"):
        users.set_password(
            people, "lia", "a new long password", actor="lia", current_password="guess guess"
        )
    ended = users.set_password(
        people,
        "lia",
        "a new long password",
        actor="lia",
        current_password=PASSWORD,
        keep_session=here.token,
    )
    assert ended == 1
    assert users.resolve_session(people, here.token) is not None
    assert users.resolve_session(people, elsewhere.token) is None
    with pytest.raises(Unauthorized):
        users.login(people, "lia", PASSWORD)
    assert users.login(people, "lia", "a new long password").user.username == "lia"
    # an admin's reset ends every session of that user
    assert users.set_password(people, "lia", "reset by the admin", actor="tester") == 2
    with pytest.raises(Forbidden, match="need to be an instance admin"):
        users.set_password(people, "tester", "taking it over!", actor="lia")


def test_a_login_rehashes_a_password_hashed_with_other_parameters(people: Store) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    people.execute("UPDATE users SET password_hash = ? WHERE username = 'lia'", [old])
    users.login(people, "lia", PASSWORD)
    stored = people.query("SELECT password_hash FROM users WHERE username = 'lia'").scalar()
    assert stored != old and stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.mark.parametrize(
    ("password", "problem"),
    [("short", "at least 10 characters"), ("x" * 300, "at most 256"), ("lia", "at least")],
)
def test_weak_passwords_are_refused(store: Store, password: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        users.create_user(store, "lia", password=password, actor="tester")
    assert users.find_user(store, "lia") is None


def test_usernames_are_normalised_and_checked(store: Store) -> None:
    decomposed = "zoe\u0308"  # 'zoë' typed as e + combining diaeresis
    made = users.create_user(store, decomposed, password=None, display_name="Zoë", actor="tester")
    assert made.username == "zoë" and users.get_user(store, "ZOË").id == made.id
    with pytest.raises(Conflict, match="already exists"):
        users.create_user(store, "Zoë", password=None, actor="tester")
    for bad in ("", "a b", "system:x", "a/b"):
        with pytest.raises(InvalidInput, match="cannot be a username"):
            users.create_user(store, bad, password=None, actor="tester")


def test_only_admins_manage_users_and_the_last_admin_stays(people: Store) -> None:
    with pytest.raises(Forbidden, match="To add users you need to be an instance admin"):
        users.create_user(people, "bea", password=None, actor="lia")
    with pytest.raises(Forbidden):
        users.set_disabled(people, "tester", True, actor="lia")
    for name in ("ana", "bo", "bob"):  # leave tester as the only active admin
        if users.get_user(people, name).is_admin:
            users.set_disabled(people, name, True, actor="tester")
    with pytest.raises(Conflict, match="only active admin"):
        users.set_disabled(people, "tester", True, actor="tester")
    with pytest.raises(Conflict, match="only active admin"):
        users.set_role(people, "tester", "member", actor="tester")
    assert users.set_role(people, "lia", "admin", actor="tester").is_admin


def test_the_first_admin_is_created_once_and_owns_the_existing_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "fresh")
    monkeypatch.delenv("MODELDECK_ADMIN_PASSWORD", raising=False)
    first = users.ensure_admin(store)
    assert first is not None and first.password and first.user.is_admin
    assert users.login(store, "admin", first.password).user.username == "admin"
    assert users.ensure_admin(store) is None  # only once
    roles = {
        c.project: c.role for c in projects.list_collaborators(store, "Default", actor="admin")
    }
    assert roles == {"Default": "owner"}


def test_the_first_admin_password_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "fresh")
    monkeypatch.setenv("MODELDECK_ADMIN_PASSWORD", "from the environment")
    first = users.ensure_admin(store)
    assert first is not None and first.password is None  # nothing to print
    assert users.login(store, "admin", "from the environment").user.is_admin


def test_a_workspace_from_before_users_keeps_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations up to 0008 with a dataset, an experiment's project and a run; then 0009 and
    the first admin: every project gets the admin as owner, nothing is lost."""
    monkeypatch.setenv("MODELDECK_ADMIN_PASSWORD", "from the environment")
    store = Store(Workspace.resolve(tmp_path / "old").ensure())  # not migrated yet
    store.migrate(upto=8)
    store.write(_old_rows)
    assert store.migrate() == [9, 10]
    first = users.ensure_admin(store)
    assert first is not None
    dataset = datasets.list_datasets(store)[0]
    assert dataset.project_id == "prj_old"  # the project of the experiment that used it
    assert store.query("SELECT project_id FROM runs").scalar() == "prj_old"
    for name in ("Default", "Old"):
        owners = projects.list_collaborators(store, name, actor="admin")
        assert [(c.username, c.role) for c in owners] == [("admin", "owner")]
    assert [p.name for p in projects.list_projects(store, visible_to="admin")] == ["Default", "Old"]
    assert store.query("SELECT count(*) FROM audit_log WHERE subject = ''").scalar() == 1
    assert store.query("SELECT count(*) FROM deployments").scalar() == 1


def _old_rows(tx: Tx) -> None:
    now = utcnow()
    run = tx.execute
    run("INSERT INTO projects VALUES ('prj_old', 'Old', '', ?)", [now])
    run(
        "INSERT INTO datasets VALUES ('ds_old', 'old', 'upload', 'old.csv', 'x.parquet', 'h',"
        " 1, '[]', ?)",
        [now],
    )
    run(
        "INSERT INTO experiments VALUES ('exp_old', 'prj_old', 'old', 'ds_old', 'y', 'binary',"
        " '[]', NULL, ?)",
        [now],
    )
    run(
        "INSERT INTO deployments VALUES ('dep_old', 'old-staging', 'prj_old', 'exp_old',"
        " 'staging', 'project', '{}', '{}', '{}', NULL, ?, ?)",
        [now, now],
    )
    run(
        "INSERT INTO runs (id, deployment_id, deployment_name, version_id, trigger, status,"
        " pipeline, queued_by, queued_at) VALUES ('run_old', 'dep_old', 'old-staging', 'dv',"
        " 'manual', 'succeeded', '{}', 'someone', ?)",
        [now],
    )
    run(
        "INSERT INTO audit_log VALUES ('aud_old', ?, 'someone', 'deploy', 'dep_old',"
        " 'old-staging', NULL, NULL, '')",
        [now],
    )


def test_system_actors_need_no_account() -> None:
    assert access.is_system(access.SCHEDULER) and not access.is_system("scheduler")


def test_hashing_waits_for_one_of_a_few_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of logins queues for HASH_SLOTS hashes at once; one that waits too long is told
    to try again instead of piling onto the machine."""
    monkeypatch.setattr(users, "HASH_WAIT_SECONDS", 0.2)
    taken = [users._slots.acquire(timeout=1) for _ in range(users.HASH_SLOTS)]
    try:
        assert all(taken)
        with pytest.raises(TooManyAttempts, match="Too many logins at once"):
            users.hash_password(PASSWORD)
    finally:
        for _ in taken:
            users._slots.release()
    assert users.hash_password(PASSWORD).startswith("$argon2id$")


def test_a_member_called_admin_does_not_stop_the_first_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(tmp_path / "fresh")
    monkeypatch.delenv("MODELDECK_ADMIN_PASSWORD", raising=False)
    users.create_user(store, "admin", password=None, actor=access.BOOTSTRAP)  # a member
    first = users.ensure_admin(store)
    assert first is not None and first.user.username == "admin-2" and first.user.is_admin


def test_members_see_who_the_users_are_but_not_their_e_mail(store: Store) -> None:
    users.create_user(store, "lia", password=None, email="Lia@Example.org", actor="tester")
    users.create_user(store, "max", password=None, actor="tester")
    as_member = {u.username: u.email for u in users.list_users(store, seen_by="max")}
    as_admin = {u.username: u.email for u in users.list_users(store, seen_by="tester")}
    assert as_member["lia"] is None and as_admin["lia"] == "lia@example.org"
    assert set(as_member) == set(as_admin)


def _age_store_files(store: Store, seconds: float = 60) -> None:
    """Date the store's file and WAL back, as if the last write was `seconds` ago (so
    Store.version gives a token instead of None for a write within RACY_SECONDS)."""
    then = time.time() - seconds
    db = store.workspace.db_path
    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            os.utime(path, (then, then))


def test_the_idle_timers_refresh_leaves_the_stores_version_alone(people: Store) -> None:
    """The UI keeps reads until Store.version moves: a session's once-a-minute last-seen
    time must not move it (it lives in a file of its own), while a real write does."""
    done = users.login(people, "lia", PASSWORD)
    stale = utcnow() - timedelta(seconds=users.TOUCH_SECONDS + 5)
    people.execute("UPDATE sessions SET last_seen_at = ?", [stale])
    _age_store_files(people)
    kept = people.version()
    assert kept is not None
    seen = users.session_view(people, done.token)
    assert seen is not None and utcnow() - seen.last_seen_at < timedelta(seconds=5)
    assert people.version() == kept
    # The refreshed time is what the next read of the session sees, even when the store's
    # own last-seen time is past the idle limit.
    people.execute(
        "UPDATE sessions SET last_seen_at = ?", [utcnow() - users.idle_limit() - timedelta(1)]
    )
    again = users.session_view(people, done.token)
    assert again is not None and again.last_seen_at == seen.last_seen_at
    assert users.resolve_session(people, done.token) is not None
    _age_store_files(people)
    kept = people.version()
    users.set_role(people, "lia", "admin", actor="tester")  # a real write
    assert people.version() != kept


def test_a_session_idle_since_its_last_refresh_expires(
    people: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = users.login(people, "lia", PASSWORD)
    stale = utcnow() - timedelta(seconds=users.TOUCH_SECONDS + 5)
    people.execute("UPDATE sessions SET last_seen_at = ?", [stale])
    assert users.resolve_session(people, done.token) is not None  # refreshed now
    monkeypatch.setenv("MODELDECK_SESSION_IDLE_MINUTES", str(1 / 60))
    time.sleep(1.1)
    assert users.resolve_session(people, done.token) is None


def test_old_last_seen_files_are_removed_at_the_next_login(
    people: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = users.login(people, "lia", PASSWORD)
    people.execute("UPDATE sessions SET last_seen_at = ?", [utcnow() - timedelta(minutes=5)])
    assert users.resolve_session(people, done.token) is not None
    folder = people.workspace.private_dir / last_seen.LAST_SEEN_DIR
    assert len(list(folder.iterdir())) == 1
    monkeypatch.setenv("MODELDECK_SESSION_IDLE_MINUTES", str(1 / 60))
    time.sleep(1.1)
    users.login(people, "lia", PASSWORD)
    assert list(folder.iterdir()) == []
