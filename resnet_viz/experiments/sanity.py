"""Sanity check for attribution maps (Adebayo et al. 2018, cascading model randomization).

A map that explains the *model* must change when the model's weights are destroyed. The
check re-initializes the layers from the top (the linear head) down to the stem, one
group at a time and cumulatively, and recomputes the map after each step. If the map of
a half-randomized net still looks like the trained one, the method is showing the image
(edges, a prior of the architecture), not what the net learned. Similarity is the
Spearman rank correlation of the absolute maps (the measure of the paper's Fig. 2), and
SSIM of the displayed [0, 1] maps.

All of it runs on a deep copy: the caller's model is never touched.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.experiments.attribution import (
    METHODS,
    STEM,
    attribute,
    normalize_map,
    predict,
)
from resnet_viz.experiments.common import ProgressFn, check, report
from resnet_viz.nets.cifar import block_names, get_block

__all__ = ["SanityResult", "reading", "sanity_check", "spearman", "ssim"]

@dataclass(frozen=True)
class SanityResult:
    method: str
    target: int  # the class explained in every map: the trained model's prediction unless given
    layers: list[str]  # randomization order: "fc", the blocks from last to first, "stem"
    maps: list[list[list[float]]]  # (H, W) in [0, 1]: trained model, then after randomizing layers[i] (cumulative)
    similarity: list[float]  # Spearman of |map| with the trained |map|, per entry of maps (1.0 first)
    ssim: list[float] | None  # SSIM of the displayed maps with the trained one (1.0 first)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reading": reading(self.similarity, self.layers, self.method)}


PASS_BELOW, FAIL_FROM = 0.5, 0.7  # ρ with the top half of the layers random: the map has changed / has not


def reading(similarity: list[float], layers: list[str], method: str = "saliency") -> str:
    """What the numbers say, in words: does the map depend on the learned weights?

    Judged at the point where the top half of the layers (from the head down) is random, as
    Adebayo et al. read their Fig. 2: a map that still correlates with the trained one there
    (ρ >= 0.7) shows the image or the architecture, not what the net learned. One that
    hardly changes when only the head is random (their finding for Guided Backprop) passes
    at most in part, whatever the layers below do.
    """
    sims, n = similarity[1:], len(layers)
    if not sims or len(sims) != n:
        return ""
    mid = n // 2 - 1 if n > 1 else 0  # the last layer of the top half
    at, last = sims[mid], sims[-1]
    where = f"with {layers[0]} to {layers[mid]} random" if mid else f"with {layers[0]} random"
    head = (f"{method}: ρ = {sims[0]:.2f} once {layers[0]} is random, {at:.2f} {where}, "
            f"{last:.2f} with every layer random.")
    if at < PASS_BELOW and sims[0] < FAIL_FROM:
        return f"{head} The map changes with the weights: it passes the check, it depends on what the net learned."
    if at >= FAIL_FROM:
        return (f"{head} With half the net random the map still looks like the trained one: it fails the check, "
                "it shows the image (edges, the architecture's prior) more than what the net learned.")
    return f"{head} The map changes only in part: it depends on the weights, but much of it is the image."


def _ranks(v: Tensor) -> Tensor:
    """1-based ranks of a 1-d tensor, ties sharing their average rank (as scipy's rankdata)."""
    sorted_v, order = v.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # 1-based position of each run's last element
    ranks = torch.empty(v.numel(), dtype=torch.float64)
    # Average ranks matter here: a Grad-CAM or saliency map can have many exact zeros, and
    # arbitrary ranks among them would invent (anti-)correlation from pixel order.
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two equally sized tensors (flattened); 0.0 when either is constant."""
    if a.numel() != b.numel():
        raise ValueError(f"maps must have the same number of pixels, got {a.numel()} and {b.numel()}")
    ra = _ranks(a.detach().flatten().double().cpu())
    rb = _ranks(b.detach().flatten().double().cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity of two (H, W) maps in [0, 1] (Wang et al. 2004, Gaussian window)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"ssim needs two (H, W) maps of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    win = min(window, *a.shape)
    win -= 1 - win % 2  # odd, so the window has a centre
    t = torch.arange(win, dtype=torch.float64) - (win - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (torch.outer(g, g) / g.sum() ** 2)[None, None]  # (1, 1, win, win), sums to 1

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, kernel)  # valid: no padding, so borders do not average in zeros

    x, y = (m.detach().double().cpu()[None, None] for m in (a, b))
    c1, c2 = 0.01**2, 0.03**2  # the paper's K1, K2 for a data range of 1
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


@torch.no_grad()
def _reinit(module: nn.Module, g: torch.Generator) -> None:
    """The model's own initialization (``CifarResNet._init_weights``), drawn from ``g``.

    Convs: Kaiming normal, fan-out, ReLU gain. BN: weight 1, bias 0 and fresh running
    statistics (statistics of the trained layers would rescale random features by
    meaningless amounts). Linear: PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Values are drawn on the CPU and copied, so one seed gives the same net on any device.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            std = math.sqrt(2.0 / (m.weight.shape[0] * m.weight[0, 0].numel()))  # fan_out = out * kh * kw
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
            if m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 2 * bound - bound)


