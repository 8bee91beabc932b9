"""Roles in the app: for an owner, an editor, a viewer, an outsider and a disabled user, which
controls of the deployment page (and the People page) are there, disabled or absent (AppTest).
The core check is what protects; these tests hold the UI to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core import access, datasets, deployments, projects, registry, ui, users
from core import store as store_module
from core.entities import DEFAULT_PROJECT
from core.store import Store
from tests.pages.conftest import APP, log_in, start_session

OpenPage = Callable[..., AppTest]
PROJECT = DEFAULT_PROJECT  # where trained_store trained churn (tests/conftest.py)
PEOPLE = ("olga", "ed", "vic", "otto", "dora")  # owner, editor, viewer, outsider, disabled
ROLES = {"olga": "owner", "ed": "editor", "vic": "viewer", "dora": "viewer"}

# section -> control label -> the role that may use it (access.ACTIONS); "absent" marks a
# control that is not rendered at all below that role (a form or an editor), else disabled.
CONTROLS: dict[str, dict[str, tuple[str, str]]] = {
    "general": {
        "Who may call it": ("owner", "disabled"),
        "Delete": ("owner", "disabled"),
        "Override reason (required while a check fails; kept in the audit log)": (
            "owner",
            "disabled",
        ),
    },
    "pipeline": {"Save pipeline": ("editor", "absent"), "Save connection": ("owner", "absent")},
    "versions": {"Make current": ("owner", "disabled")},
    "runs": {"Run now": ("editor", "disabled")},
    "schedule": {
        "Save schedule": ("editor", "disabled"),
        "Save report settings": ("editor", "disabled"),
    },
    "validation": {"Validate": ("editor", "absent"), "Save thresholds": ("owner", "disabled")},
    "challenger": {
        "I want to swap the models": ("owner", "disabled"),
        "Labels from": ("editor", "absent"),  # the ground-truth form
    },
}  # drift thresholds appear only after a succeeded run: not in this matrix


def project_id(store: Store) -> str:
    return projects.get_project(store, PROJECT).id


@pytest.fixture
def team(trained_store: Store) -> str:
    """Two versions of churn-staging (so one can be made current again), five people."""
    store = trained_store
    main, challenger = (m.id for m in registry.list_models(store))
    deployments.deploy(store, main, "staging", challenger_id=challenger, actor="tester")
    name = deployments.deploy(store, challenger, "staging", challenger_id=main, actor="tester").name
    for person in PEOPLE:
        users.create_user(
            store, person, password=None, display_name=person.title(), actor=access.BOOTSTRAP
        )
    for person, role in ROLES.items():
        projects.set_collaborator(store, PROJECT, person, role, actor="tester")
    return name


def widgets(at: AppTest) -> dict[str, Any]:
    """Every input widget by label (the last one wins for repeated labels)."""
    found: dict[str, Any] = {}
    for kind in ("button", "selectbox", "text_area", "text_input", "checkbox", "radio"):
        for w in getattr(at, kind):
            found[w.label] = w
    return found


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def section(at: AppTest, name: str) -> AppTest:
    at.query_params["section"] = name
    return at.run()


@pytest.mark.parametrize("person", ["olga", "ed", "vic"])
def test_deployment_controls_follow_the_project_role(
    trained_store: Store, team: str, person: str, open_page: OpenPage
) -> None:
    role = ROLES[person]
    at = open_page("pages/deployment.py", as_user=person, name=team)
    d = deployments.get_deployment(trained_store, team)
    at.session_state[f"delete_open_{d.id}"] = True  # Delete's form runs once it is open
    for name, controls in CONTROLS.items():
        section(at, name)
        assert not at.exception, (name, [e.value for e in at.exception])
        shown = widgets(at)
        for label, (needed, how) in controls.items():
            allowed = access.PROJECT_ROLES.index(role) >= access.PROJECT_ROLES.index(needed)
            if allowed:
                assert label in shown, (person, name, label)
                if label != "Delete":  # Delete waits for the typed name, for everyone
                    assert not shown[label].disabled, (person, name, label)
            elif how == "absent":
                assert label not in shown, (person, name, label)
            else:
                assert label in shown and shown[label].disabled, (person, name, label)
            if not allowed:
                doing = access.ACTIONS  # the caption names the role needed and the one held
                assert f"of project {PROJECT} can" in captions(at), (person, name, label)
                assert f"you are {access.ROLE_WORDS[role]}" in captions(at), (person, doing)
        if role == "owner":
            assert f"of project {PROJECT} can" not in captions(at), (name, captions(at))


def test_a_viewer_still_reads_and_downloads(
    trained_store: Store, team: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", as_user="vic", name=team, section="pipeline")
    assert not at.exception and not at.error
    assert at.json, "the stored pipeline is shown read-only"
    at = open_page("pages/deployments.py", as_user="vic")
    assert list(at.dataframe[0].value["deployment"]) == [team]


def test_an_outsider_sees_no_deployment_and_no_data(
    trained_store: Store, team: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployments.py", as_user="otto")
    assert not at.exception and "Nothing is deployed yet." in [i.value for i in at.info]
    at = open_page("pages/deployment.py", as_user="otto", name=team)
    assert not at.exception
    [warning] = [w.value for w in at.warning]
    assert f"You have no access to project {PROJECT}" in warning and team in warning
    assert not at.metric and not at.button, "nothing of the deployment is shown"
    model = registry.list_models(trained_store)[0]
    at = open_page("pages/model.py", as_user="otto", id=model.id)
    assert any(f"no access to project {PROJECT}" in w.value for w in at.warning)
    assert not at.button


def test_a_disabled_user_gets_the_login_page(trained_store: Store, team: str) -> None:
    at = log_in(AppTest.from_file(APP, default_timeout=120), "dora")
    at.switch_page("pages/deployment.py")
    at.query_params["name"] = team
    users.set_disabled(trained_store, "dora", True, actor="tester")
    at.run()
    assert [t.value for t in at.title] == ["Log in to ModelDeck"]
    assert "Your session has ended. Log in again." in [e.value for e in at.error]


def test_a_revoked_collaborator_loses_the_kept_session_at_the_next_click(
    trained_store: Store, team: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session and roles are kept between reruns while the store is unchanged; the
    removal is a write, so the next rerun reads them again."""
    monkeypatch.setattr(store_module, "RACY_SECONDS", 0)  # keep even right after a write
    at = log_in(AppTest.from_file(APP, default_timeout=120), "ed")
    at.switch_page("pages/deployment.py")
    at.query_params["name"] = team
    at.run()
    assert not at.exception and at.metric, "an editor reads the deployment"
    at.run()
    assert at.metric, "a rerun with nothing changed keeps the session and the roles"
    projects.remove_collaborator(trained_store, PROJECT, "ed", actor="tester")
    at.run()
    assert not at.exception and not at.metric
    assert any(f"no access to project {PROJECT}" in w.value for w in at.warning)


