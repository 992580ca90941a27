"""The heavy third-party imports, done once per server process before any page runs.

Streamlit runs each session's script in its own thread. Some libraries look another one up in
``sys.modules`` without importing it: plotly's validators and JSON encoder ask for pandas that
way to test whether a value is a ``pandas.Series``. While one session's thread is still
importing pandas (``st.dataframe`` does it on first use), that lookup returns the half-made
module and a second session's chart fails with "partially initialized module 'pandas' has no
attribute 'Series'". ``app.py`` calls ``ensure()`` before anything else: the first session
imports everything under a lock, and sessions arriving meanwhile wait for it to finish.
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["MODULES", "ensure"]

# What pages import or use lazily, plus what is looked up in sys.modules without an import:
# pandas, PIL.Image (plotly) and matplotlib.pyplot (captum imports it; Streamlit closes its
# figures after every run).
MODULES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "PIL.Image",
    "plotly.graph_objects",
    "plotly.io",
    "plotly.subplots",
    "torchvision",
    "captum.attr",
    "matplotlib.pyplot",
)

_lock = threading.Lock()
_done = False


def ensure() -> None:
    """Import ``MODULES`` and draw one tiny figure, once; cheap on every later call."""
    global _done
    if _done:  # read without the lock: once True it stays True
        return
    with _lock:
        if _done:
            return
        for name in MODULES:
            importlib.import_module(name)
        # plotly loads each trace's validators and its JSON encoder on the first figure.
        go = importlib.import_module("plotly.graph_objects")
        go.Figure(go.Scatter(x=[0.0], y=[0.0])).to_json()
        _done = True
