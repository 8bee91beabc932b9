"""What every page shares: navigation, page chrome, the acting user, errors and their steps in
the app's words, flashes, progress. core/ui/ is the only package inside core that imports
streamlit; one module per panel, and charts.py builds every chart."""

from __future__ import annotations

import contextlib
import importlib
import runpy
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd
import streamlit as st

from core import access, api_status, datasets, forms, projects, registry
from core.entities import Deployment, Model, Progress
from core.errors import ModelDeckError, Step, Unauthorized
from core.store import Store
from core.ui import charts
from core.worker import sidecars
from core.workspace import Workspace

T = TypeVar("T")
APP_PATH = Path(__file__).resolve().parents[2] / "app.py"
FLASH_KEY = "_modeldeck_flash"


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    url_path: str
    icon: str
    section: str
    default: bool = False


PAGES = [
    PageSpec("pages/home.py", "Overview", "", ":material/dashboard:", "", default=True),
    PageSpec("pages/datasets.py", "Datasets", "datasets", ":material/table_chart:", "Build"),
    PageSpec("pages/train.py", "Train", "train", ":material/model_training:", "Build"),
    PageSpec("pages/models.py", "Models", "models", ":material/inventory_2:", "Build"),
    PageSpec("pages/model.py", "Model", "model", ":material/insights:", "Build"),
    PageSpec(
        "pages/import_model.py", "Import a model", "import_model", ":material/upload_file:", "Build"
    ),
    PageSpec(
        "pages/deployments.py", "Deployments", "deployments", ":material/rocket_launch:", "Deploy"
    ),
    PageSpec(
        "pages/deployment.py", "Deployment", "deployment", ":material/deployed_code:", "Deploy"
    ),
    PageSpec("pages/results.py", "Run results", "results", ":material/table_view:", "Deploy"),
    PageSpec("pages/form.py", "Prediction form", "form", ":material/edit_note:", "Deploy"),
    PageSpec("pages/people.py", "People", "people", ":material/group:", "You"),
    PageSpec("pages/account.py", "Account", "account", ":material/person:", "You"),
]
# url_path must equal the file's stem: see leave_legacy_mode.


def leave_legacy_mode() -> None:
    """Make sure a page runs under app.py's st.navigation, not Streamlit's legacy pages mode.

    Streamlit starts in its legacy multipage mode whenever a `pages/` folder sits beside the
    main script, until some session calls st.navigation: a deep link such as /train then runs
    pages/train.py alone, without app.py (no navigation, no sidebar status). So a page that
    finds itself in that mode switches the process to st.navigation mode and runs app.py in its
    place, within the same run (a rerun would drop a pending button click). The URL path names
    the same page in both modes (url_path == file stem), so app.py renders the linked page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP_PATH), run_name="__main__")
        st.stop()


def navigation(store: Store) -> st.Page:
    """The app's pages for st.navigation, each reachable by its deep link, once someone is
    logged in; otherwise only the login page, at every page's address (so a deep link logs in
    and then opens the page it named). The session is resolved on every rerun."""
    from core.ui import auth

    user = auth.current_user(store)
    if user is None:
        form = _public_form(store)
        login = [
            st.Page(auth.login_page, title="Log in", url_path=auth.LOGIN_PAGE, default=True),
            *(
                st.Page(
                    auth.form_login_page if p is FORM else auth.login_page,
                    title="Log in",
                    url_path=p.url_path,
                )
                for p in PAGES
                if p.url_path and not (form and p is FORM)
            ),
        ]
        return st.navigation([*login, *([form] if form else [])], position="hidden")
    forget_project_names()
    auth.sidebar_account(user)
    sections: dict[str, list[st.Page]] = {}
    for p in PAGES:
        sections.setdefault(p.section, []).append(
            st.Page(p.path, title=p.title, url_path=p.url_path, icon=p.icon, default=p.default)
        )
    return st.navigation(sections)


FORM = next(p for p in PAGES if p.url_path == forms.PAGE)


def _public_form(store: Store) -> st.Page | None:
    """The form page when the query names a public deployment: the one page a visitor may open
    without a login (every other page, and the form of any other deployment, is the login
    page). The form checks the access level again on every run (a read kept until the next
    write to the store, which any change of the access level is)."""
    name = st.query_params.get("name")
    if not name or not cached_read(forms.is_public, store, name):
        return None
    return st.Page(FORM.path, title=FORM.title, url_path=FORM.url_path, icon=FORM.icon)


def is_logged_in() -> bool:
    """Whether this run's navigation() resolved a logged-in user."""
    return bool(st.session_state.get("modeldeck_user"))


