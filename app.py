"""ModelDeck: page config, navigation and sidebar status. Everything else lives in pages/."""

import streamlit as st

from core import ui

st.set_page_config(page_title="ModelDeck", page_icon=":material/deployed_code:", layout="wide")
page = ui.navigation()
ui.sidebar_status(ui.get_store())
page.run()
