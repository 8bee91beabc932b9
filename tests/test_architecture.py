"""The layering rules of STYLE.md and docs/architecture.md, read from the source with `ast`.

core is packaged by layer, and each layer imports only those before it:
kernel (core/errors, entities, workspace) -> store (core/store/) -> engine (core/engine/) ->
nouns (core/<noun>.py, acyclic among themselves) -> worker (core/worker/) -> front ends
(core/ui/, core/cli/, core/api/, which do not import each other) -> pages/ and app.py.
The import graph has no cycle; no module imports another module's `_private` names. Pages,
app.py, the CLI and the API are thin: they call core and never import the data or model
libraries; only the store and two engine modules import DuckDB; only core/ui imports streamlit
inside core, and nothing draws with plotly (charts are core/ui/charts.py's Vega-Lite specs);
pages hold no SQL. Nothing here skips: every file a folder gets is checked from then on.
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
    """The thin layers: pages, app.py, the CLI and the API."""
    fronts = [
        *ROOT.joinpath("core", "cli").rglob("*.py"),
        *ROOT.joinpath("core", "api").rglob("*.py"),
    ]
    return sorted([*_page_files(), ROOT / "app.py", *fronts])


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
    assert {"core/cli/main.py", "core/cli/deployments.py", "core/api/app.py", "app.py"} <= front
    assert {_rel(p) for p in _page_files()} <= front
    assert "core/store/__init__.py" in {_rel(p) for p in _product_files()}


# ---------------------------------------------------------------------------- the rules
def test_thin_layers_do_not_import_data_or_model_libraries() -> None:
    assert _violations(_front_files(), HEAVY) == {}, (
        "pages, app.py, core/cli/ and core/api/ call core; they do not use duckdb, "
        "sklearn, shap or joblib themselves"
    )


DUCKDB_MODULES = ("core/store/__init__.py", "core/engine/pipeline_sql.py", "core/engine/tables.py")


def test_only_the_store_and_the_pipeline_engine_import_duckdb() -> None:
    others = [p for p in _product_files() if _rel(p) not in DUCKDB_MODULES]
    assert _violations(others, {"duckdb"}) == {}, f"only {DUCKDB_MODULES} may import duckdb"
    for module in DUCKDB_MODULES:
        assert "duckdb" in imported_modules((ROOT / module).read_text())


def test_only_core_ui_imports_streamlit_inside_core() -> None:
    core = [p for p in ROOT.joinpath("core").rglob("*.py") if not _rel(p).startswith("core/ui/")]
    assert _violations(core, {"streamlit"}) == {}, "only core/ui/ imports streamlit inside core"


def test_nothing_draws_with_plotly() -> None:
    assert _violations(_product_files(), {"plotly"}) == {}, (
        "charts are Vega-Lite specs built in core/ui/charts.py: the first plotly chart of a "
        "browser tab loads 4.7 MB of JavaScript (docs/architecture.md, How the app reads)"
    )


def test_pages_hold_no_sql() -> None:
    found = {_rel(p): sql_strings(p.read_text(encoding="utf-8")) for p in _page_files()}
    assert {k: v for k, v in found.items() if v} == {}, (
        "pages call core functions; SQL lives in core"
    )


# ---------------------------------------------------------------------------- the import graph
KERNEL = {"core", "core.errors", "core.entities", "core.workspace"}
# The order of the layers; a module may import its own layer's package and those before it.
RANKS = {"kernel": 0, "store": 1, "engine": 2, "nouns": 3, "worker": 4, "front": 5, "pages": 6}


def module_name(path: Path) -> str:
    """`core/engine/tables.py` -> `core.engine.tables`; a package's `__init__` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, str]:
    """(layer, package): the package is what a module may import within its own layer."""
    parts = module.split(".")
    if parts[0] != "core":
        return "pages", "pages"
    if module in KERNEL:
        return "kernel", "core"
    package = parts[1]
    if package in ("store", "engine", "worker"):
        return package, package
    if package in ("ui", "cli", "api"):
        return "front", package
    return "nouns", "nouns"


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the product modules it imports, from {module name: source}. `from a import b`
    points at `a.b` when that is a module, else at `a`; relative imports are resolved."""
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, source in files.items():
        package = name if name in {m.rsplit(".", 1)[0] for m in files if "." in m} else None
        for node in ast.walk(ast.parse(source)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = (package or name.rsplit(".", 1)[0]).split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in files]
                if len(targets) < len(subs):
                    targets.append(base)
            for target in targets:
                while target and target not in files:  # `import core.engine.tables` style
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def against_the_layers(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a later layer, or of another package of the same layer."""
    out = []
    for module, targets in sorted(graph.items()):
        layer, package = layer_of(module)
        for target in sorted(targets):
            t_layer, t_package = layer_of(target)
            if RANKS[t_layer] > RANKS[layer] or (
                RANKS[t_layer] == RANKS[layer] and t_package != package
            ):
                out.append(f"{module} ({layer}) imports {target} ({t_layer})")
    return out