@pytest.mark.parametrize(("person", "may"), [("olga", True), ("ed", False), ("vic", False)])
def test_collaborators_are_managed_by_owners(
    trained_store: Store, team: str, person: str, may: bool, open_page: OpenPage
) -> None:
    at = open_page("pages/people.py", as_user=person)
    at.selectbox(key="people_project").set_value(PROJECT).run()
    assert not at.exception
    labels = {b.label for b in at.button}
    assert ("Add or change role" in labels) is may
    assert ("Add user" in labels) is False  # accounts are for instance admins
    if may:
        at.selectbox(key=f"collab_{project_id(trained_store)}_user").set_value("otto")
        at.selectbox(key=f"collab_{project_id(trained_store)}_role").set_value("viewer")
        next(b for b in at.button if b.label == "Add or change role").click().run()
        assert not at.error, [e.value for e in at.error]
        found = projects.list_collaborators(trained_store, PROJECT, actor="tester")
        assert ("otto", "viewer") in {(c.username, c.role) for c in found}
    else:
        assert f"Owners of project {PROJECT} can manage its collaborators" in captions(at)


def test_start_session_helper_makes_a_live_session(trained_store: Store, team: str) -> None:
    token = start_session("olga", trained_store)
    user = users.resolve_session(trained_store, token)
    assert user is not None and user.username == "olga"


def test_datasets_go_to_a_project_the_user_may_add_to(
    trained_store: Store, team: str, open_page: Callable[..., AppTest]
) -> None:
    """A viewer of Default cannot add to it: the only choice is a new project, and the
    Register buttons wait for its name; an editor adds to Default; a new project is the
    creator's."""
    at = open_page("pages/datasets.py", as_user="vic")
    assert at.selectbox(key="ds_project").options == [ui.NEW_PROJECT]
    assert at.button(key="ds_demo_go").disabled
    assert "Not offered: Default (you need the editor role there to add a dataset" in str(
        [c.value for c in at.caption]
    )
    at.text_input(key="ds_project_new").set_value("Vic's lab").run()
    at.button(key="ds_demo_go").click().run()
    assert not at.exception
    added = [
        d
        for d in datasets.list_datasets(trained_store, visible_to="vic")
        if d.name == "breast_cancer"
    ]
    assert [projects.get_project(trained_store, d.project_id).name for d in added] == ["Vic's lab"]
    owners = projects.list_collaborators(trained_store, "Vic's lab", actor="vic")
    assert [(c.username, c.role) for c in owners] == [("vic", "owner")]
    at = open_page("pages/datasets.py", as_user="ed")
    assert at.selectbox(key="ds_project").options == [PROJECT, ui.NEW_PROJECT]
    assert not at.button(key="ds_demo_go").disabled
