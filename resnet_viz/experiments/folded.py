"""Fast evaluation of one model at many parameter settings, for the loss landscape.

:class:`Probe` keeps a private copy of a model (``work``, whose parameters the caller
moves) and a traced twin (``net``) in which each batch norm is folded into the conv before
it (``W' = W * gamma / sqrt(var + eps)``): BN statistics are fixed in eval mode, so the
fold is exact and removes a memory-bound pass per conv. ``evaluate()`` refreshes the fold
from the moved weights (far cheaper than one batch) and returns the loss and accuracy on a
fixed (x, y), in batches, under bf16 autocast where the device has it.
"""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..device import autocast, resolve_precision
from .common import check

__all__ = ["Probe"]


class Probe:
    """A private copy of a model (``work``, whose parameters the caller moves) and a traced,
    BN-folded twin (``net``) that is evaluated on a fixed (x, y)."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, precision: str) -> None:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x must be normalized float images (N, C, H, W) as fixed_subset returns, "
                             f"got {x.dtype} {tuple(x.shape)}")
        if y.shape != (len(x),) or len(x) == 0:
            raise ValueError(f"need one label per image and at least one image; got {len(x)} images, "
                             f"labels shaped {tuple(y.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.x = x.to(self.device).contiguous(memory_format=torch.channels_last)  # (N, C, H, W)
        self.y = y.to(self.device, dtype=torch.int64)  # (N,)
        self.work = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        self.params = list(self.work.parameters())
        self.net, self._folds, self._copies = self._fold(self.work)

    @staticmethod
    def _fold(work: nn.Module) -> tuple[nn.Module, list[tuple[nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]],
                                        list[tuple[Tensor, Tensor]]]:
        """(net, [(net conv, work conv, work bn)], [(net tensor, work tensor)]) for the refresh."""
        try:
            net = fx.symbolic_trace(copy.deepcopy(work))
        except Exception:  # noqa: BLE001 - a net fx cannot trace is evaluated unfolded: slower, same numbers
            return work, [], []
        mods = dict(net.named_modules())
        work_mods = dict(work.named_modules())
        folds = []
        for node in list(net.graph.nodes):
            bn = mods.get(node.target) if node.op == "call_module" else None
            src = node.args[0] if node.args else None
            if not (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.running_var is not None
                    and isinstance(src, fx.Node) and src.op == "call_module"
                    and isinstance(mods[src.target], nn.Conv2d) and len(src.users) == 1):
                continue
            conv = mods[src.target]
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0]))  # (C_out,)
            node.replace_all_uses_with(src)
            net.graph.erase_node(node)
            folds.append((conv, work_mods[src.target], work_mods[node.target]))
        net.delete_all_unused_submodules()
        net.recompile()
        folded = {id(t) for c, _, _ in folds for t in (c.weight, c.bias)}
        work_state = dict(work.named_parameters()) | dict(work.named_buffers())
        copies = [(t, work_state[name]) for name, t in [*net.named_parameters(), *net.named_buffers()]
                  if id(t) not in folded]
        return net.eval().to(memory_format=torch.channels_last), folds, copies

    def _refresh(self) -> None:
        """Carry the work copy's current parameters into the folded net."""
        for dst, src in self._copies:
            dst.copy_(src)
        for conv, w_conv, bn in self._folds:
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
            torch.mul(w_conv.weight, scale.view(-1, 1, 1, 1), out=conv.weight)
            shift = -bn.running_mean if w_conv.bias is None else w_conv.bias - bn.running_mean
            torch.addcmul(bn.bias, shift, scale, out=conv.bias)

    @torch.no_grad()
    def evaluate(self, stop: threading.Event | None) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the work copy's current parameters on (x, y)."""
        self._refresh()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        with autocast(self.device, self.precision):
            for lo in range(0, len(self.y), self.batch_size):
                check(stop)
                yb = self.y[lo:lo + self.batch_size]  # (b,)
                logits = self.net(self.x[lo:lo + self.batch_size]).float()  # (b, classes)
                loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
                correct += (logits.argmax(1) == yb).sum()
        n = len(self.y)
        return float(loss_sum) / n, int(correct) / n
