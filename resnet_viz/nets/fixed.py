"""Layers without parameters: option A's shortcut and a fixed map of the input's normalization.

Both are fixed by the model's config, so neither adds to the state_dict: a checkpoint saved
before they existed loads as it did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.config import INPUT_NORMS, PADS

__all__ = ["InputMap", "PadShortcut"]


class PadShortcut(nn.Module):
    """Option A: identity with stride-2 subsampling and zero-padded extra channels.

    No parameters. ``pad="after"`` appends the new channels after the existing ones, so
    channel c of the output is channel c of the (subsampled) input for c < in_ch;
    ``pad="both"`` splits them over both sides (akamaster's CIFAR ResNets), shifting the
    identity to channels (out-in)//2 ... Weights trained with one fail with the other.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, pad: str = "after") -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot shrink channels ({in_ch} -> {out_ch})")
        if pad not in PADS:
            raise ValueError(f"unknown option A padding {pad!r}; choose one of {', '.join(PADS)}")
        self.in_ch, self.out_ch, self.stride, self.pad = in_ch, out_ch, stride, pad

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # (B, C, H/s, W/s)
        extra = self.out_ch - self.in_ch
        front = extra // 2 if self.pad == "both" else 0
        # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back)
        return F.pad(x, (0, 0, 0, 0, front, extra - front))

    def extra_repr(self) -> str:
        tail = "" if self.pad == "after" else f", pad={self.pad}"
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}{tail}"


class InputMap(nn.Module):
    """Maps an input normalized with ``source``'s statistics to ``target``'s: the same pixels
    as the weights saw in training, exactly (x * scale + shift, per channel), so that every
    page and experiment keeps feeding the app's one normalization."""

    scale: Tensor
    shift: Tensor

    def __init__(self, target: str, source: str = "cifar10") -> None:
        super().__init__()
        for name in (target, source):
            if name not in INPUT_NORMS:
                raise ValueError(f"unknown input normalization {name!r}; choose one of {', '.join(INPUT_NORMS)}")
        self.target, self.source = target, source
        # Not persistent: the config says what they are, and the state_dict stays the model's weights.
        self.register_buffer("scale", torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1), persistent=False)
        self.reset_buffers()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Fill the buffers from the two normalizations (again after ``to_empty``)."""
        m1, s1 = (torch.tensor(v, dtype=torch.float64) for v in INPUT_NORMS[self.source])
        m2, s2 = (torch.tensor(v, dtype=torch.float64) for v in INPUT_NORMS[self.target])
        # pixel p = x * s1 + m1, and (p - m2) / s2 = x * s1/s2 + (m1 - m2)/s2
        self.scale.copy_((s1 / s2).view(1, 3, 1, 1))
        self.shift.copy_(((m1 - m2) / s2).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"{self.source} -> {self.target}"
