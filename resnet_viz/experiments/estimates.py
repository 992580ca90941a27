"""How long each experiment takes on this machine, before it starts.

Each experiment's work is counted in the passes it makes (images through a net, forward or
forward and backward) and priced with the machine's measured speed (``training.speed``):
the loss landscape runs like an evaluation (bf16 where the CPU has it, large batches), the
lesion study, the attribution maps and the signal measurements in fp32 at small batches.
``benchmarks/estimates.py`` times each against a real run (README). A task that runs beside a training run gets one
thread of the machine's cores (``app.tasks``), hence ``threads``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from resnet_viz.config import ModelConfig, RunConfig, TrainConfig
from resnet_viz.experiments.degradation import DEFAULT_STEPS, degradation_configs, train_config
from resnet_viz.experiments.lesion import MAX_K
from resnet_viz.training.speed import (  # a run's time, for the pages (which never import training)
    Speed,
    brief_epochs,
    data_sizes,
    run_seconds,
    training_seconds,
)

# One image at a time costs more per image than a batch: the sanity check's maps are forward
# and backward passes of batch 1. Measured here (one thread, benchmarks/estimates.py and CPU
# time): a saliency map 4-7 batched fp32 images' time, a whole step of the sanity check (the
# group's new weights, the map, its rank correlation and SSIM) 5.2 at depths 20, 56 and 110.
# Priced at 16 before, the ResNet-56 check took 0.44-0.63 of its estimate.
_SINGLE_IMAGE = 6.0
__all__ = ["brief_epochs", "data_sizes", "lesion_seconds", "quick_config", "quick_steps", "replay_seconds",
           "run_seconds", "sanity_seconds", "shattered_seconds", "signal_seconds", "slice_seconds", "surface_seconds",
           "scorecam_seconds"]
SHATTERED_POINTS = 256  # signal.shattered_gradients' default
SIGNAL_BATCH = 64  # signal.signal_propagation's default


def _slowdown(speed: Speed, threads: int | None) -> float:
    """How much slower a task on ``threads`` runs than the measured figures (all threads)."""
    return 1.0 if threads is None or threads >= speed.threads else speed.threads / max(1, threads)


# A lesioned net skips its deleted blocks (a deleted block is its shortcut): measured here
# (ResNet-20, 500 images, one thread) the stem, the head and the shortcuts left with every
# block deleted cost 0.10 of the intact net, half the blocks 0.45-0.55. Priced by the intact
# net's passes alone, the study took 0.5-0.67 of its estimate (benchmarks/estimates.py).
_LESION_FIXED = 0.1


def lesion_seconds(model: ModelConfig, images: int, speed: Speed, threads: int | None = None, *,
                   max_k: int = MAX_K, trials: int = 5) -> float:
    """The intact net, each block deleted alone, then up to ``trials`` subsets per k <= ``max_k``
    (no more than the net's blocks, as ``lesion.max_k_for``); a pass with k of the n blocks
    deleted costs the fixed part and the (n - k) / n of the blocks left."""
    n = 3 * model.blocks_per_stage
    max_k = min(max_k, n)
    counts = [(0, 1), (1, n)] + [(k, min(trials, math.comb(n, k))) for k in range(2, max_k + 1)]
    passes = sum(c * (_LESION_FIXED + (1 - _LESION_FIXED) * (n - k) / n) for k, c in counts)
    return passes * images * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)


def slice_seconds(model: ModelConfig, images: int, steps: int, speed: Speed, threads: int | None = None) -> float:
    """The loss at ``steps`` points along one direction."""
    return steps * images * speed.eval_seconds_per_image(model) * _slowdown(speed, threads)


def surface_seconds(model: ModelConfig, images: int, steps: int, speed: Speed, threads: int | None = None) -> float:
    """The loss on a ``steps`` x ``steps`` grid."""
    return steps * steps * images * speed.eval_seconds_per_image(model) * _slowdown(speed, threads)


# The signal measurements run in fp32 (no autocast) with the weights frozen: a forward and a
# backward to the input, with the probe's statistics at every block. Measured here (one
# thread, batch 64, CPU time): 2.1-3 fp32 forwards' time per image for the signal
# propagation (depths 20-110, probe included), 2.1 for the shattered gradients' points.
# Priced as a bf16 training step before, both took 1.6-1.9x their estimates (benchmarks/estimates.py).
_INPUT_GRAD_PASSES = 2.5


def signal_seconds(depths: Sequence[int], speed: Speed, threads: int | None = None) -> float:
    """One forward and backward batch through a plain net and a ResNet of each depth."""
    per_image = sum(speed.fp32_seconds_per_image(ModelConfig(depth=d, shortcut=s))
                    for d in depths for s in ("none", "A"))
    return SIGNAL_BATCH * _INPUT_GRAD_PASSES * per_image * _slowdown(speed, threads)


def shattered_seconds(depth: int, speed: Speed, threads: int | None = None) -> float:
    """The input gradient at every point of a line, for a plain net and a ResNet of ``depth``
    (after one forward batch that sets an untrained net's BN statistics)."""
    per_image = sum(speed.fp32_seconds_per_image(ModelConfig(depth=depth, shortcut=s)) for s in ("none", "A"))
    return (SHATTERED_POINTS * _INPUT_GRAD_PASSES + SIGNAL_BATCH) * per_image * _slowdown(speed, threads)


def sanity_seconds(model: ModelConfig, speed: Speed, threads: int | None = None) -> float:
    """One map of one image per randomization step: the head, each block, the stem, and the trained net."""
    maps = 3 * model.blocks_per_stage + 3
    return maps * _SINGLE_IMAGE * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)


def scorecam_seconds(flops: int, channels: int, speed: Speed, threads: int | None = None) -> float:
    """Score-CAM of one image at a block of ``channels`` channels, for a net of ``flops``
    forward FLOPs per image (an ImageNet ResNet at 224 px: not a ``ModelConfig``): the image's
    forward pass, then one masked image per channel, in fp32 batches of 64, priced per FLOP at
    the measured ResNet-56 rate (the larger probe, nearer these nets' conv sizes)."""
    seconds_per_flop = 1.0 / (speed.fp32_ips[1] * speed.flops[1])
    return (channels + 1) * flops * seconds_per_flop * _slowdown(speed, threads)


# Sharpness (experiments.sharpness), in fp32 forward passes of the same images. A Hessian-vector
# product is one backward through the gradient's graph, about 2x a backward (~4 forwards) in
# FLOPs; measured here (ResNet-20, 128 images, one thread) it took 8 forwards' time, and building
# the graph (forward + backward with create_graph) 5.
_HVP_PASSES = 8.0
_GRAPH_PASSES = 5.0


def sharpness_seconds(model: ModelConfig, images: int, speed: Speed, threads: int | None = None, *,
                      top: int = 3, max_iter: int = 20, trace_samples: int = 20) -> float:
    """At most: every eigenvalue running to ``max_iter`` products, then the trace's samples
    (power iteration often converges sooner)."""
    passes = _GRAPH_PASSES + _HVP_PASSES * (top * max_iter + trace_samples)
    return passes * images * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)


