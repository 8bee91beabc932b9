"""The deployment page's Schedule tab: preview, save, invalid input, pause/resume (AppTest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from core import deployments, registry, scheduler
from core.store import Store

OpenPage = Callable[..., AppTest]


@pytest.fixture
def deployed(trained_store: Store) -> str:
    model = registry.list_models(trained_store)[0]
    return deployments.deploy(trained_store, model.id, "staging", actor="tester").name


def cron_input(at: AppTest):
    return next(t for t in at.text_input if t.label.startswith("Cron expression"))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_set_a_schedule_with_preview_then_pause_and_resume(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    assert not at.exception
    assert any("At 06:00 on Monday" in i.value for i in at.info)  # the default's preview
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Time zone")).set_value(
        "Europe/Berlin"
    ).run()
    cron_input(at).set_value("30 7 * * 1-5").run()
    assert any("At 07:30 on Monday through Friday" in i.value for i in at.info), [
        i.value for i in at.info
    ]
    assert any("Next runs:" in c.value and "07:30 CE" in c.value for c in at.caption)
    button(at, "Save schedule").click().run()
    assert not at.exception and not at.error
    saved = scheduler.get_schedule(trained_store, deployed)
    assert (saved.cron, saved.timezone, saved.paused) == ("30 7 * * 1-5", "Europe/Berlin", False)
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    button(at, "Pause").click().run()
    assert scheduler.get_schedule(trained_store, deployed).is_paused
    button(at, "Resume").click().run()
    assert not scheduler.get_schedule(trained_store, deployed).is_paused


def test_an_invalid_expression_is_explained_and_not_saved(
    trained_store: Store, deployed: str, open_page: OpenPage
) -> None:
    at = open_page("pages/deployment.py", name=deployed, section="schedule")
    cron_input(at).set_value("61 * * * *").run()
    assert any("the minute field ('61') is wrong" in e.value for e in at.error)
    button(at, "Save schedule").click().run()
    assert not at.exception
    assert scheduler.get_schedule(trained_store, deployed) is None
