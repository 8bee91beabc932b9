"""`modeldeck users add|list|passwd|disable|enable`: the accounts of the workspace.

A password is never an argument (shell history, `ps`): `--password-stdin` reads it from stdin,
a terminal is asked with getpass, and otherwise a new account (or an admin's reset) gets a
generated password, printed once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from core import access, users
from core.cli.output import actor, given_user, open_store, print_json
from core.entities import User
from core.errors import InvalidInput
from core.store import Store


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `users` and its actions."""
    group = sub.add_parser("users", help="accounts: add, list, change passwords, disable")
    u_sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    stdin = argparse.ArgumentParser(add_help=False)
    stdin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (when changing your own: the current one on the "
        "first line, the new one on the second)",
    )

    p = u_sub.add_parser(
        "add",
        parents=[common, stdin],
        help="add an account (admins; without an admin yet, the first admin)",
    )
    p.add_argument("username")
    p.add_argument("--display-name", default="")
    p.add_argument("--email")
    p.add_argument("--admin", action="store_true", help="an instance admin (default: a member)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_add)

    p = u_sub.add_parser("list", parents=[common], help="every account")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)

    p = u_sub.add_parser(
        "passwd",
        parents=[common, stdin],
        help="change your password (with the current one), or reset another's (admins)",
    )
    p.add_argument("username")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_passwd)

    for action, handler, text in (
        ("disable", cmd_disable, "disable an account and end its sessions (admins)"),
        ("enable", cmd_enable, "enable a disabled account (admins)"),
    ):
        p = u_sub.add_parser(action, parents=[common], help=text)
        p.add_argument("username")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)


def user_json(user: User) -> dict[str, Any]:
    """An account in --json output (no password hash: the User record has none)."""
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat() + "Z",
        "last_login_at": user.last_login_at.isoformat() + "Z" if user.last_login_at else None,
    }


def _line(user: User) -> str:
    state = "disabled" if user.disabled else "active"
    return f"{user.username:<20} {user.role:<7} {state:<8} {user.display_name}  {user.email or ''}"


# ---------------------------------------------------------------------------- passwords
def _stdin_line(what: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput(
            f"--password-stdin found no {what} on stdin.",
            "Pipe it in, one password per line (e.g. from a password manager).",
        )
    return line.rstrip("\r\n")


def _new_password(args: argparse.Namespace, username: str) -> tuple[str, bool]:
    """The new password and whether it was generated (and must be printed once): from stdin,
    else asked on a terminal (empty: generate one), else generated."""
    if args.password_stdin:
        return _stdin_line("new password"), False
    if sys.stdin.isatty():
        typed = getpass.getpass(f"New password for {username} (empty: generate one): ")
        if typed:
            users.check_password(typed, username)
            if getpass.getpass("Type it again: ") != typed:
                raise InvalidInput(
                    "The two passwords differ.", "Run the command again and type the same twice."
                )
            return typed, False
    return users.generate_password(), True


def _current_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return _stdin_line("current password")
    if sys.stdin.isatty():
        return getpass.getpass("Your current password: ")
    raise InvalidInput(
        "Changing your own password needs your current one, and there is no terminal to ask.",
        "Pipe both with --password-stdin: the current password on the first line, the new one "
        "on the second.",
    )


def _shown_once(username: str, password: str) -> str:
    return (
        f"password: {password}\n(shown once; change it on the Account page or with "
        f"`modeldeck users passwd {username}`)"
    )


# ---------------------------------------------------------------------------- commands
def _adding_actor(store: Store, args: argparse.Namespace) -> str:
    """Who adds the account: the acting user, or (no user named and no admin in the
    workspace yet) the bootstrap actor, which may only add an admin."""
    if given_user() is not None or any(u.is_admin for u in users.list_users(store)):
        return actor()
    if not args.admin:
        raise InvalidInput(
            "This workspace has no admin yet, so the first user added must be an admin.",
            "Add --admin, or start ModelDeck once (`modeldeck up`): it creates the admin "
            "`admin` and prints its password.",
        )
    return access.BOOTSTRAP


def cmd_add(args: argparse.Namespace) -> int:
    store = open_store()
    who = _adding_actor(store, args)
    name = users.check_username(args.username)
    password, generated = _new_password(args, name)
    user = users.create_user(
        store,
        name,
        password=password,
        display_name=args.display_name,
        email=args.email,
        role="admin" if args.admin else "member",
        actor=who,
    )
    if args.json:
        print_json({**user_json(user), **({"password": password} if generated else {})})
        return 0
    print(f"added user {user.username} ({user.role})")
    if generated:
        print(_shown_once(user.username, password))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    # any active user may see who the users are (to add collaborators); members see no e-mail
    found = users.list_users(open_store(), seen_by=actor())
    if args.json:
        print_json([user_json(u) for u in found])
    else:
        for user in found:
            print(_line(user))
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    store = open_store()
    who = actor()
    name = users.get_user(store, args.username).username
    own = name == who
    current = _current_password(args) if own else None
    password, generated = _new_password(args, name)
    ended = users.set_password(store, name, password, actor=who, current_password=current)
    if args.json:
        value: dict[str, Any] = {"username": name, "sessions_ended": ended}
        print_json({**value, **({"password": password} if generated else {})})
        return 0
    print(f"changed the password of {name}; {ended} session(s) ended")
    if generated:
        print(_shown_once(name, password))
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    user = users.set_disabled(open_store(), args.username, disabled, actor=actor())
    if args.json:
        print_json(user_json(user))
    else:
        print(f"{'disabled' if disabled else 'enabled'} user {user.username}")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)