__all__ += ["sharpness_seconds"]


# The quick replay: the full replay cut short, its steps chosen to fit QUICK_SECONDS on the
# machine at hand (its speed measured by ``training.speed``). Cut short, not compressed: the
# runs follow the first steps of the full replay's 1,000-step schedule. A whole one-cycle
# schedule squeezed into 200 steps warms up in 30 and left ResNet-56 19 points behind
# ResNet-20 on CIFAR-10 (README); the full schedule's first 200 steps have plain-56 13 points
# behind plain-20 and the two ResNets level (the shipped run's records). Not under
# MIN_QUICK_STEPS, not over the full replay's steps.
QUICK_SECONDS = 14 * 60
MIN_QUICK_STEPS = 200
# One evaluation, at the end: on a slow CPU four passes over 10,000 test images cost four
# nets about 5 minutes, a third of the budget, and the verdict reads training error.
QUICK_EVALUATIONS = 1


def quick_config(steps: int) -> TrainConfig:
    """The quick replay's training settings: the first ``steps`` of the full replay."""
    return replace(train_config(steps, QUICK_EVALUATIONS), schedule_steps=max(steps, DEFAULT_STEPS))


def replay_seconds(base: RunConfig, train_size: int, test_size: int, speed: Speed,
                   train: TrainConfig | None = None) -> float:
    """Seconds the four runs take here, one after another, with ``train`` (default: the full replay's)."""
    base = replace(base, train=train or train_config())
    return sum(training_seconds(c, train_size, test_size, speed) for c in degradation_configs(base))


