"""What one server process shares between users: data and models through ``st.cache_resource``/
``cache_data``, the job and task registries through the library's process-wide ones.

The job registry is one per server process (and runs folder), so a reloaded page or a second tab finds the
training that is still going; the run folders on disk are the source of truth. Models are
cached as weights and rebuilt per use, so two users never share a module that Captum is
hooking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st
import torch

from resnet_viz.access import access_settings, may_see
from resnet_viz.app.state import build_config, data_config
from resnet_viz.app.visitors import visitor
from resnet_viz.background.jobs import JobRegistry, JobSnapshot
from resnet_viz.config import DataConfig, ModelConfig
from resnet_viz.data.sources import ImageData, load_data
from resnet_viz.experiments import degradation
from resnet_viz.experiments.common import evaluation_subset
from resnet_viz.experiments.landscape import fixed_subset
from resnet_viz.nets.cifar import CifarResNet, build_model
from resnet_viz.store import models
from resnet_viz.store.listing import RunInfo, list_runs
from resnet_viz.store.models import (
    DEGRADATION_FILE,
    ModelRef,
    class_names,
    load_model_file,
    load_run_model,
    model_with_weights,
    tensors_fingerprint,
)
from resnet_viz.store.rundir import RunDir, RunError, default_runs_dir
from resnet_viz.training import speed
from resnet_viz.training.device import one_cpu_thread

if TYPE_CHECKING:
    from resnet_viz.background.tasks import TaskRegistry


# Not st.cache_resource: any client can clear that cache (a clear-cache message is accepted
# whatever the toolbar mode), and a dropped registry would leave its worker training while the
# next call started a second trainer beside it. The library keeps one per process.
def job_registry() -> JobRegistry:
    return JobRegistry.shared(default_runs_dir())


def task_registry() -> TaskRegistry:
    from resnet_viz.background.tasks import TaskRegistry

    return TaskRegistry.shared()


def runs_root() -> Path:
    return job_registry().runs_root


SPEED_TASK = "machine-speed"
_SERVER_STARTED = time.time()  # this module is imported once per server process


def machine_speed() -> speed.Speed | None:
    """This machine's measured speed, or None until the first measurement is in. Each server
    process measures once (a few seconds, in a worker), when no run is training (it would
    measure the run, not the machine); the kept figures are the fastest seen (``speed.save``),
    so a measurement slowed by other work is made good by the next server's."""
    found = speed.cached()
    if found is not None and found.measured_at >= _SERVER_STARTED:
        return found  # measured (or made, in tests) since this server started
    reg = task_registry()
    task = reg.get(SPEED_TASK)
    # A failed measurement is not retried on every page run: the pages go on without times.
    if task is not None and task.snapshot().state != "stopped" or job_registry().active() is not None:
        return found
    from resnet_viz.background.calls import Call

    # The server's own work: no visitor's task limit applies, the server-wide one does; when the
    # server runs as many tasks as it allows, a later visit measures.
    with suppress(ValueError):
        # This machine's, as the pages say (here=True: not a Ray worker's, which would also keep
        # the figures on its own disk), without a cluster's start-up in the first visit's wait.
        reg.start(SPEED_TASK, Call(speed.measure_and_save), title="Measure this machine's speed", here=True)
    return found


# ------------------------------------------------------------------ data


# Two data sets at most stay in memory (CIFAR-10 as uint8 is 184 MB): switching back and forth
# between two is instant, a third evicts the one used least recently (a job training on it
# keeps its own reference), so a long-lived server does not hold every set it ever loaded.
@st.cache_resource(show_spinner="Loading the data set (the first time decodes it; later starts take a second)...",
                   max_entries=2)
def _data(cfg: DataConfig) -> ImageData:
    return load_data(cfg)


