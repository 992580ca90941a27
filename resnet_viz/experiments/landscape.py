"""Loss landscapes: 1D slices and 2D surfaces (Li, Xu, Taylor, Studer and Goldstein 2018).

The loss is evaluated at moved parameters ``theta + a d1 + b d2`` along random directions
that are *filter-normalized*: each filter (output row) of a direction has the norm of the
model's filter, so a step of 1 means "as big as the weights themselves" in every layer and
slices of different nets can be compared. Batch-norm parameters and biases get a zero
direction ("ignore BN" in the paper). As in the paper, the loss is taken on a fixed subset
of the *training* data.

Evaluation is in eval mode (BN uses its running statistics), without gradients, channels
last, and under bf16 autocast where ``resolve_precision("auto", device)`` picks it: the loss
values are then accurate to bf16 (about 2-3 significant digits), which is plenty for a
landscape. Every function works on a private deep copy: the caller's model is never touched.

Speed: each grid point is one forward pass over the subset (441 of them for a 21x21 surface).
Because the BN statistics of the copy are fixed during a forward pass, each BN is folded into
the conv before it (``W' = W * gamma / sqrt(var + eps)``) in a copy of the net (paired by the
blocks' names, not by torch.fx tracing), which removes a memory-bound pass per conv; the fold
is refreshed from the moved weights at every point, which costs far less than one batch
(``folded.Probe``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from resnet_viz.data.batches import normalize
from resnet_viz.experiments.common import ProgressFn, check, report
from resnet_viz.experiments.folded import Probe
from resnet_viz.fsutil import as_number  # NaN/inf are not JSON: a diverged point becomes a gap

# Images per forward pass. Small batches are faster here: ResNet-20 evaluates 2,000 images at
# 8,000 img/s in batches of 128-192 against 4,700 img/s in batches of 1,000 (2-core EPYC, bf16),
# because a small batch's activations stay in cache between layers. 441 points x 2,000 images
# then take about 2 minutes instead of 3.
EVAL_BATCH = 128

__all__ = ["EVAL_BATCH", "Slice1D", "Surface2D", "fixed_subset", "interpolation_slice", "random_direction",
           "preview_strides", "random_slice", "surface_2d", "surface_along"]


@dataclass(frozen=True)
class Slice1D:
    alphas: list[float]
    loss: list[float]  # mean cross-entropy at each alpha
    acc: list[float]  # top-1 accuracy in [0, 1] at each alpha
    kind: str  # "interpolation" (theta_init -> theta_trained) or "random" (theta + a d)
    label: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = [as_number(v, finite=True) for v in self.loss]
        return d


@dataclass(frozen=True)
class Surface2D:
    alphas: list[float]
    betas: list[float]
    loss: list[list[float]]  # loss[j][i] at (alphas[i], betas[j]): len(betas) rows of len(alphas)
    acc: list[list[float]]
    label: str
    seed: int  # the directions came from seeds seed and seed + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = [[as_number(v, finite=True) for v in row] for row in self.loss]
        return d


# ---------------------------------------------------------------------------- directions


def random_direction(model: nn.Module, seed: int) -> list[Tensor]:
    """One tensor per parameter of ``model`` (in ``parameters()`` order): a filter-normalized
    gaussian direction, zero for 1-D parameters (BN weights and biases, linear biases).

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)`` for the multi-dimensional
    parameters only, in order: two nets of the same architecture get the same raw direction
    (scaled to each net's own filters), whatever device they are on.
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[Tensor] = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() <= 1:
                out.append(torch.zeros(p.shape, dtype=p.dtype, device=p.device))
                continue
            d = torch.randn(p.shape, generator=gen)  # (out, in, kh, kw) or (out, in), fp32
            rows = d.view(p.shape[0], -1)  # one row per filter
            w_norm = p.detach().float().cpu().reshape(p.shape[0], -1).norm(dim=1, keepdim=True)
            rows.mul_(w_norm / (rows.norm(dim=1, keepdim=True) + 1e-10))  # 1e-10 as in the paper's code
            out.append(d.to(device=p.device, dtype=p.dtype))
    return out


# ---------------------------------------------------------------------------- data


def fixed_subset(x_uint8: Tensor, y: Tensor, n: int = 2000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded, class-balanced subset of ``n`` training images, normalized (channels last),
    and their int64 labels. x_uint8: (N, 3, H, W) uint8, y: (N,)."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise ValueError(f"fixed_subset wants uint8 images (N, C, H, W) such as ImageData.train_x, "
                         f"got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    if y.shape != (len(x_uint8),):
        raise ValueError(f"{len(x_uint8)} images but labels shaped {tuple(y.shape)}")
    if not 1 <= n <= len(y):
        raise ValueError(f"asked for {n} images from a set of {len(y)}; choose 1 <= n <= {len(y)}")
    classes = torch.unique(y).tolist()
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for k, c in enumerate(classes):
        want = n // len(classes) + (1 if k < n % len(classes) else 0)
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < want:
            most = int(torch.bincount(y).min()) * len(classes)
            raise ValueError(f"class {c} has only {len(idx)} images, {want} needed for a balanced "
                             f"subset of {n}; ask for at most {most}")
        parts.append(idx[torch.randperm(len(idx), generator=gen)[:want]])
    idx = torch.cat(parts).sort().values  # in data order: the subset does not depend on class order
    return normalize(x_uint8[idx]), y[idx].to(torch.int64)


# ---------------------------------------------------------------------------- grids


def _grid(lo: float, hi: float, steps: int) -> list[float]:
    """``steps`` evenly spaced points from lo to hi."""
    if steps < 2:
        raise ValueError(f"a slice needs at least 2 steps, got {steps}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"the range must satisfy lo < hi, got [{lo}, {hi}]")
    # Computed per point (not by accumulation) so 0 and 1 come out exact when on the grid.
    return [lo + (hi - lo) * i / (steps - 1) for i in range(steps)]


def _span(span: float) -> float:
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive number (1.0 is the size of the weights), got {span}")
    return span


# ---------------------------------------------------------------------------- experiments


@torch.no_grad()
def interpolation_slice(initial_state: dict[str, Tensor], trained_model: nn.Module, x: Tensor, y: Tensor, *,
                        steps: int = 25, lo: float = -0.25, hi: float = 1.25, batch_size: int = EVAL_BATCH,
                        precision: str = "auto", progress: ProgressFn | None = None,
                        stop: threading.Event | None = None, label: str = "") -> Slice1D:
    """Loss along ``theta(a) = (1 - a) theta_init + a theta_trained`` (Goodfellow et al. 2015).

    ``initial_state`` is the ``state_dict`` of the same architecture at initialisation. BN
    running statistics are interpolated with the weights (means linearly, variances
    geometrically, so they stay positive when extrapolating): cheap, and exact at both ends
    (a = 0 is the initial model, a = 1 the trained one, each as it evaluates in eval mode).
    In between they are not the statistics the mixed net would measure, so a barrier there
    may be somewhat overstated; re-estimating them would cost a pass per point and would no
    longer reproduce the initial model at a = 0. The default grid (25 steps) holds 0 and 1.
    """
    probe = Probe(trained_model, x, y, batch_size, precision)
    alphas = _grid(lo, hi, steps)
    work = probe.work
    variances = {f"{n}.running_var" for n, m in work.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None}
    targets = dict(work.named_parameters()) | dict(work.named_buffers())
    missing = sorted(set(targets) - set(initial_state))
    extra = sorted(set(initial_state) - set(targets))
    if missing or extra:
        raise ValueError(f"initial_state does not fit the trained model (missing {missing[:3]}, unexpected "
                         f"{extra[:3]}); pass the state_dict of the same architecture at initialisation")
    ends = []  # (target, start, end, is variance) per floating tensor; integer buffers keep the trained value
    for name, t in targets.items():
        t0 = initial_state[name]
        if t0.shape != t.shape:
            raise ValueError(f"initial_state[{name!r}] has shape {tuple(t0.shape)}, the trained model "
                             f"{tuple(t.shape)}; pass the initial state of the same architecture")
        if t.is_floating_point():
            t0, t1 = t0.to(t.device, t.dtype), t.detach().clone()
            if name in variances:  # interpolated in log space, exponentiated below
                t0, t1 = t0.clamp_min(1e-12).log(), t1.clamp_min(1e-12).log()
            ends.append((t, t0, t1, name in variances))
    loss, acc = [], []
    for k, a in enumerate(alphas):
        check(stop)
        for t, t0, t1, is_var in ends:
            torch.lerp(t0, t1, a, out=t)  # t = t0 + a (t1 - t0), in place
            if is_var:
                t.exp_()
        lv, av = probe.evaluate(stop)
        loss.append(lv)
        acc.append(av)
        report(progress, (k + 1) / len(alphas), f"interpolation {k + 1}/{len(alphas)}: a={a:+.3f} loss {lv:.3f}")
    return Slice1D(alphas=alphas, loss=loss, acc=acc, kind="interpolation", label=label)


def _moving(probe: Probe, dirs: list[list[Tensor]]) -> list[tuple[Tensor, Tensor, list[Tensor]]]:
    """(parameter, its base value, its directions) for the parameters the directions move."""
    return [(p, p.detach().clone(), [d[i] for d in dirs]) for i, p in enumerate(probe.params)
            if any(bool(d[i].any()) for d in dirs)]  # BN and biases stay put: skip them


@torch.no_grad()
def random_slice(model: nn.Module, x: Tensor, y: Tensor, *, seed: int = 0, steps: int = 21, span: float = 1.0,
                 batch_size: int = EVAL_BATCH, precision: str = "auto", progress: ProgressFn | None = None,
                 stop: threading.Event | None = None, label: str = "") -> Slice1D:
    """Loss along ``theta + a d``, a in [-span, span], d = random_direction(model, seed).
    An odd ``steps`` puts a = 0 (the model itself) on the grid."""
    alphas = _grid(-_span(span), span, steps)
    probe = Probe(model, x, y, batch_size, precision)
    moving = _moving(probe, [random_direction(model, seed)])
    loss, acc = [], []
    for k, a in enumerate(alphas):
        check(stop)
        for p, base, (d,) in moving:
            p.copy_(base).add_(d, alpha=a)  # in place: no allocation per point
        lv, av = probe.evaluate(stop)
        loss.append(lv)
        acc.append(av)
        report(progress, (k + 1) / len(alphas), f"random slice {k + 1}/{len(alphas)}: a={a:+.3f} loss {lv:.3f}")
    return Slice1D(alphas=alphas, loss=loss, acc=acc, kind="random", label=label)


def preview_strides(steps: int) -> list[int]:
    """Strides of the coarse grids a surface of ``steps`` x ``steps`` is filled in through,
    coarsest first: 21 -> [4, 2] (a 6x6 grid, then 11x11, then all 21x21); [] when no
    coarser grid with at least 3 points per axis shares the corners."""
    strides, s = [], 2
    while (steps - 1) % s == 0 and (steps - 1) // s >= 2:
        strides.append(s)
        s *= 2
    return strides[::-1]


@torch.no_grad()
def surface_2d(model: nn.Module, x: Tensor, y: Tensor, *, seed: int = 0, steps: int = 21, span: float = 1.0,
               batch_size: int = EVAL_BATCH, precision: str = "auto", progress: ProgressFn | None = None,
               stop: threading.Event | None = None, label: str = "") -> Surface2D:
    """Loss on ``theta + a d1 + b d2`` for a, b in [-span, span] (steps x steps points), with
    filter-normalized directions d1, d2 from seeds ``seed`` and ``seed + 1`` (:func:`surface_along`)."""
    grid = _grid(-_span(span), span, steps)
    dirs = (random_direction(model, seed), random_direction(model, seed + 1))
    return surface_along(model, x, y, dirs, grid, list(grid), batch_size=batch_size, precision=precision,
                         progress=progress, stop=stop, label=label, seed=seed)


@torch.no_grad()
def surface_along(model: nn.Module, x: Tensor, y: Tensor, directions: tuple[list[Tensor], list[Tensor]],
                  alphas: list[float], betas: list[float], *, batch_size: int = EVAL_BATCH, precision: str = "auto",
                  progress: ProgressFn | None = None, stop: threading.Event | None = None, label: str = "",
                  seed: int = -1) -> Surface2D:
    """Loss on ``theta + a d1 + b d2`` at every (a, b) of ``alphas`` x ``betas``, along given directions (a
    tensor per parameter, in ``parameters()`` order; a zero one leaves its parameter put): random ones
    (:func:`surface_2d`) or a training path's principal ones (``experiments.trainpath``); ``seed`` is
    only recorded. The points are visited coarse to fine (:func:`preview_strides`), each finished coarse
    grid going to ``progress`` as ``partial=`` (a ``Surface2D.to_dict()``): a person sees the whole
    surface at low resolution after a tenth of the work. Each point is evaluated on its own, so the
    order changes no value."""
    params = list(model.parameters())
    for d in directions:
        if len(d) != len(params) or any(t.shape != p.shape for t, p in zip(d, params, strict=False)):
            raise ValueError("a direction must hold one tensor shaped like each parameter of the model, in order")
    if len(alphas) != len(betas) or len(alphas) < 2:
        raise ValueError(f"the grid must be square with at least 2 points per axis, got {len(alphas)}x{len(betas)}")
    steps = len(alphas)
    probe = Probe(model, x, y, batch_size, precision)
    moving = _moving(probe, [[t.to(p.device, p.dtype) for t, p in zip(d, probe.params, strict=True)]
                             for d in directions])
    loss = [[0.0] * steps for _ in betas]  # (betas, alphas)
    acc = [[0.0] * steps for _ in betas]
    total, k = steps * steps, 0
    seen: set[tuple[int, int]] = set()
    for stride in [*preview_strides(steps), 1]:
        for j in range(0, steps, stride):
            for i in range(0, steps, stride):
                if (j, i) in seen:
                    continue
                seen.add((j, i))
                check(stop)
                a, b = alphas[i], betas[j]
                for p, base, (d1, d2) in moving:
                    p.copy_(base).add_(d1, alpha=a).add_(d2, alpha=b)  # in place: no allocation per point
                loss[j][i], acc[j][i] = probe.evaluate(stop)
                k += 1
                report(progress, k / total, f"surface {k}/{total}: a={a:+.2f} b={b:+.2f} loss {loss[j][i]:.3f}")
        if stride > 1:
            coarse = Surface2D(alphas=alphas[::stride], betas=betas[::stride],
                               loss=[r[::stride] for r in loss[::stride]], acc=[r[::stride] for r in acc[::stride]],
                               label=label, seed=seed)
            n = len(coarse.alphas)
            report(progress, k / total, f"surface {k}/{total}: the {n}x{n} preview is ready", partial=coarse.to_dict())
    return Surface2D(alphas=list(alphas), betas=list(betas), loss=loss, acc=acc, label=label, seed=seed)
