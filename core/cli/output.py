"""One output rule for every command: `--json` prints JSON, else text; progress on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from core.entities import Progress
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
