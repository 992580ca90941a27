"""Deletion, insertion and ROAD curves of one map: the measurements behind ``faithfulness``.

A map ranks the pixels by how much they matter for a class. If the ranking is faithful,
taking the top pixels away should make the class probability fall fast, and giving them
back to an image that lacks them should make it rise fast:

- **Deletion** (Petsiuk et al. 2018, RISE): the top fraction of pixels is set to the
  baseline (0 in normalized units: the data set's mean colour, the Integrated Gradients
  baseline too); the area under probability-against-fraction is small for a faithful map.
- **Insertion**: start from a blurred copy of the image (colour without shape) and put the
  top fraction of pixels back; the area is large for a faithful map.
- **ROAD** (Rong et al. 2022): remove pixels by noisy linear imputation (``road.impute``)
  instead of a flat colour, most relevant first (MoRF, the probability should drop) and
  least relevant first (LeRF, it should stay); the gap LeRF - MoRF is large for a faithful map.

Pixels are ranked by the map's *signed* value (a negative Integrated Gradients or occlusion
value is evidence against the class: it belongs at the end), ties in a seeded random order.
Each curve is one batched forward pass. Probabilities are of the class the map explains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.experiments.attribution.core import check_target, prepare, probabilities
from resnet_viz.experiments.attribution.road import impute_many
from resnet_viz.nets.cifar import eval_mode

__all__ = ["BLUR_SIGMA", "FRACTIONS", "ROAD_FRACTIONS", "auc", "blurred", "curves", "map_scores", "ranking",
           "road_curves"]

FRACTIONS: tuple[float, ...] = tuple(i / 20 for i in range(21))  # 0, 5%, ..., 100%
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
# Insertion's start: a blur that keeps the colours of a 32 px image and loses its shapes
# (RISE blurs 224 px images with sigma 5; CIFAR objects are a few pixels across).
BLUR_SIGMA = 3.0
ROAD_NOISE = 0.01  # ROAD's reference noise, here in normalized units


def check_fractions(fractions: Sequence[float], *, below_one: bool = False) -> list[float]:
    fr = [float(f) for f in fractions]
    top = 1.0 if not below_one else math.nextafter(1.0, 0.0)
    if not fr or any(not 0.0 <= f <= top for f in fr) or sorted(fr) != fr:
        where = "[0, 1)" if below_one else "[0, 1]"
        raise ValueError(f"fractions must be a non-empty increasing list of numbers in {where}, got {list(fractions)}")
    return fr


def auc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Area under values against fractions by the trapezoid rule (0 for a single point)."""
    if len(fractions) != len(values):
        raise ValueError(f"{len(fractions)} fractions but {len(values)} values")
    return float(sum((values[i] + values[i + 1]) / 2 * (fractions[i + 1] - fractions[i])
                     for i in range(len(values) - 1)))


def ranking(amap: Tensor, seed: int = 0) -> Tensor:
    """Flat pixel indices of an (H, W) map, most relevant (largest signed value) first; ties
    (and NaN, ranked last) in an order drawn from a generator seeded with ``seed``."""
    if not isinstance(amap, Tensor) or amap.dim() != 2:
        raise ValueError(f"expected an (H, W) map, got {tuple(amap.shape) if isinstance(amap, Tensor) else amap!r}")
    v = torch.nan_to_num(amap.detach().float().cpu().flatten(), nan=-math.inf)
    perm = torch.randperm(v.numel(), generator=torch.Generator().manual_seed(int(seed)))
    return perm[torch.argsort(v[perm], descending=True, stable=True)]


def blurred(x: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """A Gaussian blur of images (B, C, H, W), separable, edges replicated."""
    radius = min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1)
    if sigma <= 0 or radius < 1:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _counts(fractions: Sequence[float], n: int) -> list[int]:
    return [round(f * n) for f in fractions]


