"""One error shape on every front end, and hints that stay front-end neutral in core.

As datasette's test_error_shape does: the same error (an unknown run or deployment, raised by
core) reaches the CLI, a page and the API, and each renders message, hint and the hint's step
in its own words. Core itself never names a command, a flag, a page or a tab.
"""

from __future__ import annotations

import ast
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn
from streamlit.testing.v1 import AppTest

from core import deployments, ui
from core.api.app import create_app
from core.cli import main as cli
from core.cli import output
from core.errors import STEPS, ModelDeckError, NotFound, Step
from core.store import Store
from tests.pages.conftest import log_in
from tests.pg_server import free_port

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
FRONT_ENDS = ("core/ui/", "core/cli/", "core/api/")
# A command, a flag, a tab or a widget named in a hint.
FRONT_END_WORDS = re.compile(
    r"`modeldeck\b|(^|\s|\()--[a-z]|\b(tab|Tab)\b|\bclick|\bbutton|\btick\b"
)


def _errors_and_hints(source: str) -> list[str]:
    """Text of every raise statement, of error constructors and of *_HINT constants."""
    tree = ast.parse(source)
    texts = []
    seen: set[int] = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Raise) and node.exc is not None:
            targets = [node.exc]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith(
            ("Error", "NotFound", "InvalidInput", "Conflict", "Forbidden", "Check")
        ):
            targets = [node]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.endswith("HINT") for t in node.targets
        ):
            targets = [node.value]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("how", "note", "hint") for t in node.targets
        ):
            targets = [node.value]
        for target in targets:
            for inner in ast.walk(target):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    if id(inner) not in seen:
                        seen.add(id(inner))
                        texts.append(inner.value)
    return texts


def test_the_hint_reader_finds_a_front_end_word() -> None:
    source = (
        'raise InvalidInput("bad", "Run `modeldeck x` first.")\n'
        'X_HINT = "Open the Pipeline tab."\n'
        'raise NotFound("run", r, "Give it with --run ID.")\n'
        'raise InvalidInput("bad", "Use sslmode require.")\n'
    )
    found = [t for t in _errors_and_hints(source) if FRONT_END_WORDS.search(t)]
    assert found == ["Run `modeldeck x` first.", "Open the Pipeline tab.", "Give it with --run ID."]


def test_core_hints_name_no_command_flag_page_or_tab() -> None:
    found = {}
    for path in sorted(ROOT.joinpath("core").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(FRONT_ENDS):
            continue
        hits = [t for t in _errors_and_hints(path.read_text()) if FRONT_END_WORDS.search(t)]
        if hits:
            found[rel] = hits
    assert found == {}, "core hints stay neutral; a Step lets each front end add its words"


def test_every_step_has_words_in_every_front_end() -> None:
    assert set(output.STEP_WORDS) == set(STEPS) == set(ui.STEP_WORDS)
    for action in STEPS:
        step = Step(action, "churn-staging")
        assert output.step_words(step) and "{" not in output.step_words(step)
        assert ui.hint_text(ModelDeckError("x", step=step)).strip()
    with pytest.raises(ValueError, match="unknown step"):
        Step("open-the-pod-bay-doors")


def test_the_cli_prints_message_hint_and_the_command(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--user", "tester", "deployments", "show", "nope"]) == 2
    assert capsys.readouterr().err == (
        "error: No deployment 'nope'.\n"
        "hint: Choose an existing deployment. `modeldeck deployments list` lists them.\n"
    )


def test_a_page_shows_message_hint_and_where_to_look(store: Store) -> None:
    at = log_in(AppTest.from_file(APP, default_timeout=120))
    at.switch_page("pages/results.py")
    at.query_params["run"] = "run_nope"
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "**No run 'run_nope'.**\n\nChoose an existing run. The Run results page lists every run."
    ]


def test_the_api_answers_the_same_json(store: Store) -> None:
    app = create_app()

    @app.get("/probe/{name}")
    def probe(name: str) -> dict[str, str]:  # a route whose core call fails
        return {"name": deployments.get_deployment(store, name).name}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/probe/nope", timeout=30)
        assert answer.value.code == 404
        assert answer.value.headers["content-type"] == "application/json"
        assert json.loads(answer.value.read()) == {
            "error": "NotFound",
            "message": "No deployment 'nope'.",
            "hint": "Choose an existing deployment.",
            "step": {"action": "list-deployments", "subject": ""},
        }
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_every_front_end_renders_a_step_with_its_subject(store: Store) -> None:
    failed = NotFound("connection", "dwh", step=Step("list-connections", "Sales"))
    assert output.hint_text(failed) == (
        "Choose an existing connection. `modeldeck connections list --project Sales` lists them."
    )
    assert ui.hint_text(failed) == (
        "Choose an existing connection. "
        "A deployment's Pipeline section lists its project's connections."
    )
    assert failed.to_dict()["step"] == {"action": "list-connections", "subject": "Sales"}


def test_a_wrapped_error_keeps_its_step(store: Store) -> None:
    """A core error re-raised with context (here: a postgres source whose connection does not
    exist) keeps the step, so each front end still says how to fix it."""
    from core import connections
    from core.errors import PipelineError

    block = {"kind": "postgres", "connection": "warehouse", "query": "SELECT 1"}
    with pytest.raises(PipelineError, match="cannot start: No connection 'warehouse'") as caught:
        with connections.open_source(store.workspace, block, batch_rows=10):
            pass
    assert caught.value.block == "source"
    assert caught.value.step == Step("add-connection", "warehouse")
    assert output.hint_text(caught.value).endswith("`modeldeck connections add` adds one.")
