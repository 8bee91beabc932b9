"""One output rule for every command: `--json` prints JSON, else text; progress on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from core import users
from core.entities import Progress
from core.errors import ModelDeckError, Step, Unauthorized
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


def actor() -> str:
    """Who runs the command: the ModelDeck user named by $MODELDECK_USER. Every change a
    command makes is checked against that user's roles and audited as that user."""
    name = os.environ.get("MODELDECK_USER", "").strip()
    if not name:
        raise Unauthorized(
            "Say which ModelDeck user runs this command.",
            "Set MODELDECK_USER to an existing user.",
        )
    return users.normalize_username(name)


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
