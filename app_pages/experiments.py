"""Experiments: why residual learning works, run on your own networks in minutes."""

import streamlit as st

from resnet_viz import plots
from resnet_viz.app import compute, links, paths_view, resources, tasks, trainpath, visitors, widgets
from resnet_viz.app.sharpness import sharpness_tab
from resnet_viz.app.state import data_config
from resnet_viz.background.tasks import Call, Deferred, content_tag, data_tag, experiment_key, model_tag, task_key
from resnet_viz.data.batches import normalize
from resnet_viz.experiments import convolution, estimates, landscape, lesion, sanity, signal
from resnet_viz.experiments.skipbranch import skip_branch
from resnet_viz.report.html import build_report
from resnet_viz.store.models import model_with_weights

st.title("Experiments")
st.caption("Each computation runs in the background with progress and Stop; results stay when you reload.")
data = resources.data()
ref_a, ref_b = widgets.pick_two_models("exp")
tasks.published_offer()
refs = [r for r in (ref_a, ref_b) if r is not None]
refs = refs[:1] if len(refs) == 2 and refs[0] == refs[1] else refs
weights = {r.key: resources.weights(r) for r in refs}
tags = {r.key: model_tag(r, weights[r.key].config) for r in refs}
cfgs = {r.key: weights[r.key].config for r in refs}
dtag = data_tag(data_config(), data.name) if data is not None else ""  # results on the data set are its own
names = {r.key: f"Untrained {weights[r.key].config.label} (Build page)" if r.kind == "untrained" else r.label
         for r in refs}


def fits(ref) -> bool:
    """Whether the model was trained on the classes of the data set in use."""
    return data is not None and tuple(weights[ref.key].classes) == tuple(data.classes)


def model(ref) -> Deferred:
    """The model, built in the task's worker from the weights the server holds: only a started task needs it."""
    return Deferred(model_with_weights, weights[ref.key].config, weights[ref.key].state)


TABS = ["Lesion", "Loss landscape", "Signal at init", "Skip & branch", "Convolution by hand", "Sanity check",
        "Effective paths", "Sharpness", "Layer responses (Fig. 7)", "Report"]
# Tracked (a switch reruns the page) so the open tab is in the link: ?tab=skip-and-branch.
tabs = st.tabs(TABS, key=links.seeded("tab", "exp_tab", TABS), on_change="rerun")
links.keep("tab", st.session_state.get("exp_tab"), default=TABS[0])

with tabs[0]:
    st.markdown("Delete blocks from a trained net and measure test accuracy (Veit et al. 2016). A residual "
                "block becomes its shortcut; a plain block has no shortcut, so it becomes an identity "
                "(a parameter-free subsample-and-pad where the shape changes).")
    n = st.select_slider("Test images", [500, 1000, 2000, 5000], value=1000, key="lesion_n")
    n = min(n, len(data.test_y)) if data is not None else n
    results = []
    for ref in refs:
        if not fits(ref):
            st.warning(f"{widgets.literal(ref.label)} was trained on other classes than "
                       f"{widgets.literal(data.name) if data else 'the data set'}; "
                       "pick a model trained on it (or an untrained one).")
            continue
        x, y = resources.experiment_images("test", n)  # the images the CLI's lesion study uses
        res = tasks.run_task(experiment_key("lesion", tags[ref.key], dtag, n),
                             f"Lesion study: {widgets.literal(ref.label)}",
                             Call(lesion.lesion_study, model(ref), x, y, max_k=Deferred(lesion.max_k_for, model(ref)),
                                  trials=5, label=names[ref.key]),
                             title=f"Lesion study: {names[ref.key]} ({n} test images of {data.name})",
                             seconds=lambda s, t, ref=ref: estimates.lesion_seconds(cfgs[ref.key], n, s, t))
        if res:
            results.append(res)
            st.caption(res.get("note", ""))
    st.plotly_chart(compute.chart(plots.lesion_figure, widgets.plot_labels(results)), width="stretch", key="lesion_fig")

