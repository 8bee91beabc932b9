"""`modeldeck`: every UI action as a command, for scripting. Thin: parse, call core, print.

Errors a user can cause print `error: …` and `hint: …` to stderr and exit with status 2, or 3
when the action is refused (the API's 401 and 403: no or an unknown acting user, a role that
does not allow it, the promotion gate, an untrusted model file); a bug prints one line naming
the log file that holds its traceback and exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core.cli import (
    challenger,
    connections,
    deployments,
    drift,
    explain,
    keys,
    models,
    output,
    processes,
    projects,
    reports,
    schedule,
    users,
    validate,
)
from core.errors import ModelDeckError
from core.workspace import Workspace


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        os.environ["MODELDECK_HOME"] = str(Path(args.home).expanduser().resolve())
    try:
        with output.acting_user(getattr(args, "acting_user", None)):
            return int(args.handler(args) or 0)
    except ModelDeckError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if hint := output.hint_text(exc):
            print(f"hint: {hint}", file=sys.stderr)
        return REFUSED if exc.status in (401, 403) else USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback for a report
        log = log_internal_error(argv if argv is not None else sys.argv[1:])
        where = f"; details in {log}" if log else ""
        print(
            f"error: internal error while running `modeldeck {_command(args)}`: "
            f"{type(exc).__name__}: {exc}{where}",
            file=sys.stderr,
        )
        print(
            "hint: this is a bug in ModelDeck, not in your input; please report it with that file.",
            file=sys.stderr,
        )
        return 1


ERROR_LOG = "logs/cli-errors.log"
USER_ERROR = 2  # the input is wrong: fix it and run again
REFUSED = 3  # who runs it may not do it (or the gate refuses): another user, a role, an override


def _command(args: argparse.Namespace) -> str:
    return " ".join(str(v) for v in (args.command, getattr(args, "action", None)) if v)


def log_internal_error(argv: Sequence[str]) -> Path | None:
    """Append the exception being handled, with the command line and the time, to the
    workspace's CLI error log; its path, or None when it cannot be written."""
    import traceback

    try:
        path = Workspace.resolve().home / ERROR_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} modeldeck "
                f"{' '.join(argv)}\n{traceback.format_exc()}\n"
            )
        return path
    except OSError:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeck", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="workspace folder (default: $MODELDECK_HOME or ./data)")
    parser.add_argument(
        "--user",
        dest="acting_user",
        metavar="NAME",
        help="the ModelDeck user the command acts as (default: $MODELDECK_USER); its roles "
        "decide what it may see and do",
    )
    # Also accepted after the command (`modeldeck demo --home DIR`); SUPPRESS keeps the value
    # given before the command when it is not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--user",
        dest="acting_user",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="the ModelDeck user the command acts as (default: $MODELDECK_USER)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in (
        models,
        deployments,
        schedule,
        explain,
        drift,
        validate,
        challenger,
        connections,
        reports,
        users,
        projects,
        keys,
        processes,
    ):
        group.add_parsers(sub, common)
    return parser