def _masks(order: Tensor, counts: Sequence[int], hw: tuple[int, int]) -> Tensor:
    """(len(counts), H, W) bool: True where a pixel is among the first ``counts[i]`` of ``order``."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return torch.stack([(rank < k).view(hw) for k in counts])


def _target_probs(model: nn.Module, batch: Tensor, target: int) -> list[float]:
    return probabilities(model, batch)[:, target].tolist()


def _setup(model: nn.Module, x: Tensor, amap: Tensor, target: int | None) -> tuple[Tensor, int]:
    xb = prepare(model, x, single=True)
    if amap.shape != xb.shape[-2:]:
        raise ValueError(f"the map is {tuple(amap.shape)} but the image is {tuple(xb.shape[-2:])}")
    if target is None:
        target = int(probabilities(model, xb).argmax(1))
    return xb, check_target(model, target)


def curves(model: nn.Module, x: Tensor, amap: Tensor, target: int | None = None, *,
           fractions: Sequence[float] = FRACTIONS, baseline: Tensor | None = None, start: Tensor | None = None,
           seed: int = 0) -> tuple[list[float], list[float]]:
    """(deletion, insertion): the probability of ``target`` (default: the predicted class)
    at each fraction of pixels deleted to ``baseline`` (default 0, the mean colour) and
    inserted into ``start`` (default ``blurred(x)``), for one normalized image x (1, 3, H, W)
    and its (H, W) map. Both curves run as one forward pass."""
    fr = check_fractions(fractions)
    with eval_mode(model, frozen=True):
        xb, target = _setup(model, x, amap, target)
        hw = (xb.shape[-2], xb.shape[-1])
        keep = _masks(ranking(amap, seed), _counts(fr, hw[0] * hw[1]), hw).to(xb.device)[:, None]  # (F, 1, H, W)
        base = torch.zeros_like(xb) if baseline is None else baseline.to(xb.device, xb.dtype).expand_as(xb)
        first = blurred(xb) if start is None else start.to(xb.device, xb.dtype).expand_as(xb)
        deleted = torch.where(keep, base, xb)  # the top pixels gone
        inserted = torch.where(keep, xb, first)  # only the top pixels there
        probs = _target_probs(model, torch.cat([deleted, inserted]), target)
    return probs[:len(fr)], probs[len(fr):]


def road_curves(model: nn.Module, x: Tensor, amap: Tensor, target: int | None = None, *,
                fractions: Sequence[float] = ROAD_FRACTIONS, noise: float = ROAD_NOISE,
                seed: int = 0) -> tuple[list[float], list[float]]:
    """(MoRF, LeRF): the probability of ``target`` after removing each fraction of the most
    (MoRF) and of the least (LeRF) relevant pixels by noisy linear imputation (one forward)."""
    fr = check_fractions(fractions, below_one=True)
    gen = torch.Generator().manual_seed(int(seed))
    with eval_mode(model, frozen=True):
        xb, target = _setup(model, x, amap, target)
        hw = (xb.shape[-2], xb.shape[-1])
        order = ranking(amap, seed)
        counts = _counts(fr, hw[0] * hw[1])
        most, least = _masks(order, counts, hw), _masks(order.flip(0), counts, hw)
        batch = impute_many(xb[0], torch.cat([most, least]), noise=noise, generator=gen)
        probs = _target_probs(model, batch, target)
    return probs[:len(fr)], probs[len(fr):]


def map_scores(model: nn.Module, x: Tensor, amap: Tensor, target: int | None = None, *,
               fractions: Sequence[float] = FRACTIONS, seed: int = 0) -> dict[str, Any]:
    """Deletion and insertion curves of one map with their areas: what the Explain page shows
    beside a map (two batched forward passes' worth of work)."""
    fr = check_fractions(fractions)
    deletion, insertion = curves(model, x, amap, target, fractions=fr, seed=seed)
    return {"fractions": fr, "deletion": deletion, "insertion": insertion,
            "deletion_auc": auc(fr, deletion), "insertion_auc": auc(fr, insertion)}