def quick_steps(base: RunConfig, train_size: int, test_size: int, speed: Speed,
                seconds: float = QUICK_SECONDS) -> int:
    """Steps per run so that the four fit in about ``seconds`` here: a multiple of 50 between
    ``MIN_QUICK_STEPS`` and ``DEFAULT_STEPS``."""
    # One evaluation whatever the steps, so the time is linear in them: start-ups and
    # evaluation, then the same cost per step.
    one, more = (replay_seconds(base, train_size, test_size, speed, quick_config(n)) for n in (1, 1 + DEFAULT_STEPS))
    per_step = (more - one) / DEFAULT_STEPS
    fixed = one - per_step
    steps = int((seconds - fixed) / per_step) // 50 * 50
    return min(DEFAULT_STEPS, max(MIN_QUICK_STEPS, steps))


def paths_seconds(model: ModelConfig, images: int, samples: int, speed: Speed, threads: int | None = None) -> float:
    """One forward pass, the ordinary backward, then one backward per sampled path (``experiments.paths``).

    Priced in fp32 forward passes, as measured here (ResNet-20/56, batch 64, one thread): the
    backward to the input with every gate open costs about 1.2 forwards; a path's backward
    skips the branches it does not take (a closed gate stops autograd there), so a path of
    length k costs about 0.1 + 0.7 k/n forwards.
    """
    n = 3 * model.blocks_per_stage
    lengths = [n] if model.shortcut == "none" else range(n + 1)
    paths = sum(min(samples, math.comb(n, k)) * (0.1 + 0.7 * k / n) for k in lengths)
    return (2.2 + paths) * images * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)


def trainpath_seconds(model: ModelConfig, images: int, steps: int, speed: Speed, threads: int | None = None) -> float:
    """The training path's contour: a ``steps`` x ``steps`` grid of evaluations, as a surface
    (reading the snapshots and their PCA take a second or two beside it)."""
    return surface_seconds(model, images, steps, speed, threads)


def responses_seconds(model: ModelConfig, images: int, speed: Speed, threads: int | None = None) -> float:
    """Fig. 7's layer responses: one fp32 forward pass of each image (batches of 100) with hooks."""
    return images * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)
# Faithfulness (experiments.attribution.faithfulness), per image and method: the map (batch-1
# gradient passes priced like the sanity check's; batched steps, samples and occlusion patches
# as images, a forward and backward as 3 forwards), then the deletion and insertion curves
# (2 x 21 images) and ROAD (2 x 5 imputed images) in one forward each; ROAD's imputation
# (conjugate gradients on 10 masks) costs about 30 images' time. Measured here against the
# sanity check on ResNet-20, these small batches ran about 1.5x slower per image than the
# speed test's batches of 64.
_FAITH_MAP_PASSES = {"saliency": 0.0, "integrated_gradients": 3 * 50, "smoothgrad": 3 * 20, "guided_backprop": 0.0,
                     "gradcam": 0.0, "occlusion": 15 * 15, "random": 0.0,
                     # grad-cam's: one image's forward and backward (priced as a single image below),
                     # Score-CAM one masked image per channel of the last block (64 at width 1)
                     "gradcam_plusplus": 0.0, "layercam": 0.0, "hirescam": 0.0, "eigencam": 0.0, "scorecam": 65}
_FAITH_CURVE_PASSES = 2 * 21 + 2 * 5 + 30
_FAITH_SMALL_BATCH = 1.5


def faithfulness_seconds(model: ModelConfig, images: int, methods: Sequence[str], speed: Speed,
                         threads: int | None = None) -> float:
    """Each method's map of each image (and the random reference), then its curves."""
    names = [m for m in methods if m != "random"] + ["random"]
    passes = sum(_FAITH_MAP_PASSES.get(m, 3.0) + _FAITH_CURVE_PASSES for m in names)
    single = sum(_SINGLE_IMAGE for m in names if m not in ("random", "occlusion") and not _FAITH_MAP_PASSES.get(m))
    per_image = _FAITH_SMALL_BATCH * passes + single
    return images * per_image * speed.fp32_seconds_per_image(model) * _slowdown(speed, threads)


__all__ += ["faithfulness_seconds"]
