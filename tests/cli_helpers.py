"""Running `modeldeck` in-process from tests: exit code, stdout and stderr, or parsed JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.cli import main as cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run with --json; the command must succeed; return its parsed output."""
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)
