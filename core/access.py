"""Who may do what: instance roles, project roles, and the check every change makes.

An actor is the username a front end acts for (the logged-in user in the app, `--user` in the
CLI, an API key's owner), or a system actor (`system:scheduler`, ...), which the processes use
for their own work and which no login can produce: usernames never contain ':'.

Every state-changing function of core calls `require` inside its own transaction, with the
project of what it changes and the action's name from ACTIONS; the front ends ask `can` only to
hide or disable what would be refused. Reads are filtered with `visible_projects`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from core.errors import Forbidden
from core.store import Store, Tx

INSTANCE_ROLES = ("admin", "member")
PROJECT_ROLES = ("viewer", "editor", "owner")  # each includes what the ones before it may do
ROLE_WORDS = {"viewer": "a viewer", "editor": "an editor", "owner": "an owner"}

# Every checked action, the project role it needs and how a message names it.
ACTIONS: dict[str, tuple[str, str]] = {
    "read": ("viewer", "read this project"),
    "download": ("viewer", "download results"),
    "add-dataset": ("editor", "add a dataset"),
    "train": ("editor", "train models"),
    "import-model": ("editor", "import a model"),
    "deploy-staging": ("editor", "deploy to staging"),
    "edit-pipeline": ("editor", "change a pipeline"),
    "run": ("editor", "run a pipeline"),
    "schedule": ("editor", "change a schedule"),
    "validate": ("editor", "validate a deployment"),
    "add-labels": ("editor", "add true labels"),
    "report": ("editor", "change report settings"),
    "drift-thresholds": ("editor", "change drift thresholds"),
    "redeliver": ("editor", "deliver results again"),
    "test-connection": ("editor", "test a database connection"),
    "deploy-production": ("owner", "deploy to production"),
    "promote": ("owner", "promote to production"),
    "override-gate": ("owner", "override the promotion gate"),
    "gate-thresholds": ("owner", "change the promotion gate"),
    "rollback": ("owner", "change the current version"),
    "swap": ("owner", "swap the challenger in"),
    "delete": ("owner", "delete a deployment"),
    "purge": ("owner", "purge a run's results"),
    "set-access": ("owner", "change who may call a deployment"),
    "add-connection": ("owner", "add or change a database connection"),
    "remove-connection": ("owner", "remove a database connection"),
    "manage-collaborators": ("owner", "manage collaborators"),
}

SYSTEM_PREFIX = "system:"
SCHEDULER = "system:scheduler"
DEMO = "system:demo"
BOOTSTRAP = "system:bootstrap"


def is_system(actor: str) -> bool:
    """True for the processes' own actors, which act on every project."""
    return actor.startswith(SYSTEM_PREFIX)


@dataclass(frozen=True)
class Principal:
    """The acting user as a check sees it."""

    id: str
    username: str
    role: str  # admin | member
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _principal(tx: Tx, actor: str) -> Principal | None:
    row = tx.execute(
        "SELECT id, username, role, disabled FROM users WHERE username = ?", [actor]
    ).first()
    return Principal(**row) if row else None


def _active(tx: Tx, actor: str, doing: str) -> Principal | None:
    """The actor's account, refusing unknown and disabled ones; None for system actors."""
    if is_system(actor):
        return None
    who = _principal(tx, actor)
    if who is None or who.disabled:
        state = "is disabled" if who else "does not exist"
        raise Forbidden(
            f"To {doing} you must be logged in as an active user; '{actor}' {state}.",
            "Log in with an active account, or ask an admin to enable yours.",
        )
    return who


def _project_name(tx: Tx, project_id: str) -> str:
    name = tx.execute("SELECT name FROM projects WHERE id = ?", [project_id]).scalar()
    return str(name) if name is not None else project_id


def project_role(tx: Tx, actor: str, project_id: str | None) -> str | None:
    """The actor's role in the project: admins and system actors act as owners everywhere;
    None when the actor is not a collaborator (or unknown, or disabled)."""
    if is_system(actor):
        return "owner"
    who = _principal(tx, actor)
    if who is None or who.disabled:
        return None
    if who.is_admin:
        return "owner"
    if project_id is None:
        return None
    role = tx.execute(
        "SELECT role FROM collaborators WHERE project_id = ? AND user_id = ?",
        [project_id, who.id],
    ).scalar()
    return str(role) if role is not None else None


