"""ModelDeck: page config, login, navigation and sidebar status. Everything else lives in pages/."""

import streamlit as st

from core import ui

st.set_page_config(page_title="ModelDeck", page_icon=":material/deployed_code:", layout="wide")
store = ui.get_store()
page = ui.navigation(store)
if ui.is_logged_in():  # the workspace and sidecars are not shown to strangers
    ui.sidebar_status(store)
page.run()
