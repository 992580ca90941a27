"""Train: pick data and hyperparameters, start a background run, watch it live."""

from dataclasses import replace

import streamlit as st

from resnet_viz import plots
from resnet_viz.access import may_control
from resnet_viz.app import resources, state, visitors, watch, widgets
from resnet_viz.background.progress import clock
from resnet_viz.config import (
    BASE_BATCH,
    SCHEDULES,
    DataConfig,
    RunConfig,
    TrainConfig,
    base_lr,
    scaled_lr,
)
from resnet_viz.data.roots import locate
from resnet_viz.data.sources import allowed_roots, default_source
from resnet_viz.experiments import estimates
from resnet_viz.store.listing import metrics_csv, no_learning_so_far

st.title("Train")
registry = resources.job_registry()
me = visitors.visitor()
model_cfg = state.build_config()

SOURCES = {"default": "Default", "synthetic": "Synthetic shapes", "cifar10": "CIFAR-10 (official, downloads)",
           "folder": "A folder of class folders"}
current = state.data_config()
choice = st.selectbox("Data set", list(SOURCES), format_func=lambda k: SOURCES[k] if k != "default"
                      else f"Default: {widgets.data_label(default_source())}",
                      index=0 if current == default_source() else list(SOURCES).index(current.source))
try:
    if choice == "default":
        new_cfg = default_source()
    elif choice == "folder":
        path = st.text_input("Folder (with class folders, or train/ and test/)", value=current.path or "")
        if path:
            locate(path, allowed_roots())  # a path on the server's disk: only under the allowed data folders
        new_cfg = DataConfig(source="folder", path=path) if path else current
    else:
        new_cfg = DataConfig(source=choice)
    st.session_state[state.Keys.DATA_CONFIG] = new_cfg
except ValueError as e:
    st.error(str(e))


def form_config(num_classes: int = 10) -> RunConfig:
    """The run the form describes now."""
    f = st.session_state
    budget = float(f.tr_budget)
    steps = {"epochs": budget, "steps": None} if f.tr_kind == "epochs" else {"epochs": None, "steps": int(budget)}
    return RunConfig(
        model=replace(model_cfg, num_classes=num_classes),
        data=state.data_config(),
        train=TrainConfig(**steps, batch_size=f.tr_batch, lr=scaled_lr(f.tr_lr128, f.tr_batch), weight_decay=f.tr_wd,
                          schedule=f.tr_schedule, label_smoothing=f.tr_smoothing, augment=f.tr_augment,
                          seed=int(f.tr_seed)),
        name=f.tr_name.strip(),
    )


def start_training() -> None:
    """The Start button's callback (runs before the page, so a rerun cannot drop the click)."""
    data = resources.data()
    if data is None:
        return
    cfg = form_config(len(data.classes))
    busy = registry.active()
    job = registry.submit(cfg, data=data, by=me)
    st.session_state[state.Keys.WATCHED_RUN] = job.run_id
    state.flash(f"Queued behind {busy.snapshot().label}: it starts when that run ends." if busy
                else f"Started {cfg.model.label} on {widgets.literal(data.name)}, lr {cfg.train.lr:g}.")


BATCH_SIZES = [32, 64, 128, 256, 512]
default = TrainConfig.recipe("quick")  # the form starts at the library's quick recipe ...
data, measured = resources.data(), resources.machine_speed()
if "tr_budget" not in st.session_state:  # ... and as many epochs as make a brief run of about 5 minutes here
    st.session_state["tr_budget"] = (estimates.brief_epochs(RunConfig(model=model_cfg, train=default), data, measured)
                                     if data is not None and measured is not None else int(default.epochs or 1))
# Not st.form: the time estimate under Start follows every change of budget, batch or model.
with st.container(border=True, key="train_form"):
    st.markdown(f"**Model:** {model_cfg.label} ({model_cfg.depth} layers) — change it on the Build page.")
    c1, c2, c3 = st.columns(3)
    c1.radio("Budget in", ["epochs", "steps"], horizontal=True, key="tr_kind")
    c1.number_input("Budget", min_value=1, max_value=100_000, step=1, key="tr_budget")
    c2.selectbox("Batch size", BATCH_SIZES, index=BATCH_SIZES.index(default.batch_size), key="tr_batch")
    c2.selectbox("LR schedule", SCHEDULES, index=SCHEDULES.index(default.schedule), key="tr_schedule",
                 help="onecycle: warm up, then linear decay (best for brief runs); paper: 0.1, divided by 10 at "
                      "50% and 75% of the budget")
    c3.number_input(f"Peak learning rate at batch {BASE_BATCH}", min_value=0.0001, max_value=10.0,
                    value=base_lr(default), key="tr_lr128", format="%.4f",
                    help=f"scaled linearly with the batch size (Goyal et al. 2017): {base_lr(default):g} at batch "
                         f"{BASE_BATCH} is {scaled_lr(base_lr(default), 32):g} at batch 32")
    c3.number_input("Weight decay", min_value=0.0, max_value=0.1, value=default.weight_decay, format="%.5f",
                    key="tr_wd")
    c4, c5, c6 = st.columns(3)
    c4.slider("Label smoothing", 0.0, 0.3, default.label_smoothing, 0.05, key="tr_smoothing")
    c5.toggle("Augment (crop + flip)", value=default.augment, key="tr_augment")
    c6.number_input("Seed", min_value=0, max_value=2**31 - 1, value=default.seed, key="tr_seed")
    st.text_input("Name (optional)", max_chars=60, key="tr_name")
    st.button("Start training", type="primary", icon=":material/play_arrow:", on_click=widgets.clicked(start_training))
    widgets.time_estimate(estimates.run_seconds(form_config(), data, measured) if data and measured else None, measured)
