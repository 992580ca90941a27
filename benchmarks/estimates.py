"""Every experiment's time estimate (``experiments.estimates``) against a real run, in one process.

    nice env OMP_NUM_THREADS=1 python benchmarks/estimates.py [--threads 1] [--only lesion sanity ...]

The app shows "About N on this machine" before an experiment starts, priced from the figures
``training.speed.measure()`` takes. Here torch is set to ``--threads`` (default 1: the machine
may be shared) and the figures are measured in that same state; then each experiment runs once
with small but real settings, called as its page calls it (the same ``Call`` and arguments,
the model built from its weights in the call), and its estimate is priced with the figures and
``threads=None``. On a shared machine the figures swing with the other work (2x from one
measurement to the next on 2 busy cores), so by default they are measured again before each
experiment and every estimate is priced with each figure's median over all the measurements
(``--measure-once``: the first figures only). Models: the shipped ResNet-20 and
plain-20, and an untrained ResNet-56 where an experiment needs depth; images: the synthetic
set, normalized as the app does. The training path trains a ResNet-20 for 8 steps into a
temporary run folder first (not timed).

Prints ``name  estimate_s  actual_s  actual/estimate``, then the run's CPU seconds and a "CPU
ratio" that counts the figures' and the run's time both in this process's CPU time per thread
(time slices taken by other work drop out; a shared core's slower caches do not). At one
thread on a quiet machine the two ratios agree. The last line is
``ratio actual/estimate: min X.XX, max Y.YY; cpu ratio: min ..., max ...``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_viz.background.calls import Call, Deferred  # noqa: E402
from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from resnet_viz.data.batches import normalize  # noqa: E402
from resnet_viz.data.sources import ImageData, make_synthetic  # noqa: E402
from resnet_viz.experiments import estimates, landscape, lesion, paths, responses, sanity, signal  # noqa: E402
from resnet_viz.experiments.attribution.cams import explain_cam  # noqa: E402
from resnet_viz.experiments.attribution.faithfulness import RANDOM, faithfulness_study, fixed_images  # noqa: E402
from resnet_viz.experiments.common import evaluation_subset  # noqa: E402
from resnet_viz.experiments.sharpness import sharpness  # noqa: E402
from resnet_viz.experiments.trainpath import training_path  # noqa: E402
from resnet_viz.nets import imagenet  # noqa: E402
from resnet_viz.nets.cifar import build_model  # noqa: E402
from resnet_viz.store.models import load_model_file, model_with_weights  # noqa: E402
from resnet_viz.store.rundir import RunDir  # noqa: E402
from resnet_viz.training import speed as speed_mod  # noqa: E402
from resnet_viz.training.loop import fit  # noqa: E402
from resnet_viz.training.speed import Speed  # noqa: E402

Estimate = Callable[[Speed, "int | None"], float]


class Case(NamedTuple):
    name: str
    call: Call
    seconds: Estimate  # as the page's ``seconds=``: (speed, threads) -> seconds


class Net(NamedTuple):
    config: ModelConfig
    state: dict[str, torch.Tensor]

    def deferred(self) -> Deferred:  # as the pages' ``model(ref)``: built in the call
        return Deferred(model_with_weights, self.config, self.state)


def shipped(name: str) -> Net:
    model, cfg, _ = load_model_file(ROOT / "assets" / f"{name}.safetensors")
    return Net(cfg.model, {k: v.detach().clone() for k, v in model.state_dict().items()})


def untrained(depth: int) -> Net:
    model = build_model(ModelConfig(depth=depth), generator=torch.Generator().manual_seed(0))
    return Net(ModelConfig(depth=depth), {k: v.detach().clone() for k, v in model.state_dict().items()})


def train_images(data: ImageData, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``resources.experiment_images("train", n)``: the loss landscape's subset."""
    return landscape.fixed_subset(data.train_x, data.train_y, n=min(n, len(data.train_y)), seed=0)