def actor() -> str:
    """The logged-in user of this browser session. Every change a page makes is checked
    against this user's roles and audited as this user."""
    name = st.session_state.get("modeldeck_user")
    if not isinstance(name, str) or not name:
        raise Unauthorized("You are not logged in.", "Log in again.")
    return name


PROJECT_NAMES_KEY = "_modeldeck_project_names"


def forget_project_names() -> None:
    """Drop the project names read by the previous run (navigation() calls it on every run),
    so the first denial message of a run reads them afresh; pages without one skip the read."""
    st.session_state.pop(PROJECT_NAMES_KEY, None)


def project_role(store: Store, project_id: str) -> str | None:
    """The logged-in user's role in a project (admins: owner), None when not a collaborator.
    The roles come with the session (auth.current_user, on every run); a login through the
    identity provider reads them once per run."""
    from core.ui import auth

    roles = st.session_state.get(auth.ROLES_KEY)
    if roles is None:
        roles = st.session_state[auth.ROLES_KEY] = access.roles(store, actor())
    role = roles.get(project_id)
    return str(role) if role else None


def recheck_access(store: Store, project_id: str | None) -> None:
    """At the top of a fragment, whose reruns skip app.py: resolve the session again (cheap
    while the store is unchanged) and redraw the whole page, which then says why, when the user
    is logged out or may no longer read the project."""
    from core.ui import auth

    if auth.current_user(store) is None or (
        project_id is not None and project_role(store, project_id) is None
    ):
        st.rerun(scope="app")


def project_name(store: Store, project_id: str) -> str:
    if PROJECT_NAMES_KEY not in st.session_state:
        st.session_state[PROJECT_NAMES_KEY] = {
            p.id: p.name for p in cached_read(projects.list_projects, store)
        }
    return str(st.session_state[PROJECT_NAMES_KEY].get(project_id, project_id))


def denied(store: Store, project_id: str | None, action: str) -> str | None:
    """None when the logged-in user may do the action in the project (access.ACTIONS); else a
    sentence naming the role needed and the one the user has, for a disabled control's help.
    It mirrors access.require, which is what protects: a Forbidden raised anyway is shown."""
    if project_id is None:
        return None
    role = project_role(store, project_id)
    if access.allows(role, action):
        return None
    needed, doing = access.ACTIONS[action]
    has = f"you are {access.ROLE_WORDS[role]}" if role else "you are not a collaborator"
    return (
        f"{needed.capitalize()}s of project {project_name(store, project_id)} can {doing}; {has}."
    )


NEW_PROJECT = "New project…"


def project_picker(store: Store, action: str, key: str, label: str = "Project") -> str | None:
    """A choice of the projects where the logged-in user may do `action`, or a new project
    (any user may create one and owns it). Returns the project's name, or None (with a
    caption saying why) when nothing can be chosen yet."""
    names = {p.id: p.name for p in cached_read(projects.list_projects, store, visible_to=actor())}
    allowed = sorted(n for pid, n in names.items() if denied(store, pid, action) is None)
    wanted = st.query_params.get("project")
    options = [*allowed, NEW_PROJECT]
    chosen = st.selectbox(
        label,
        options,
        index=options.index(wanted) if wanted in options else 0,
        key=key,
        help="Projects where you may "
        f"{access.ACTIONS[action][1]}; a new project is yours (you become its owner).",
    )
    barred = sorted(set(names.values()) - set(allowed))
    if barred:
        needed = access.ACTIONS[action][0]
        st.caption(
            f"Not offered: {', '.join(barred)} (you need the {needed} role there to "
            f"{access.ACTIONS[action][1]}; ask an owner)."
        )
    if chosen != NEW_PROJECT:
        return str(chosen)
    typed = st.text_input("New project's name", key=f"{key}_new").strip()
    if not typed:
        st.caption("Name the new project; you will be its owner.")
        return None
    if typed in names.values():
        st.caption(
            f"Project {typed} exists: choose it above if you may {access.ACTIONS[action][1]}."
        )
        return None
    return typed