widgets.show_error()

st.divider()
all_runs = resources.runs()
ids = [r.id for r in all_runs]
watched = st.session_state.get(state.Keys.WATCHED_RUN)
if watched not in ids:
    active = registry.active()
    watched = active.run_id if active and active.run_id in ids else (ids[0] if ids else None)
if watched is None:
    st.info("No runs yet. Start one above; it keeps training when you reload or close this page.")
    st.stop()
labels = {r.id: f"{r.label} · {r.name or r.id}" + (" · learned nothing" if r.learned_nothing else "") for r in all_runs}
watched = st.selectbox("Run", ids, index=ids.index(watched), format_func=lambda i: labels.get(i, i))
st.session_state[state.Keys.WATCHED_RUN] = watched


def controls(snap) -> None:
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    eta = f" · ETA {clock(snap.eta_s)}" if snap.eta_s else ""
    c1.progress(snap.progress, text=f"{snap.state} · step {snap.step:,} of {snap.total_steps:,} · "
                                    f"{snap.images_per_second:,.0f} images/s{eta}")
    job = registry.get(snap.run_id)
    if not may_control(me, job.owner):
        c2.caption("Started by another visitor: you can watch it, not steer it.")
    elif snap.state == "paused":
        c2.button("Resume", icon=":material/play_arrow:", key="resume",
                  on_click=widgets.clicked(job.resume_training, me))
    else:
        c2.button("Pause", icon=":material/pause:", key="pause", disabled=snap.state != "running",
                  on_click=widgets.clicked(job.pause, me))
    if may_control(me, job.owner):
        c3.button("Stop", icon=":material/stop:", key="stop",
                  on_click=widgets.clicked(job.stop, me, done="Stopping after this batch; the checkpoint is saved."))
    c4.caption(snap.message)
    state.show_flash()  # this fragment's own reruns skip app.py, which shows the rest


@st.fragment(run_every=1.5)
def live_view(run_id: str) -> None:
    snap = resources.snapshot(run_id)
    if snap is None or snap.done:
        st.rerun()  # the run ended: redraw the page once without polling
    controls(snap)
    job = registry.get(run_id)
    if job is not None and (why := no_learning_so_far(snap.records, job.config.model.num_classes)) is not None:
        st.warning(why, icon=":material/trending_flat:")
    st.plotly_chart(plots.training_curves(snap.records, title=snap.label), width="stretch", key="live_curves")
    watch.live_maps(resources.runs_root() / run_id, snap.label)  # the net's maps changing as it learns


snap = resources.snapshot(watched)
if snap is not None and not snap.done:
    live_view(watched)
else:
    info = next(r for r in all_runs if r.id == watched)
    records = resources.run_records(watched)
    msg = f"**{info.label}** · {info.status}"
    if info.test_accuracy is not None:
        msg += f" · test accuracy {info.test_accuracy:.1%}"
    if info.message or (snap and snap.message):
        msg += f" · {snap.message if snap else info.message}"
    (st.error if info.status in ("failed", "diverged") or info.damaged else st.markdown)(
        msg + (f" · damaged: {info.damaged}" if info.damaged else ""))
    if info.learned_nothing:
        st.warning(info.learned_nothing, icon=":material/trending_flat:")
    st.plotly_chart(plots.training_curves(records, title=info.label), width="stretch")
    c1, c2, c3 = st.columns(3)
    c1.download_button("Metrics (CSV)", metrics_csv(records), file_name=f"{watched}-metrics.csv",
                       mime="text/csv", icon=":material/download:")
    ckpt = info.path / "checkpoint.safetensors"
    if ckpt.is_file():
        c2.download_button("Checkpoint (safetensors)", ckpt.read_bytes(), file_name=f"{watched}.safetensors",
                           icon=":material/download:")
        if info.status in ("stopped", "interrupted") and may_control(me, info.owner):
            c3.button("Resume training", icon=":material/replay:",
                      on_click=widgets.clicked(registry.resume, watched, me, done="Resumed from the last checkpoint."))
    widgets.show_error()
