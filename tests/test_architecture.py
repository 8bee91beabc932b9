"""The layering rules of STYLE.md, read from the source with `ast`.

Pages, app.py, the CLI and the API are thin: they call core and never import the data or model
libraries; only core/store.py (the metadata file), core/pipeline_sql.py and core/tables.py
(in-memory queries over data files) import DuckDB; only core/ui.py and its panels
(core/ui_*.py) import streamlit inside core; pages hold no SQL. Nothing here skips: a folder
that does not exist yet has no files to check, and every file it gets is checked from then on.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"duckdb", "sklearn", "shap", "joblib"}
SQL_PATTERNS = (
    re.compile(r"\bSELECT\b[\s\S]*?\bFROM\b"),  # upper case: UI text says "Select … from"
    re.compile(
        r"\b(INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TABLE|VIEW)|"
        r"DROP\s+(TABLE|VIEW)|ALTER\s+TABLE)\b"
    ),
    re.compile(
        r"\bselect\s+(\*|count\s*\(|distinct\b)[\s\S]*?\bfrom\b|\binsert\s+into\b|"
        r"\bdelete\s+from\b|\bread_(parquet|csv|csv_auto|json)\s*\("
    ),
)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _product_files() -> list[Path]:
    """Every module of the product: core/, pages/ and app.py (not tests, bench or scripts)."""
    files = [*ROOT.joinpath("core").rglob("*.py"), *ROOT.joinpath("pages").rglob("*.py")]
    return sorted([*files, *([ROOT / "app.py"] if (ROOT / "app.py").exists() else [])])


def _page_files() -> list[Path]:
    return sorted(ROOT.joinpath("pages").rglob("*.py"))


def _front_files() -> list[Path]:
    """The thin layers: pages, app.py, the CLI and the API (those that exist)."""
    named = [ROOT / "app.py", ROOT / "core" / "cli.py", ROOT / "core" / "api.py"]
    return [*_page_files(), *(p for p in named if p.exists())]


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module imported anywhere in `source` (also importlib calls)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


def sql_strings(source: str) -> list[str]:
    """String constants (f-strings joined, `{}` for their holes) that look like SQL."""
    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
    return [t for t in texts if any(p.search(t) for p in SQL_PATTERNS)]


def _violations(files: list[Path], banned: set[str]) -> dict[str, list[str]]:
    out = {}
    for path in files:
        hits = sorted(imported_modules(path.read_text(encoding="utf-8")) & banned)
        if hits:
            out[_rel(path)] = hits
    return out


# ---------------------------------------------------------------------------- the checkers
def test_the_import_reader_sees_every_form_of_import() -> None:
    source = (
        "import duckdb\nimport sklearn.ensemble as e\nfrom shap import TreeExplainer\n"
        "def f():\n    import joblib\n    importlib.import_module('streamlit.runtime')\n"
        "__import__('pandas')\nfrom . import sibling\nfrom core.store import Store\n"
    )
    assert imported_modules(source) == {
        "duckdb",
        "sklearn",
        "shap",
        "joblib",
        "streamlit",
        "pandas",
        "core",
    }


@pytest.mark.parametrize(
    ("text", "is_sql"),
    [
        ("SELECT * FROM models", True),
        ("select * from read_parquet('x')", True),
        ("SELECT count(*)\n  FROM runs WHERE id = ?", True),
        ("select count(*) from runs", True),
        ("INSERT INTO audit VALUES (?)", True),
        ("UPDATE deployments SET name = ?", True),
        ("read_parquet('runs/*.parquet')", True),
        ("Select a model from the list", False),
        ("select one of the experiments from the table", False),
        ("Deleted from the registry", False),
        ("", False),
    ],
)
def test_the_sql_detector(text: str, is_sql: bool) -> None:
    assert bool(sql_strings(repr(text))) is is_sql


def test_the_sql_detector_reads_f_strings() -> None:
    assert sql_strings('f"SELECT {cols} FROM {table} WHERE id = {i}"')
    assert not sql_strings('f"Selected {n} models from {name}"')


def test_the_checked_files_include_the_thin_layers() -> None:
    front = {_rel(p) for p in _front_files()}
    assert {"core/cli.py", "core/api.py"} <= front
    assert {_rel(p) for p in _page_files()} <= front
    assert "core/store.py" in {_rel(p) for p in _product_files()}


# ---------------------------------------------------------------------------- the rules
def test_thin_layers_do_not_import_data_or_model_libraries() -> None:
    assert _violations(_front_files(), HEAVY) == {}, (
        "pages, app.py, core/cli.py and core/api.py call core; they do not use duckdb, "
        "sklearn, shap or joblib themselves"
    )


DUCKDB_MODULES = ("core/store.py", "core/pipeline_sql.py", "core/tables.py")


def test_only_the_store_and_the_pipeline_engine_import_duckdb() -> None:
    others = [p for p in _product_files() if _rel(p) not in DUCKDB_MODULES]
    assert _violations(others, {"duckdb"}) == {}, f"only {DUCKDB_MODULES} may import duckdb"
    for module in DUCKDB_MODULES:
        assert "duckdb" in imported_modules((ROOT / module).read_text())


def test_only_core_ui_imports_streamlit_inside_core() -> None:
    core = [
        p
        for p in ROOT.joinpath("core").rglob("*.py")
        if _rel(p) != "core/ui.py" and not p.name.startswith("ui_")
    ]
    assert _violations(core, {"streamlit"}) == {}, (
        "core modules other than core/ui.py and core/ui_*.py must not import streamlit"
    )


def test_pages_hold_no_sql() -> None:
    found = {_rel(p): sql_strings(p.read_text(encoding="utf-8")) for p in _page_files()}
    assert {k: v for k, v in found.items() if v} == {}, (
        "pages call core functions; SQL lives in core"
    )
