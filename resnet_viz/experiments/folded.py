"""Fast evaluation of one model at many parameter settings, for the loss landscape.

:class:`Probe` keeps a private copy of a model (``work``, whose parameters the caller
moves) and a twin (``net``) in which each batch norm is folded into the conv before
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
from torch import Tensor, nn

from resnet_viz.experiments.common import check
from resnet_viz.training.device import autocast, resolve_precision

__all__ = ["Probe"]


class Probe:
    """A private copy of a model (``work``, whose parameters the caller moves) and a
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
        with torch.no_grad():
            self.net, self._folds, self._copies = self._fold(self.work, self.x)

    @staticmethod
    def _fold(work: nn.Module, x: Tensor) -> tuple[nn.Module, list[tuple[nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]],
                                                    list[tuple[Tensor, Tensor]]]:
        """(net, [(net conv, work conv, work bn)], [(net tensor, work tensor)]) for the refresh.

        A batch norm named ``bnS`` (or ``bn``) is folded into its sibling conv ``convS`` (or
        ``conv``), as every block of ``nets/cifar.py`` names them, and becomes an identity. Not
        with torch.fx: its tracer patches ``nn.Module.__call__`` for the whole process while
        it runs, so a forward pass in another thread (a second experiment) would break
        either one. The fold is checked on a few
        images of x; a net it does not fit is evaluated unfolded: slower, the same numbers.
        """
        net = copy.deepcopy(work)
        work_mods = dict(work.named_modules())
        folds = []
        for parent_name, parent in list(net.named_modules()):
            for name, bn in list(parent.named_children()):
                conv = getattr(parent, "conv" + name.removeprefix("bn"), None) if name.startswith("bn") else None
                if not (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.running_var is not None
                        and isinstance(conv, nn.Conv2d)):
                    continue
                conv_name = f"{parent_name}.conv{name.removeprefix('bn')}".lstrip(".")
                if conv.bias is None:
                    conv.bias = nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0]))  # (C_out,)
                setattr(parent, name, nn.Identity())
                folds.append((conv, work_mods[conv_name], work_mods[f"{parent_name}.{name}".lstrip(".")]))
        folded = {id(t) for c, _, _ in folds for t in (c.weight, c.bias)}
        work_state = dict(work.named_parameters()) | dict(work.named_buffers())
        copies = [(t, work_state[name]) for name, t in [*net.named_parameters(), *net.named_buffers()]
                  if id(t) not in folded]
        net = net.eval().to(memory_format=torch.channels_last)
        Probe._refresh_fold(folds, copies)
        xb = x[:4]
        if folds and not torch.allclose(net(xb), work(xb), rtol=1e-3, atol=1e-4):
            return work, [], []  # something runs between a conv and its bn: fold nothing
        return net, folds, copies

    def _refresh(self) -> None:
        """Carry the work copy's current parameters into the folded net."""
        self._refresh_fold(self._folds, self._copies)

    @staticmethod
    @torch.no_grad()
    def _refresh_fold(folds: list[tuple[nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]],
                      copies: list[tuple[Tensor, Tensor]]) -> None:
        for dst, src in copies:
            dst.copy_(src)
        for conv, w_conv, bn in folds:
            mean, var = bn.running_mean, bn.running_var
            if mean is None or var is None:
                raise ValueError("a batch norm without running statistics cannot be folded into its conv")
            scale = bn.weight * torch.rsqrt(var + bn.eps)  # (C_out,)
            torch.mul(w_conv.weight, scale.view(-1, 1, 1, 1), out=conv.weight)
            shift = -mean if w_conv.bias is None else w_conv.bias - mean
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
