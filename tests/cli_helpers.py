"""Running `modeldeck` in-process from tests: exit code, stdout and stderr, or parsed JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.cli import main as cli

# Tests that are not about roles act as this admin of every test workspace (tests/files.py).
USER = "tester"


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, user: str | None = USER
) -> tuple[int, str, str]:
    """Run the CLI in this process as `user` (`--user` before the command; None: no --user, so
    $MODELDECK_USER decides); return (exit code, stdout, stderr)."""
    code = cli.main([*(["--user", user] if user else []), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, user: str | None = USER) -> Any:
    """Run with --json; the command must succeed; return its parsed output."""
    code, out, err = run(capsys, *argv, "--json", user=user)
    assert code == 0, err
    return json.loads(out)
