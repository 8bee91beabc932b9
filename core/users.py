"""Local accounts, passwords, login sessions and the slowing down of failed logins.

Passwords are hashed with argon2id at OWASP's minimum (19 MiB, 2 iterations, parallelism 1:
about 40 ms here) and re-hashed at login when the parameters change. Hashing holds one of a few
slots, so a burst of logins queues instead of eating the machine. No store connection is open
while a hash is computed.

A session is a random token the browser keeps in an HttpOnly cookie; the store keeps only its
SHA-256, with an idle and an absolute limit. Disabling a user or changing a password ends their
sessions, so a session is revocable on the server.

A login that fails says the same thing whether or not the user exists, and takes the same time
(an unknown name is verified against a dummy hash). After FREE_FAILURES failures for one name or
one client address, each further try waits twice as long as the last (1 s, 2 s, ... 15 min).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from core import access, audit, last_seen
from core.entities import User
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from core.store import Store, Tx, new_id, utcnow

HASHER = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
HASH_SLOTS = 2  # hashes computed at once in this process; more wait for a slot
HASH_WAIT_SECONDS = 10.0
_slots = threading.BoundedSemaphore(HASH_SLOTS)

MIN_PASSWORD = 10
MAX_PASSWORD = 256
USERNAME = re.compile(r"^[\w@][\w.@+-]{0,63}$")

FREE_FAILURES = 5
MAX_BLOCK_SECONDS = 15 * 60
FAILURES_FORGOTTEN_AFTER = timedelta(hours=1)
TOUCH_SECONDS = 60  # a session's last-seen time is refreshed at most once a minute

ANONYMOUS = "anonymous"  # the actor of audit entries about failed logins
LOGIN_FAILED = "Wrong username or password."
LOGIN_FAILED_HINT = "Check both and try again; an admin can reset a forgotten password."


def idle_limit() -> timedelta:
    """How long a session lives without use ($MODELDECK_SESSION_IDLE_MINUTES, default 120)."""
    return timedelta(minutes=float(os.environ.get("MODELDECK_SESSION_IDLE_MINUTES", "120")))


def absolute_limit() -> timedelta:
    """How long a session lives at most ($MODELDECK_SESSION_HOURS, default 12)."""
    return timedelta(hours=float(os.environ.get("MODELDECK_SESSION_HOURS", "12")))


# ---------------------------------------------------------------------------- passwords
@contextmanager
def _hash_slot() -> Iterator[None]:
    if not _slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise TooManyAttempts(
            "Too many logins at once.", "Try again in a few seconds.", retry_after=5
        )
    try:
        yield
    finally:
        _slots.release()


def hash_password(password: str) -> str:
    """The argon2id PHC string of a password (checked against the rules first)."""
    check_password(password)
    with _hash_slot():
        return HASHER.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    with _hash_slot():
        try:
            return HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@cache
def _dummy_hash() -> str:
    return HASHER.hash(secrets.token_urlsafe(16))


def check_password(password: str, username: str = "") -> None:
    """Raise InvalidInput for a password that is too short, too long or the username."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            f"A password needs at least {MIN_PASSWORD} characters; this one has {len(password)}.",
            "Use a longer password, for example a few unrelated words.",
        )
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(
            f"A password can have at most {MAX_PASSWORD} characters.", "Use a shorter one."
        )
    if username and password.casefold() == username.casefold():
        raise InvalidInput("A password cannot be the username.", "Choose another password.")


def generate_password() -> str:
    """A random password for a new account (shown once)."""
    return secrets.token_urlsafe(15)


