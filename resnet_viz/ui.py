"""The only library module that imports Streamlit: session keys, shared resources, widgets.

Per-user state lives in ``st.session_state`` under the keys defined here, never in
module globals (Streamlit shares imported modules across every user). The job registry
is one per server process through ``st.cache_resource``, so a reloaded page or a second
tab finds the training that is still going.
"""

from __future__ import annotations

import streamlit as st

from .data import describe_default_source, default_source
from .device import describe_device, pick_device
from .jobs import JobRegistry
from .runs import default_runs_dir


class Keys:
    """Every st.session_state key the pages use, in one place."""

    WATCHED_RUN = "watched_run_id"
    DATA_CONFIG = "data_config"


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    return JobRegistry(default_runs_dir())


def data_config():
    if Keys.DATA_CONFIG not in st.session_state:
        st.session_state[Keys.DATA_CONFIG] = default_source()
    return st.session_state[Keys.DATA_CONFIG]


def sidebar() -> None:
    """What every page shows: the data set in use, the device, the run being watched."""
    with st.sidebar:
        cfg = data_config()
        label = describe_default_source() if cfg == default_source() else f"{cfg.source}: {cfg.path or ''}"
        if cfg.source == "synthetic":
            st.warning(f"Data: {label}", icon=":material/science:")
        else:
            st.info(f"Data: {label}", icon=":material/dataset:")
        st.caption(f"Device: {describe_device(pick_device('auto'))}")
        job = job_registry().active()
        if job is not None:
            snap = job.snapshot()
            st.caption(f"Training: {snap.label} ({snap.state}, {snap.progress:.0%})")
