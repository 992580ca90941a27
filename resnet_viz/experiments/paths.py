"""Effective paths of Veit, Wilber and Belongie (2016), section 4.2 and Fig. 6.

A ResNet with n residual blocks ``y = relu(F(x) + s(x))`` unrolls into 2^n paths: at each
block a path takes either the residual branch F or the skip s. C(n, k) paths go through
exactly k branches, so path lengths follow Binomial(n, 1/2). Veit et al. measure how much
gradient reaches the input through paths of each length: "we first feed a batch forward
through the whole network. During the backward pass, we randomly sample k residual blocks.
For those k blocks, we only propagate through the residual module; for the remaining n - k
blocks, we only propagate through the skip connection. Thus, we only measure gradients that
flow through the single path of length k." The mean gradient norm of one path of length k,
times the C(n, k) paths of that length, is the total gradient that length carries; for a
trained ResNet-110 it peaks at paths of 5 to 17 blocks, far shorter than the net.

What is done here, exactly:

- The forward pass is the whole, unchanged net (eval mode: the running BN statistics), so
  every ReLU mask and BN scale is the real one. Gates are put on the two inputs of each
  block's addition: a forward hook on the branch's last BN (F's output) and one on the
  shortcut module (s's output, the ``nn.Identity``, option-A pad or B/C projection). A gate
  is the identity going forward; going backward it lets the gradient through or blocks it,
  as a flag says *at backward time*. So one forward serves every sampled path: the graph is
  kept and each path is one more backward pass with other flags.
- A path with branch set K: at the blocks in K only F's gate is open, elsewhere only s's.
  Because the backward of the net is linear in the gradient and each block's Jacobian is
  ``D (J_F + J_s)`` (D the mask of the ReLU after the addition), the per-path gradients of
  all 2^n subsets add up exactly to the ordinary input gradient (the tests check it).
- Blocks that change the shape count as blocks like any other: their skip is the option-A
  subsample-and-pad (no parameters) or the 1x1 projection of B/C, and a path that does not
  take their branch goes through that shortcut. The stem and the head are on every path.
- The gradient is that of each image's own cross-entropy loss with respect to the image
  (the net's input; the stem's conv is on every path, so it scales all lengths alike); its
  L2 norm per image is averaged over the images and over the sampled subsets of each k.
- A plain net has no skips: it is one path through all n blocks, and only k = n exists.

The sums of path norms are magnitudes, not a decomposition of the gradient's norm: paths
point in different directions and partly cancel, so they add up to more than the ordinary
gradient's norm.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from resnet_viz.experiments.common import ProgressFn, check, eval_mode, report
from resnet_viz.experiments.routing import forward_loss, path_gradient_norms, path_gradients, routed
from resnet_viz.nets.cifar import iter_blocks

__all__ = ["PathsResult", "effective_range", "path_gradients", "paths_study", "routed"]

MAX_IMAGES = 1024
MAX_SAMPLES = 1000  # the paper's count per length


def _subsets(n: int, k: int, samples: int, gen: torch.Generator) -> list[tuple[int, ...]]:
    """``samples`` distinct k-subsets of range(n), sorted; all of them when there are no more."""
    if math.comb(n, k) <= samples:
        return list(itertools.combinations(range(n), k))
    chosen: dict[tuple[int, ...], None] = {}  # insertion-ordered set: reproducible for a seed
    while len(chosen) < samples:
        pick = torch.randperm(n, generator=gen)[:k].sort().values
        chosen[tuple(int(i) for i in pick)] = None
    return list(chosen)


def effective_range(shares: Sequence[float], mass: float = 0.9) -> tuple[int, int]:
    """The shortest run of lengths ``(lo, hi)`` (inclusive) whose shares add up to ``mass``;
    among equally short runs, the one holding the most."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be a fraction in (0, 1], got {mass!r}")
    total = float(sum(shares))
    if not shares or total <= 0:
        raise ValueError("no gradient reached the input through any path; nothing to locate")
    best = (len(shares) - 1, -1.0, 0, len(shares) - 1)  # the whole range holds everything
    for lo in range(len(shares)):
        run = 0.0
        for hi in range(lo, len(shares)):
            run += shares[hi] / total
            if run >= mass - 1e-12:  # rounding: shares that add up to exactly the mass count
                best = min(best, (hi - lo, -run, lo, hi))
                break
    return best[2], best[3]


