"""Noisy linear imputation: ROAD's way to remove pixels (Rong et al. 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods").

Deleting pixels to a constant colour leaves a hole whose *shape* tells the net which pixels
were ranked high, so a deletion curve partly measures the net's reaction to the mask, not
the loss of information. ROAD instead fills each removed pixel with the weighted mean of its
8 neighbours (weight 1/6 for the four that share an edge, 1/12 for the diagonals), all
removed pixels at once: a sparse linear system, one equation per removed pixel. Small
Gaussian noise on the filled pixels keeps the fill from being a tell-tale smooth patch.

Hand-written (Quantus needs OpenCV, scikit-image, scikit-learn and SciPy; see the README).
The system is symmetric positive definite (a graph Laplacian with the known pixels as
boundary values), so conjugate gradients solve it, with the matrix never built: applying it
is a 3x3 convolution. All the masks of a curve (and all channels) are solved at once, as one
batch: a 32x32 image's ten ROAD masks take milliseconds where a dense solve per mask took
0.2 s at 90% removed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["NEIGHBOURS", "impute", "impute_many"]

# (dy, dx) and weight, as in the ROAD paper's reference code.
NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)
TOL = 1e-7  # relative residual at which conjugate gradients stop
MAX_ITERATIONS = 2000


def _kernel(dtype: torch.dtype) -> Tensor:
    k = torch.zeros(3, 3, dtype=dtype)
    for dy, dx, weight in NEIGHBOURS:
        k[1 + dy, 1 + dx] = weight
    return k.view(1, 1, 3, 3)


def impute_many(x: Tensor, removed: Tensor, *, noise: float = 0.01,
                generator: torch.Generator | None = None) -> Tensor:
    """``impute`` for K masks at once: (K, C, H, W) copies of x (C, H, W), copy k with the
    pixels of ``removed[k]`` ((K, H, W) bool) filled in."""
    if x.dim() != 3 or removed.dim() != 3 or removed.shape[1:] != x.shape[1:] or removed.dtype != torch.bool:
        raise ValueError(f"expected an image (C, H, W) and bool masks (K, H, W); got {tuple(x.shape)} "
                         f"and {tuple(removed.shape)} {removed.dtype}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError("every pixel is removed: there is nothing to impute from; remove fewer than all")
    k, (c, h, w) = len(removed), x.shape
    img = x.detach().cpu().double()
    mask = removed.cpu()[:, None].expand(k, c, h, w).reshape(k * c, 1, h, w).double()  # 1 = unknown
    known = img.repeat(k, 1, 1).view(k * c, 1, h, w) * (1 - mask)
    kern = _kernel(torch.float64)

    def neighbours(v: Tensor) -> Tensor:  # sum_n w_n v_n over in-image neighbours (zero padding)
        return F.conv2d(v, kern, padding=1)

    diag = neighbours(torch.ones(1, 1, h, w, dtype=torch.float64))  # the weights of the in-image neighbours
    # Row i of the system: diag_i v_i - sum over removed neighbours w_n v_n = sum over known ones w_n x_n.
    def apply(v: Tensor) -> Tensor:
        return mask * (diag * v - neighbours(mask * v))

    b = mask * neighbours(known)
    v = mask * b / diag  # a Jacobi start
    r = b - apply(v)
    z = r / diag
    p = z.clone()
    rz = (r * z).sum((1, 2, 3), keepdim=True)
    stop = TOL * b.flatten(1).norm(dim=1).clamp_min(1e-30)
    for _ in range(MAX_ITERATIONS):  # preconditioned conjugate gradients, every system at once
        if bool((r.flatten(1).norm(dim=1) <= stop).all()):
            break
        ap = apply(p)
        alpha = rz / (p * ap).sum((1, 2, 3), keepdim=True).clamp_min(1e-300)
        v, r = v + alpha * p, r - alpha * ap
        z = r / diag
        rz_new = (r * z).sum((1, 2, 3), keepdim=True)
        p, rz = z + (rz_new / rz.clamp_min(1e-300)) * p, rz_new
    filled = (known + mask * v).view(k, c, h, w)
    if noise > 0:
        eps = torch.randn((k, c, h, w), generator=generator, dtype=torch.float64)
        filled = filled + noise * eps * mask.view(k, c, h, w)
    return filled.to(x.device, x.dtype)


def impute(x: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """A copy of the image ``x`` (C, H, W) whose ``removed`` pixels ((H, W) bool) are each the
    weighted mean of their in-image neighbours, solved jointly, plus N(0, ``noise``²) noise.

    The other pixels are kept exactly. ``generator`` draws the noise (never torch's global
    one: that is every caller's).
    """
    if removed.dim() != 2:
        raise ValueError(f"expected a bool mask (H, W), got {tuple(removed.shape)}")
    return impute_many(x, removed[None], noise=noise, generator=generator)[0]
