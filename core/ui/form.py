"""A deployment's prediction form (`/form?name=…`): one input per feature, the prediction, its
probabilities and the row's SHAP explanation; every submission is logged like an API call.

The page is the one page a visitor may open without a login, for a public deployment only
(`ui.navigation`); the access level is checked again here on every run (`forms.check_access`,
kept until the next write to the store: any change of access, role or user is one).
The model is loaded once per (deployment, version) in this process, so a rollback is followed
at the next run; the prediction log writer is this process's own segment.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from core import api_status, deployments, forms, prediction_log, projects, serving, ui
from core.engine.profiles import plain_number
from core.entities import Deployment
from core.errors import ModelDeckError
from core.store import Store, utcnow
from core.ui import auth, charts
from core.ui import explain as ui_explain

RESULT_KEY = "_modeldeck_form_result"


@st.cache_resource(show_spinner=False)
def _log(home: str) -> prediction_log.PredictionLog:
    """This process's prediction log segment (one writer per process, as the API has)."""
    return prediction_log.PredictionLog(Store.open(home).workspace)


@st.cache_resource(max_entries=16, show_spinner="Loading the model…")
def _endpoint(home: str, deployment_id: str, version: int, _d: Deployment) -> serving.Endpoint:
    """The model of one deployment version, loaded once; a rollback asks for another key."""
    return forms.endpoint(Store.open(home), _d)


def form_url(name: str) -> str:
    """The form's shareable address: absolute when this run knows the browser's URL."""
    path = f"{auth.base_path()}/{forms.form_path(name)}"
    url = st.context.url if isinstance(st.context.url, str) else ""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{path}" if parts.scheme and parts.netloc else path


def who_may_use(store: Store, d: Deployment) -> str:
    """The form's audience in words, from the deployment's access level."""
    if d.access == "public":
        return "anyone with the link, without logging in"
    if d.access == "instance":
        return "every logged-in user"
    return (
        f"collaborators of project {ui.cached_read(projects.get_project, store, d.project_id).name}"
    )


def share_box(store: Store, d: Deployment) -> None:
    """The deployment page's link to its form, with the address to share and who may use it."""
    st.page_link(
        "pages/form.py",
        query_params={"name": d.name},
        label="Open the prediction form",
        icon=":material/edit_note:",
    )
    st.caption(f"Share it: {form_url(d.name)} · open to {who_may_use(store, d)}.")


START_API = "start it with `modeldeck up` (or `modeldeck api`)"


def api_running(store: Store, d: Deployment) -> api_status.Running:
    """Whether the API answers for the deployment, from the API processes' status files (and
    how to start it when none runs)."""
    return said(api_status.running(api_status.read_states(store.workspace), d))


HEALTH_HOURS = 24  # the window of the models' answering status on General


def model_statuses(store: Store, d: Deployment) -> dict[str, dict[str, str]]:
    """By role ("main", "challenger"), in words: whether the API has the model loaded, its
    calls and errors on the current version over the last HEALTH_HOURS, its last error."""
    if d.current is None:
        return {}
    loaded = api_status.model_states(api_status.read_states(store.workspace), d)
    answered = _health(str(store.workspace.home), d.id, d.current.number)
    found = {}
    for role, words in loaded.items():
        h = answered.get(role)
        found[role] = {
            "API": words,
            f"calls ({HEALTH_HOURS} h)": (
                "none" if h is None else f"{h.calls:,} ({h.errors:,} failed)"
            ),
            "last error": (
                "none"
                if h is None or h.last_error_at is None
                else f"{h.last_error_at:%Y-%m-%d %H:%M} UTC: {h.last_error or 'no reason logged'}"
            ),
        }
    return found


@st.cache_data(ttl=5, show_spinner=False)
def _health(home: str, deployment_id: str, version: int) -> dict[str, prediction_log.Health]:
    """The prediction log's answer, kept a few seconds: the log grows without a store write."""
    since = utcnow() - timedelta(hours=HEALTH_HOURS)
    return prediction_log.health(Store.open(home).workspace, deployment_id, version, since)


def said(found: api_status.Running) -> api_status.Running:
    """The verdict in the app's words: how to start the API when none runs."""
    return replace(found, words=f"{found.words} — {START_API}") if found.stopped else found


def user() -> str | None:
    """The logged-in user, or None for a visitor of a public form."""
    name = st.session_state.get("modeldeck_user")
    return name if ui.is_logged_in() and isinstance(name, str) else None