# ---------------------------------------------------------------------------- accounts
def normalize_username(name: str) -> str:
    """The canonical form of a username: NFKC, case-folded, trimmed (so 'Zoë' typed decomposed
    or in capitals is the same account)."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def check_username(name: str) -> str:
    """The normalized username, or InvalidInput saying what is allowed."""
    canonical = normalize_username(name)
    if not USERNAME.match(canonical):
        raise InvalidInput(
            f"'{name}' cannot be a username.",
            "Use 1-64 letters, digits and . _ - @ +, starting with a letter, digit or @.",
        )
    return canonical


def _user(row: Mapping[str, Any]) -> User:
    return User(**{k: row[k] for k in User.__dataclass_fields__})


def _find(tx: Tx, username: str) -> dict[str, Any] | None:
    return tx.execute(
        "SELECT * FROM users WHERE username = ?", [normalize_username(username)]
    ).first()


def _must_find(tx: Tx, username: str) -> dict[str, Any]:
    row = _find(tx, username)
    if row is None:
        raise NotFound("user", username, "Choose an existing user, or add one.")
    return row


def create_user(
    store: Store,
    username: str,
    *,
    password: str | None,
    display_name: str = "",
    email: str | None = None,
    role: str = "member",
    actor: str,
) -> User:
    """Add an account (instance admins only). `password=None` makes an account that can log in
    only through the identity provider (by its e-mail)."""
    name = check_username(username)
    if role not in access.INSTANCE_ROLES:
        raise InvalidInput(f"Unknown instance role '{role}'.", "Use admin or member.")
    if password is not None:
        check_password(password, name)
    digest = hash_password(password) if password is not None else None
    mail = email.strip().casefold() if email and email.strip() else None
    shown = unicodedata.normalize("NFC", display_name).strip() or name

    def write(tx: Tx) -> User:
        access.require_admin(tx, actor, "add users")
        if _find(tx, name) is not None:
            raise Conflict(f"A user '{name}' already exists.", "Choose another username.")
        if mail and tx.execute("SELECT 1 FROM users WHERE email = ?", [mail]).first():
            raise Conflict(f"Another user has the e-mail {mail}.", "Use another e-mail.")
        now = utcnow()
        row = {
            "id": new_id("usr"),
            "username": name,
            "display_name": shown,
            "email": mail,
            "password_hash": digest,
            "role": role,
            "disabled": False,
            "created_at": now,
            "last_login_at": None,
            "password_changed_at": now if digest else None,
        }
        tx.execute(
            "INSERT INTO users VALUES ($id, $username, $display_name, $email, $password_hash,"
            " $role, $disabled, $created_at, $last_login_at, $password_changed_at)",
            row,
        )
        _audit(tx, actor, "user-add", name, after={"role": role})
        return _user(row)

    return store.write(write)


def get_user(store: Store, username: str) -> User:
    return _user(store.read(lambda tx: _must_find(tx, username)))


def find_user(store: Store, username: str) -> User | None:
    row = store.read(lambda tx: _find(tx, username))
    return _user(row) if row else None


def user_by_email(store: Store, email: str) -> User | None:
    """The active account with this e-mail (an identity provider's login), else None."""
    row = store.query(
        "SELECT * FROM users WHERE email = ? AND NOT disabled", [email.strip().casefold()]
    ).first()
    return _user(row) if row else None


def list_users(store: Store, *, seen_by: str | None = None) -> list[User]:
    """Every account by username (no hash leaves this module). Seen by a member (`seen_by`),
    the e-mail addresses are left out: members see who can be a collaborator, not how to
    reach them; admins and system actors see everything."""

    def read(tx: Tx) -> list[User]:
        found = [_user(r) for r in tx.execute("SELECT * FROM users ORDER BY username")]
        if seen_by is None or access.is_system(seen_by):
            return found
        viewer = next((u for u in found if u.username == seen_by), None)
        if viewer is not None and viewer.is_admin and not viewer.disabled:
            return found
        return [replace(u, email=None) for u in found]

    return store.read(read)


def set_password(
    store: Store,
    username: str,
    new_password: str,
    *,
    actor: str,
    current_password: str | None = None,
    keep_session: str | None = None,
) -> int:
    """Change a password: your own with your current one, anyone's as an admin. Ends every
    other session of that user (all of them when an admin resets it); returns how many."""
    name = normalize_username(username)
    check_password(new_password, name)
    row = store.read(lambda tx: _must_find(tx, name))
    own = name == actor
    if own and not access.is_system(actor):
        stored = row["password_hash"]
        if current_password is None or not (
            isinstance(stored, str) and _verify(stored, current_password)
        ):
            raise Unauthorized(
                "The current password is wrong.", "Type your current password again."
            )
    digest = hash_password(new_password)

    def write(tx: Tx) -> int:
        if not own:
            access.require_admin(tx, actor, "reset another user's password")
        else:
            access.require_user(tx, actor, "change your password")
        tx.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            [digest, utcnow(), row["id"]],
        )
        ended = end_sessions(tx, str(row["id"]), "password changed", keep=keep_session)
        _audit(tx, actor, "password-change", name, after={"sessions ended": ended})
        return ended

    return store.write(write)


