"""Home: what ResNet Lab is, and the model the sliders build."""

import streamlit as st

from resnet_viz.config import SHORTCUT_HELP, SHORTCUTS, ModelConfig
from resnet_viz.summary import summarize

st.title("ResNet Lab")
st.markdown(
    "Deeper plain networks train **worse** than shallow ones: the *degradation problem* of "
    "He et al. (2015). Residual networks add an identity path around every block, "
    "y = F(x) + x, and the problem goes away. Build one, train it on CIFAR-10 and look inside."
)
n = st.slider("Blocks per stage (n)", 1, 18, 3, help="depth = 6n + 2")
shortcut = st.radio("Shortcut", SHORTCUTS, index=1, horizontal=True, format_func=lambda s: s)
st.caption(SHORTCUT_HELP[shortcut])
s = summarize(ModelConfig(depth=6 * n + 2, shortcut=shortcut))
c1, c2, c3 = st.columns(3)
c1.metric("Layers", s.depth)
c2.metric("Parameters", f"{s.params:,}")
c3.metric("MFLOPs per image", f"{s.flops / 1e6:.1f}")
