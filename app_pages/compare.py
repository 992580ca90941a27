"""Compare: runs side by side (the paper's Fig. 6), and the degradation experiment."""

from dataclasses import replace

import streamlit as st

from resnet_viz import plots
from resnet_viz.app import links, resources, state, visitors, widgets
from resnet_viz.config import ModelConfig, RunConfig, TrainConfig
from resnet_viz.experiments import degradation, estimates

st.title("Compare runs")
registry = resources.job_registry()
me = visitors.visitor()
all_runs = [r for r in resources.runs() if r.config is not None]
# Only this visitor's runs (or the operator's) make their degradation experiment: another
# visitor's runs named like one would otherwise pass for it.
groups = degradation.degradation_groups([r for r in all_runs if r.owner in (me.id, None)])


data, measured = resources.data(), resources.machine_speed()
base = RunConfig(model=ModelConfig(num_classes=len(data.classes) if data else 10), data=state.data_config(),
                 train=degradation.default_train_config())
quick = estimates.quick_steps(base, *estimates.data_sizes(data), measured) if data and measured else None


def queue_degradation(train: TrainConfig) -> None:
    """A button's callback: the four runs, queued one after another on the data in use."""
    if data is None:
        return
    steps, runs = train.steps or 0, replace(base, train=train)
    registry.submit_all(degradation.degradation_configs(runs, tag=degradation.new_tag()), data=data, by=me)
    state.flash(f"Queued 4 runs of {steps:,} steps on {widgets.literal(data.name)}. Leave this page open or come "
                "back later: they keep training.")


with st.container(border=True):
    st.subheader("The degradation experiment")
    st.markdown(
        "Trains **plain-20, plain-56, ResNet-20 and ResNet-56** (shortcut A) with the same seed, data order and "
        "budget of steps of batch 128, one after another in the background. When they are done this page says "
        "what *their* numbers show. The quick replay is the full one cut short, as many steps as this machine "
        "trains in about 14 minutes (at least 200)."
    )
    c1, c2 = st.columns(2)
    with c1:
        st.button(f"Quick replay ({quick:,} steps per net)" if quick else "Quick replay", type="primary",
                  icon=":material/science:", disabled=quick is None,
                  on_click=widgets.clicked(queue_degradation, estimates.quick_config(quick or 1)))
        widgets.time_estimate(estimates.replay_seconds(base, *estimates.data_sizes(data), measured,
                                                       estimates.quick_config(quick))
                              if data and measured and quick else None, measured)
    with c2:
        full = degradation.default_train_config()
        st.button(f"Full replay ({full.steps:,} steps per net)", icon=":material/science:",
                  on_click=widgets.clicked(queue_degradation, full))
        widgets.time_estimate(estimates.replay_seconds(base, *estimates.data_sizes(data), measured)
                              if data and measured else None, measured)
    widgets.show_error()
    results = None
    if groups:
        stamp, members = groups[0]
        results = {key: resources.run_records(info.id) for key, info in members.items()}
        verdict = degradation.degradation_verdict(results)
        live = [resources.snapshot(i.id) for i in members.values()]
        pending = [s for s in live if s is not None and not s.done]
        if pending:
            done = sum(s.step for s in live if s) / max(1, sum(s.total_steps for s in live if s))
            st.progress(done, text=f"Experiment #{widgets.literal(stamp)}: {len(pending)} run(s) still training "
                                   "or queued")
        (st.success if not pending and verdict.plain_degrades is not None else st.info)(verdict.text)
    elif (shipped := resources.shipped_degradation()) is not None:
        results, about = shipped
        st.markdown(f"**Until you run it, here is the project's own run** on {about.get('data', 'CIFAR-10')} "
                    f"({about.get('steps', degradation.DEFAULT_STEPS):,} steps per net, {about.get('machine', '')}). "
                    "The verdict below is computed from those records by the same code that will judge yours.")
        st.success(degradation.degradation_verdict(results).text)
    if results is not None:
        st.plotly_chart(plots.compare_curves([(k, v) for k, v in results.items()], x_axis="iterations"),
                        width="stretch", key="degradation_curves")

st.subheader("Any runs")
if not all_runs:
    st.info("No runs yet: start one on the Train page, or run the degradation experiment above.")
    st.stop()
labels = {r.id: f"{r.label} · {r.name or r.id} · {r.status}" for r in all_runs}
default = [r.id for r in all_runs[:4]]
chosen = st.multiselect("Runs", list(labels), default=default, format_func=labels.get,
                        key=links.seeded("runs", "compare_runs", list(labels)))
links.keep("runs", chosen, default=default)
c1, c2 = st.columns(2)
x_axis = c1.radio("x-axis", ["iterations", "epochs"], horizontal=True,
                  key=links.seeded("x", "compare_x", ["iterations", "epochs"]))
metric = c2.radio("Show", ["error", "loss"], horizontal=True,
                  key=links.seeded("show", "compare_show", ["error", "loss"]))
links.keep("x", x_axis, default="iterations")
links.keep("show", metric, default="error")
picked = [r for r in all_runs if r.id in chosen]
series = [(widgets.plot_text(f"{r.label} · {r.name or r.id}"), resources.run_records(r.id)) for r in picked]
st.plotly_chart(plots.compare_curves(series, x_axis=x_axis, metric=metric), width="stretch", key="any_curves")
st.caption("Training error solid, test error dashed, as in the paper's Fig. 6.")
st.dataframe(plots.error_table_rows(picked), width="stretch", hide_index=True)