def set_disabled(store: Store, username: str, disabled: bool, *, actor: str) -> User:
    """Disable (ending every session) or enable an account; admins only, never the last
    active admin."""

    def write(tx: Tx) -> User:
        access.require_admin(tx, actor, "disable or enable users")
        row = _must_find(tx, username)
        if disabled and row["role"] == "admin" and _active_admins(tx) <= 1 and not row["disabled"]:
            raise Conflict(
                f"{row['username']} is the only active admin.",
                "Make another user an admin first.",
            )
        tx.execute("UPDATE users SET disabled = ? WHERE id = ?", [disabled, row["id"]])
        ended = end_sessions(tx, str(row["id"]), "user disabled") if disabled else 0
        after: dict[str, object] = {"disabled": disabled}
        if ended:
            after["sessions ended"] = ended
        _audit(
            tx,
            actor,
            "user-disable" if disabled else "user-enable",
            str(row["username"]),
            after=after,
        )
        return _user({**row, "disabled": disabled})

    return store.write(write)


def set_role(store: Store, username: str, role: str, *, actor: str) -> User:
    """Make a user an admin or a member; admins only, never demoting the last active admin."""
    if role not in access.INSTANCE_ROLES:
        raise InvalidInput(f"Unknown instance role '{role}'.", "Use admin or member.")

    def write(tx: Tx) -> User:
        access.require_admin(tx, actor, "change instance roles")
        row = _must_find(tx, username)
        if row["role"] == "admin" and role != "admin" and _active_admins(tx) <= 1:
            raise Conflict(
                f"{row['username']} is the only active admin.",
                "Make another user an admin first.",
            )
        tx.execute("UPDATE users SET role = ? WHERE id = ?", [role, row["id"]])
        _audit(tx, actor, "user-role", str(row["username"]), {"role": row["role"]}, {"role": role})
        return _user({**row, "role": role})

    return store.write(write)


def _active_admins(tx: Tx) -> int:
    return int(
        tx.execute("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled").scalar()
    )


def _audit(
    tx: Tx,
    actor: str,
    action: str,
    username: str,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
    reason: str = "",
) -> None:
    audit.record_about(
        tx,
        f"user {username}",
        actor=actor,
        action=action,
        before=before,
        after=after,
        reason=reason,
    )


# ---------------------------------------------------------------------------- first admin
@dataclass(frozen=True)
class FirstAdmin:
    """The admin created at the first start; `password` is set when it was generated (and
    must be shown once), None when it came from $MODELDECK_ADMIN_PASSWORD."""

    user: User
    password: str | None


def ensure_admin(store: Store, username: str = "admin") -> FirstAdmin | None:
    """Create the first admin when the workspace has none, with $MODELDECK_ADMIN_PASSWORD or a
    generated password, and make it owner of every project that has no owner (an existing
    workspace keeps all it had). None when an admin already exists."""
    if _has_admin(store):
        return None
    given = os.environ.get("MODELDECK_ADMIN_PASSWORD")
    password = given or generate_password()
    taken = {u.username for u in list_users(store)}
    name = next(
        n for n in (username, *(f"{username}-{i}" for i in range(2, 100))) if n not in taken
    )
    try:
        user = create_user(
            store,
            name,
            password=password,
            display_name="Administrator",
            role="admin",
            actor=access.BOOTSTRAP,
        )
    except Conflict:
        if _has_admin(store):  # another process created it first
            return None
        raise
    store.write(lambda tx: _own_orphans(tx, user))
    return FirstAdmin(user, None if given else password)


def _has_admin(store: Store) -> bool:
    return store.query("SELECT 1 FROM users WHERE role = 'admin'").first() is not None