def no_access(store: Store, project_id: str | None, what: str) -> bool:
    """Say so and return True when the logged-in user may not read the project `what` (e.g.
    "deployment churn-staging") belongs to; its data is then not shown."""
    if project_id is None or project_role(store, project_id) is not None:
        return False
    name = project_name(store, project_id)
    st.warning(
        f"**You have no access to project {name}**, which {what} belongs to.\n\n"
        f"Ask an owner of {name} or an admin to add you as a collaborator.",
        icon=":material/lock:",
    )
    return True


def say_denied(why: str | None) -> None:
    """A caption under a disabled control saying who may use it."""
    if why:
        st.caption(f":material/lock: {why}")


def get_store() -> Store:
    """The workspace store. It holds no connection, so it is safe to call on every rerun."""
    return Store.open()


def cached_read(read: Callable[..., T], store: Store, *args: Any, **kwargs: Any) -> T:
    """`read(store, *args, **kwargs)`, kept until the next write to the store by any process
    (Store.version, taken before the read), so a rerun with nothing changed opens no
    connection. For core functions that only read the store and immutable files, never the
    clock, a heartbeat or a file that changes. The arguments are the key: a read that
    depends on who is logged in takes the user (`visible_to=actor()`)."""
    return _kept(read, store, (), args, kwargs)


def cached_log_read(read: Callable[..., T], store: Store, *args: Any, **kwargs: Any) -> T:
    """cached_read for a read of the prediction log as well as the store (traffic, usage): also
    dropped when the log changes (a call logged, a segment rotated or compacted), which a
    listing of its files with their sizes and times tells without reading them."""
    from core import prediction_log

    return _kept(read, store, prediction_log.state(store.workspace), args, kwargs)


