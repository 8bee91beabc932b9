"""Account: who you are, your projects, and changing your password."""

import streamlit as st

from core import access, projects, ui, users
from core.errors import InvalidInput
from core.ui import auth
from core.ui.keys import key_panel

ui.header("Account")
store = ui.get_store()
me = auth.account()
st.markdown(
    f"**{me.display_name}** · `{me.username}` · instance {me.role}"
    + (f" · {me.email}" if me.email else "")
)
roles = ui.cached_read(access.roles, store, me.username)
names = {
    p.id: p.name for p in ui.cached_read(projects.list_projects, store, visible_to=me.username)
}
st.dataframe(
    [{"project": names.get(pid, pid), "your role": role} for pid, role in roles.items()],
    hide_index=True,
)


def change_password() -> str:
    state = st.session_state
    new, again = str(state.get("pw_new", "")), str(state.get("pw_again", ""))
    if new != again:
        raise InvalidInput("The two new passwords differ.", "Type the new password twice.")
    ended = users.set_password(
        store,
        me.username,
        new,
        actor=ui.actor(),
        current_password=str(state.get("pw_current", "")),
        keep_session=auth.session_token(),
    )
    others = "other session" if ended == 1 else "other sessions"
    return f"Password changed. {ended} {others} ended; this one stays logged in."


st.subheader("API keys")
st.caption(
    "Programs call deployments over the REST API with one of your keys "
    "('Authorization: Bearer mdk_…'); a key can do what you may do."
)
key_panel(store)

st.subheader("Change your password")
with st.form("password", clear_on_submit=True):
    st.text_input("Current password", type="password", key="pw_current")
    st.text_input(
        "New password",
        type="password",
        key="pw_new",
        help=f"At least {users.MIN_PASSWORD} characters.",
    )
    st.text_input("New password again", type="password", key="pw_again")
    st.form_submit_button(
        "Change password", type="primary", on_click=ui.act, args=(change_password,)
    )
