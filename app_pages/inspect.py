"""Inspect: feature maps, per-block activation and gradient norms, and the trainer's probes."""

import streamlit as st

from resnet_viz import plots
from resnet_viz.app import compute, links, resources, tasks, watch, widgets
from resnet_viz.data.batches import normalize
from resnet_viz.nets.cifar import block_names

st.title("Look inside")
refs = resources.model_refs()
ref_a, ref_b = widgets.pick_two_models("inspect")
tasks.published_offer()
inputs = widgets.input_images("inspect", link=True)
if ref_a is None or not inputs:
    st.info("Pick a model and an input image.")
    st.stop()
caption, image = inputs[0]
x = normalize(image[None], channels_last=False)  # (1, 3, 32, 32)
w_a = resources.weights(ref_a)  # results below are cached by these weights and this input's pixels

st.subheader("Feature maps")
c1, c2, c3 = st.columns([1, 2, 1])
c1.image(image.permute(1, 2, 0).numpy(), caption=widgets.literal(caption), width=160)
names = ["stem"] + block_names(w_a.config)
block = c2.select_slider("Block", names, value=names[min(1, len(names) - 1)],
                         key=links.seeded("block", "inspect_block", names))
links.keep("block", block, default=names[min(1, len(names) - 1)])
shared = c3.toggle("Shared colour scale", value=True, help="off: each channel scaled to its own range")
maps = compute.feature_maps(w_a, x, block)
grid_title = f"{w_a.config.label}: {block}, {maps.shape[0]} channels of {maps.shape[1]}x{maps.shape[2]}"
st.plotly_chart(compute.chart(plots.feature_map_grid, maps, shared_scale=shared, title=grid_title), width="stretch")

st.subheader("Activation and gradient norm per block, for this input")
st.caption("Captum LayerActivation and layer gradients of the predicted class. In a plain net the gradient "
           "shrinks (or explodes) on its way back to the first blocks; the identity path of a ResNet carries it.")
profiles = [(widgets.plot_text(ref_a.label), compute.block_norms(w_a, x))]
if ref_b is not None and ref_b != ref_a:
    profiles.append((widgets.plot_text(ref_b.label), compute.block_norms(resources.weights(ref_b), x)))
c1, c2 = st.columns(2)
for col, stat, title in ((c1, "act_norm", "Activation norm"), (c2, "grad_norm", "Gradient norm")):
    series = [(label, list(norms), [v[stat] for v in norms.values()]) for label, norms in profiles]
    col.plotly_chart(compute.chart(plots.depth_profile, series, y_title=title, title=title), width="stretch",
                     key=f"profile_{stat}")

st.subheader("What the trainer recorded, block by block over training")
run_refs = [r for r in refs if r.kind == "run"]
if not run_refs:
    st.info("Train a run to see its per-block norms over time (the trainer probes every 10th step).")
else:
    c1, c2 = st.columns([2, 1])
    run_ref = c1.selectbox("Run", run_refs, format_func=lambda r: r.label,
                           key=links.seeded("run", "inspect_probe_run", run_refs))
    links.keep("run", run_ref, default=run_refs[0])
    stats = ["grad_norm", "act_norm", "ratio", "cos"]
    stat = c2.radio("Statistic", stats, horizontal=True, key=links.seeded("stat", "inspect_stat", stats),
                    format_func={"grad_norm": "gradient norm", "act_norm": "activation norm",
                                 "ratio": "||F(x)|| / ||x||", "cos": "cos(F(x), x)"}.get)
    links.keep("stat", stat, default=stats[0])
    st.plotly_chart(plots.probe_heatmap(resources.run_records(run_ref.key), stat=stat), width="stretch")

watch.watch_view()
