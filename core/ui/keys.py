"""The API key generator: create (shown once), list and revoke your keys, on the Account page
and on a deployment's page (a key limited to that deployment)."""

from __future__ import annotations

import streamlit as st

from core import keys
from core.entities import Deployment
from core.store import Store
from core.ui import act, actor, api_url, cached_read

SHOWN_ONCE = "_modeldeck_new_key"  # the secret of the key just created, shown on one run


def has_new_key(deployment: Deployment | None = None) -> bool:
    """Whether a key was just created here and waits to be shown (keep its panel open)."""
    return f"{SHOWN_ONCE}_{deployment.id if deployment else 'all'}" in st.session_state


def key_panel(store: Store, deployment: Deployment | None = None) -> None:
    """Your keys (of this deployment, or all of them) with a form to create one."""
    scope = deployment.id if deployment else "all"
    secret = st.session_state.pop(f"{SHOWN_ONCE}_{scope}", None)
    if secret:
        st.warning(
            "**Copy your new key now: it is shown only this once.** ModelDeck keeps only a "
            "keyed hash of it; if it is lost, revoke it and create another.",
            icon=":material/key:",
        )
        st.code(secret, language=None)
        if deployment is not None:
            st.code(
                f"curl -X POST {api_url(store)}/v1/deployments/{deployment.name}/invocations \\\n"
                f'  -H "Authorization: Bearer {secret}" -H "Content-Type: application/json" \\\n'
                "  -d '{\"dataframe_records\": [{...}]}'",
                language="bash",
            )

    def create() -> str:
        name = str(st.session_state.get(f"key_name_{scope}", "")).strip()
        only = (
            deployment.name
            if deployment is not None and st.session_state.get(f"key_only_{scope}")
            else None
        )
        made = keys.create_key(store, name, deployment=only, actor=actor())
        st.session_state[f"{SHOWN_ONCE}_{scope}"] = made.secret
        st.session_state[f"key_name_{scope}"] = ""
        where = f", for {only} only" if only else ""
        return f"Created the key '{made.key.name}'{where}."

    with st.form(f"new_key_{scope}", border=True):
        st.markdown("**Create an API key**")
        st.text_input(
            "What will use it", key=f"key_name_{scope}", placeholder="e.g. nightly scoring job"
        )
        if deployment is not None:
            st.checkbox(
                f"Only for {deployment.name}",
                value=True,
                key=f"key_only_{scope}",
                help="A key limited to one deployment cannot call any other.",
            )
        st.form_submit_button("Create key", on_click=act, args=(create,))

    mine = [
        k
        for k in cached_read(keys.list_keys, store, actor=actor())
        if deployment is None or k.deployment_id in (None, deployment.id)
    ]
    if not mine:
        st.caption("You have no API key yet" + (" that can call it." if deployment else "."))
        return
    for key in mine:
        left, right = st.columns([5, 1], vertical_alignment="center")
        used = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never used"
        only = f" · only {key.deployment_name}" if key.deployment_id else " · any deployment"
        state = f" · revoked by {key.revoked_by}" if key.revoked_at else ""
        left.markdown(f"`{key.shown}…` **{key.name}**{only} · {used}{state}")
        if key.active:

            def revoke(key_id: str = key.id, name: str = key.name) -> str:
                keys.revoke_key(store, key_id, actor=actor())
                return f"Revoked the key '{name}': calls with it now get 401."

            right.button("Revoke", key=f"revoke_{scope}_{key.id}", on_click=act, args=(revoke,))