def _kept(
    read: Callable[..., T],
    store: Store,
    files: tuple[object, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    version = store.version()
    if version is None:  # written within the last seconds: read, keep nothing
        return read(store, *args, **kwargs)
    key = tuple(sorted(kwargs.items()))
    name = f"{read.__module__}:{read.__qualname__}"
    return cast(T, _cached_read(name, str(store.workspace.home), (*version, *files), args, key))


@st.cache_data(max_entries=512, ttl=900, show_spinner=False)
def _cached_read(
    name: str,
    home: str,
    version: tuple[object, ...],
    args: tuple[Any, ...],
    kwargs: tuple[tuple[str, Any], ...],
) -> Any:
    module, _, qualname = name.partition(":")
    read = getattr(importlib.import_module(module), qualname)
    return read(Store.open(home), *args, **dict(kwargs))


def header(title: str, caption: str = "") -> None:
    """Every page starts here: leave legacy mode if needed, then the page title."""
    leave_legacy_mode()
    st.title(title)
    if caption:
        st.caption(caption)
    show_flash()


def flash(text: str) -> None:
    """Say what an action did at the top of the next run, which re-reads the state it changed."""
    st.session_state[FLASH_KEY] = ("success", text)


def flash_error(exc: ModelDeckError) -> None:
    """Show a ModelDeckError raised by a widget callback at the top of the next run."""
    st.session_state[FLASH_KEY] = ("error", exc)


def show_flash() -> None:
    """The message left by the previous run's action, once."""
    kind, item = st.session_state.pop(FLASH_KEY, (None, None))
    if kind == "success":
        st.success(item, icon="✅")
    elif kind == "error":
        show_error(item)


def act(action: Callable[[], str]) -> None:
    """Run a write from a widget callback (before the page renders, so the page shows its
    result at once) and flash what it did, or its error."""
    try:
        flash(action())
    except ModelDeckError as exc:
        flash_error(exc)


def literal(text: str) -> str:
    """`text` for st.markdown with its asterisks shown as typed (a cron expression's `*` would
    turn into italics); code spans in backticks are left alone."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("*", "\\*") for i, p in enumerate(parts))


# Each Step of core/errors.py in the app's words ({subject}: what it acts on).
STEP_WORDS = {
    "list-deployments": "The Deployments page lists them.",
    "list-versions": "The deployment's Versions section lists them.",
    "list-runs": "The Run results page lists every run.",
    "list-models": "The Models page lists them.",
    "list-datasets": "The Datasets page lists them.",
    "list-connections": "A deployment's Pipeline section lists its project's connections.",
    "list-validations": "The deployment's Validation section lists them.",
    "follow-run": "The Run results page follows it.",
    "start-worker": "Start it with `modeldeck worker`, or `make run`, which starts everything.",
    "validate": "Start one in the Validation section of '{subject}'.",
    "add-labels": "Add them in the Challenger section of '{subject}'.",
    "deploy-challenger": "Deploy again with a challenger from the Models page.",
    "set-schedule": "Set one in the Schedule section of '{subject}'.",
    "override-gate": "Type an override reason in the promote box.",
    "add-connection": "Add one in a deployment's Pipeline section.",
    "replace-connection": "Add it again in the Pipeline section with "
    "'Replace a connection of that name' ticked.",
    "allow-cleartext": "Allowing a cleartext password is a command-line option: "
    "`modeldeck connections add ... --replace --allow-cleartext-password`.",
    "test-connection": "Test it again with 'Test connection' in the Pipeline section.",
    "trust-pickle": "Tick 'I trust this file and want it loaded'.",
    "trust-type": "Tick each type you approve.",
    "choose-label": "Set the Label column field.",
    "give-data": "Upload a labelled file.",
}


def with_step(hint: str, step: Step | None) -> str:
    """A hint followed by its step in the app's words."""
    words = STEP_WORDS[step.action].format(subject=step.subject) if step else ""
    return " ".join(t for t in (hint, words) if t)


def hint_text(exc: ModelDeckError) -> str:
    """An error's hint with its step in the app's words."""
    return with_step(exc.hint, exc.step)


def show_error(exc: ModelDeckError) -> None:
    """A user-facing error: what is wrong, then how to fix it."""
    hint = hint_text(exc)
    st.error(f"**{literal(exc.message)}**" + (f"\n\n{literal(hint)}" if hint else ""), icon="⚠️")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Show a ModelDeckError raised inside the block as an error box instead of a traceback."""
    try:
        yield
    except ModelDeckError as exc:
        show_error(exc)


def progress_bar(label: str) -> Progress:
    """A Streamlit progress bar as a core Progress callback."""
    bar = st.progress(0.0, text=label)

    def update(fraction: float, text: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=text)

    return update


@st.cache_data(ttl=5, show_spinner=False)
def _api_status(home: str) -> sidecars.SidecarStatus:
    """Running when an API process of this workspace keeps its status file fresh (whatever
    its port); else what its default address answers. Cached for 5 s by workspace."""
    states = _api_states(home)
    fresh = [s for s in states if s.is_fresh()]
    if not fresh:
        return sidecars.api_status(api_status.api_url(states))
    served = len({name for s in fresh for name in s.deployments})
    pids = ", ".join(str(s.pid) for s in fresh)
    return sidecars.SidecarStatus(
        "API", True, f"running (pid {pids}), serving {served} deployment{'s' * (served != 1)}"
    )


@st.cache_data(ttl=5, show_spinner=False)
def _api_states(home: str) -> list[api_status.ApiState]:
    """The API processes' status files, read once per 5 s for the sidebar and the pages."""
    return api_status.read_states(Workspace(Path(home)))


def api_url(store: Store) -> str:
    """The address callers reach the API at (the running API's own)."""
    return api_status.api_url(_api_states(str(store.workspace.home)))


def sidebar_status(store: Store) -> None:
    """Workspace path and each sidecar's status, on every page."""
    with st.sidebar:
        st.caption(f"Workspace: `{store.workspace.home}`")
        for status in (
            sidecars.worker_status(store.workspace),
            _api_status(str(store.workspace.home)),
        ):
            mark = "🟢" if status.is_alive else "🔴"
            st.caption(f"{mark} {status.name}: {status.detail}")


def chart(spec: charts.Spec, key: str) -> None:
    """A chart of core/ui/charts.py (a Vega-Lite spec) across the page's width. Streamlit's
    Vega code is 0.8 MB of JavaScript, light enough to draw in a tab's first run (plotly's
    4.7 MB held a cold page back by ~1 s; docs/architecture.md, "How the app reads")."""
    st.vega_lite_chart(spec, width="stretch", key=key)


def link_table(
    data: pd.DataFrame | list[dict[str, Any]],
    link: str,
    key: str,
    column_config: dict[str, Any] | None = None,
    cell_links: dict[str, list[str]] | None = None,
) -> None:
    """A table whose `link` column holds "page?param=value": selecting a row opens that page
    in this browser tab. (A LinkColumn opens a new tab per click.) The column shows the value.
    `cell_links` maps other columns to one "page?param=value" per row: clicking such a cell
    opens its own page (any other cell, the row's)."""
    frame = pd.DataFrame(data)
    targets = [urllib.parse.urlsplit(str(t)) for t in frame.get(link, [])]
    if link in frame:
        frame[link] = [
            dict(urllib.parse.parse_qsl(t.query)).popitem()[1] if t.query else t.path
            for t in targets
        ]
    event = st.dataframe(
        frame,
        hide_index=True,
        key=key,
        on_select="rerun",
        selection_mode=["single-row", "single-cell"] if cell_links else "single-row",
        column_config=column_config,
    )
    named = f" (a cell of {', '.join(cell_links)}: its own link)" if cell_links else ""
    st.caption(f"Select a row to open it{named}.")
    rows = event.selection.rows if event else []
    cells = (event.selection.get("cells") or []) if event else []
    target = targets[rows[0]] if rows else None
    if cells:
        row, column = cells[0]
        own = (cell_links or {}).get(column)
        target = urllib.parse.urlsplit(own[row]) if own else targets[row]
    if target is not None:
        page = next(p.path for p in PAGES if p.url_path == target.path)
        st.switch_page(page, query_params=dict(urllib.parse.parse_qsl(target.query)))


def show_leaderboard(models: list[Model], key: str) -> None:
    """A version's models as a table: metrics, training time and size, each linking its page."""
    if not models:
        st.info("No models in this version: train again on the Train page.")
        st.page_link("pages/train.py", label="Train models", icon=":material/model_training:")
        return
    models = charts.ranked(models, charts.headline_metric(models[0].task))
    metric_names = [k for k in models[0].metrics if not k.endswith("_rows")]
    rows = [
        {
            "model": model_name(m),
            "id": f"model?id={m.id}",
            **{name: m.metrics.get(name) for name in metric_names},
            "train time (s)": round(m.train_seconds, 3),
            "size (KB)": round(m.size_bytes / 1024, 1),
            "origin": m.origin,
        }
        for m in models
    ]
    link_table(
        rows,
        "id",
        key,
        column_config={n: st.column_config.NumberColumn(n, format="%.4f") for n in metric_names},
    )


@st.cache_data(max_entries=4, show_spinner="Reading the dataset…")
def cached_frame(home: str, dataset_id: str) -> pd.DataFrame:
    """A dataset's snapshot; cached by id, which is safe because snapshots never change."""
    store = Store.open(home)
    return datasets.load_frame(store, datasets.get_dataset(store, dataset_id))


def show_model_list(models: list[Model], key: str) -> None:
    """Models of any experiments and tasks: where they belong and their headline metric."""
    rows = []
    for m in models:
        metric = charts.headline_metric(m.task)
        value = m.metrics.get(metric)
        rows.append(
            {
                "model": f"model?id={m.id}",
                "project": m.project,
                "experiment": m.experiment,
                "version": m.version,
                "algorithm": m.algorithm,
                "task": m.task,
                "headline metric": f"{metric} {value:.4f}"
                if value is not None
                else f"{metric} n/a",
                "created (UTC)": m.created_at,
            }
        )
    link_table(rows, "model", key)


def deploy_form(store: Store, model: Model, key: str) -> None:
    """Deploy `model` to staging or production, with an optional challenger of its experiment."""
    from core import deployments

    siblings = [
        m
        for m in cached_read(registry.list_models, store, experiment_id=model.experiment_id)
        if m.id != model.id
    ]
    left, right = st.columns(2)
    environment = left.radio(
        "Environment",
        ("staging", "production"),
        horizontal=True,
        key=f"{key}_env",
        help="Staging is optional: you may deploy straight to production.",
    )
    challenger = right.selectbox(
        "Challenger (runs in shadow)",
        [None, *siblings],
        key=f"{key}_challenger",
        format_func=lambda m: "none" if m is None else model_label(m),
    )
    project_id = next(
        (
            e.project_id
            for e in cached_read(registry.list_experiments, store)
            if e.id == model.experiment_id
        ),
        None,
    )
    why = denied(store, project_id, f"deploy-{environment}")
    say_denied(why)
    if st.button(
        f"Deploy to {environment}", type="primary", key=f"{key}_go", disabled=bool(why), help=why
    ):
        with guarded():
            deployed = deployments.deploy(
                store,
                model.id,
                environment,
                challenger_id=challenger.id if challenger else None,
                actor=actor(),
            )
            assert deployed.current is not None  # deploy always makes a current version
            st.success(f"Deployed as version {deployed.current.number} of {deployed.name}.")
            st.page_link(
                "pages/deployment.py",
                label=f"Open {deployed.name}",
                query_params={"name": deployed.name},
                icon=":material/deployed_code:",
            )


def download_results(run_id: str, which: str, key: str) -> None:
    """CSV and Parquet download buttons; the file is produced only when clicked."""
    from core import results

    store = get_store()
    for fmt, mime in (("csv", "text/csv"), ("parquet", "application/octet-stream")):

        def export(fmt: str = fmt) -> bytes:
            return results.export(store, run_id, fmt, which).read_bytes()

        st.download_button(
            f"Download {fmt.upper()}",
            key=f"{key}_{fmt}",
            mime=mime,
            file_name=f"{run_id}-{which}.{fmt}",
            on_click="ignore",
            data=export,
        )


def settings_table(values: dict[str, object], what: str) -> None:
    """A flat dict as a two-column table a person reads: "none" for None, lists joined."""

    def shown(value: object) -> str:
        if value is None:
            return "none"
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value)) or "none"
        return str(value)

    st.dataframe(
        pd.DataFrame({what: list(values), "value": [shown(v) for v in values.values()]}),
        hide_index=True,
    )