def test_images(data: ImageData, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``resources.experiment_images("test", n)``: the lesion study's images."""
    return evaluation_subset(data.test_x, data.test_y, min(n, len(data.test_y)))


def cifar_cases(data: ImageData, r20: Net, p20: Net, r56: Net) -> list[Case]:
    """The Experiments page's tabs (app_pages/experiments.py, app/sharpness.py, paths_view.py, responses.py)."""
    cases = []
    x, y = test_images(data, 500)
    cases.append(Case("lesion ResNet-20 n=500", Call(
        lesion.lesion_study, r20.deferred(), x, y, max_k=Deferred(lesion.max_k_for, r20.deferred()), trials=5,
        label="r20"), lambda s, t: estimates.lesion_seconds(r20.config, 500, s, t)))
    x, y = train_images(data, 2000)
    cases.append(Case("1-D slice ResNet-20 n=2000 steps=11", Call(
        landscape.random_slice, r20.deferred(), x, y, seed=0, steps=11, label="r20"),
        lambda s, t: estimates.slice_seconds(r20.config, 2000, 11, s, t)))
    x, y = train_images(data, 500)
    cases.append(Case("2-D surface plain-20 n=500 7x7", Call(
        landscape.surface_2d, p20.deferred(), x, y, seed=0, steps=7, label="p20"),
        lambda s, t: estimates.surface_seconds(p20.config, 500, 7, s, t)))
    depths = [20, 56, 110]  # the page's default
    cases.append(Case("signal propagation 20/56/110", Call(signal.signal_sweep, depths=tuple(depths)),
                      lambda s, t: estimates.signal_seconds(depths, s, t)))
    cases.append(Case("shattered gradients depth 56", Call(signal.shattered_pair, 56),
                      lambda s, t: estimates.shattered_seconds(56, s, t)))
    one = normalize(data.test_x[:1], channels_last=False)  # as the page: one image, (1, 3, H, W)
    for net, label in ((r20, "ResNet-20"), (r56, "ResNet-56 untrained")):
        cases.append(Case(f"sanity check {label}", Call(sanity.sanity_check, net.deferred(), one),
                          partial(_sanity, net.config)))
    x, y = train_images(data, 32)
    cases.append(Case("sharpness ResNet-20 n=32 top2 x10 tr10", Call(
        sharpness, r20.deferred(), x, y, top=2, max_iter=10, trace_samples=10, recalibrate=False, label="r20"),
        lambda s, t: estimates.sharpness_seconds(r20.config, 32, s, t, top=2, max_iter=10, trace_samples=10)))
    for net, label, n, samples in ((r20, "ResNet-20", 64, 8), (r56, "ResNet-56 untrained", 32, 4)):
        x, y = train_images(data, n)
        cases.append(Case(f"effective paths {label} n={n} s={samples}", Call(
            paths.paths_study, net.deferred(), x, y, images=min(n, len(y)), samples=samples, label=label),
            partial(estimates.paths_seconds, net.config, n, samples)))
    x, _ = test_images(data, 2000)
    for net, label in ((p20, "plain-20"), (r56, "ResNet-56 untrained")):
        cases.append(Case(f"layer responses {label} n=2000", Call(
            responses.layer_responses, Deferred(model_with_weights, net.config, net.state), x, label=label),
            partial(_responses, net.config, 2000)))
    return cases


def _sanity(cfg: ModelConfig, s: Speed, t: int | None) -> float:
    return estimates.sanity_seconds(cfg, s, t)


def _responses(cfg: ModelConfig, n: int, s: Speed, t: int | None) -> float:
    return estimates.responses_seconds(cfg, n, s, t)


def trainpath_case(data: ImageData, root: Path) -> Case:
    """A ResNet-20 run with 5 snapshots (8 steps, one each 2nd), then its path on a 7x7 grid."""
    cfg = RunConfig(model=ModelConfig(depth=20), data=DataConfig(source="synthetic"),
                    train=TrainConfig(steps=8, epochs=None, batch_size=64, probe_every=0, eval_every=1000,
                                      snapshot_every=2))
    run = RunDir.create(root, cfg, "bench-path")
    fit(cfg, data=data, run=run)
    x, y = train_images(data, 500)
    return Case("training path ResNet-20 n=500 7x7", Call(training_path, str(run.path), x, y, steps=7, label="path"),
                lambda s, t: estimates.trainpath_seconds(cfg.model, 500, 7, s, t))


def explain_cases(data: ImageData, r20: Net) -> list[Case]:
    """The Explain page's method comparison (app/faithful.py) and the ImageNet page's Score-CAM."""
    methods = ["saliency", "integrated_gradients", "gradcam"]
    x, y = fixed_images(data.test_x, data.test_y, 10)
    faith = Case("faithfulness ResNet-20 n=10 sal/IG/gradcam", Call(
        faithfulness_study, Deferred(model_with_weights, r20.config, r20.state), x, y, methods=methods, label="r20"),
        partial(estimates.faithfulness_seconds, r20.config, 10, [*methods, RANDOM]))
    x, y = fixed_images(data.test_x, data.test_y, 4)
    faith_cam = Case("faithfulness ResNet-20 n=4 scorecam", Call(
        faithfulness_study, Deferred(model_with_weights, r20.config, r20.state), x, y, methods=["scorecam"],
        label="r20"), partial(estimates.faithfulness_seconds, r20.config, 4, ["scorecam", RANDOM]))
    summary = imagenet.imagenet_summary("resnet18")
    block = "layer3.1"
    channels = next(b["out_shape"][0] for b in summary["blocks"] if b["name"] == block)
    photo = torch.nn.functional.interpolate(data.test_x[:1].float() / 255, size=imagenet.IMAGE_SIZE, mode="bilinear")
    mean, std = torch.tensor(imagenet.IMAGENET_MEAN), torch.tensor(imagenet.IMAGENET_STD)
    xi = ((photo - mean[:, None, None]) / std[:, None, None]).contiguous()  # as imagenet_input: (1, 3, 224, 224)
    cam = Case(f"Score-CAM ResNet-18 (random) {block}, {channels} ch", Call(
        explain_cam, Deferred(imagenet.build_imagenet, "resnet18", False), xi, "scorecam", block),
        lambda s, t: estimates.scorecam_seconds(summary["flops"], channels, s, t))
    return [faith, faith_cam, cam]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def reference(threads: int) -> tuple[Speed, float]:
    """``speed.measure()`` now, and its wall time over its CPU time per thread (> 1: other work
    on the machine took our cores meanwhile)."""
    measured: list[Speed] = []
    wall, cpu = timed(lambda: measured.append(speed_mod.measure()))
    return measured[0], wall / cpu * threads


def describe(sp: Speed, busy: float) -> str:
    return (f"fp32 img/s {sp.fp32_ips[0]:.0f}/{sp.fp32_ips[1]:.0f}, eval {sp.eval_ips[0]:.0f}/{sp.eval_ips[1]:.0f}, "
            f"train {sp.train_ips[0]:.0f}/{sp.train_ips[1]:.0f} (ResNet-20/56); wall/CPU time {busy:.2f}")


def median_speed(measured: list[tuple[Speed, float]]) -> tuple[Speed, float]:
    """Each figure's median over the measurements, and the median wall/CPU time."""
    def mid(values: list[float]) -> float:
        return statistics.median(values)

    def pair(field: str) -> tuple[float, float]:
        return mid([getattr(s, field)[0] for s, _ in measured]), mid([getattr(s, field)[1] for s, _ in measured])

    first = measured[0][0]
    return (replace(first, fp32_ips=pair("fp32_ips"), eval_ips=pair("eval_ips"), train_ips=pair("train_ips")),
            mid([b for _, b in measured]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--only", nargs="*", default=None, help="run only the cases whose name starts with one of these")
    ap.add_argument("--measure-once", action="store_true",
                    help="price every case with the first figures (default: the median of a measurement before each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    measured = [reference(args.threads)]  # in the same process and thread state as the runs
    print(f"{measured[0][0].machine}: {describe(*measured[0])}")
    data = make_synthetic(2000, 2000, 0)
    r20, p20, r56 = shipped("resnet20"), shipped("plain20"), untrained(56)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = cifar_cases(data, r20, p20, r56) + [trainpath_case(data, Path(tmp))] + explain_cases(data, r20)
        cases = [c for c in cases if args.only is None or any(c.name.startswith(o) for o in args.only)]
        for case in cases:
            if not args.measure_once:
                measured.append(reference(args.threads))
                print(f"  figures: {describe(*measured[-1])}", flush=True)
            actual, cpu = timed(partial(case.call, lambda *_, **__: None, threading.Event()))  # partial results too
            runs.append((case, actual, cpu))
            print(f"  {case.name}: took {actual:.1f} s ({cpu:.1f} s CPU)", flush=True)
    sp, busy = median_speed(measured)
    print(f"priced with the median figures of {len(measured)} measurements: {describe(sp, busy)}")
    print(f"{'experiment':46s} {'estimate_s':>10s} {'actual_s':>9s} {'actual/estimate':>15s} {'cpu_s':>7s} "
          f"{'cpu ratio':>9s}")
    ratios, cpu_ratios = [], []
    for case, actual, cpu in runs:
        estimate = case.seconds(sp, None)
        # The CPU ratio counts both sides in CPU time per thread: the run's CPU seconds over the
        # estimate with the figures' time counted the same way (time slices of other work drop out).
        ratios.append(actual / estimate)
        cpu_ratios.append(cpu / args.threads / (estimate / busy))
        print(f"{case.name:46s} {estimate:10.1f} {actual:9.1f} {ratios[-1]:15.2f} {cpu:7.1f} {cpu_ratios[-1]:9.2f}")
    print(f"ratio actual/estimate: min {min(ratios):.2f}, max {max(ratios):.2f}; "
          f"cpu ratio: min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f}")


if __name__ == "__main__":
    main()
