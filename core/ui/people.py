"""The People page's panels: projects and their collaborators (any user may create a project;
owners and admins manage one), and the instance's accounts (admins only).

Writes run in widget callbacks through `ui.act`, so the page renders the changed state at
once; a generated password is kept in session state and shown once, by the next render.
"""

from __future__ import annotations

import streamlit as st

from core import access, projects, users
from core.entities import Project, User
from core.store import Store
from core.ui import act, actor, guarded

SHOWN_ONCE = "_people_password"


def _show_password_once() -> None:
    shown = st.session_state.pop(SHOWN_ONCE, None)
    if shown:
        who, password = shown
        st.warning(
            f"The password of **{who}** is shown once: copy it now and hand it over safely.",
            icon="🔑",
        )
        st.code(password, language=None)


# ---------------------------------------------------------------------------- projects
def projects_panel(store: Store) -> None:
    """Your projects with your role, a form to create one, and a project's collaborators."""
    me = actor()
    mine = projects.list_projects(store, visible_to=me)
    roles = access.roles(store, me)
    st.subheader("Projects")
    st.dataframe(
        [
            {"project": p.name, "your role": roles.get(p.id, "none"), "about": p.description}
            for p in mine
        ],
        hide_index=True,
    )

    def create() -> str:
        name = str(st.session_state.get("new_project_name", "")).strip()
        about = str(st.session_state.get("new_project_about", ""))
        made = projects.create_project(store, name, description=about, actor=actor())
        return f"Created project {made.name}; you are its owner."

    with st.expander("Create a project"), st.form("new_project", clear_on_submit=True):
        st.text_input("Name", key="new_project_name")
        st.text_input("Description", key="new_project_about")
        st.form_submit_button("Create project", on_click=act, args=(create,))
    if mine:
        chosen = st.selectbox("Collaborators of", [p.name for p in mine], key="people_project")
        project = next(p for p in mine if p.name == chosen)
        collaborators_panel(store, project, roles.get(project.id))


def collaborators_panel(store: Store, project: Project, role: str | None) -> None:
    """A project's collaborators; add, change and remove for its owners and admins."""
    me = actor()
    with guarded():
        found = projects.list_collaborators(store, project.name, actor=me)
        st.dataframe(
            [
                {
                    "user": c.username,
                    "name": c.display_name,
                    "role": c.role,
                    "added by": c.added_by,
                    "added (UTC)": c.added_at,
                }
                for c in found
            ],
            hide_index=True,
        )
    if not access.can(store, me, project.id, "manage-collaborators"):
        has = f"you are {access.ROLE_WORDS[role]}" if role else "you are not a collaborator"
        st.caption(f"Owners of project {project.name} can manage its collaborators; {has}.")
        return
    names = [u.username for u in users.list_users(store) if not u.disabled]
    key = f"collab_{project.id}"

    def add() -> str:
        who = st.session_state[f"{key}_user"]
        new_role = st.session_state[f"{key}_role"]
        projects.set_collaborator(store, project.name, who, new_role, actor=actor())
        return f"{who} is now {access.ROLE_WORDS[new_role]} of {project.name}."

    def remove() -> str:
        who = st.session_state[f"{key}_user"]
        projects.remove_collaborator(store, project.name, who, actor=actor())
        return f"{who} is no longer a collaborator of {project.name}."

    cols = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    cols[0].selectbox("User", names, key=f"{key}_user")
    cols[1].selectbox("Role", list(reversed(access.PROJECT_ROLES)), key=f"{key}_role")
    cols[2].button("Add or change role", key=f"{key}_set", on_click=act, args=(add,))
    cols[3].button("Remove from project", key=f"{key}_rm", on_click=act, args=(remove,))


# ---------------------------------------------------------------------------- users
def users_panel(store: Store) -> None:
    """Every account, adding one (with a generated password) and changing one (admins)."""
    st.subheader("Users")
    _show_password_once()
    everyone = users.list_users(store)
    st.dataframe(
        [
            {
                "user": u.username,
                "name": u.display_name,
                "e-mail": u.email or "",
                "role": u.role,
                "disabled": u.disabled,
                "last login (UTC)": u.last_login_at,
            }
            for u in everyone
        ],
        hide_index=True,
    )
    _add_user_form(store)
    if everyone:
        _user_actions(store, everyone)


def _add_user_form(store: Store) -> None:
    def add() -> str:
        state = st.session_state
        password = users.generate_password()
        made = users.create_user(
            store,
            str(state.get("new_user_name", "")),
            password=password,
            display_name=str(state.get("new_user_display", "")),
            email=str(state.get("new_user_email", "")) or None,
            role=str(state.get("new_user_role", "member")),
            actor=actor(),
        )
        st.session_state[SHOWN_ONCE] = (made.username, password)
        return f"Added {made.username} ({made.role})."

    with st.expander("Add a user"), st.form("new_user", clear_on_submit=True):
        st.text_input("Username", key="new_user_name")
        st.text_input("Display name", key="new_user_display")
        st.text_input("E-mail (for single sign-on; optional)", key="new_user_email")
        st.radio("Instance role", access.INSTANCE_ROLES[::-1], key="new_user_role", horizontal=True)
        st.form_submit_button("Add user", on_click=act, args=(add,))


def _user_actions(store: Store, everyone: list[User]) -> None:
    name = st.selectbox("Change user", [u.username for u in everyone], key="people_user")
    user = next(u for u in everyone if u.username == name)

    def toggle() -> str:
        done = users.set_disabled(store, user.username, not user.disabled, actor=actor())
        return f"{done.username} is {'disabled' if done.disabled else 'enabled'}."

    def reset() -> str:
        password = users.generate_password()
        ended = users.set_password(store, user.username, password, actor=actor())
        st.session_state[SHOWN_ONCE] = (user.username, password)
        return f"Reset the password of {user.username}; {ended} session(s) ended."

    def promote() -> str:
        role = "member" if user.is_admin else "admin"
        done = users.set_role(store, user.username, role, actor=actor())
        return f"{done.username} is now an instance {done.role}."

    cols = st.columns(3)
    cols[0].button(
        "Enable" if user.disabled else "Disable", key="user_toggle", on_click=act, args=(toggle,)
    )
    own = user.username == actor()
    cols[1].button(
        "Reset password",
        key="user_reset",
        on_click=act,
        args=(reset,),
        disabled=own,
        help="Change your own password on the Account page." if own else None,
    )
    cols[2].button(
        "Make member" if user.is_admin else "Make admin",
        key="user_role",
        on_click=act,
        args=(promote,),
    )
