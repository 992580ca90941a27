"""ImageNet ResNets: torchvision's ResNet-18/34/50 (the paper's Table 1), and your photos at 224 px."""

import numpy as np
import streamlit as st
from PIL import ImageOps

from resnet_viz import plots
from resnet_viz.app import compute, links, tasks, widgets
from resnet_viz.background.tasks import Call, Deferred, task_key
from resnet_viz.experiments import attribution, estimates
from resnet_viz.experiments.attribution.cams import explain_cam
from resnet_viz.nets import imagenet

st.title("ImageNet ResNets")
st.caption("He et al. (2015), Table 1 and Fig. 3: the 18- and 34-layer nets stack basic blocks (two 3x3 convs), "
           "the 50-layer net bottleneck blocks (1x1, 3x3, 1x1). Built by torchvision.")
c1, c2 = st.columns([1, 1])
name = c1.radio("Network", imagenet.IMAGENET_MODELS, horizontal=True, index=0,
                key=links.seeded("net", "imagenet_net", imagenet.IMAGENET_MODELS))
links.keep("net", name, default=imagenet.IMAGENET_MODELS[0])
pretrained = c2.toggle("Pretrained ImageNet weights", value=False,
                       help="torchvision's weights from download.pytorch.org: downloaded on first use (needs "
                            "internet), cached in torch's hub folder, and checked against the SHA-256 in "
                            "torchvision's file name before every load")

s = compute.imagenet_summary(name)
m1, m2, m3 = st.columns(3)
m1.metric("Blocks", len(s["blocks"]))
m2.metric("Parameters", f"{s['params'] / 1e6:.1f}M")
m3.metric("GFLOPs / 224x224 image", f"{s['flops'] / 1e9:.2f}")
with st.expander("Blocks (dotted shortcut where the shape changes: a 1x1 projection, option B)"):
    st.dataframe([{"block": b["name"], "type": b["type"], "in": "x".join(map(str, b["in_shape"])),
                   "out": "x".join(map(str, b["out_shape"])), "params": f"{b['params']:,}",
                   "shortcut": b["shortcut"] + (" (shape changes)" if b["shape_changes"] else "")}
                  for b in s["blocks"]], hide_index=True, width="stretch")

st.subheader("Explain your photos")
try:
    weights = compute.imagenet_weights(name, pretrained)
except imagenet.WeightsUnavailable as e:
    st.error(str(e))
    st.stop()
if not pretrained:
    st.info("Random weights: the maps show the architecture's sensitivity, not what an ImageNet net learned. "
            "Turn on pretrained weights when this machine is online.")
c1, c2 = st.columns([2, 1])
method = c1.selectbox("Method", list(attribution.METHODS), format_func=lambda m: attribution.METHODS[m].label,
                      key=links.seeded("method", "imagenet_method", list(attribution.METHODS)))
links.keep("method", method, default=next(iter(attribution.METHODS)))
c1.caption(attribution.METHODS[method])
block = None
if attribution.METHODS[method].uses_block:  # Grad-CAM and the grad-cam family
    names = [b["name"] for b in s["blocks"]]
    block = c2.selectbox(f"{attribution.METHODS[method].label} at block", names, index=len(names) - 1,
                         key="imagenet_block")
photos = widgets.upload_images("Photos", key="imagenet_upload",
                               multiple=True)
for i, (caption, img) in enumerate(photos):
    x = imagenet.imagenet_input(img)  # (1, 3, 224, 224)
    if method == "scorecam":  # one forward pass per channel of the block: a background task with Stop
        channels = next(b["out_shape"][0] for b in s["blocks"] if b["name"] == block)
        res = tasks.run_task(task_key("scorecam", weights.fingerprint, compute.input_tag(x), block),
                             f"Score-CAM of {widgets.literal(caption)} at {block}",
                             Call(explain_cam, Deferred(weights.model), x, "scorecam", block),
                             seconds=lambda sp, t, c=channels: estimates.scorecam_seconds(s["flops"], c, sp, t))
        if res is None:
            continue
        probs, amap = res
    else:
        probs, amap = compute.explain_imagenet(weights, x, method, block)  # cached by weights and pixels
    shown = np.asarray(ImageOps.fit(img, (224, 224)))  # the centre crop the network saw
    c1, c2 = st.columns([2, 1])
    c1.plotly_chart(compute.chart(plots.attribution_overlay, shown, amap.numpy(), title=widgets.plot_text(caption)),
                    width="stretch", key=widgets.item_key("in", i))
    top = attribution.top_k(probs, imagenet.imagenet_categories(), k=5)
    c2.plotly_chart(compute.chart(plots.top_k_bar, top, title="Top-5"), width="stretch", key=widgets.item_key("top", i))
