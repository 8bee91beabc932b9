"""`modeldeck users|projects|collaborators`, the acting user (--user, $MODELDECK_USER), roles
through the CLI (refusals exit 3), listings filtered by role, and the first admin at start-up."""

from __future__ import annotations

import io
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core import access, datasets, demo, projects, users
from core.cli import main as cli
from core.store import Store
from tests.cli_helpers import run, run_json
from tests.conftest import DeployChurn

PASSWORD = "a-long-enough-password"
REFUSED = 3  # core/cli/main.py: what the API answers with 401 or 403


def error(code: int, out: str, err: str, status: int, *parts: str) -> None:
    """The one error shape: exit status, nothing on stdout, `error:` then `hint:`."""
    assert code == status and out == "", (code, out, err)
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def member(store: Store, name: str, password: str | None = None) -> None:
    users.create_user(store, name, password=password, role="member", actor=access.BOOTSTRAP)


# ---------------------------------------------------------------------------- the acting user
def test_a_command_needs_an_existing_active_user(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDECK_USER", raising=False)
    error(
        *run(capsys, "datasets", "list", user=None),
        REFUSED,
        "error: Say which ModelDeck user runs this command.",
        "hint: Add --user NAME or set MODELDECK_USER; `modeldeck users list` lists the users",
    )
    error(
        *run(capsys, "datasets", "list", user="nobody"),
        REFUSED,
        "error: There is no ModelDeck user 'nobody' (named by --user).",
        "`modeldeck users list` lists the users; ask an admin",
    )
    monkeypatch.setenv("MODELDECK_USER", "Nobody")
    error(
        *run(capsys, "datasets", "list", user=None),
        REFUSED,
        "There is no ModelDeck user 'nobody' (named by MODELDECK_USER).",
    )
    member(store, "dora")
    users.set_disabled(store, "dora", True, actor="tester")
    error(
        *run(capsys, "models", "list", user="dora"),
        REFUSED,
        "error: The ModelDeck user 'dora' (named by --user) is disabled.",
        "hint: Ask an admin to enable it with `modeldeck users enable dora`.",
    )
    # --user after the command, and $MODELDECK_USER, both work (normalized: 'Tester').
    assert run_json(capsys, "datasets", "list", "--user", "Tester", user=None) == []
    monkeypatch.setenv("MODELDECK_USER", "tester")
    assert run_json(capsys, "users", "list", user=None)[0]["username"] == "ana"


def test_system_actors_cannot_be_named(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    error(*run(capsys, "users", "list", user=access.DEMO), REFUSED, "no ModelDeck user")


# ---------------------------------------------------------------------------- users
def test_users_add_list_and_passwords_never_shown(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, PASSWORD + "\n")
    added = run_json(
        capsys,
        "users",
        "add",
        "Zoe",
        "--display-name",
        "Zoë Z",
        "--email",
        "Zoe@Example.org",
        "--password-stdin",
    )
    assert (added["username"], added["display_name"], added["email"]) == (
        "zoe",
        "Zoë Z",
        "zoe@example.org",
    )
    assert added["role"] == "member" and "password" not in added
    assert users.login(store, "zoe", PASSWORD).user.username == "zoe"

    stdin(monkeypatch, PASSWORD + "\n")
    code, out, _ = run(capsys, "users", "add", "root2", "--admin", "--password-stdin")
    assert code == 0 and out == "added user root2 (admin)\n"

    code, out, _ = run(capsys, "users", "list", "--json")
    listed = json.loads(out)
    assert [u["username"] for u in listed] == ["ana", "bo", "bob", "root2", "tester", "zoe"]
    assert set(listed[0]) == {
        "id",
        "username",
        "display_name",
        "email",
        "role",
        "disabled",
        "created_at",
        "last_login_at",
    }
    assert "argon2" not in out and "hash" not in out and PASSWORD not in out
    code, out, _ = run(capsys, "users", "list")
    assert code == 0 and "zoe " in out and "member" in out and "zoe@example.org" in out


def test_users_add_generates_a_password_shown_once(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, "")  # no terminal, no --password-stdin: generated
    code, out, _ = run(capsys, "users", "add", "gen")
    assert code == 0 and out.startswith("added user gen (member)\npassword: ")
    password = out.splitlines()[1].removeprefix("password: ")
    assert "shown once" in out and "`modeldeck users passwd gen`" in out
    assert users.login(store, "gen", password).user.username == "gen"
    added = run_json(capsys, "users", "add", "gen2")
    assert users.login(store, "gen2", added["password"]).user.username == "gen2"


def test_users_add_asks_on_a_terminal(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "something-else"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, out, _ = run(capsys, "users", "add", "tty")
    assert code == 0 and out == "added user tty (member)\n"
    assert users.login(store, "tty", PASSWORD).user.username == "tty"
    error(*run(capsys, "users", "add", "tty2"), 2, "error: The two passwords differ.")
    assert users.find_user(store, "tty2") is None


def test_users_add_errors(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, "short\n")
    error(
        *run(capsys, "users", "add", "shorty", "--password-stdin"),
        2,
        "error: A password needs at least 10 characters; this one has 5.",
    )
    stdin(monkeypatch, PASSWORD + "\n")
    error(
        *run(capsys, "users", "add", "Ana", "--password-stdin"),
        2,
        "error: A user 'ana' already exists.",
        "hint: Choose another username.",
    )
    stdin(monkeypatch, "")
    error(
        *run(capsys, "users", "add", "new", "--password-stdin"),
        2,
        "error: --password-stdin found no new password on stdin.",
    )
    error(*run(capsys, "users", "add", "no spaces"), 2, "'no spaces' cannot be a username.")
    member(store, "mo")
    error(
        *run(capsys, "users", "add", "other", user="mo"),
        REFUSED,
        "error: To add users you need to be an instance admin; mo is a member.",
        "hint: Ask an admin of this ModelDeck to do it.",
    )
    assert users.find_user(store, "other") is None and users.find_user(store, "shorty") is None


def test_the_first_admin_can_be_added_without_a_user(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDECK_USER", raising=False)
    store = Store.open(home)  # no admin yet
    stdin(monkeypatch, PASSWORD + "\n")
    error(
        *run(capsys, "users", "add", "first", "--password-stdin", user=None),
        2,
        "error: This workspace has no admin yet, so the first user added must be an admin.",
        "hint: Add --admin",
    )
    stdin(monkeypatch, PASSWORD + "\n")
    code, out, _ = run(capsys, "users", "add", "first", "--admin", "--password-stdin", user=None)
    assert code == 0 and out == "added user first (admin)\n"
    assert users.ensure_admin(store) is None  # no second, generated admin
    error(*run(capsys, "users", "add", "second", user=None), REFUSED, "Say which ModelDeck user")


def test_users_passwd_own_and_reset(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    member(store, "pat", PASSWORD)
    member(store, "quinn", PASSWORD)
    stdin(monkeypatch, f"{PASSWORD}\nan-even-longer-password\n")
    code, out, _ = run(capsys, "users", "passwd", "pat", "--password-stdin", user="pat")
    assert code == 0 and out == "changed the password of pat; 0 session(s) ended\n"
    assert users.login(store, "pat", "an-even-longer-password")

    stdin(monkeypatch, "wrong-password-here\nyet-another-password\n")
    error(
        *run(capsys, "users", "passwd", "pat", "--password-stdin", user="pat"),
        REFUSED,
        "error: The current password is wrong.",
    )
    stdin(monkeypatch, "")
    error(
        *run(capsys, "users", "passwd", "pat", user="pat"),
        2,
        "there is no terminal to ask",
        "--password-stdin: the current password on the first line",
    )
    stdin(monkeypatch, "quinns-new-password\n")
    error(
        *run(capsys, "users", "passwd", "quinn", "--password-stdin", user="pat"),
        REFUSED,
        "error: To reset another user's password you need to be an instance admin",
    )
    stdin(monkeypatch, "quinns-new-password\n")
    reset = run_json(capsys, "users", "passwd", "quinn", "--password-stdin")
    assert reset == {"username": "quinn", "sessions_ended": 0}
    assert users.login(store, "quinn", "quinns-new-password")
    stdin(monkeypatch, "")
    code, out, _ = run(capsys, "users", "passwd", "quinn")  # an admin's reset, generated
    password = out.splitlines()[1].removeprefix("password: ")
    assert code == 0 and users.login(store, "quinn", password)
    error(*run(capsys, "users", "passwd", "ghost"), 2, "error: No user 'ghost'.")


def test_users_disable_and_enable(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    member(store, "dan", PASSWORD)
    users.login(store, "dan", PASSWORD)
    code, out, _ = run(capsys, "users", "disable", "dan")
    assert code == 0 and out == "disabled user dan\n"
    error(*run(capsys, "projects", "list", user="dan"), REFUSED, "'dan' (named by --user) is")
    error(
        *run(capsys, "users", "enable", "dan", user="dan"),
        REFUSED,
        "The ModelDeck user 'dan' (named by --user) is disabled.",
    )
    assert run_json(capsys, "users", "enable", "dan")["disabled"] is False
    assert run_json(capsys, "projects", "list", user="dan") == []
    error(
        *run(capsys, "users", "disable", "tester", user="dan"),
        REFUSED,
        "To disable or enable users you need to be an instance admin; dan is a member.",
    )
    error(*run(capsys, "users", "disable", "ghost"), 2, "error: No user 'ghost'.")


# ---------------------------------------------------------------------------- projects
def test_projects_and_collaborators(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("olga", "ed", "val", "out"):
        member(store, name)
    code, out, _ = run(capsys, "projects", "add", "Fraud", "--description", "cards", user="olga")
    assert code == 0 and out.startswith("created project Fraud (prj_") and "its owner" in out
    error(*run(capsys, "projects", "add", "Fraud ", user="ed"), 2, "already exists")
    shown = run_json(capsys, "projects", "list", user="olga")
    assert [(p["name"], p["role"], p["description"]) for p in shown] == [
        ("Fraud", "owner", "cards")
    ]
    assert {p["name"] for p in run_json(capsys, "projects", "list")} >= {"Default", "Fraud"}

    added = run_json(capsys, "collaborators", "add", "Fraud", "ed", "--role", "editor", user="olga")
    assert (added["username"], added["role"], added["project"]) == ("ed", "editor", "Fraud")
    code, out, _ = run(
        capsys, "collaborators", "add", "Fraud", "val", "--role", "viewer", user="olga"
    )
    assert code == 0 and out == "val is a viewer of project Fraud\n"
    listed = run_json(capsys, "collaborators", "list", "Fraud", user="val")
    assert [(c["username"], c["role"]) for c in listed] == [
        ("olga", "owner"),
        ("ed", "editor"),
        ("val", "viewer"),
    ]
    code, out, _ = run(capsys, "collaborators", "list", "Fraud", user="ed")
    assert out.splitlines()[0].split()[:2] == ["olga", "owner"]
    assert [p["role"] for p in run_json(capsys, "projects", "list", user="val")] == ["viewer"]
    assert run_json(capsys, "projects", "list", user="out") == []
    code, out, _ = run(capsys, "projects", "list", user="out")
    assert code == 0 and out == "out is not a collaborator of any project yet\n"

    error(
        *run(capsys, "collaborators", "list", "Fraud", user="out"),
        REFUSED,
        "error: To read this project you need the viewer role in project Fraud; you are not a "
        "collaborator.",
        "hint: Ask an owner of Fraud or an admin to give you the viewer role.",
    )
    error(
        *run(capsys, "collaborators", "add", "Fraud", "out", "--role", "viewer", user="ed"),
        REFUSED,
        "error: To manage collaborators you need the owner role in project Fraud; you are an "
        "editor.",
    )
    error(
        *run(capsys, "collaborators", "remove", "Fraud", "olga", user="olga"),
        2,
        "error: Project Fraud would have no owner.",
        "hint: Make another collaborator an owner first.",
    )
    error(
        *run(capsys, "collaborators", "add", "Fraud", "olga", "--role", "editor", user="olga"),
        2,
        "would have no owner",
    )
    error(
        *run(capsys, "collaborators", "add", "Fraud", "ghost", "--role", "viewer", user="olga"),
        2,
        "error: No user 'ghost'.",
    )
    error(*run(capsys, "collaborators", "list", "Nope"), 2, "error: No project 'Nope'.")
    assert run_json(capsys, "collaborators", "remove", "Fraud", "val", user="olga") == {
        "project": "Fraud",
        "removed": "val",
    }
    error(
        *run(capsys, "collaborators", "remove", "Fraud", "val", user="olga"), 2, "No collaborator"
    )
    assert run_json(capsys, "projects", "list", user="val") == []


def test_bad_role_is_a_usage_error(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--user", "tester", "collaborators", "add", "Default", "ana", "--role", "boss"])
    assert info.value.code == 2
    assert "invalid choice: 'boss'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- roles
def test_listings_show_only_readable_projects(
    trained_store: Store, deploy_churn: DeployChurn, capsys: pytest.CaptureFixture[str]
) -> None:
    name = deploy_churn("linear").name
    run(capsys, "run", name)  # a queued run
    member(trained_store, "outsider")
    member(trained_store, "viewer")
    projects.set_collaborator(trained_store, "Default", "viewer", "viewer", actor="tester")
    for command in (
        ("deployments", "list"),
        ("models", "list"),
        ("datasets", "list"),
        ("runs", "list", name),
        ("connections", "list"),
    ):
        assert run_json(capsys, *command, user="outsider") == [], command
    assert len(run_json(capsys, "models", "list", user="viewer")) == 2
    assert [d["name"] for d in run_json(capsys, "deployments", "list", user="viewer")] == [name]
    assert len(run_json(capsys, "datasets", "list", user="viewer")) == 1
    assert len(run_json(capsys, "runs", "list", name, user="viewer")) == 1

    model = run_json(capsys, "models", "list")[0]["id"]
    run_id = run_json(capsys, "runs", "list", name)[0]["id"]
    not_collaborator = "you need the viewer role in project Default; you are not a collaborator"
    for command in (
        ("deployments", "show", name),
        ("models", "show", model),
        ("runs", "show", run_id),
        ("schedule", name),
        ("validations", name),
        ("drift", name),
    ):
        error(*run(capsys, *command, user="outsider"), REFUSED, not_collaborator)
    assert run_json(capsys, "deployments", "show", name, user="viewer")["name"] == name


def test_a_viewer_cannot_change_a_deployment(
    trained_store: Store, deploy_churn: DeployChurn, capsys: pytest.CaptureFixture[str]
) -> None:
    name = deploy_churn("linear").name
    member(trained_store, "vic")
    projects.set_collaborator(trained_store, "Default", "vic", "viewer", actor="tester")
    error(
        *run(capsys, "run", name, user="vic"),
        REFUSED,
        "error: To run a pipeline you need the editor role in project Default; you are a viewer.",
        "hint: Ask an owner of Default or an admin to give you the editor role.",
    )
    assert run_json(capsys, "runs", "list", name) == []


# ---------------------------------------------------------------------------- first admin
def _fresh(home: Path) -> Store:
    """`home` without any admin, holding one dataset (so `demo --if-empty` skips the demo)."""
    store = Store.open(home)
    datasets.register_frame(
        store, pd.DataFrame({"x": [1, 2]}), name="x", kind="upload", source="x", actor=access.DEMO
    )
    return store


class _Child:
    """A stand-in for `up`'s child processes that have already exited."""

    returncode = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_the_first_admin_is_printed_once(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDECK_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr(subprocess, "Popen", _Child)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # `up` would own our SIGTERM
    monkeypatch.setattr("core.worker.loop.run_forever", lambda *a, **k: None)
    store = _fresh(home)
    code, out, _ = run(capsys, "demo", "--if-empty", user=None)
    assert code == 0 and "already has data" in out
    line = next(x for x in out.splitlines() if x.startswith("Created the first admin"))
    assert out.count("Created the first admin") == 1
    assert line.startswith("Created the first admin: user admin, password ")
    assert line.endswith(
        " — shown once; change it on the Account page or with `modeldeck users passwd admin`."
    )
    password = line.split("password ")[1].split(" ")[0]
    assert users.login(store, "admin", password).user.is_admin
    # the admin owns the projects that had no owner (the dataset's)
    assert run_json(capsys, "projects", "list", user="admin")[0]["role"] == "owner"
    for command in (("demo", "--if-empty"), ("up",), ("worker",)):
        code, out, _ = run(capsys, *command, user=None)
        assert code == 0 and "first admin" not in out and password not in out, command


def test_up_creates_the_first_admin(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDECK_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr(subprocess, "Popen", _Child)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # `up` would own our SIGTERM
    Store.open(home)
    code, out, _ = run(capsys, "up", user=None)
    assert code == 0 and out.count("Created the first admin: user admin, password ") == 1
    assert out.index("Created the first admin") < out.index("ModelDeck is starting")
    code, out, _ = run(capsys, "up", user=None)
    assert code == 0 and "first admin" not in out


def test_the_admin_password_can_come_from_the_environment(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "admin-from-the-environment"
    monkeypatch.setenv("MODELDECK_ADMIN_PASSWORD", secret)
    monkeypatch.setattr("core.worker.loop.run_forever", lambda *a, **k: None)
    store = Store.open(home)
    code, out, _ = run(capsys, "worker", user=None)
    assert code == 0 and secret not in out
    assert (
        "Created the first admin: user admin, with the password in $MODELDECK_ADMIN_PASSWORD."
        in out
    )
    assert users.login(store, "admin", secret).user.username == "admin"
    code, out, _ = run(capsys, "worker", user=None)
    assert code == 0 and out == ""


# ---------------------------------------------------------------------------- docs
def test_the_readme_names_every_action_and_the_demo_users() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Logging in") : readme.index("## What you see")]
    for needed, doing in access.ACTIONS.values():
        row = next(line for line in section.splitlines() if line.startswith(f"| {needed} |"))
        assert doing.replace("read this project", "read the project") in row, doing
    for username, _, role in demo.DEMO_USERS:
        assert f"| `{username}` | `{demo.demo_password(username)}` | {role} |" in section
    assert "chmod 700" in section and "MODELDECK_ADMIN_PASSWORD" in section


def test_a_too_short_admin_password_in_the_environment_is_named(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDECK_ADMIN_PASSWORD", "short")
    monkeypatch.setattr("core.worker.loop.run_forever", lambda *a, **k: None)
    store = Store.open(home)
    error(
        *run(capsys, "worker", user=None),
        2,
        "error: MODELDECK_ADMIN_PASSWORD cannot be the first admin's password: A password needs "
        "at least 10 characters; this one has 5.",
        "Or unset it, and a password is generated and printed once.",
    )
    assert users.list_users(store) == []