model_name = charts.model_name  # "linear · v1": every place the UI names a model


def model_label(model: Model) -> str:
    """The model named "linear · v1 (mdl_…)": its name's name with its id as detail."""
    return f"{model_name(model)} ({model.id})"


def model_names(store: Store, experiment_id: str | None = None) -> dict[str, str]:
    """Model id -> "linear · v1" (algorithm and version), for text a person reads; one read."""
    found = cached_read(registry.list_models, store, experiment_id=experiment_id)
    return {m.id: model_name(m) for m in found}


def named(names: dict[str, str], model_id: str | None, strong: bool = False) -> str:
    """A model as "linear · v1 (mdl_…)", from a model_names map (the name in bold with `strong`, for
    markdown); "none" without a model."""
    if not model_id:
        return "none"
    name = names.get(model_id, "unknown model")
    return f"{f'**{name}**' if strong else name} ({model_id})"


def section_link(d: Deployment, section: str, label: str) -> None:
    """A link to one section of a deployment's page (the next step an empty state offers)."""
    st.page_link(
        "pages/deployment.py",
        query_params={"name": d.name, "section": section},
        label=label,
        icon=":material/deployed_code:",
    )


def require_deployments(store: Store) -> list[Deployment]:
    """Every deployment; when there is none, say how to make one and stop the page."""
    from core import deployments

    found = cached_read(deployments.list_deployments, store, visible_to=actor())
    if not found:
        st.info("Nothing is deployed yet.")
        st.page_link(
            "pages/models.py", label="Choose a model to deploy", icon=":material/inventory_2:"
        )
        st.stop()
    return found
