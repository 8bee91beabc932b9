"""AppTest helpers shared by the page tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def open_page() -> Callable[..., AppTest]:
    """Run app.py on a page (as a deep link would), with query parameters; return the AppTest."""

    def open_page(path: str, **query: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page(path)
        for key, value in query.items():
            at.query_params[key] = value
        return at.run()

    return open_page
