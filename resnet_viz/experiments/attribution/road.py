"""Noisy linear imputation: ROAD's way to remove pixels (Rong et al. 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods").

Deleting pixels to a constant colour leaves a hole whose *shape* tells the net which pixels
were ranked high, so a deletion curve partly measures the net's reaction to the mask, not
the loss of information. ROAD instead fills each removed pixel with the weighted mean of its
8 neighbours (weight 1/6 for the four that share an edge, 1/12 for the diagonals), all
removed pixels at once: a sparse linear system, one equation per removed pixel. Small
Gaussian noise on the filled pixels keeps the fill from being a tell-tale smooth patch.

Hand-written (Quantus needs OpenCV, scikit-image, scikit-learn and SciPy; see the README):
the system is solved densely with ``torch.linalg.solve``, which for a 32x32 image (at most
1,024 unknowns) takes milliseconds and needs no sparse solver.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_UNKNOWNS", "NEIGHBOURS", "impute"]

# (dy, dx) and weight, as in the ROAD paper's reference code.
NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)
# A dense solve is cubic in the removed pixels: fine for CIFAR's 1,024, not for a 224 px photo.
MAX_UNKNOWNS = 4096


def impute(x: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """A copy of the image ``x`` (C, H, W) whose ``removed`` pixels ((H, W) bool) are each the
    weighted mean of their in-image neighbours, solved jointly, plus N(0, ``noise``²) noise.

    The other pixels are kept exactly. Every channel has the same system (the same removed
    pixels), so one solve serves all channels. ``generator`` draws the noise (never torch's
    global one: that is every caller's).
    """
    if x.dim() != 3 or removed.shape != x.shape[1:] or removed.dtype != torch.bool:
        raise ValueError(f"expected an image (C, H, W) and a bool mask (H, W); got {tuple(x.shape)} "
                         f"and {tuple(removed.shape)} {removed.dtype}")
    if not noise >= 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    out = x.detach().clone()
    c, h, w = x.shape
    where = removed.nonzero()  # (m, 2) row-major
    m = len(where)
    if m == 0:
        return out
    if m == h * w:
        raise ValueError("every pixel is removed: there is nothing to impute from; remove fewer than all")
    if m > MAX_UNKNOWNS:
        raise ValueError(f"{m} pixels to impute: more than {MAX_UNKNOWNS} (a dense solve); use a smaller image")
    index = torch.full((h, w), -1, dtype=torch.long)
    index[removed.cpu()] = torch.arange(m)
    ys, xs = where[:, 0].cpu(), where[:, 1].cpu()
    img = x.detach().cpu().double()
    # Equation of removed pixel i: sum_n w_n (v_i - v_n) = 0 over its in-image neighbours n;
    # removed neighbours stay on the left, known ones move to the right-hand side.
    a = torch.zeros(m, m, dtype=torch.float64)
    b = torch.zeros(m, c, dtype=torch.float64)
    diag = torch.zeros(m, dtype=torch.float64)
    rows = torch.arange(m)
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        r, ny, nx = rows[inside], ny[inside], nx[inside]
        diag[r] += weight  # each row appears once per offset: no repeated indices
        j = index[ny, nx]
        unknown = j >= 0
        a[r[unknown], j[unknown]] -= weight
        b[r[~unknown]] += weight * img[:, ny[~unknown], nx[~unknown]].T
    a[rows, rows] = diag
    values = torch.linalg.solve(a, b).T.to(x.dtype)  # (C, m)
    if noise > 0:
        values = values + noise * torch.randn(values.shape, generator=generator, dtype=values.dtype)
    out[:, ys.to(x.device), xs.to(x.device)] = values.to(x.device)
    return out