def allows(role: str | None, action: str) -> bool:
    """Whether a project role may do the action (None: not a collaborator)."""
    needed = ACTIONS[action][0]
    return role is not None and PROJECT_ROLES.index(role) >= PROJECT_ROLES.index(needed)


def require(tx: Tx, actor: str, project_id: str | None, action: str) -> None:
    """Raise Forbidden unless the actor may do the action in the project; the message names the
    role needed and the role the actor has. A project of None (a run whose deployment was
    deleted before runs kept their project) is for instance admins only."""
    needed, doing = ACTIONS[action]
    who = _active(tx, actor, doing)
    if who is None or who.is_admin:
        return
    if project_id is None:
        require_admin(tx, actor, doing)
        return
    role = project_role(tx, actor, project_id)
    if allows(role, action):
        return
    project = _project_name(tx, project_id)
    has = f"you are {ROLE_WORDS[role]}" if role else "you are not a collaborator"
    raise Forbidden(
        f"To {doing} you need the {needed} role in project {project}; {has}.",
        f"Ask an owner of {project} or an admin to give you the {needed} role.",
    )


def require_admin(tx: Tx, actor: str, doing: str) -> None:
    """Raise Forbidden unless the actor is an instance admin (or a system actor)."""
    who = _active(tx, actor, doing)
    if who is not None and not who.is_admin:
        raise Forbidden(
            f"To {doing} you need to be an instance admin; {actor} is a member.",
            "Ask an admin of this ModelDeck to do it.",
        )


def require_user(tx: Tx, actor: str, doing: str) -> None:
    """Raise Forbidden unless the actor is an active user (or a system actor)."""
    _active(tx, actor, doing)


def visible_projects(tx: Tx, actor: str) -> frozenset[str] | None:
    """The ids of the projects the actor may read; None means every project (admins and
    system actors). Unknown and disabled users see nothing."""
    if is_system(actor):
        return None
    who = _principal(tx, actor)
    if who is None or who.disabled:
        return frozenset()
    if who.is_admin:
        return None
    rows = tx.execute("SELECT project_id FROM collaborators WHERE user_id = ?", [who.id])
    return frozenset(r["project_id"] for r in rows)


def visible_sql(column: str = "project_id") -> str:
    """The SQL condition keeping rows of the projects a user may read; it takes the two
    parameters `sql_filter` gives (twice the same value)."""
    return f"(?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], {column}))"


def sql_filter(tx: Tx, visible_to: str | None) -> list[str] | None:
    """`visible_projects` as the parameter of `visible_sql`: None (no filter) when
    `visible_to` is None or sees every project."""
    if visible_to is None:
        return None
    visible = visible_projects(tx, visible_to)
    return None if visible is None else sorted(visible)


def can(store: Store, actor: str, project_id: str | None, action: str) -> bool:
    """Whether `require` would let the actor do the action: for front ends that hide or
    disable a control. The check in core is what protects."""
    return store.read(lambda tx: _permitted(tx, actor, project_id, action))


def _permitted(tx: Tx, actor: str, project_id: str | None, action: str) -> bool:
    try:
        require(tx, actor, project_id, action)
    except Forbidden:
        return False
    return True


def roles(store: Store, actor: str) -> dict[str, str]:
    """The actor's role in every project it may read, by project id (one read, for pages that
    decide many controls at once)."""
    return store.read(lambda tx: roles_in(tx, actor))


def roles_in(tx: Tx, actor: str) -> dict[str, str]:
    """`roles` inside the caller's transaction (a session and its roles in one read)."""
    visible = visible_projects(tx, actor)
    if visible is None:
        return {r["id"]: "owner" for r in tx.execute("SELECT id FROM projects")}
    rows = tx.execute(
        "SELECT c.project_id, c.role FROM collaborators c JOIN users u ON u.id = c.user_id"
        " WHERE u.username = ? AND NOT u.disabled",
        [actor],
    )
    return {r["project_id"]: r["role"] for r in rows}


def keep_visible(project_ids: Collection[str] | None, project_id: str | None) -> bool:
    """Whether a row of `project_id` passes a `visible_projects` filter."""
    return project_ids is None or (project_id is not None and project_id in project_ids)