def _own_orphans(tx: Tx, user: User) -> None:
    orphans = tx.execute(
        "SELECT id FROM projects p WHERE NOT EXISTS (SELECT 1 FROM collaborators c"
        " WHERE c.project_id = p.id AND c.role = 'owner')"
    )
    for row in orphans:
        tx.execute(
            "INSERT INTO collaborators VALUES (?, ?, 'owner', ?, ?)",
            [row["id"], user.id, access.BOOTSTRAP, utcnow()],
        )


# ---------------------------------------------------------------------------- sessions
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(tx: Tx, user_id: str, client: str = "") -> str:
    """A new session of the user inside the caller's transaction; returns its token."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    tx.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
        [_digest(token), user_id, now, now, now + absolute_limit(), client[:200]],
    )
    return token


@dataclass(frozen=True)
class SessionView:
    """A session as read from the store: its user, the user's project roles (access.roles)
    and the times that decide whether it is still live."""

    user: User
    roles: dict[str, str]
    last_seen_at: datetime
    expires_at: datetime

    def is_live(self, now: datetime) -> bool:
        """Within both limits at `now` (the idle limit as configured now)."""
        return now < self.expires_at and now - self.last_seen_at < idle_limit()


def _session_row(tx: Tx, token: str) -> dict[str, Any] | None:
    """The token's session joined with its user's row, or None."""
    return tx.execute(
        "SELECT s.id AS session_id, s.last_seen_at, s.expires_at, s.ended_at, u.*"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?",
        [_digest(token)],
    ).first()


def session_view(store: Store, token: str | None) -> SessionView | None:
    """The token's session with its user and roles, in one read; None for an unknown or ended
    session or a disabled user (the caller checks `is_live`). Refreshes the idle timer at most
    once a minute (core/last_seen.py: a file, so Store.version stays put), so a front end that
    keeps the view re-reads it within TOUCH_SECONDS."""
    if not token:
        return None

    def read(tx: Tx) -> SessionView | None:
        row = _session_row(tx, token)
        if row is None or row["ended_at"] is not None or row["disabled"]:
            return None
        roles = access.roles_in(tx, str(row["username"]))
        return SessionView(_user(row), roles, row["last_seen_at"], row["expires_at"])

    view = store.read(read)
    if view is None:
        return None
    session_id = _digest(token)
    refreshed = last_seen.read(store.workspace, session_id)
    if refreshed is not None and refreshed > view.last_seen_at:
        view = replace(view, last_seen_at=refreshed)
    now = utcnow()
    if not view.is_live(now):
        return view
    if (now - view.last_seen_at).total_seconds() >= TOUCH_SECONDS:
        # A file, not the store: a write there would drop every read the UI keeps.
        if not last_seen.write(store.workspace, session_id, now):
            store.execute("UPDATE sessions SET last_seen_at = ? WHERE id = ?", [now, session_id])
        view = replace(view, last_seen_at=now)
    return view


def resolve_session(store: Store, token: str | None) -> User | None:
    """The user of a live session, or None (unknown, ended, idle or past its absolute limit,
    or the user is disabled). Refreshes the idle timer at most once a minute."""
    view = session_view(store, token)
    return view.user if view is not None and view.is_live(utcnow()) else None


def end_session(store: Store, token: str | None) -> str | None:
    """Log out: end the token's session; returns the username it belonged to, if any."""
    if not token:
        return None

    def write(tx: Tx) -> str | None:
        row = _session_row(tx, token)
        if row is None or row["ended_at"] is not None:
            return None
        tx.execute(
            "UPDATE sessions SET ended_at = ?, end_reason = 'logout' WHERE id = ?",
            [utcnow(), _digest(token)],
        )
        _audit(tx, row["username"], "logout", row["username"])
        return str(row["username"])

    ended = store.write(write)
    last_seen.forget(store.workspace, _digest(token))
    return ended


def end_sessions(tx: Tx, user_id: str, reason: str, keep: str | None = None) -> int:
    """End every live session of a user (but the one of token `keep`); returns how many."""
    kept = _digest(keep) if keep else ""
    ended = tx.execute(
        "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE user_id = ?"
        " AND ended_at IS NULL AND id <> ? RETURNING id",
        [utcnow(), reason, user_id, kept],
    )
    return len(ended)


