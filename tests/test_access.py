"""Roles enforced in core (issue 16): every state-changing action x {admin, owner, editor,
viewer, outsider, disabled user}, allowed or refused with Forbidden naming the role needed, and
a refusal changes nothing. Reads are filtered to the projects a user may read."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from core import (
    access,
    audit,
    challenger,
    connections,
    datasets,
    deployments,
    drift,
    execution,
    ground_truth,
    projects,
    promotion,
    registry,
    reports,
    results,
    runs,
    scheduler,
    users,
    validation,
)
from core.errors import Forbidden
from core.store import Store
from core.training import TrainingResult, TrainRequest, train
from tests.files import add_admins

WORKER = "matrix-worker"
PEOPLE = {  # username -> role in the Default project (None: not a collaborator)
    "olga": "owner",
    "ed": "editor",
    "vic": "viewer",
    "otto": None,
    "dis": "editor",  # disabled below
}
WHO = ("tester", "olga", "ed", "vic", "otto", "dis")  # tester is an instance admin
STAGING = "churn-staging"


def _frame(store: Store, name: str, frame: pd.DataFrame) -> str:
    path = store.workspace.home / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    frame.to_parquet(path, index=False)
    return f"incoming/{name}"


@pytest.fixture(scope="module")
def matrix_home(
    trained_home: tuple[Path, TrainingResult], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """trained_home plus the people, a staging deployment of two versions (gradient boosting
    with the linear challenger current), a finished run on 300 rows and a labelled file."""
    path = tmp_path_factory.mktemp("matrix") / "home"
    shutil.copytree(trained_home[0], path)
    store = add_admins(Store.open(path))
    for name, role in PEOPLE.items():
        users.create_user(store, name, password=None, actor="tester")
        if role:
            projects.set_collaborator(store, "Default", name, role, actor="tester")
    users.set_disabled(store, "dis", True, actor="tester")
    by = {m.algorithm: m.id for m in registry.list_models(store)}
    deployments.deploy(store, by["linear"], "staging", name=STAGING, actor="tester")
    deployments.deploy(
        store, by["gradient_boosting"], "staging", challenger_id=by["linear"], actor="tester"
    )
    frame = datasets.churn_frame(n_rows=300, seed=5)
    _frame(store, "labelled.parquet", frame)
    source = _frame(store, "served.parquet", frame.drop(columns=["churn"]))
    runs.enqueue_run(
        store, STAGING, source_override={"kind": "file", "path": source}, actor="tester"
    )
    claimed = execution.claim_next_run(store, WORKER)
    assert claimed is not None
    assert execution.execute_run(store, claimed, WORKER).status == "succeeded"
    frame[["customer_id", "churn"]].to_csv(path / "incoming" / "labels.csv", index=False)
    return path


@pytest.fixture
def matrix(matrix_home: Path, tmp_path: Path) -> Store:
    """A private copy of matrix_home."""
    shutil.copytree(matrix_home, tmp_path / "home")
    return Store.open(tmp_path / "home")


def _models(store: Store) -> dict[str, str]:
    return {m.algorithm: m.id for m in registry.list_models(store)}


def _run_id(store: Store) -> str:
    return runs.list_runs(store, STAGING)[0].id


# Every state-changing action, as (name, the role it needs, what doing it means).
Action = Callable[[Store, str], object]
ACTIONS: dict[str, tuple[str, Action]] = {
    "add dataset": (
        "editor",
        lambda s, who: datasets.register_frame(
            s, datasets.demo_frame("wine"), name="w", kind="upload", source="w", actor=who
        ),
    ),
    "train": (
        "editor",
        lambda s, who: train(
            s,
            TrainRequest(
                dataset_id=datasets.list_datasets(s)[0].id, target="churn", algorithms=("linear",)
            ),
            actor=who,
        ),
    ),
    "deploy to staging": (
        "editor",
        lambda s, who: deployments.deploy(s, _models(s)["linear"], "staging", actor=who),
    ),
    "deploy to production": (
        "owner",
        lambda s, who: deployments.deploy(s, _models(s)["linear"], "production", actor=who),
    ),
    "promote (gate overridden)": (
        "owner",
        lambda s, who: promotion.promote(s, STAGING, override_reason="urgent fix", actor=who),
    ),
    "gate thresholds": (
        "owner",
        lambda s, who: promotion.set_thresholds(
            s, STAGING, promotion.Thresholds(latency_budget_ms=500), actor=who
        ),
    ),
    "rollback": ("owner", lambda s, who: deployments.rollback(s, STAGING, 1, actor=who)),
    "swap challenger": ("owner", lambda s, who: challenger.swap(s, STAGING, actor=who)),
    "delete": (
        "owner",
        lambda s, who: promotion.delete_deployment(s, STAGING, confirm=STAGING, actor=who),
    ),
    "change access": (
        "owner",
        lambda s, who: deployments.set_access(s, STAGING, "public", actor=who),
    ),
    "edit pipeline": (
        "editor",
        lambda s, who: deployments.update_pipeline(
            s,
            STAGING,
            {
                **deployments.get_deployment(s, STAGING).pipeline,
                "transforms": [{"sql": "SELECT * FROM input"}],
            },
            actor=who,
        ),
    ),
    "run": ("editor", lambda s, who: runs.enqueue_run(s, STAGING, actor=who)),
    "schedule": (
        "editor",
        lambda s, who: scheduler.set_schedule(s, STAGING, "0 6 * * *", actor=who),
    ),
    "validate": (
        "editor",
        lambda s, who: validation.start_validation(
            s, STAGING, "incoming/labelled.parquet", actor=who
        ),
    ),
    "add labels": (
        "editor",
        lambda s, who: ground_truth.add_labels(
            s,
            STAGING,
            {"kind": "file", "path": "incoming/labels.csv"},
            "customer_id",
            "churn",
            actor=who,
        ),
    ),
    "drift thresholds": (
        "editor",
        lambda s, who: drift.set_thresholds(s, STAGING, 0.2, 0.4, actor=who),
    ),
    "report settings": (
        "editor",
        lambda s, who: reports.set_report_settings(s, STAGING, enabled=True, actor=who),
    ),
    "purge results": ("owner", lambda s, who: results.purge(s, _run_id(s), actor=who)),
    "add connection": (
        "owner",
        lambda s, who: connections.add_connection(
            s,
            "Default",
            "warehouse",
            host="127.0.0.1",
            database="dwh",
            user="reader",
            password_env="MODELDECK_SECRET_WAREHOUSE",
            actor=who,
        ),
    ),
    "manage collaborators": (
        "owner",
        lambda s, who: projects.set_collaborator(s, "Default", "otto", "viewer", actor=who),
    ),
}


def expected(who: str, needed: str) -> bool:
    if who == "tester":
        return True
    role = PEOPLE[who]
    if who == "dis" or role is None:
        return False
    return access.PROJECT_ROLES.index(role) >= access.PROJECT_ROLES.index(needed)


def _changes(store: Store) -> tuple[int, ...]:
    tables = ("audit_log", "deployments", "deployment_versions", "runs", "datasets", "models")
    return tuple(store.query(f"SELECT count(*) FROM {t}").scalar() for t in tables)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_the_role_matrix(matrix: Store, action: str, who: str) -> None:
    needed, do = ACTIONS[action]
    before = _changes(matrix)
    if expected(who, needed):
        do(matrix, who)
        assert _changes(matrix) != before  # it did something, and audited it
        return
    with pytest.raises(Forbidden) as refused:
        do(matrix, who)
    message = refused.value.message
    if who == "dis":
        assert f"'{who}' is disabled" in message
    elif who == "otto":
        assert f"you need the {needed} role in project Default; you are not a collaborator" in (
            message
        )
    else:
        has = access.ROLE_WORDS[str(PEOPLE[who])]
        assert f"you need the {needed} role in project Default; you are {has}." in message
        assert (
            refused.value.hint
            == f"Ask an owner of Default or an admin to give you the {needed} role."
        )
    assert refused.value.status == 403
    assert _changes(matrix) == before  # a refusal leaves no trace but nothing else either


def test_every_checked_action_of_core_is_in_the_matrix() -> None:
    """The matrix names every project action core checks, except reading and the few whose
    check is covered elsewhere (import: tests/test_artifacts.py; redeliver and testing a
    connection: their own modules' tests need a sink or a server)."""
    covered = {
        "read",
        "download",
        "import-model",
        "redeliver",
        "test-connection",
        "remove-connection",
        "override-gate",
    }
    named = {
        "add-dataset",
        "train",
        "deploy-staging",
        "deploy-production",
        "promote",
        "gate-thresholds",
        "rollback",
        "swap",
        "delete",
        "set-access",
        "edit-pipeline",
        "run",
        "schedule",
        "validate",
        "add-labels",
        "drift-thresholds",
        "report",
        "purge",
        "add-connection",
        "manage-collaborators",
    }
    assert named | covered == set(access.ACTIONS)
    assert len(ACTIONS) == len(named)


# ---------------------------------------------------------------------------- reads
def test_reads_are_filtered_to_the_projects_a_user_may_read(matrix: Store) -> None:
    everything = {
        "projects": [p.name for p in projects.list_projects(matrix)],
        "datasets": len(datasets.list_datasets(matrix)),
        "models": len(registry.list_models(matrix)),
        "deployments": [d.name for d in deployments.list_deployments(matrix)],
        "runs": len(runs.list_runs(matrix, None)),
    }
    assert everything["models"] == 2 and everything["runs"] == 1
    for who in ("tester", "olga", "vic"):  # an admin and two collaborators see it all
        assert [p.name for p in projects.list_projects(matrix, visible_to=who)] == (
            everything["projects"] if who == "tester" else ["Default"]
        )
        assert len(registry.list_models(matrix, visible_to=who)) == 2
        assert [d.name for d in deployments.list_deployments(matrix, visible_to=who)] == [STAGING]
        assert len(runs.list_runs(matrix, None, visible_to=who)) == 1
        assert len(datasets.list_datasets(matrix, visible_to=who)) == everything["datasets"]
    for who in ("otto", "dis", "nobody"):  # an outsider, a disabled user, an unknown name
        assert projects.list_projects(matrix, visible_to=who) == []
        assert registry.list_models(matrix, visible_to=who) == []
        assert registry.list_experiments(matrix, visible_to=who) == []
        assert deployments.list_deployments(matrix, visible_to=who) == []
        assert runs.list_runs(matrix, None, visible_to=who) == []
        assert datasets.list_datasets(matrix, visible_to=who) == []
        assert connections.list_connections(matrix, visible_to=who) == []


def test_a_new_project_belongs_to_its_creator_and_is_private(matrix: Store) -> None:
    created = projects.create_project(matrix, "Fraud", actor="otto")
    assert [
        (c.username, c.role) for c in projects.list_collaborators(matrix, "Fraud", actor="otto")
    ] == [("otto", "owner")]
    assert [p.name for p in projects.list_projects(matrix, visible_to="otto")] == ["Fraud"]
    assert "Fraud" not in [p.name for p in projects.list_projects(matrix, visible_to="olga")]
    with pytest.raises(Forbidden, match="need the viewer role in project Fraud"):
        projects.list_collaborators(matrix, "Fraud", actor="olga")
    # training into a project you don't belong to is refused before any fitting
    frame_id = datasets.register_frame(
        matrix,
        datasets.demo_frame("wine"),
        name="w",
        kind="upload",
        source="w",
        project="Fraud",
        actor="otto",
    ).id
    with pytest.raises(Forbidden, match="you are not a collaborator"):
        train(
            matrix,
            TrainRequest(dataset_id=frame_id, target="cultivar", project="Default"),
            actor="otto",
        )
    [entry] = audit.list_entries(matrix, subject="project Fraud")[-1:]
    assert (entry.actor, entry.action, entry.after) == ("otto", "project-add", {"owner": "otto"})
    assert created.name == "Fraud"


def test_a_project_keeps_an_owner(matrix: Store) -> None:
    projects.set_collaborator(matrix, "Default", "ed", "owner", actor="olga")
    projects.remove_collaborator(matrix, "Default", "olga", actor="ed")
    with pytest.raises(Exception, match="would have no owner") as kept:
        projects.set_collaborator(matrix, "Default", "ed", "viewer", actor="ed")
    assert kept.value.status == 409
    with pytest.raises(Exception, match="would have no owner"):
        projects.remove_collaborator(matrix, "Default", "ed", actor="tester")
    roles = {
        c.username: c.role for c in projects.list_collaborators(matrix, "Default", actor="vic")
    }
    assert roles == {"ed": "owner", "vic": "viewer", "dis": "editor"}


def test_system_actors_act_on_every_project_but_no_user_can_be_one(matrix: Store) -> None:
    role = matrix.read(lambda tx: access.project_role(tx, access.SCHEDULER, "prj_default"))
    assert role == "owner"
    with pytest.raises(Exception, match="cannot be a username"):
        users.create_user(matrix, "system:scheduler", password=None, actor="tester")
    assert users.find_user(matrix, "system:scheduler") is None


# ---------------------------------------------------------------------------- the seam
def _functions() -> dict[tuple[str, str], tuple[set[str], bool, bool]]:
    """Top-level functions of the nouns: (names they call, whether they call access.require*,
    whether they take `actor`)."""
    found = {}
    for path in sorted((Path(__file__).parents[1] / "core").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            calls, checks = set(), False
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    f = sub.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    owner = getattr(getattr(f, "value", None), "id", None)
                    checks |= owner == "access" and name.startswith("require")
                    calls.add(name)
            takes = {a.arg for a in node.args.args + node.args.kwonlyargs}
            found[(path.stem, node.name)] = (calls, checks, "actor" in takes)
    return found


def test_every_change_that_takes_an_actor_checks_its_role() -> None:
    """A public function of core that takes `actor` calls access.require* itself or through a
    function it calls; the exceptions (the audit entry, a new deployment version) only ever
    run inside a transaction that checked."""
    functions = _functions()
    by_name: dict[str, list[tuple[str, str]]] = {}
    for key in functions:
        by_name.setdefault(key[1], []).append(key)

    def checked(key: tuple[str, str], seen: frozenset[tuple[str, str]]) -> bool:
        calls, checks, _ = functions[key]
        return checks or any(
            checked(other, seen | {key})
            for name in calls
            for other in by_name.get(name, [])
            if other not in seen and other != key
        )

    unchecked = [
        f"{module}.{name}"
        for (module, name), (_, _, takes_actor) in functions.items()
        if takes_actor and not name.startswith("_") and module != "access"
        if not checked((module, name), frozenset())
    ]
    assert unchecked == ["audit.record", "audit.record_about", "deployments.add_version"]


def test_project_names_and_usernames_match_as_people_type_them(matrix: Store) -> None:
    with pytest.raises(Exception, match="A project 'Default' already exists") as taken:
        projects.create_project(matrix, "default", actor="olga")
    assert taken.value.status == 409
    made = projects.set_collaborator(matrix, "Default", " OTTO ", "viewer", actor="olga")
    assert (made.username, made.role) == ("otto", "viewer")
    projects.remove_collaborator(matrix, "Default", "Otto", actor="olga")
    assert "otto" not in {
        c.username for c in projects.list_collaborators(matrix, "Default", actor="olga")
    }
