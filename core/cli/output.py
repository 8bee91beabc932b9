"""One output rule for every command: `--json` prints JSON, else text; progress on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from core import access, deployments, projects, runs, users
from core.entities import Progress
from core.errors import InvalidInput, ModelDeckError, Step, Unauthorized
from core.store import Store


def open_store() -> Store:
    return Store.open()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def progress_printer(label: str = "") -> Progress:
    """A progress bar on stderr (redrawn in place on a terminal, a line per step otherwise)."""
    is_tty = sys.stderr.isatty()
    last = [""]

    def show(fraction: float, text: str) -> None:
        filled = int(fraction * 30)
        line = f"{label}[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} {text}"
        if is_tty:
            print(f"\r{line[:120]:<120}", end="" if fraction < 1 else "\n", file=sys.stderr)
        elif text != last[0]:
            print(line, file=sys.stderr)
        last[0] = text

    return show


# The user named by --user for the command being run (main() sets it, then resets it), and the
# name actor() last checked, so one command looks its user up once.
_given: ContextVar[str | None] = ContextVar("modeldeck_cli_user", default=None)
_checked: ContextVar[str | None] = ContextVar("modeldeck_cli_checked", default=None)

NO_USER_HINT = (
    "Add --user NAME or set MODELDECK_USER; `modeldeck users list` lists the users, and an "
    "admin can add you with `modeldeck users add NAME`."
)


@contextmanager
def acting_user(name: str | None) -> Iterator[None]:
    """Run a command as the user named by --user (None: $MODELDECK_USER decides)."""
    given, checked = _given.set(name), _checked.set(None)
    try:
        yield
    finally:
        _given.reset(given)
        _checked.reset(checked)


def given_user() -> str | None:
    """The username --user or $MODELDECK_USER names (normalized), or None when neither does."""
    name = (_given.get() or os.environ.get("MODELDECK_USER", "")).strip()
    return users.normalize_username(name) if name else None


def actor() -> str:
    """Who runs the command: the ModelDeck user named by --user, else $MODELDECK_USER; it must
    exist and be active (Unauthorized otherwise). Every change a command makes is checked
    against that user's roles and audited as that user."""
    name = given_user()
    if name is None:
        raise Unauthorized("Say which ModelDeck user runs this command.", NO_USER_HINT)
    if _checked.get() == name:
        return name
    user = users.find_user(open_store(), name)
    if user is None:
        raise Unauthorized(
            f"There is no ModelDeck user '{name}' (named by {_source()}).",
            "Check the name: `modeldeck users list` lists the users; ask an admin to add you "
            "with `modeldeck users add NAME`.",
        )
    if user.disabled:
        raise Unauthorized(
            f"The ModelDeck user '{name}' (named by {_source()}) is disabled.",
            f"Ask an admin to enable it with `modeldeck users enable {name}`.",
        )
    _checked.set(name)
    return name


def _source() -> str:
    return "--user" if _given.get() else "MODELDECK_USER"


def require_read(store: Store, project: str) -> None:
    """Forbidden unless the acting user may read the project (name or id): for commands that
    show one thing of it; lists are filtered with `visible_to` instead."""
    who = actor()
    project_id = projects.get_project(store, project).id
    store.read(lambda tx: access.require(tx, who, project_id, "read"))


def require_read_deployment(store: Store, name: str) -> None:
    """`require_read` of the project of the deployment called `name` (NotFound without one)."""
    require_read(store, deployments.get_deployment(store, name).project_id)


def require_read_run(store: Store, run_id: str) -> None:
    """`require_read` of a run's project; a run kept from a deployment deleted before projects
    were recorded on runs is for admins only."""
    project_id = runs.get_run(store, run_id).project_id
    if project_id is not None:
        require_read(store, project_id)
        return
    who = actor()
    store.read(lambda tx: access.require_admin(tx, who, "read runs of deleted deployments"))


def announce_first_admin(store: Store) -> None:
    """Create the first admin when the workspace has none and say so once: a generated password
    is printed here and never again; $MODELDECK_ADMIN_PASSWORD's is never printed."""
    try:
        first = users.ensure_admin(store)
    except InvalidInput as exc:
        if not os.environ.get("MODELDECK_ADMIN_PASSWORD"):
            raise
        raise InvalidInput(
            f"MODELDECK_ADMIN_PASSWORD cannot be the first admin's password: {exc.message}",
            f"{exc.hint} Or unset it, and a password is generated and printed once.",
        ) from exc
    if first is None:
        return
    name = first.user.username
    if first.password is None:
        text = (
            f"Created the first admin: user {name}, with the password in $MODELDECK_ADMIN_PASSWORD."
        )
    else:
        text = (
            f"Created the first admin: user {name}, password {first.password} — shown once; "
            f"change it on the Account page or with `modeldeck users passwd {name}`."
        )
    print(f"\n{text}\n", flush=True)


# Each Step of core/errors.py in the CLI's words ({subject}: what it acts on).
STEP_WORDS = {
    "list-deployments": "`modeldeck deployments list` lists them.",
    "list-versions": "`modeldeck deployments show {subject}` lists its versions.",
    "list-runs": "`modeldeck runs list DEPLOYMENT` lists a deployment's runs.",
    "list-models": "`modeldeck models list` lists them.",
    "list-datasets": "`modeldeck datasets list` lists them.",
    "list-connections": "`modeldeck connections list --project {subject}` lists them.",
    "list-validations": "`modeldeck validations DEPLOYMENT` lists them.",
    "follow-run": "`modeldeck runs show {subject}` follows it.",
    "start-worker": "Start it with `modeldeck worker` (or `make run`, which starts everything);"
    " `modeldeck runs show {subject}` follows the run.",
    "validate": "`modeldeck validate {subject} --data PATH` validates on a labelled file.",
    "add-labels": "`modeldeck labels add {subject} --file PATH --key COLUMN --label COLUMN`.",
    "deploy-challenger": "`modeldeck deploy MODEL --env ENV --name {subject} --challenger OTHER`.",
    "set-schedule": "`modeldeck schedule {subject} --cron '0 6 * * 1'`.",
    "override-gate": '`modeldeck promote {subject} --override "why"`.',
    "add-connection": "`modeldeck connections add` adds one.",
    "replace-connection": "`modeldeck connections add ... --replace` replaces it.",
    "allow-cleartext": "`modeldeck connections add ... --replace --allow-cleartext-password`.",
    "test-connection": "`modeldeck connections test NAME` tests it.",
    "trust-pickle": "Add --trust-pickle to load it.",
    "trust-type": "Add --trust-type NAME for each type you approve.",
    "choose-label": "Name it with --label COLUMN.",
    "give-data": "Give it with --data PATH.",
}


def step_words(step: Step | None) -> str:
    """The command that takes a hint's step, or "" without one."""
    return STEP_WORDS[step.action].format(subject=step.subject or "NAME") if step else ""


def with_step(hint: str, step: Step | None) -> str:
    """A hint followed by its step in the CLI's words."""
    return " ".join(t for t in (hint, step_words(step)) if t)


def hint_text(exc: ModelDeckError) -> str:
    """An error's hint with its step in the CLI's words."""
    return with_step(exc.hint, exc.step)
