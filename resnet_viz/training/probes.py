"""Per-block probes: hooks attached for one step only, removed in ``finally``.

Attaching hooks to every block on every step costs about 4% of training time here;
attaching them only on the probed step costs nothing measurable. So the trainer does::

    with probe_blocks(model) as probe:
        loss = criterion(model(x), y)
        loss.backward()
    records = probe.results()   # {block name: {"act_norm": ..., "grad_norm": ..., ...}}

Per block (y = relu(F(x) + s(x)) with s the shortcut):
- ``act_norm``: mean over the batch of ||y_i||.
- ``grad_norm``: mean over the batch of ||dL_i/dy_i||, where L_i is image i's loss
  (the gradient of the mean loss times the batch size, so batch size does not change it).
- residual blocks only: ``ratio`` = mean ||F(x)_i|| / ||s(x)_i||, the size of what the
  block adds against what it passes on, and ``cos`` = mean cosine of F(x)_i with s(x)_i.
Their display labels are ``plots.PROBE_STATS`` (a key added here needs one there).
Statistics are computed inside the hooks from detached tensors and kept as 0-dim tensors,
so nothing is retained and, on CUDA, nothing synchronizes until ``results()``. They use
the first ``max_samples`` images of the batch: means over 32 images are steady enough
for a curve, and on ResNet-56 the full batch made the probed step ~40% slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.nets.cifar import iter_blocks

_EPS = 1e-12


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.detach().flatten(1).float().norm(dim=1)  # (B,)


class BlockProbe:
    """Collects statistics from hooks; use through ``probe_blocks``."""

    def __init__(self, max_samples: int = 32) -> None:
        self.k = max_samples
        self._stats: dict[str, dict[str, Tensor]] = {}
        self._pending: dict[str, dict[str, Tensor]] = {}

    def _branch_hook(self, name: str):
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            self._pending.setdefault(name, {})["branch"] = out.detach()[: self.k]

        return hook

    def _skip_hook(self, name: str):
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            self._pending.setdefault(name, {})["skip"] = out.detach()[: self.k]

        return hook

    def _block_hook(self, name: str):
        def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            stats = self._stats.setdefault(name, {})
            stats["act_norm"] = _per_sample_norm(out[: self.k]).mean()
            parts = self._pending.pop(name, {})
            if "branch" in parts and "skip" in parts:
                f = parts["branch"].flatten(1).float()  # (B, C*H*W)
                s = parts["skip"].flatten(1).float()
                stats["ratio"] = (f.norm(dim=1) / s.norm(dim=1).clamp_min(_EPS)).mean()
                stats["cos"] = F.cosine_similarity(f, s, dim=1, eps=_EPS).mean()
            if out.requires_grad:
                batch = out.shape[0]

                def grad_hook(g: Tensor) -> None:
                    stats["grad_norm"] = _per_sample_norm(g[: self.k]).mean() * batch

                out.register_hook(grad_hook)

        return hook

    def results(self) -> dict[str, dict[str, float]]:
        """Plain floats per block, in forward order (synchronizes once on CUDA)."""
        names = list(self._stats)
        if not names:
            return {}
        keys = [(n, k) for n in names for k in self._stats[n]]
        values = torch.stack([self._stats[n][k].detach().float().reshape(()) for n, k in keys]).tolist()
        out: dict[str, dict[str, float]] = {n: {} for n in names}
        for (n, k), v in zip(keys, values, strict=True):
            out[n][k] = v
        return out


@contextmanager
def probe_blocks(
    model: nn.Module, names: list[str] | None = None, max_samples: int = 32
) -> Iterator[BlockProbe]:
    """Attach probe hooks to the model's blocks (all, or ``names``) for the ``with`` body."""
    probe = BlockProbe(max_samples)
    handles = []
    try:
        for name, blk in iter_blocks(model):
            if names is not None and name not in names:
                continue
            if blk.shortcut is not None:
                handles.append(blk.last_bn.register_forward_hook(probe._branch_hook(name)))
                handles.append(blk.shortcut.register_forward_hook(probe._skip_hook(name)))
            handles.append(blk.register_forward_hook(probe._block_hook(name)))
        yield probe
    finally:
        for h in handles:
            h.remove()
        probe._pending.clear()