def _groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(name, modules) to randomize, top first: the head, each block (with its shortcut), the stem."""
    fc, conv1, bn1 = (getattr(model, a, None) for a in ("fc", "conv1", "bn1"))
    names = block_names(model)
    if not isinstance(fc, nn.Linear) or conv1 is None or bn1 is None or not names:
        raise ValueError("the sanity check needs a CifarResNet (a stem conv1/bn1, blocks and a linear fc)")
    head: list[nn.Module] = [fc]
    return [("fc", head)] + [(n, [get_block(model, n)]) for n in reversed(names)] + [(STEM, [conv1, bn1])]


def _map(model: nn.Module, x: Tensor, method: str, target: int, seed: int) -> Tensor:
    # SmoothGrad gets the same noise (seed) at every step, so the maps differ by the weights only.
    return attribute(model, x, method, target, seed=seed)


def sanity_check(
    model: nn.Module,
    x: Tensor,
    method: str = "saliency",
    *,
    target: int | None = None,
    seed: int = 0,
    with_ssim: bool = True,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> SanityResult:
    """Cascading randomization of a copy of ``model``; the map of one image x (1, 3, H, W) after each step.

    ``method`` is one of ``attribution.METHODS`` (with their default settings). The class
    explained is ``target`` (default: the trained model's prediction) in every map, so the
    maps differ by the weights only. ``seed`` fixes the random weights (and SmoothGrad's
    noise). ``progress`` is called after each map; ``stop`` is checked before each.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(x, Tensor) or not (x.dim() == 4 and x.shape[:2] == (1, 3) or x.dim() == 3 and x.shape[0] == 3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be one normalized image shaped (1, 3, H, W), got {shape}; pass x[i:i+1]")
    _groups(model)  # fails before the copy when the model is not a CifarResNet
    work = copy.deepcopy(model)  # weights, buffers, modes and flags: all private from here on
    groups = _groups(work)
    if target is None:
        target = int(predict(work, x).argmax(1))
    g = torch.Generator().manual_seed(seed)
    steps = len(groups) + 1
    check(stop)
    trained = _map(work, x, method, target, seed)
    trained_shown = normalize_map(trained)
    maps, similarity, ssims = [trained_shown], [1.0], [1.0]
    report(progress, 1 / steps, "map of the trained model")
    for i, (name, modules) in enumerate(groups):
        check(stop)
        for m in modules:
            _reinit(m, g)
        a = _map(work, x, method, target, seed)
        shown = normalize_map(a)
        maps.append(shown)
        similarity.append(spearman(trained.abs(), a.abs()))
        if with_ssim:
            ssims.append(ssim(trained_shown, shown))
        report(progress, (i + 2) / steps, f"randomized down to {name}")
    return SanityResult(
        method=method, target=target, layers=[name for name, _ in groups],
        maps=[m.tolist() for m in maps], similarity=similarity, ssim=ssims if with_ssim else None,
    )