# ---------------------------------------------------------------------------- logins
@dataclass(frozen=True)
class Login:
    user: User
    token: str


def login(store: Store, username: str, password: str, *, client: str = "") -> Login:
    """Check a password and start a session. Raises Unauthorized with one message for a wrong
    password and an unknown user, TooManyAttempts while the name or the client is slowed
    down, Forbidden for a disabled account (only once its password was right)."""
    name = normalize_username(username)[:64]
    keys = [f"user:{name}", f"client:{client[:200]}"]
    now = utcnow()
    wait = store.read(lambda tx: _blocked_for(tx, keys, now))
    if wait > 0:
        store.write(lambda tx: _audit(tx, ANONYMOUS, "login-throttled", name, reason=client))
        raise TooManyAttempts(
            f"Too many failed logins. Try again in {_seconds(wait)}.",
            "Wait, then check the username and password; an admin can reset a password.",
            retry_after=wait,
        )
    row = store.read(lambda tx: _find(tx, name)) if name else None
    stored = row["password_hash"] if row else None
    good = _verify(stored if isinstance(stored, str) else _dummy_hash(), password)
    if not (good and row):
        store.write(lambda tx: _fail(tx, keys, name, client))
        raise Unauthorized(LOGIN_FAILED, LOGIN_FAILED_HINT)
    if row["disabled"]:
        store.write(lambda tx: _audit(tx, name, "login-refused", name, reason="disabled"))
        raise Forbidden("This account is disabled.", "Ask an admin to enable it.")
    assert isinstance(stored, str)
    fresh = hash_password(password) if HASHER.check_needs_rehash(stored) else None

    def write(tx: Tx) -> Login:
        tx.execute("DELETE FROM login_failures WHERE key IN (?, ?)", keys)
        tx.execute("UPDATE users SET last_login_at = ? WHERE id = ?", [utcnow(), row["id"]])
        if fresh:
            tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", [fresh, row["id"]])
        token = start_session(tx, str(row["id"]), client)
        _audit(tx, name, "login", name, reason=client)
        return Login(_user(row), token)

    last_seen.prune(store.workspace, idle_limit())
    return store.write(write)


def login_by_email(store: Store, email: str, *, client: str = "") -> Login:
    """Start a session for the account an identity provider vouched for (st.login)."""
    user = user_by_email(store, email)
    if user is None:
        raise Unauthorized(
            f"No active ModelDeck user has the e-mail {email}.",
            "Ask an admin to add a user with this e-mail.",
        )

    def write(tx: Tx) -> Login:
        tx.execute("UPDATE users SET last_login_at = ? WHERE id = ?", [utcnow(), user.id])
        token = start_session(tx, user.id, client)
        _audit(tx, user.username, "login", user.username, reason=f"oidc {client}".strip())
        return Login(user, token)

    return store.write(write)


def _blocked_for(tx: Tx, keys: list[str], now: datetime) -> float:
    rows = tx.execute(
        "SELECT blocked_until FROM login_failures WHERE key IN (?, ?)"
        " AND blocked_until IS NOT NULL",
        keys,
    )
    return max([float((r["blocked_until"] - now).total_seconds()) for r in rows] + [0.0])


def _fail(tx: Tx, keys: list[str], name: str, client: str) -> None:
    now = utcnow()
    for key in keys:
        row = tx.execute("SELECT * FROM login_failures WHERE key = ?", [key]).first()
        stale = row is None or now - row["last_failed_at"] > FAILURES_FORGOTTEN_AFTER
        failures = 1 if row is None or stale else int(row["failures"]) + 1
        over = failures - FREE_FAILURES  # the FREE_FAILURES-th failure waits 1 s, then 2 s...
        delay = min(2**over, MAX_BLOCK_SECONDS) if over >= 0 else 0
        blocked = now + timedelta(seconds=delay) if delay else None
        tx.execute(
            "INSERT OR REPLACE INTO login_failures VALUES (?, ?, ?, ?)",
            [key, failures, now, blocked],
        )
    _audit(tx, ANONYMOUS, "login-failed", name, reason=client)


def _seconds(wait: float) -> str:
    whole = max(1, int(wait + 0.999))
    return f"{whole} s" if whole < 120 else f"{whole // 60} min"
