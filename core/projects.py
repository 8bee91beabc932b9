"""Projects and their collaborators (owner, editor, viewer).

Every experiment, dataset, connection and deployment belongs to one project; the project's
collaborators and their roles decide who may read and change it (core/access.py). Creating a
project makes you its owner; a project always keeps at least one owner.
"""

from __future__ import annotations

from typing import Any

from core import access, audit
from core.entities import DEFAULT_PROJECT, Collaborator, Project
from core.errors import Conflict, InvalidInput, NotFound
from core.store import Store, Tx, new_id, utcnow
from core.users import normalize_username


def _audit(
    tx: Tx,
    actor: str,
    action: str,
    project: str,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    audit.record_about(
        tx, f"project {project}", actor=actor, action=action, before=before, after=after
    )


def _by_name(tx: Tx, name: str) -> Project | None:
    row = tx.execute("SELECT * FROM projects WHERE name = ?", [name]).first()
    return Project(**row) if row else None


def _by_name_or_id(tx: Tx, ident: str) -> Project:
    row = tx.execute("SELECT * FROM projects WHERE name = ? OR id = ?", [ident, ident]).first()
    if row is None:
        raise NotFound("project", ident, "Choose an existing project, or create it.")
    return Project(**row)


def _create(tx: Tx, name: str, description: str, actor: str) -> Project:
    clean = name.strip()
    if not clean:
        raise InvalidInput("A project name cannot be empty.", "Give the project a name.")
    access.require_user(tx, actor, "create a project")
    same = tx.execute("SELECT name FROM projects WHERE lower(name) = lower(?)", [clean]).scalar()
    if same is not None:
        raise Conflict(f"A project '{same}' already exists.", "Choose another name.")
    row: dict[str, Any] = {
        "id": new_id("prj"),
        "name": clean,
        "description": description,
        "created_at": utcnow(),
    }
    tx.execute("INSERT INTO projects VALUES ($id, $name, $description, $created_at)", row)
    if not access.is_system(actor):
        user_id = tx.execute("SELECT id FROM users WHERE username = ?", [actor]).scalar()
        tx.execute(
            "INSERT INTO collaborators VALUES (?, ?, 'owner', ?, ?)",
            [row["id"], user_id, actor, utcnow()],
        )
    _audit(tx, actor, "project-add", clean, after={"owner": actor})
    return Project(**row)


def create_project(store: Store, name: str, *, description: str = "", actor: str) -> Project:
    """A new project; any active user may create one and becomes its owner."""
    return store.write(lambda tx: _create(tx, name, description, actor))


def ensure_project(tx: Tx, name: str, *, actor: str, action: str) -> Project:
    """The project called `name` when the actor may do `action` in it, or a new one the actor
    owns when none has that name (inside the caller's transaction)."""
    found = _by_name(tx, name.strip())
    if found is None:
        return _create(tx, name, "", actor)
    access.require(tx, actor, found.id, action)
    return found


def check(store: Store, project: str, *, actor: str, action: str) -> None:
    """Fail fast, before long work, when the actor may not do `action` in the project of this
    name (creating a new project is allowed to every active user)."""

    def read(tx: Tx) -> None:
        found = _by_name(tx, project.strip())
        if found is None:
            access.require_user(tx, actor, "create a project")
        else:
            access.require(tx, actor, found.id, action)

    store.read(read)


def get_project(store: Store, name_or_id: str) -> Project:
    return store.read(lambda tx: _by_name_or_id(tx, name_or_id))


def list_projects(store: Store, *, visible_to: str | None = None) -> list[Project]:
    """Projects by name; with `visible_to`, only those that user may read (admins: all)."""

    def read(tx: Tx) -> list[Project]:
        rows = tx.execute("SELECT * FROM projects ORDER BY name")
        visible = access.visible_projects(tx, visible_to) if visible_to is not None else None
        return [Project(**r) for r in rows if access.keep_visible(visible, r["id"])]

    return store.read(read)


def default_project(store: Store) -> Project:
    """The project experiments go to unless another is chosen (migration 0001 creates it)."""
    return get_project(store, DEFAULT_PROJECT)


# ---------------------------------------------------------------------------- collaborators
_COLLABORATORS = """
SELECT c.project_id, p.name AS project, c.user_id, u.username, u.display_name, c.role,
       c.added_by, c.added_at
FROM collaborators c JOIN projects p ON p.id = c.project_id JOIN users u ON u.id = c.user_id
"""


def list_collaborators(store: Store, project: str, *, actor: str) -> list[Collaborator]:
    """A project's collaborators, owners first; anyone who may read the project may see them."""

    def read(tx: Tx) -> list[Collaborator]:
        found = _by_name_or_id(tx, project)
        access.require(tx, actor, found.id, "read")
        rows = tx.execute(
            _COLLABORATORS + " WHERE c.project_id = ?"
            " ORDER BY CASE c.role WHEN 'owner' THEN 0 WHEN 'editor' THEN 1 ELSE 2 END,"
            " u.username",
            [found.id],
        )
        return [Collaborator(**r) for r in rows]

    return store.read(read)


def set_collaborator(
    store: Store, project: str, username: str, role: str, *, actor: str
) -> Collaborator:
    """Add a user to a project with a role, or change their role (owners and admins)."""
    if role not in access.PROJECT_ROLES:
        raise InvalidInput(f"Unknown project role '{role}'.", "Use owner, editor or viewer.")

    def write(tx: Tx) -> Collaborator:
        found = _by_name_or_id(tx, project)
        access.require(tx, actor, found.id, "manage-collaborators")
        user = tx.execute(
            "SELECT id, username FROM users WHERE username = ?", [normalize_username(username)]
        ).first()
        if user is None:
            raise NotFound("user", username, "Choose an existing user, or ask an admin to add it.")
        before = tx.execute(
            "SELECT role FROM collaborators WHERE project_id = ? AND user_id = ?",
            [found.id, user["id"]],
        ).scalar()
        if before == "owner" and role != "owner":
            _keep_an_owner(tx, found, user["id"])
        tx.execute(
            "INSERT OR REPLACE INTO collaborators VALUES (?, ?, ?, ?, ?)",
            [found.id, user["id"], role, actor, utcnow()],
        )
        _audit(
            tx,
            actor,
            "collaborator-set",
            found.name,
            {"user": user["username"], "role": before} if before else None,
            {"user": user["username"], "role": role},
        )
        row = tx.execute(
            _COLLABORATORS + " WHERE c.project_id = ? AND c.user_id = ?", [found.id, user["id"]]
        ).first()
        assert row is not None
        return Collaborator(**row)

    return store.write(write)


def remove_collaborator(store: Store, project: str, username: str, *, actor: str) -> None:
    """Take a user out of a project (owners and admins); the last owner stays."""

    def write(tx: Tx) -> None:
        found = _by_name_or_id(tx, project)
        access.require(tx, actor, found.id, "manage-collaborators")
        row = tx.execute(
            "SELECT c.user_id, c.role, u.username FROM collaborators c"
            " JOIN users u ON u.id = c.user_id WHERE c.project_id = ? AND u.username = ?",
            [found.id, normalize_username(username)],
        ).first()
        if row is None:
            raise NotFound("collaborator", username, f"Choose a collaborator of {found.name}.")
        if row["role"] == "owner":
            _keep_an_owner(tx, found, row["user_id"])
        tx.execute(
            "DELETE FROM collaborators WHERE project_id = ? AND user_id = ?",
            [found.id, row["user_id"]],
        )
        _audit(
            tx,
            actor,
            "collaborator-remove",
            found.name,
            {"user": row["username"], "role": row["role"]},
            None,
        )

    store.write(write)


def _keep_an_owner(tx: Tx, project: Project, leaving_user_id: str) -> None:
    others = tx.execute(
        "SELECT count(*) FROM collaborators WHERE project_id = ? AND role = 'owner'"
        " AND user_id <> ?",
        [project.id, leaving_user_id],
    ).scalar()
    if not others:
        raise Conflict(
            f"Project {project.name} would have no owner.",
            "Make another collaborator an owner first.",
        )