# The images an experiment evaluates on, picked once per data set and size and shared (read
# only): picking and normalizing them on every run of the Experiments page was most of its time.
@st.cache_resource(show_spinner=False, max_entries=8)
def _images(cfg: DataConfig, kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = _data(cfg)
    if kind == "test":  # the lesion study's: the same images the CLI picks
        return evaluation_subset(ds.test_x, ds.test_y, min(n, len(ds.test_y)))
    return fixed_subset(ds.train_x, ds.train_y, n=min(n, len(ds.train_y)), seed=0)  # the loss landscape's


def experiment_images(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images ("test": the lesion study's) or training images ("train": the loss
    landscape's) of the data set in use, normalized, with their labels; all of them where the
    set has fewer (a slider's choice must not fail on a small set)."""
    return _images(data_config(), kind, n)


def data() -> ImageData | None:
    """The data set in use, or None after showing why it cannot be loaded."""
    try:
        return _data(data_config())
    except ValueError as e:
        st.error(f"The data set cannot be loaded: {e}")
        return None


# ------------------------------------------------------------------ models


@dataclass(frozen=True)
class Weights:
    """A model's weights as this server holds them once, and what the pages need to know of
    them without building a module: its config, class names and content fingerprint."""

    state: dict[str, torch.Tensor]
    config: ModelConfig
    classes: tuple[str, ...]
    fingerprint: str  # store.models.tensors_fingerprint of state and config: what page work is cached by

    def model(self) -> CifarResNet:
        """A fresh module (eval mode) with these weights, the caller's own: Captum hooks the
        module it runs on, so two visitors never share one."""
        return model_with_weights(self.config, self.state)  # a copy: it shares no memory with the cache


def _held(state: dict[str, torch.Tensor], cfg: ModelConfig, classes: tuple[str, ...]) -> Weights:
    state = {k: v.detach().clone() for k, v in state.items()}
    return Weights(state, cfg, classes, tensors_fingerprint(state, repr(cfg)))


@st.cache_resource(show_spinner=False, max_entries=16)
def _weights(kind: str, key: str, stamp: float) -> Weights:
    if kind == "file":
        model, cfg, _ = load_model_file(Path(key))
    else:
        model, cfg = load_run_model(RunDir.open(runs_root(), key))
    return _held(model.state_dict(), cfg.model, class_names(cfg))


@st.cache_resource(show_spinner=False, max_entries=4)
def _untrained(cfg: ModelConfig) -> Weights:
    # A private generator: the process's own RNG is every visitor's and every job's.
    return _held(build_model(cfg, generator=torch.Generator().manual_seed(0)).state_dict(), cfg, ())


def weights(ref: ModelRef) -> Weights:
    """The weights ``ref`` names, loaded once per server (again when its file changes)."""
    if ref.kind == "untrained":
        ds = data()
        classes = ds.classes if ds is not None else tuple(f"class {i}" for i in range(10))
        return replace(_untrained(replace(build_config(), num_classes=len(classes))), classes=tuple(classes))
    path = Path(ref.key) if ref.kind == "file" else runs_root() / ref.key / "checkpoint.safetensors"
    stamp = path.stat().st_mtime if path.exists() else 0.0
    return _weights(ref.kind, ref.key, stamp)


def load_model(ref: ModelRef) -> tuple[CifarResNet, ModelConfig, tuple[str, ...]]:
    """(a fresh model, its config, its class names) for ``ref``; weights are cached, the
    module is this caller's own."""
    w = weights(ref)
    return w.model(), w.config, w.classes


def model_refs(include_untrained: bool = True) -> list[ModelRef]:
    """Shipped models, then the runs this visitor sees with a checkpoint (newest first), then
    the Build model."""
    me, access = visitor(), access_settings()
    return models.model_refs(runs_root(), include_untrained, visible=lambda owner: may_see(me, owner, access))


@contextmanager
def inference() -> Iterator[None]:
    """Run the page's own model work on one thread while a job trains.

    Two torch threads in the page fighting the trainer's two threads for two cores make a
    one-image saliency map 30x slower (0.09 s against 3.4 s measured on a 2-core CPU); one
    thread keeps the page quick and costs the trainer almost nothing.
    """
    # one_cpu_thread, not a save and restore here: two visitors' overlapping maps would leave the
    # process at one thread for good.
    with one_cpu_thread() if job_registry().active() is not None else nullcontext():
        yield


# ------------------------------------------------------------------ runs


def runs() -> list[RunInfo]:
    """The runs this visitor sees: their own, the operator's, and others' unless the server hides them."""
    me, access = visitor(), access_settings()
    try:
        return [r for r in list_runs(runs_root()) if may_see(me, r.owner, access)]
    except RunError as e:
        st.error(str(e))
        return []


def run_records(run_id: str) -> list[dict[str, Any]]:
    """Live records from the registry when the run trains in this server, else from disk."""
    job = job_registry().get(run_id)
    if job is not None:
        return list(job.snapshot().records)
    try:
        return RunDir.open(runs_root(), run_id).read_metrics()
    except RunError as e:
        st.warning(str(e))
        return []


def snapshot(run_id: str) -> JobSnapshot | None:
    job = job_registry().get(run_id)
    return job.snapshot() if job is not None else None


@st.cache_data(show_spinner=False)
def shipped_degradation() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]] | None:
    """The degradation experiment the project ran on CIFAR-10 (``assets/degradation.json``):
    (records per run, what/where/how long), or None when the file is absent or unreadable."""
    try:
        return degradation.read_result(json.loads(DEGRADATION_FILE.read_text(encoding="utf-8")))
    except (OSError, ValueError):  # json.JSONDecodeError is a ValueError
        return None
