"""`modeldeck ui`, `api`, `worker` and `up`: start the three processes."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from core import api_status, prediction_log
from core.cli.output import announce_first_admin, open_store
from core.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, text in (
        ("ui", "start the Streamlit app"),
        ("api", "start the REST API server"),
        ("worker", "start the pipeline worker"),
        ("up", "start the app, the API and the worker together"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        if name in ("ui", "api"):
            p.add_argument("--port", type=int, default=8501 if name == "ui" else 8000)
        if name == "api":
            p.add_argument(
                "--processes",
                type=int,
                default=1,
                metavar="N",
                help="single-worker server processes sharing the port (one listening socket;"
                " each with its own models, log segment and challenger process)",
            )
            p.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # internal
        if name == "worker":
            p.add_argument(
                "--executors",
                type=int,
                default=None,
                metavar="N",
                help="executor processes that run pipelines (default: "
                "$MODELDECK_EXECUTORS, else one per core, at most 4; 0 runs them "
                "in the worker's own process)",
            )
        p.set_defaults(handler=HANDLERS[name])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MODELDECK_HOME"] = str(Workspace.resolve().home)
    return env


def cmd_ui(args: argparse.Namespace) -> NoReturn:
    """Serve the app with its login routes (core/ui/server.py, an st.App that `streamlit run`
    serves with its own uvicorn settings and flags), after creating the first admin."""
    announce_first_admin(open_store())  # migrate before the app's threads race to do it
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO_ROOT / "core" / "ui" / "server.py"),
        "--server.port",
        str(args.port),
    ]
    # Become the server (exec, not a child): a SIGTERM to `modeldeck ui`, as `up` sends it,
    # then stops Streamlit itself instead of leaving it running orphaned.
    sys.stdout.flush()
    os.chdir(REPO_ROOT)
    os.execve(sys.executable, command, _child_env())


def cmd_api(args: argparse.Namespace) -> int:
    """The API: one uvicorn process, or `--processes N` of them accepting on one socket.

    Not `uvicorn --workers N`: its workers lost TCP_NODELAY and added about 40 ms to each
    keep-alive request (measured, issue 17). Here this process binds the socket and starts N
    plain single-worker servers on it (`modeldeck api --fd`), new processes, never forked."""
    import uvicorn

    from core import serving

    if args.fd is not None:  # one of --processes N: serve the socket the command bound
        # socket(fileno=) reads the family from the socket itself (`uvicorn --fd` assumes a
        # Unix socket, so asyncio never set TCP_NODELAY: 40 ms more per keep-alive request)
        shared = socket.socket(fileno=args.fd)
        uvicorn.Server(uvicorn.Config("core.api.app:app", log_level="info")).run([shared])
        return 0
    serving.batch_threads()  # a wrong setting stops the API before it starts
    announce_first_admin(open_store())
    # the address the app shows callers: this port, unless one was given (a proxy's, say)
    os.environ.setdefault(api_status.URL_ENV, f"http://127.0.0.1:{args.port}")
    if args.processes < 1:
        print("--processes takes 1 or more.", file=sys.stderr)
        return 2
    if args.processes == 1:
        uvicorn.run("core.api.app:app", host="127.0.0.1", port=args.port, log_level="info")
        return 0
    # the cores are shared among the processes: each splits a batch over its own share
    os.environ.setdefault(serving.THREADS_ENV, str(serving.batch_threads(args.processes)))
    listening = socket.create_server(("127.0.0.1", args.port), backlog=2048)
    listening.set_inheritable(True)
    fd = listening.fileno()
    command = [sys.executable, "-m", "core.cli", "api", "--fd", str(fd)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=_child_env(), pass_fds=(fd,))
        for _ in range(args.processes)
    ]
    print(f"API: {args.processes} processes on http://127.0.0.1:{args.port}")
    return _watch(servers)


def _watch(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait while every child runs; when one ends (or this process is told to stop), stop the
    others. The highest exit code."""
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait(timeout=10)
    return max((child.returncode or 0) for child in children)


def cmd_worker(args: argparse.Namespace) -> int:
    from core.worker.executors import executor_count
    from core.worker.loop import run_forever

    prediction_log.retention_days()  # a wrong setting stops the worker before it starts
    store = open_store()
    announce_first_admin(store)
    run_forever(store, processes=executor_count(args.executors))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start the three processes as new processes (never forked: DESIGN.md, traps)."""
    # Before the children start: the first admin is created (and its password shown) here, once.
    announce_first_admin(open_store())
    # SIGTERM (systemd, `kill`, a CI timeout) must also stop the children: unwind via finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = [sys.executable, "-m", "core.cli"]
    children = [
        subprocess.Popen([*base, name], cwd=REPO_ROOT, env=_child_env())
        for name in ("worker", "api", "ui")
    ]
    print("ModelDeck is starting: app http://localhost:8501, API http://127.0.0.1:8000/docs")
    return _watch(children)


HANDLERS = {"ui": cmd_ui, "api": cmd_api, "worker": cmd_worker, "up": cmd_up}