def private_imports(files: dict[str, str]) -> list[str]:
    """`from core.x import _name` and `x._name` on an imported product module, across modules."""
    out = []
    for name, source in files.items():
        aliases: dict[str, str] = {}
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in files:
                        aliases[alias.asname or alias.name] = full
                    elif _private(alias.name) and node.module in files and node.module != name:
                        out.append(f"{name} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in files:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != name
                and _private(node.attr)
            ):
                out.append(f"{name} uses {aliases[node.value.id]}.{node.attr}")
    return sorted(set(out))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _product_sources() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in _product_files()}


def test_the_graph_reader_resolves_every_form_of_import() -> None:
    files = {
        "core": "",
        "core.store": "",
        "core.engine": "",
        "core.engine.tables": "from core.store import Store\n",
        "core.runs": "from core import store\nimport core.engine.tables\n",
        "core.cli": "",
        "core.cli.main": "from . import output\nfrom core.cli import output as o\n",
        "core.cli.output": "from .. import runs\n",
        "pages.home": "from core.engine import tables, helper\n",
    }
    assert import_graph(files) == {
        "core": set(),
        "core.store": set(),
        "core.engine": set(),
        "core.engine.tables": {"core.store"},
        "core.runs": {"core.store", "core.engine.tables"},
        "core.cli": set(),
        "core.cli.main": {"core.cli.output"},
        "core.cli.output": {"core.runs"},
        "pages.home": {"core.engine.tables", "core.engine"},
    }


def test_tarjan_finds_every_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("core.errors", "kernel"),
        ("core.store", "store"),
        ("core.store.migrations", "store"),
        ("core.engine.tables", "engine"),
        ("core.runs", "nouns"),
        ("core.worker.loop", "worker"),
        ("core.ui.charts", "front"),
        ("core.cli.main", "front"),
        ("core.api.app", "front"),
        ("pages.home", "pages"),
        ("app", "pages"),
    ],
)
def test_every_module_has_its_layer(module: str, layer: str) -> None:
    assert layer_of(module)[0] == layer


def test_the_layer_rule_refuses_upward_and_sideways_imports() -> None:
    graph = {
        "core.engine.tables": {"core.runs"},  # engine -> nouns: upward
        "core.ui.deployment": {"core.cli.output"},  # ui -> cli: sideways between front ends
        "core.runs": {"core.deployments", "core.engine.tables"},  # fine
        "core.cli.main": {"core.cli.output", "core.worker.loop"},  # fine
    }
    assert against_the_layers(graph) == [
        "core.engine.tables (engine) imports core.runs (nouns)",
        "core.ui.deployment (front) imports core.cli.output (front)",
    ]


def test_the_private_name_rule_sees_both_forms() -> None:
    files = {
        "core.drift": "def _quote(x): ...\n",
        "core.validation": (
            "from core.drift import _quote\nfrom core import drift\ndrift._feature(1)\n"
        ),
        "core": "__version__ = '1'\n",
        "core.api.app": "from core import __version__\n",
    }
    assert private_imports(files) == [
        "core.validation imports core.drift._quote",
        "core.validation uses core.drift._feature",
    ]


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph(_product_sources())) == []


def test_every_import_follows_the_layer_order() -> None:
    assert against_the_layers(import_graph(_product_sources())) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports(_product_sources()) == []


RUN_WRITES = re.compile(r"\b(UPDATE\s+runs\b|INSERT\s+INTO\s+runs\b|DELETE\s+FROM\s+runs\b)", re.I)


def test_only_core_runs_changes_a_run() -> None:
    found = {
        _rel(p): hits
        for p in _product_files()
        if _rel(p) != "core/runs.py"
        and (hits := [t for t in sql_strings(p.read_text()) if RUN_WRITES.search(t)])
    }
    assert found == {}, "every status or summary change of a run goes through core/runs.py"


def test_every_module_is_on_the_architecture_page() -> None:
    page = ROOT.joinpath("docs", "architecture.md").read_text(encoding="utf-8")
    layout = page[page.index("## Layout") : page.index("\n## ", page.index("## Layout") + 1)]
    missing = [
        _rel(p)
        for p in sorted(ROOT.joinpath("core").rglob("*.py"))
        if p.stem not in ("__init__", "__main__")
        and "migrations" not in p.parts
        and not re.search(rf"\b{p.stem}\b", layout)
    ]
    assert missing == [], "docs/architecture.md's Layout names every module of core"


def _joins_onto_a_run_folder(source: str) -> list[str]:
    """`results_dir(...) / x` and `runs_dir / x` expressions: a file name under runs/<id>/
    spelled outside its one layout (core/workspace.py RunFolder)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = node.left
            called = isinstance(left, ast.Call) and getattr(left.func, "attr", None) in (
                "results_dir",
            )
            called = called or (
                isinstance(left, ast.Call) and getattr(left.func, "id", None) == "results_dir"
            )
            attr = isinstance(left, ast.Attribute) and left.attr == "runs_dir"
            if called or attr:
                found.append(ast.unparse(node))
    return found


def test_the_run_folder_layout_is_written_once() -> None:
    assert _joins_onto_a_run_folder("p = runs.results_dir(ws, r) / 'x.json'\nq = ws.runs_dir / r\n")
    found = {
        _rel(p): hits
        for p in _product_files()
        if _rel(p) != "core/workspace.py"
        and (hits := _joins_onto_a_run_folder(p.read_text(encoding="utf-8")))
    }
    assert found == {}, "name a run's files in core/workspace.py RunFolder"
