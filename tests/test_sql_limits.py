"""Time and memory limits of pipeline SQL: a preview or a run that would pin a core (or the
memory) is stopped, and the message names the limit and how to raise it (issue 14, item 11).

Real DuckDB queries; the limits are set through their environment variables, as an
administrator would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core import pipeline
from core.engine import sql_limits
from core.entities import Deployment
from core.errors import InvalidInput, PipelineError
from core.store import Store
from core.workspace import Workspace
from tests.test_runs import execute, set_pipeline

# ~100 billion rows to count: minutes of a core without a limit.
ENDLESS = "SELECT count(*) AS n FROM range(100000000000)"
# A list aggregate cannot spill: it must hold every value at once (~800 MB).
GREEDY = "SELECT list(range) AS l FROM range(100000000)"


@pytest.fixture
def ws(home: Path) -> Workspace:
    return Workspace.resolve(home).ensure()


def _sql(query: str, *transforms: str) -> dict[str, object]:
    return {
        "source": {"kind": "sql", "sql": query},
        "transforms": [{"name": f"t{i}", "sql": t} for i, t in enumerate(transforms)],
    }


def test_a_preview_stops_at_its_time_limit(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDECK_PREVIEW_SECONDS", "1")
    for spec, stage in (
        (_sql(ENDLESS), "source"),
        (_sql("SELECT 1 AS one", ENDLESS.replace("range(", "input, range(")), "t0"),
    ):
        shown = pipeline.preview(ws, spec, None)
        failed = shown.stages[-1]
        assert failed.name == stage and failed.error is not None
        assert failed.error.startswith(
            "The pipeline's SQL ran longer than the preview time limit of 1 s and was stopped."
        )
        assert "set MODELDECK_PREVIEW_SECONDS (seconds) for the UI" in failed.error
    # Within the limit a preview is unchanged.
    assert pipeline.preview(ws, _sql("SELECT 42 AS n"), None).stages[0].frame["n"][0] == 42


def test_a_run_stops_at_its_time_limit_and_fails_saying_so(
    trained_store: Store, deploy_churn: Callable[..., Deployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed = deploy_churn("linear")
    source = deployed.pipeline["source"]["path"]
    slow = (
        f"SELECT * FROM read_parquet('{source}') WHERE (SELECT count(*) FROM "
        "range(100000000000)) > 0"
    )
    set_pipeline(trained_store, deployed, source={"kind": "sql", "sql": slow})
    monkeypatch.setenv("MODELDECK_RUN_SQL_SECONDS", "1")
    run = execute(trained_store, deployed.name)
    assert run.status == "failed"
    assert run.error.startswith(
        "The pipeline's SQL ran longer than the run time limit of 1 s and was stopped."
    )
    assert "set MODELDECK_RUN_SQL_SECONDS (seconds) for the worker" in run.error


def test_sql_beyond_the_memory_limit_is_stopped_naming_it(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDECK_SQL_MEMORY", "64MB")
    shown = pipeline.preview(ws, _sql(GREEDY), None)
    assert shown.stages[0].error is not None
    assert shown.stages[0].error.startswith(
        "The pipeline's SQL needed more than its memory limit of 64MB and was stopped."
    )
    assert "set MODELDECK_SQL_MEMORY (e.g. 4GB)" in shown.stages[0].error
    with (
        pytest.raises(PipelineError, match="memory limit of 64MB") as caught,
        pipeline.open_input(ws, _sql(GREEDY)) as reader,
    ):
        reader.read_all()
    assert caught.value.block == "source"


def test_sorts_beyond_the_memory_limit_spill_instead_of_failing(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDECK_SQL_MEMORY", "64MB")
    query = "SELECT i FROM range(6000000) t(i) ORDER BY i DESC"
    with pipeline.open_input(ws, _sql(query), batch_rows=1_000_000) as reader:
        first = reader.read_next_batch()
    assert first.column(0)[0].as_py() == 5_999_999


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "MODELDECK_PREVIEW_SECONDS",
            "soon",
            "$MODELDECK_PREVIEW_SECONDS must be a number of seconds above 0, not 'soon'.",
        ),
        (
            "MODELDECK_RUN_SQL_SECONDS",
            "0",
            "$MODELDECK_RUN_SQL_SECONDS must be a number of seconds above 0, not '0'.",
        ),
        (
            "MODELDECK_SQL_MEMORY",
            "lots",
            "$MODELDECK_SQL_MEMORY must be an amount of memory such as 2GB or 500MB, not 'lots'.",
        ),
    ],
)
def test_bad_limit_settings_are_named(
    name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    purpose = "run" if name == "MODELDECK_RUN_SQL_SECONDS" else "preview"
    with pytest.raises(InvalidInput) as caught:
        sql_limits.Limits.of(purpose)
    assert caught.value.message == message and "Leave it unset" in caught.value.hint


def test_the_defaults_are_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*sql_limits.SECONDS_ENV.values(), sql_limits.MEMORY_ENV):
        monkeypatch.delenv(name, raising=False)
    assert sql_limits.Limits.of("preview") == sql_limits.Limits("preview", 30.0, "2GB")
    assert sql_limits.Limits.of("run") == sql_limits.Limits("run", 3600.0, "2GB")
