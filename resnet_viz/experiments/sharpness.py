"""Sharpness of the training loss: top Hessian eigenvalues and the Hessian trace (PyHessian).

Keskar et al. (2017) and Li et al. (2018) read a flat minimum (small curvature) as one that
generalizes; PyHessian (Yao et al. 2020) measures it with the top eigenvalues of the Hessian
of the training loss on a fixed batch (its tutorial: about 196 for a trained CIFAR ResNet-20
on one batch of 128) and the trace (the sum of all eigenvalues, the average curvature).

How, and the choices made:

- Hessian-vector products by double backward (``torch.autograd.grad`` of ``g . v`` where
  ``g`` was computed with ``create_graph=True``), not ``torch.func.jvp`` over ``grad``: the
  gradient's graph is built once per chunk of images and every product after that is one
  backward through it (about two backwards' cost), where jvp-over-grad redoes the forward
  and backward at every product (1.4x slower per product on the CPU here: ResNet-20, 128
  images, one thread, 1.25 s against 1.7 s; the two agree to 4e-6).
- BatchNorm in eval mode (its running statistics), so the loss is a fixed function of the
  weights: in train mode the batch statistics depend on the weights too and every forward
  would update the running averages.
- Every parameter is included, BN's gamma and beta too (as PyHessian does, so the numbers
  compare with its tutorial); the option-A shortcut has none.
- Power iteration finds the eigenvalue of largest *magnitude*; the k-th is found on the
  Hessian deflated by the first k-1 (the vector is kept orthogonal to their eigenvectors).
  Reported signed: a net at initialization can have a large negative one.
- The trace by Hutchinson's estimator, ``E[v^T H v] = tr(H)`` for Rademacher ``v`` (random
  +-1 entries), with the standard error of the mean over the samples.
- Random vectors come from a ``torch.Generator`` seeded by ``seed`` (never the global RNG).

The loss is the mean cross-entropy over the images; with more images than ``CHUNK`` the
Hessian is the image-weighted mean of the chunks' Hessians. Everything is bounded: at most
``MAX_IMAGES`` images, ``MAX_TOP`` eigenvalues, ``MAX_ITERATIONS`` products per eigenvalue and
``MAX_TRACE_SAMPLES`` for the trace. Work happens on a private copy of the model: the
caller's model keeps its mode, weights and ``requires_grad`` flags.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.experiments.common import ProgressFn, check, report
from resnet_viz.fsutil import as_number

__all__ = ["CHUNK", "MAX_IMAGES", "MAX_ITERATIONS", "MAX_TOP", "MAX_TRACE_SAMPLES", "SharpnessResult",
           "hutchinson_trace", "loss_hvp", "recalibrate_bn", "sharpness", "top_eigenvalues"]

MAX_IMAGES = 512  # the retained graphs of 512 images of ResNet-56 take about 2 GB
CHUNK = 128  # images per retained graph: PyHessian's batch
MAX_TOP = 10
MAX_ITERATIONS = 200
MAX_TRACE_SAMPLES = 500

Vec = list[Tensor]  # one tensor per parameter
HVP = Callable[[Vec], Vec]


@dataclass(frozen=True)
class SharpnessResult:
    label: str
    images: int  # training images the loss is taken on
    params: int  # parameters the Hessian is over (BN's gamma and beta included)
    loss: float  # the mean cross-entropy on those images
    eigenvalues: list[float]  # top-k by magnitude, signed, in the order found
    iterations: list[int]  # Hessian-vector products each took
    converged: list[bool]  # relative change under tol before max_iter
    trace: float  # Hutchinson's estimate
    trace_se: float  # its standard error (0 with one sample)
    trace_samples: int
    hvps: int  # Hessian-vector products in all
    recalibrated: bool  # BN's running statistics were set from the images first (untrained nets)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # NaN is not JSON: no trace asked for (or a diverged net) becomes null.
        d["eigenvalues"] = [as_number(v, finite=True) for v in self.eigenvalues]
        for key in ("loss", "trace", "trace_se"):
            d[key] = as_number(d[key], finite=True)
        return d


def _dot(a: Vec, b: Vec) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def _normalize(v: Vec) -> Vec:
    n = float(torch.sqrt(_dot(v, v)))
    if n == 0.0:
        raise ValueError("power iteration reached the zero vector: the Hessian is zero on the deflated space")
    return [x / n for x in v]


def _orthogonalize(v: Vec, basis: Sequence[Vec]) -> Vec:
    # Gram-Schmidt against the eigenvectors found so far: deflation without forming H - l u u^T.
    for u in basis:
        c = _dot(v, u)
        v = [x - c * y for x, y in zip(v, u, strict=True)]
    return v


def _bounded(name: str, value: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def top_eigenvalues(hvp: HVP, like: Sequence[Tensor], k: int = 1, *, max_iter: int = 100, tol: float = 1e-3,
                    generator: torch.Generator | None = None, progress: Callable[[int, int, float], None] | None = None,
                    stop: threading.Event | None = None) -> tuple[list[float], list[int], list[bool]]:
    """The ``k`` eigenvalues of largest magnitude of the symmetric operator ``hvp`` by power
    iteration with deflation: (eigenvalues, products each took, converged flags).

    ``like`` gives the shapes (a list of tensors, e.g. the parameters). An eigenvalue has
    converged when its Rayleigh quotient changes by less than ``tol`` relative to its size
    between two products; otherwise iteration stops at ``max_iter`` products and the last
    estimate is kept. ``progress(i, n, value)`` is called after every product.
    """
    _bounded("k", k, 1, MAX_TOP)
    _bounded("max_iter", max_iter, 1, MAX_ITERATIONS)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number (1e-3 is PyHessian's), got {tol!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    values: list[float] = []
    iterations: list[int] = []
    converged: list[bool] = []
    basis: list[Vec] = []
    for _ in range(k):
        v = _normalize(_orthogonalize(
            [torch.randn(t.shape, generator=gen).to(t.device, t.dtype) for t in like], basis))
        value, done, it = math.nan, False, 0
        while it < max_iter and not done:
            check(stop)
            hv = _orthogonalize(hvp(v), basis)
            it += 1
            new = float(_dot(hv, v))  # the Rayleigh quotient: v has norm 1
            done = it > 1 and abs(new - value) <= tol * (abs(value) + 1e-6)
            value = new
            if progress is not None:
                progress(len(values), it, value)
            if float(torch.sqrt(_dot(hv, hv))) == 0.0:  # H v = 0: the eigenvalue is 0 exactly
                done = True
                break
            v = _normalize(hv)
        values.append(value)
        iterations.append(it)
        converged.append(done)
        basis.append(v)
    return values, iterations, converged


def hutchinson_trace(hvp: HVP, like: Sequence[Tensor], samples: int = 50, *, generator: torch.Generator | None = None,
                     progress: Callable[[int, float], None] | None = None,
                     stop: threading.Event | None = None) -> tuple[float, float]:
    """(trace, standard error): the mean of ``v^T H v`` over ``samples`` Rademacher vectors ``v``
    (each entry +1 or -1 with equal chance) and the standard error of that mean."""
    _bounded("samples", samples, 1, MAX_TRACE_SAMPLES)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    draws: list[float] = []
    for i in range(samples):
        check(stop)
        v = [(torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t.device, t.dtype) for t in like]
        draws.append(float(_dot(hvp(v), v)))
        if progress is not None:
            progress(i + 1, statistics.fmean(draws))
    se = statistics.stdev(draws) / math.sqrt(len(draws)) if len(draws) > 1 else 0.0
    return statistics.fmean(draws), se


def loss_hvp(model: nn.Module, x: Tensor, y: Tensor, chunk: int = CHUNK) -> tuple[HVP, float]:
    """(hvp, loss): Hessian-vector products of the mean cross-entropy of ``model`` on (x, y)
    with respect to all its parameters, and the loss. ``model`` must be in the mode wanted
    (eval, for a fixed function of the weights) with ``requires_grad`` on; the gradients'
    graphs are kept alive by the returned function."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads: list[tuple[float, Vec]] = []  # (share of the images, gradient with its graph)
    total = 0.0
    for i in range(0, len(y), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        loss = F.cross_entropy(model(xb), yb)
        share = len(yb) / len(y)
        grads.append((share, list(torch.autograd.grad(loss, params, create_graph=True))))
        total += share * float(loss.detach())

    def hvp(v: Vec) -> Vec:
        out = [torch.zeros_like(p) for p in params]
        for share, g in grads:
            hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True)
            for o, h in zip(out, hv, strict=True):
                o.add_(h.detach(), alpha=share)
        return out

    return hvp, total


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: Tensor) -> None:
    """Set every BatchNorm's running statistics to the mean and (unbiased) variance over all of
    ``x``, in one forward pass (at most ``MAX_IMAGES``, without gradients: a few hundred MB);
    the model is left in eval mode.

    For a net at initialization: its running statistics are still the placeholders 0 and 1,
    so in eval mode BN normalizes nothing, and an untrained ResNet-56's logits are in the
    thousands (every block adds its branch's variance; measured: loss 3,565 on 64 CIFAR-10
    images). Its first training step normalizes by the batch; these statistics make the
    eval-mode loss that net's, still a fixed function of the weights.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            # With momentum None and one batch the running values are that batch's statistics
            # exactly (chunks would be averaged per chunk, not per image).
            m.momentum = None
        model.train()
        model(x)
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()


def _check_inputs(x: Tensor, y: Tensor, top: int, max_iter: int, trace_samples: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("x must be normalized float images shaped (N, 3, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not isinstance(y, Tensor) or y.shape != (len(x),) or y.is_floating_point():
        raise ValueError(f"y must be integer labels shaped ({len(x)},) to match x")
    _bounded("the number of images", len(x), 1, MAX_IMAGES)
    _bounded("top", top, 1, MAX_TOP)
    _bounded("max_iter", max_iter, 1, MAX_ITERATIONS)
    _bounded("trace_samples", trace_samples, 0, MAX_TRACE_SAMPLES)


def sharpness(model: nn.Module, x: Tensor, y: Tensor, *, top: int = 3, max_iter: int = 20, tol: float = 1e-3,
              trace_samples: int = 20, seed: int = 0, recalibrate: bool = False,
              progress: ProgressFn | None = None, stop: threading.Event | None = None,
              label: str = "") -> SharpnessResult:
    """Top ``top`` Hessian eigenvalues and the Hessian trace of the mean training loss of
    ``model`` on the normalized images ``x`` (N, 3, H, W, N <= ``MAX_IMAGES``) with labels ``y``.

    Power iteration takes up to ``max_iter`` products per eigenvalue (converged at relative
    change ``tol``); the trace averages ``trace_samples`` Rademacher samples (0: no trace).
    The random vectors come from ``torch.Generator().manual_seed(seed)``. ``recalibrate``
    first sets BN's running statistics from ``x`` (``recalibrate_bn``; for untrained nets, whose
    statistics are placeholders; the result's ``recalibrated`` says so). ``progress`` is told
    after every product and ``stop`` is checked before each. Runs on a private copy of the
    model in eval mode (see the module docstring for the choices).
    """
    _check_inputs(x, y, top, max_iter, trace_samples)
    work = copy.deepcopy(model).eval()  # the caller's mode and requires_grad flags stay as they are
    for p in work.parameters():
        p.requires_grad_(True)
    params = list(work.parameters())
    if not params:
        raise ValueError("the model has no parameters: there is no Hessian to measure")
    x, y = x.to(params[0].device, params[0].dtype), y.to(params[0].device)
    if recalibrate:
        recalibrate_bn(work, x)
    gen = torch.Generator().manual_seed(seed)
    budget = top * max_iter + trace_samples  # products at most: progress is a share of it
    done = 0
    check(stop)
    hvp, loss = loss_hvp(work, x, y)
    report(progress, 0.02, f"gradient graph built on {len(y)} images (loss {loss:.3f})")

    def on_eigen(i: int, it: int, value: float) -> None:
        nonlocal done
        done = i * max_iter + it
        report(progress, 0.02 + 0.98 * done / budget, f"eigenvalue {i + 1}/{top}, product {it}: {value:.4g}")

    values, iterations, converged = top_eigenvalues(hvp, params, top, max_iter=max_iter, tol=tol,
                                                    generator=gen, progress=on_eigen, stop=stop)
    base = top * max_iter  # early convergence leaves the bar short; the trace fills the rest

    def on_trace(i: int, mean: float) -> None:
        report(progress, 0.02 + 0.98 * (base + i) / budget, f"trace sample {i}/{trace_samples}: mean {mean:.4g}")

    trace, se = (hutchinson_trace(hvp, params, trace_samples, generator=gen, progress=on_trace, stop=stop)
                 if trace_samples else (math.nan, math.nan))
    config = getattr(model, "config", None)
    return SharpnessResult(
        label=label or str(getattr(config, "label", type(model).__name__)), images=len(y),
        params=sum(p.numel() for p in params), loss=loss, eigenvalues=values, iterations=iterations,
        converged=converged, trace=trace, trace_se=se, trace_samples=trace_samples,
        hvps=sum(iterations) + trace_samples, recalibrated=recalibrate,
    )
