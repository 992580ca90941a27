"""Explain: saliency maps (Captum) for uploaded or test images, under two models side by side."""

import streamlit as st

from resnet_viz import plots
from resnet_viz.app import compute, faithful, links, resources, tasks, widgets
from resnet_viz.data.batches import normalize
from resnet_viz.experiments import attribution
from resnet_viz.nets.cifar import block_names

st.title("Explain a prediction")
st.page_link("app_pages/imagenet.py", icon=":material/photo_camera:",
             label="ImageNet ResNets: your own photos at 224 px under ResNet-18/34/50, pretrained when online")
ref_a, ref_b = widgets.pick_two_models("explain", "Side by side with")
tasks.published_offer()
c1, c2 = st.columns([2, 1])
method = c1.selectbox("Method", list(attribution.METHODS), format_func=lambda m: attribution.METHODS[m].label,
                      key=links.seeded("method", "explain_method", list(attribution.METHODS)))
links.keep("method", method, default=next(iter(attribution.METHODS)))
c1.caption(attribution.METHODS[method])
inputs = widgets.input_images("explain", multiple=True, link=True)
if ref_a is None or not inputs:
    st.info("Pick a model and one or more images.")
    st.stop()
models = [(resources.weights(ref_a), ref_a)]  # results below are cached by weights and pixels
if ref_b is not None and ref_b != ref_a:
    models.append((resources.weights(ref_b), ref_b))
block = None
if attribution.METHODS[method].uses_block:  # Grad-CAM and the grad-cam family
    names = block_names(models[0][0].config)
    block = c2.selectbox(f"{attribution.METHODS[method].label} at block", names, index=len(names) - 1,
                         key=links.seeded("block", "explain_block", names))
    links.keep("block", block, default=names[-1])

for i, (caption, image) in enumerate(inputs):
    st.markdown(f"**{widgets.literal(caption)}**")
    x = normalize(image[None], channels_last=False)  # (1, 3, 32, 32)
    rgb = image.permute(1, 2, 0).numpy()
    cols = st.columns(len(models))
    for col, (w, ref) in zip(cols, models, strict=True):
        with col:
            probs, amap, scores = compute.explain_scored(w, x, method,
                                                         block if block in block_names(w.config) else None)
            top = attribution.top_k(probs, w.classes, k=5)
            overlay = compute.chart(plots.attribution_overlay, rgb, amap.numpy(), title=ref.label.split(" · ")[0])
            st.plotly_chart(overlay, width="stretch", key=widgets.item_key("overlay", i, ref.key))
            st.caption(widgets.literal(ref.label))
            st.caption(faithful.score_caption(scores))
            if not amap.any():
                st.warning("This attribution is zero everywhere: the model's output does not depend on this "
                           "input (a dead network, e.g. one trained with too high a learning rate).")
            st.plotly_chart(compute.chart(plots.top_k_bar, top, title="Top-5"), width="stretch",
                            key=widgets.item_key("top", i, ref.key))

st.divider()
faithful.method_comparison([ref for _, ref in models])
