"""Build: choose depth, shortcut, block type and width of a CIFAR ResNet and see the network it
makes; or look at torchvision's ImageNet ResNet-18/34/50 (basic against bottleneck blocks)."""

import streamlit as st

from resnet_viz import plots
from resnet_viz.app import compute, links, state
from resnet_viz.config import (
    BLOCKS,
    LAYERS_PER_BLOCK,
    PAD_HELP,
    PADS,
    SHORTCUT_HELP,
    SHORTCUTS,
    ModelConfig,
    depth_for,
)
from resnet_viz.nets import imagenet

CIFAR, IMAGENET = "CIFAR ResNet (section 4.2)", "ImageNet ResNet (Table 1)"
WIDTHS, MAX_BLOCKS = [1, 2, 4], 36


title = st.empty()
family = st.segmented_control("Family", (CIFAR, IMAGENET), default=CIFAR, required=True,
                              key=links.seeded("family", "build_family", (CIFAR, IMAGENET)),
                              persist_state="session", label_visibility="collapsed")
links.keep("family", family, default=CIFAR)
if family == IMAGENET:  # torchvision's nets: nothing here touches the CIFAR build that Train uses
    title.title("Build an ImageNet ResNet")
    st.caption("He et al. (2015), Table 1 and Fig. 3: a 7x7 conv and a max pool, then four stages (conv2_x to "
               "conv5_x) that halve the map and double the width, global average pooling and a 1000-way fc. "
               "Built by torchvision for 224x224 photos; your CIFAR build for Train stays as it was.")
    left, right = st.columns([1, 2])
    name = left.segmented_control("Network", imagenet.IMAGENET_MODELS, default="resnet50", required=True,
                                  format_func=imagenet.imagenet_label,
                                  key=links.seeded("net", "build_imagenet_net", imagenet.IMAGENET_MODELS),
                                  persist_state="session")
    links.keep("net", name, default="resnet50")
    s = compute.imagenet_summary(name)
    c1, c2, c3, c4 = right.columns(4)
    c1.metric("Layers", s["depth"])
    c2.metric("Parameters", f"{s['params'] / 1e6:.1f}M", help=f"{s['params']:,}")
    c3.metric("GFLOPs / 224x224 image", f"{s['flops'] / 1e9:.2f}")
    c4.metric("Blocks per stage", "-".join(map(str, s["blocks_per_stage"])))
    st.plotly_chart(compute.chart(plots.architecture_diagram, s), width="stretch")
    left, right = st.columns([1, 1])
    pair = [compute.imagenet_summary("resnet34"), compute.imagenet_summary("resnet50")]
    left.plotly_chart(compute.chart(plots.block_detail, pair), width="stretch")
    right.markdown(
        "**Basic block** (ResNet-18, ResNet-34): two 3x3 convs at the stage's width.\n\n"
        "**Bottleneck block** (ResNet-50): a 1x1 conv cuts the width to a quarter, the 3x3 conv works on that, "
        "and a second 1x1 conv restores it. At four times the width it costs about what a basic block does, "
        "so ResNet-50 has 16 more layers than ResNet-34 for about the same FLOPs.\n\n"
        "**Shortcuts**: identity inside a stage; a 1x1 projection (option B, dotted) where the shape changes."
    )
    right.page_link("app_pages/imagenet.py", label="Explain your photos under these networks (ImageNet ResNets)",
                    icon=":material/photo_camera:")
    st.stop()
title.title("Build a CIFAR ResNet")
st.caption("He et al. (2015), section 4.2: a 3x3 conv, three stages of n blocks with 16, 32 and 64 filters, "
           "global average pooling and a linear layer. Moving these controls never starts training.")
current = links.seed_model_config(state.build_config(), WIDTHS, MAX_BLOCKS)  # a link's network, if it brings one
left, right = st.columns([1, 2])
with left:
    block = st.radio("Block type", BLOCKS, index=BLOCKS.index(current.block), horizontal=True,
                     help="basic: two 3x3 convs (depth 6n+2); bottleneck: 1x1, 3x3, 1x1 with 4x expansion (depth 9n+2)")
    # Keyed sliders keep their identity when their value changes: a keyless one is a new widget
    # after each step, and the browser drops a key press that lands while it is remounted.
    n = st.slider("Blocks per stage (n)", 1, MAX_BLOCKS, value=min(current.blocks_per_stage, MAX_BLOCKS),
                  help="ResNet-20: n=3; ResNet-56: n=9; ResNet-110: n=18", key="build_n")
    depth = depth_for(n, block)
    st.markdown(f"**{depth} layers** = {3 * LAYERS_PER_BLOCK[block]} x {n} + 2")
    shortcut = st.radio("Shortcut", SHORTCUTS, index=SHORTCUTS.index(current.shortcut),
                        format_func=lambda s: "none (plain net)" if s == "none" else s)
    st.caption(SHORTCUT_HELP[shortcut])
    pad = st.radio("Option A padding", PADS, index=PADS.index(current.pad), format_func=PAD_HELP.get,
                   disabled=shortcut != "A", help="where option A puts the zero channels when the shape changes; "
                   "weights trained with one padding fail with the other (published nets use both sides)")
    width = st.select_slider("Width multiplier", WIDTHS, value=current.width, key="build_width")
    zero_init = st.toggle("Zero-init residual branches", value=current.zero_init_residual,
                          disabled=shortcut == "none",
                          help="zero the last BN of each residual branch: each block starts as its shortcut "
                               "(Goyal et al. 2017)")
cfg = ModelConfig(depth=depth, shortcut=shortcut, block=block, width=width,
                  zero_init_residual=zero_init and shortcut != "none", pad=pad)
st.session_state[state.Keys.BUILD_CONFIG] = cfg
links.keep_model_config(cfg)
summary = compute.model_summary(cfg)
with right:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Layers", summary.depth)
    c2.metric("Parameters", f"{summary.params:,}")
    c3.metric("MFLOPs / image", f"{summary.flops / 1e6:,.1f}")
    c4.metric("Receptive field", f"{summary.blocks[-1].receptive_field} px")
    st.plotly_chart(compute.chart(plots.architecture_diagram, summary), width="stretch")
st.subheader("Per block")
st.dataframe(
    [{"block": b.name, "in": "x".join(map(str, b.in_shape)), "out": "x".join(map(str, b.out_shape)),
      "params": f"{b.params:,}", "MFLOPs": round(b.flops / 1e6, 2), "receptive field": b.receptive_field,
      "shortcut": b.shortcut + (" (shape changes)" if b.shape_changes else "")} for b in summary.blocks],
    width="stretch", hide_index=True, height=min(36 * (len(summary.blocks) + 1) + 4, 720),
)
st.page_link("app_pages/train.py", label=f"Train this {cfg.label}", icon=":material/play_arrow:")