with tabs[1]:
    st.markdown("The training loss around the trained weights along filter-normalized random directions "
                "(Li et al. 2018), on a fixed subset of training images; the same direction seed for both models.")
    c1, c2, c3 = st.columns(3)
    n = c1.select_slider("Training images", [500, 1000, 2000], value=1000, key="land_n")
    n = min(n, len(data.train_y)) if data is not None else n
    steps = c2.select_slider("Grid points per axis", [7, 11, 21], value=11, key="land_steps")
    seed = c3.number_input("Direction seed", 0, 10_000, 0, key="land_seed")
    slices = []
    for ref in refs:
        if not fits(ref):
            continue
        x, y = resources.experiment_images("train", n)
        res = tasks.run_task(experiment_key("slice", tags[ref.key], dtag, n, steps, seed),
                             f"1D slice: {widgets.literal(ref.label)}",
                             Call(landscape.random_slice, model(ref), x, y, seed=int(seed), steps=steps,
                                  label=names[ref.key]),
                             title=f"Loss along a random direction: {names[ref.key]} ({n} training images, "
                                   f"{steps} points, seed {seed})",
                             seconds=lambda s, t, ref=ref: estimates.slice_seconds(cfgs[ref.key], n, steps, s, t))
        if res:
            slices.append(res)
    st.plotly_chart(compute.chart(plots.slices_figure, widgets.plot_labels(slices)), width="stretch", key="slices_fig")
    if refs and fits(refs[0]):
        ref = refs[0]
        x, y = resources.experiment_images("train", n)
        surf = tasks.run_task(experiment_key("surface", tags[ref.key], dtag, n, steps, seed),
                              f"2D surface: {widgets.literal(ref.label)} ({steps}x{steps})",
                              Call(landscape.surface_2d, model(ref), x, y, seed=int(seed), steps=steps,
                                   label=names[ref.key]),
                              title=f"Loss surface: {names[ref.key]} ({n} training images, {steps}x{steps}, "
                                    f"seed {seed})",
                              seconds=lambda s, t: estimates.surface_seconds(cfgs[ref.key], n, steps, s, t),
                              preview=lambda part: st.plotly_chart(plots.surface_figure(
                                  part, title=f"Preview on a {len(part['alphas'])}x{len(part['alphas'])} grid "
                                              f"(filling in to {steps}x{steps})"), width="stretch",
                                  key="contour_preview"))
        if surf:
            surf = widgets.plot_labels([surf])[0]
            c1, c2 = st.columns(2)
            c1.plotly_chart(compute.chart(plots.surface_figure, surf), width="stretch", key="contour_fig")
            c2.plotly_chart(compute.chart(plots.surface_figure, surf, three_d=True), width="stretch", key="surface_fig")
    trainpath.section(n, dtag)  # the path training took (app/trainpath.py)

with tabs[2]:
    st.markdown("Untrained plain and residual nets of growing depth: forward activation variance and the "
                "gradient norm per block; then the input gradient along a line of inputs (shattered gradients).")
    depths = st.multiselect("Depths", [20, 32, 44, 56, 110], default=[20, 56, 110], key="sig_depths")
    prof = tasks.run_task(task_key("signal", ",".join(map(str, sorted(depths)))), "Measure signal propagation",
                          Call(signal.signal_sweep, depths=tuple(sorted(depths))),
                          title=f"Signal propagation at initialization: depths {', '.join(map(str, sorted(depths)))}",
                          seconds=lambda s, t: estimates.signal_seconds(depths, s, t))
    if prof:
        st.plotly_chart(compute.chart(plots.signal_figure, prof), width="stretch", key="signal_fig")
        st.info("Gradient norm at the first block over the last block: " + "; ".join(
            f"{p['label']} {p['grad_norm'][0] / p['grad_norm'][-1]:,.3g}x" for p in prof if p["grad_norm"][-1]) +
            ". At initialization with batch norm, a plain net's gradient grows block by block on its way back "
            "to the input; the identity paths keep a ResNet's within a small factor.")
    d = st.select_slider("Depth for shattered gradients", [20, 56, 110], value=56, key="shat_depth")
    shat = tasks.run_task(task_key("shattered", d), "Measure shattered gradients",
                          Call(signal.shattered_pair, d),
                          title=f"Shattered gradients: plain and ResNet, depth {d}",
                          seconds=lambda s, t: estimates.shattered_seconds(d, s, t))
    if shat:
        st.plotly_chart(compute.chart(plots.shattered_figure, shat), width="stretch", key="shat_fig")

