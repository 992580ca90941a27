"""ResNet Lab: `streamlit run app.py`."""

import streamlit as st

from resnet_viz.app import preload, state, visitors, widgets

# Before anything else: concurrent first sessions must not see a half-imported pandas (see preload).
preload.ensure()
st.set_page_config(page_title="ResNet Lab", page_icon=":material/account_tree:", layout="wide")
pages = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/build.py", title="Build", icon=":material/construction:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("app_pages/inspect.py", title="Inspect", icon=":material/visibility:"),
    st.Page("app_pages/explain.py", title="Explain", icon=":material/lightbulb:"),
    st.Page("app_pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("app_pages/imagenet.py", title="ImageNet ResNets", icon=":material/photo_camera:"),
]
nav = st.navigation(pages)
visitors.visitor()  # who this session is, before any page asks (and its URL token, if it has one, kept)
visitors.keep_in_url()
widgets.sidebar()
state.show_flash()
nav.run()
