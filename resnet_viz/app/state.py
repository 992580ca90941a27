"""Per-user state: every ``st.session_state`` key the pages use, and what is read through them.

Per-user state lives in ``st.session_state`` under the keys of ``Keys``, never in module
globals: Streamlit shares imported modules between every user.
"""

from __future__ import annotations

import streamlit as st

from resnet_viz.config import DataConfig, ModelConfig
from resnet_viz.data.sources import default_source


class Keys:
    """Every st.session_state key the pages use, in one place."""

    WATCHED_RUN = "watched_run_id"
    DATA_CONFIG = "data_config"
    DATA_DEFAULT = "data_default"  # the server's default when DATA_CONFIG was last read
    BUILD_CONFIG = "build_config"
    MESSAGE = "flash_message"
    ERROR = "flash_error"  # a button callback's error, shown where the page draws ``show_error``
    DOWNLOAD_ERROR = "download_error"  # why the CIFAR-10 download could not start (``cifar_download``)
    VISITOR = "visitor"  # who this session is (``app.visitors``)
    VISITOR_TOKEN = "visitor_token"  # their signed URL token, when no cookie tells the browser
    LINK_SEEN = "link_seen"  # query parameter -> the value last taken from or written to the URL (``app.links``)


def data_config() -> DataConfig:
    """The data set this user chose (the default source until they choose one).

    A user on the default follows it when it changes: once someone downloads CIFAR-10, every
    session that was on the synthetic default moves to it on its next run, without a restart."""
    now, then = default_source(), st.session_state.get(Keys.DATA_DEFAULT)
    if Keys.DATA_CONFIG not in st.session_state or st.session_state[Keys.DATA_CONFIG] == then:
        st.session_state[Keys.DATA_CONFIG] = now
    st.session_state[Keys.DATA_DEFAULT] = now
    return st.session_state[Keys.DATA_CONFIG]


def build_config() -> ModelConfig:
    """The network the Build page shows and the Train page trains."""
    return st.session_state.get(Keys.BUILD_CONFIG) or ModelConfig()


def flash(message: str) -> None:
    """Show ``message`` once on the next rerun (e.g. after a button that reruns)."""
    st.session_state[Keys.MESSAGE] = message


def show_flash() -> None:
    msg = st.session_state.pop(Keys.MESSAGE, None)
    if msg:
        st.toast(msg)