with tabs[3]:
    runs = [r for r in resources.model_refs(include_untrained=False) if r.kind == "run"]
    if not runs:
        st.info("Train a run: the trainer records ||F(x)||/||x|| and cos(F(x), x) per block every 10th step.")
    else:
        run = st.selectbox("Run", runs, format_func=lambda r: r.label, key=links.seeded("run", "sb_run", runs))
        links.keep("run", run, default=runs[0])
        records = resources.run_records(run.key)
        st.info(skip_branch(records).reading)
        c1, c2 = st.columns(2)
        c1.plotly_chart(plots.probe_heatmap(records, stat="ratio"), width="stretch", key="sb_ratio")
        c2.plotly_chart(plots.probe_heatmap(records, stat="cos"), width="stretch", key="sb_cos")

with tabs[4]:
    if refs:
        module = weights[refs[0].key].model()
        layers = convolution.conv_layers(module)
        inputs = widgets.input_images("conv")
        c1, c2, c3, c4 = st.columns(4)
        layer = c1.selectbox("Layer", layers, key="conv_layer")
        conv = module.get_submodule(layer)
        ch = c2.number_input("Output channel", 0, conv.out_channels - 1, 0, key="conv_ch")
        rows, cols = compute.conv_output_size(resources.weights(refs[0]), layer)
        row = c3.number_input("Row", 0, rows - 1, rows // 2, key="conv_row")
        col = c4.number_input("Column", 0, cols - 1, cols // 2, key="conv_col")
        if inputs:
            try:
                r = compute.convolution_by_hand(resources.weights(refs[0]), normalize(inputs[0][1][None],
                                                channels_last=False), layer, int(ch), int(row), int(col))
                st.plotly_chart(compute.chart(plots.conv_figure, r), width="stretch", key="conv_fig")
                (st.success if r["matches"] else st.error)(
                    f"Σ patch × kernel{' + bias' if r['bias'] else ''} = {r['total']:.6f}; the layer computed "
                    f"{r['layer_output']:.6f}" + (" — the same number." if r["matches"] else " — they differ!"))
            except ValueError as e:
                st.error(str(e))

with tabs[5]:
    st.markdown("Is the saliency map about the model? Randomize the weights from the top layer down and "
                "watch the map (Adebayo et al. 2018): ρ is the rank correlation with the trained map.")
    inputs = widgets.input_images("sanity")
    if refs and inputs:
        ref = refs[0]
        x = normalize(inputs[0][1][None], channels_last=False)
        res = tasks.run_task(task_key("sanity", tags[ref.key], content_tag(inputs[0][1])),
                             f"Sanity check: {widgets.literal(ref.label)}",
                             Call(sanity.sanity_check, model(ref), x),
                             title=f"Sanity check: {names[ref.key]} on {inputs[0][0]}",
                             seconds=lambda s, t: estimates.sanity_seconds(cfgs[ref.key], s, t))
        if res:
            st.info(res.get("reading", ""))
            st.plotly_chart(compute.chart(plots.sanity_figure, res), width="stretch", key="sanity_fig")

with tabs[TABS.index("Report")]:
    st.markdown("One self-contained HTML file: the runs' curves, table, configurations (seeds included) and "
                "environment, and the experiments run in the tabs above as figures, numbers and raw results.")
    infos = resources.runs()
    chosen = st.multiselect("Runs in the report", [i.id for i in infos], default=[i.id for i in infos[:4]],
                            format_func=lambda i: next(f"{r.label} · {r.name or r.id}" for r in infos if r.id == i))
    done = {t.key: t for t in resources.task_registry().finished(by=visitors.visitor())}
    picked = st.multiselect("Experiments in the report", list(done), default=list(done),
                            format_func=lambda k: done[k].title, placeholder="Run an experiment in a tab above")
    if not chosen and not picked:
        st.info("Pick a run or an experiment: a report needs at least one of them.")
    elif st.button("Build the report", icon=":material/description:"):
        try:
            page = build_report(resources.runs_root(), chosen, [(done[k].title, done[k].result) for k in picked])
            st.download_button("Download report (HTML)", page.encode(), file_name="resnet-lab-report.html",
                               mime="text/html", icon=":material/download:", on_click="ignore")
        except ValueError as e:  # a run deleted meanwhile
            st.error(str(e))

with tabs[TABS.index("Effective paths")]:
    paths_view.show([r for r in refs if fits(r)], model, names, tags, cfgs, dtag)

with tabs[TABS.index("Sharpness")]:
    sharpness_tab(refs, fits, model, tags, dtag, names, cfgs, data.name if data is not None else "")

with tabs[TABS.index("Layer responses (Fig. 7)")]:
    from resnet_viz.app.responses import responses_view

    responses_view(refs)