@dataclass(frozen=True)
class PathsResult:
    label: str  # the model, for titles: "ResNet(A)-56"
    blocks: int  # n: residual (or plain) blocks, downsampling ones included
    plain: bool  # True: a single path of length n, nothing to sample
    per_length: list[dict[str, Any]]  # per k = 0..n: k, paths C(n,k), binomial, magnitude, std, total, share, samples
    effective: list[int]  # [lo, hi]: the shortest length range holding ``mass`` of the total gradient
    mass: float
    peak: int  # the length carrying the most total gradient
    mean_length: float  # path length weighted by total gradient
    images: int
    samples: int
    ordinary_norm: float  # mean norm of the ordinary input gradient (all paths at once)
    reading: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(x: Tensor, y: Tensor, images: int, samples: int, batch_size: int, mass: float) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("x must be normalized float images shaped (N, 3, H, W)")
    if not isinstance(y, Tensor) or y.shape != (len(x),) or y.is_floating_point():
        raise ValueError(f"y must be integer labels shaped ({len(x)},) to match x")
    for name, v, top in (("images", images, MAX_IMAGES), ("samples", samples, MAX_SAMPLES),
                         ("batch_size", batch_size, MAX_IMAGES)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise ValueError(f"{name} must be an integer from 1 to {top}, got {v!r}")
    if len(x) == 0:
        raise ValueError("x holds no images; pass at least one")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be a fraction in (0, 1], got {mass!r}")


def _measure(model: nn.Module, x: Tensor, y: Tensor, plan: list[tuple[int, ...]], batch_size: int,
             progress: ProgressFn | None, stop: threading.Event | None) -> tuple[Tensor, float]:
    """Mean input-gradient norm over the images for each subset in ``plan`` (one forward per
    batch, then one backward per subset), and the ordinary gradient's mean norm."""
    sums = torch.zeros(len(plan), dtype=torch.float64)
    ordinary = 0.0
    batches = math.ceil(len(x) / batch_size)
    steps, done = batches * (len(plan) + 1), 0
    with eval_mode(model, frozen=True), routed(model) as routes:
        for b in range(batches):
            check(stop)
            xg, loss = forward_loss(model, x[b * batch_size:(b + 1) * batch_size],
                                     y[b * batch_size:(b + 1) * batch_size])
            for j, subset in enumerate([None, *plan]):
                check(stop)
                everything = range(routes.n)
                # None: every gate open, the ordinary gradient; else the single path
                routes.set(everything, everything) if subset is None else routes.set(subset)
                (g,) = torch.autograd.grad(loss, xg, retain_graph=True, allow_unused=True)
                total = 0.0 if g is None else float(path_gradient_norms(g).double().sum())
                if subset is None:
                    ordinary += total
                else:
                    sums[j - 1] += total
                done += 1
                report(progress, done / steps, f"batch {b + 1}/{batches}: path {j}/{len(plan)}"
                       + ("" if subset is None else f" (length {len(subset)})"))
            del xg, loss  # the kept graph goes before the next batch's is built
    return sums / len(x), ordinary / len(x)


def _reading(label: str, n: int, lo: int, hi: int, mass: float, peak: int, mean_length: float,
             factor: float) -> str:
    count = f"2^{n}" + (f" = {2 ** n:,}" if n <= 20 else f" (about {2.0 ** n:.1e})")
    trend = "shrinks" if factor < 1 else "grows"
    text = (f"{label}: {n} blocks make {count} paths, most of them about {n / 2:g} blocks long (binomial). "
            f"Each branch a path goes through multiplies its gradient by about {factor:.2g} (it {trend} with "
            f"length), so paths of {lo} to {hi} blocks carry {mass:.0%} of the gradient reaching the input "
            f"(most at {peak}; mean {mean_length:.1f}). ")
    if mean_length < n / 2 - 0.5:
        text += f"The gradient comes from paths shorter than the typical one ({mean_length:.1f} against {n / 2:g})"
        if hi < n / 2:  # the whole effective range below the typical length
            text += ": the net trains as an ensemble of paths much shallower than its depth"
        return text + " (Veit et al. 2016: paths of 5 to 17 of ResNet-110's 54 blocks)."
    return text + ("Here the gradient is not concentrated in short paths: it follows the binomial count of paths "
                   "(Veit et al. 2016 found paths of 5 to 17 of a trained ResNet-110's 54 blocks).")


def paths_study(model: nn.Module, x: Tensor, y: Tensor, *, images: int = 64, samples: int = 8, seed: int = 0,
                batch_size: int = 64, mass: float = 0.9, progress: ProgressFn | None = None,
                stop: threading.Event | None = None, label: str = "") -> PathsResult:
    """Gradient magnitude reaching the input through paths of each length k = 0..n (Veit et
    al. 2016, Fig. 6; see the module docstring for exactly what is measured).

    ``x`` are normalized images (N, 3, H, W) and ``y`` their labels; the first ``images`` of
    them are used. For each k, ``samples`` distinct random k-subsets of the n blocks (drawn
    from a ``torch.Generator`` seeded with ``seed``; all subsets where there are no more) are
    each measured on every image. ``total`` is the mean magnitude times the C(n, k) paths of
    length k, ``share`` its fraction of all lengths' total; ``effective`` the shortest length
    range holding ``mass`` of it. The model is deep-copied: the caller's is never touched.
    ``progress`` is called after each backward pass; ``stop`` is checked between them.
    """
    _check(x, y, images, samples, batch_size, mass)
    model = copy.deepcopy(model)
    blocks = [b for _, b in iter_blocks(model)]
    if not blocks:
        raise ValueError("the model has no residual or plain blocks; effective paths need a CifarResNet")
    n = len(blocks)
    plain = all(b.shortcut is None for b in blocks)
    x, y = x[:images], y[:images]
    param = next(model.parameters(), None)
    if param is not None:
        x, y = x.to(param.device), y.to(param.device)
    gen = torch.Generator().manual_seed(seed)
    lengths = [n] if plain else list(range(n + 1))
    per_k = {k: _subsets(n, k, samples, gen) for k in lengths}
    plan = [s for k in lengths for s in per_k[k]]
    means, ordinary = _measure(model, x, y, plan, batch_size, progress, stop)
    rows: list[dict[str, Any]] = []
    at = 0
    for k in lengths:
        m = means[at:at + len(per_k[k])]
        at += len(per_k[k])
        paths = 1 if plain else math.comb(n, k)
        rows.append({"k": k, "paths": paths, "binomial": 1.0 if plain else paths / 2.0 ** n,
                     "magnitude": float(m.mean()), "std": float(m.std(correction=0)),
                     "total": float(m.mean()) * paths, "samples": len(m)})
    grand = sum(r["total"] for r in rows)
    for r in rows:
        r["share"] = r["total"] / grand if grand > 0 else 0.0
    lo, hi = effective_range([r["share"] for r in rows], mass)
    lo, hi = rows[lo]["k"], rows[hi]["k"]
    peak = max(rows, key=lambda r: r["total"])["k"]
    mean_length = sum(r["k"] * r["share"] for r in rows)
    label = label or str(getattr(getattr(model, "config", None), "label", type(model).__name__))
    if plain:
        reading = (f"{label} is a plain net: its {n} blocks make a single path of length {n}, and the whole "
                   "gradient goes through every block; there are no shorter paths to share it.")
    else:
        mags = [(r["k"], math.log(r["magnitude"])) for r in rows if r["magnitude"] > 0]
        reading = _reading(label, n, lo, hi, mass, peak, mean_length, math.exp(_slope(mags)))
    return PathsResult(label=label, blocks=n, plain=plain, per_length=rows, effective=[lo, hi], mass=mass,
                       peak=peak, mean_length=mean_length, images=len(x), samples=samples,
                       ordinary_norm=ordinary, reading=reading)


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (k, log magnitude): the log of the per-branch factor."""
    if len(points) < 2:
        return 0.0
    mk = sum(k for k, _ in points) / len(points)
    mv = sum(v for _, v in points) / len(points)
    var = sum((k - mk) ** 2 for k, _ in points)
    return sum((k - mk) * (v - mv) for k, v in points) / var if var else 0.0