def form_page(store: Store) -> None:
    """The whole page below its header."""
    name = st.query_params.get("name") or ""
    if not name:
        st.info("Open a form from a deployment's link: `form?name=<deployment>`.")
        for d in deployments.list_deployments(store, visible_to=user()) if user() else []:
            st.page_link(
                "pages/form.py",
                query_params={"name": d.name},
                label=f"{d.name} ({d.environment}, {d.access})",
                icon=":material/edit_note:",
            )
        return
    try:
        # kept until the next write (a role, the access level, a deletion): refusals are not
        d = ui.cached_read(forms.open_form, store, name, user())
        served = _endpoint(str(store.workspace.home), d.id, d.current.number if d.current else 0, d)
    except ModelDeckError as exc:
        ui.show_error(exc)
        return
    st.caption(
        f"Deployment **{d.name}** ({d.environment}), version {served.version}: predicts "
        f"**{served.main.schema.target}** ({served.main.task}). Defaults are the training "
        "median or most common value; each field says its training range."
    )
    fields = forms.fields(served.main)
    with st.form(f"form_{d.id}"):
        columns = st.columns(2)
        values = {}
        for i, f in enumerate(fields):
            with columns[i % 2]:
                values[f.name] = _input(f, served.main.id)
                st.caption(f.hint)
        missing = st.multiselect(
            "Leave missing",
            [f.name for f in fields],
            key=f"form_{served.main.id}_missing",
            placeholder="none",
            help="Features whose value you do not know: the model fills them in as it did in "
            "training (the median, or the most frequent category).",
        )
        submitted = st.form_submit_button("Predict", type="primary")
    if submitted:
        _submit(store, served, fields, {**values, **dict.fromkeys(missing)})
    shown = st.session_state.get(RESULT_KEY)
    if shown and shown[0] == (d.id, served.version):
        show_prediction(served, fields, shown[1], shown[2])


def _input(f: forms.Field, model_id: str) -> Any:
    key = f"form_{model_id}_{f.name}"
    if f.kind == "category":
        options = list(f.categories)
        return st.selectbox(
            f.name,
            options,
            index=options.index(f.default) if f.default in options else None,
            key=key,
            help=f"{f.hint}. Type a value the model has not seen to try it (it then counts "
            "as an unknown category).",
            accept_new_options=True,
            placeholder="Choose or type a value",
        )
    if f.kind == "flag":
        return st.selectbox(
            f.name, [True, False], index=0 if f.default else 1, key=key, help=f.hint
        )
    integer = f.kind == "integer"
    return st.number_input(
        f.name,
        value=f.default,
        step=1 if integer else None,
        format=None if integer else "%g",
        key=key,
        placeholder="missing",
    )


def _submit(
    store: Store, served: serving.Endpoint, fields: list[forms.Field], values: dict[str, Any]
) -> None:
    row = {f.name: forms.clean(f, values[f.name]) for f in fields}
    try:
        done = forms.predict(served, row, user())
    except ModelDeckError as exc:
        st.session_state.pop(RESULT_KEY, None)
        ui.show_error(exc)
        return
    log = _log(str(store.workspace.home))
    log.write(done.record)  # logged before it is shown, as the API does
    if done.challenger_record is not None:
        log.write(done.challenger_record)
    st.session_state[RESULT_KEY] = ((served.deployment.id, served.version), row, done)


def show_prediction(
    served: serving.Endpoint,
    fields: list[forms.Field],
    row: dict[str, Any],
    done: forms.Prediction,
) -> None:
    """The answer: the prediction in words, the probabilities, the explanation."""
    target = served.main.schema.target
    with st.container(border=True):
        e = done.explanation
        if e is not None:
            st.markdown(ui_explain.headline(e, target))
        else:
            st.markdown(f"**Predicted {target} = {charts.value_text(done.prediction)}**")
        for note in _notes(fields, row):
            st.caption(note)
        if done.probabilities:
            _probabilities(done.probabilities)
        if e is not None:
            st.caption(ui_explain.scale_sentence(e))
            ui.chart(charts.explanation_figure(e), key="form_explanation")
            st.caption(
                f"Average row {plain_number(e.base_value)} + contributions = this row "
                f"{plain_number(e.output)} ({e.scale}); green pushes the prediction up, "
                f"blue pushes it down. Model {ui.model_label(served.main)}."
            )
            if e.note:
                st.info(e.note)
        elif done.explain_error:
            st.warning(f"The explanation could not be computed: {done.explain_error}")
        st.caption(f"Request `{done.record['request_id']}`, logged like an API call.")


def _notes(fields: list[forms.Field], row: dict[str, Any]) -> list[str]:
    notes = []
    for f in fields:
        value = row.get(f.name)
        if f.out_of_range(value):
            notes.append(
                f":material/warning: {f.name} = {charts.value_text(value)} is outside the "
                f"training range ({plain_number(f.low or 0)} to {plain_number(f.high or 0)}): "
                "the model extrapolates."
            )
        elif f.kind == "category" and value is not None and value not in f.categories:
            notes.append(
                f":material/warning: {f.name} = {value} was not seen in training: the model "
                "treats it as an unknown category."
            )
    return notes


def _probabilities(probabilities: dict[str, float]) -> None:
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    st.dataframe(
        pd.DataFrame(
            {
                "class": [c for c, _ in ranked],
                "probability": [p for _, p in ranked],
                "in words": [f"{charts.percent(p)} likely" for _, p in ranked],
            }
        ),
        hide_index=True,
        column_config={
            "probability": st.column_config.ProgressColumn(
                "probability", min_value=0.0, max_value=1.0, format="percent"
            )
        },
    )
