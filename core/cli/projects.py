"""`modeldeck projects add|list` and `modeldeck collaborators add|remove|list`.

Any active user may create a project and becomes its owner; owners (and admins) choose who
else may read it (viewer), change it (editor) or manage it (owner).
"""

from __future__ import annotations

import argparse
from typing import Any

from core import access, projects
from core.cli.output import actor, open_store, print_json
from core.entities import Collaborator, Project


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `projects` and `collaborators`."""
    group = sub.add_parser("projects", help="projects: add one, list those you may read")
    p_sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = p_sub.add_parser("add", parents=[common], help="create a project (you become its owner)")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_projects_add)
    p = p_sub.add_parser("list", parents=[common], help="the projects you may read, your role")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_projects_list)

    group = sub.add_parser("collaborators", help="who may read, change or manage a project")
    c_sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = c_sub.add_parser(
        "add", parents=[common], help="give a user a role in a project, or change it (owners)"
    )
    p.add_argument("project", help="project name or id")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=access.PROJECT_ROLES[::-1])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_collaborators_add)
    p = c_sub.add_parser(
        "remove", parents=[common], help="take a user out of a project (owners; not the last)"
    )
    p.add_argument("project", help="project name or id")
    p.add_argument("username")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_collaborators_remove)
    p = c_sub.add_parser("list", parents=[common], help="a project's collaborators, owners first")
    p.add_argument("project", help="project name or id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_collaborators_list)


def project_json(project: Project, role: str | None) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "role": role,
        "created_at": project.created_at.isoformat() + "Z",
    }


def collaborator_json(c: Collaborator) -> dict[str, Any]:
    return {
        "project": c.project,
        "project_id": c.project_id,
        "username": c.username,
        "display_name": c.display_name,
        "role": c.role,
        "added_by": c.added_by,
        "added_at": c.added_at.isoformat() + "Z",
    }


def _collaborator_line(c: Collaborator) -> str:
    return f"{c.username:<20} {c.role:<7} {c.display_name}"


def cmd_projects_add(args: argparse.Namespace) -> int:
    project = projects.create_project(
        open_store(), args.name, description=args.description, actor=actor()
    )
    if args.json:
        print_json(project_json(project, "owner"))
    else:
        print(f"created project {project.name} ({project.id}); you are its owner")
    return 0


def cmd_projects_list(args: argparse.Namespace) -> int:
    store = open_store()
    who = actor()
    found = projects.list_projects(store, visible_to=who)
    roles = access.roles(store, who)
    if args.json:
        print_json([project_json(p, roles.get(p.id)) for p in found])
        return 0
    for p in found:
        print(f"{p.name:<24} {roles.get(p.id) or '-':<7} {p.description}")
    if not found:
        print(f"{who} is not a collaborator of any project yet")
    return 0


def cmd_collaborators_add(args: argparse.Namespace) -> int:
    c = projects.set_collaborator(
        open_store(), args.project, args.username, args.role, actor=actor()
    )
    if args.json:
        print_json(collaborator_json(c))
    else:
        print(f"{c.username} is {access.ROLE_WORDS[c.role]} of project {c.project}")
    return 0


def cmd_collaborators_remove(args: argparse.Namespace) -> int:
    projects.remove_collaborator(open_store(), args.project, args.username, actor=actor())
    if args.json:
        print_json({"project": args.project, "removed": args.username})
    else:
        print(f"removed {args.username} from project {args.project}")
    return 0


def cmd_collaborators_list(args: argparse.Namespace) -> int:
    found = projects.list_collaborators(open_store(), args.project, actor=actor())
    if args.json:
        print_json([collaborator_json(c) for c in found])
    else:
        for c in found:
            print(_collaborator_line(c))
    return 0
