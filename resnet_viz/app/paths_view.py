"""The Experiments page's "Effective paths" tab (Veit et al. 2016, sec. 4.2): a background
study per picked model, then one figure with the path-length distribution, the gradient
magnitude per length and the total gradient per length, and a sentence reading them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import streamlit as st

from resnet_viz.app import compute, resources, tasks, widgets
from resnet_viz.background.tasks import Call, Deferred, experiment_key
from resnet_viz.config import ModelConfig
from resnet_viz.experiments import estimates, paths
from resnet_viz.plots.paths import paths_figure
from resnet_viz.training.speed import Speed

INTRO = (
    "A ResNet with n blocks is 2^n paths: at each block a path takes the residual branch or the skip, so "
    "path lengths follow a binomial distribution around n/2. Veit et al. (2016) measured the gradient "
    "reaching the input through single paths of each length (the backward pass goes through the branches of "
    "k random blocks and the skips of the rest, the forward is the whole net), on training images. Times the "
    "number of such paths, it shows which lengths the net actually trains through."
)


def show(refs: Sequence[Any], model: Callable[[Any], Deferred], names: Mapping[str, str],
         tags: Mapping[str, str], cfgs: Mapping[str, ModelConfig], dtag: str) -> None:
    """The tab for the picked models ``refs`` (each trained on the data set in use): ``model(ref)``
    builds the net in the worker, ``names``/``tags``/``cfgs`` are the page's, keyed by ``ref.key``."""
    st.markdown(INTRO)
    c1, c2 = st.columns(2)
    n = c1.select_slider("Training images", [16, 32, 64, 128, 256], value=64, key="paths_n")
    samples = c2.select_slider("Random paths per length", [2, 4, 8, 16, 32], value=8, key="paths_samples")
    results = []
    for ref in refs:
        cfg = cfgs[ref.key]
        if cfg.shortcut == "none":
            st.info(f"{widgets.literal(names[ref.key])} is a plain net: its {3 * cfg.blocks_per_stage} blocks are "
                    "a single path, the whole gradient goes through every block, and there is no distribution "
                    "of path lengths to measure.")
            continue
        x, y = resources.experiment_images("train", n)  # the CLI's images (the loss landscape's subset)
        res = tasks.run_task(experiment_key("paths", tags[ref.key], dtag, n, samples),
                             f"Effective paths: {widgets.literal(ref.label)}",
                             Call(paths.paths_study, model(ref), x, y, images=min(n, len(y)), samples=samples,
                                  label=names[ref.key]),
                             title=f"Effective paths: {names[ref.key]} ({n} training images, {samples} paths "
                                   "per length)",
                             seconds=partial(_seconds, cfg, n, samples))
        if res:
            results.append(res)
            st.info(res["reading"])
    if results or not refs:
        st.plotly_chart(compute.chart(paths_figure, widgets.plot_labels(results)), width="stretch",
                        key="paths_fig")
        if results:
            st.caption("Path gradients are added as magnitudes: paths point in different directions and partly "
                       "cancel, so the totals are not a split of the ordinary gradient's norm. Magnitudes are "
                       f"means over the sampled paths of each length and over the images; {samples} samples per "
                       "length (Veit et al. took 1,000).")


def _seconds(cfg: ModelConfig, images: int, samples: int, speed: Speed, threads: int | None) -> float:
    return estimates.paths_seconds(cfg, images, samples, speed, threads)
