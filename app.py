"""ResNet Lab: `streamlit run app.py`."""

import streamlit as st

from resnet_viz import ui

st.set_page_config(page_title="ResNet Lab", page_icon=":material/account_tree:", layout="wide")
ui.sidebar()
nav = st.navigation([st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)])
nav.run()
