"""One output number of a conv layer, worked by hand: patch x kernel, summed.

A conv output at (channel o, row r, col c) is the sum over input channels and kernel
positions of input patch times kernel weight, plus the bias. The patch starts at
(r * stride, c * stride) of the zero-padded input, so at a border part of it is padding.
``convolution_by_hand`` takes the layer's real input from one forward pass, does that sum
itself and checks it against what the layer computed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_viz.config import IMAGE_SIZE
from resnet_viz.experiments.common import eval_mode

__all__ = ["ConvByHand", "conv_layers", "convolution_by_hand", "output_size"]


@dataclass(frozen=True)
class ConvByHand:
    """The arithmetic behind ``layer(x)[0, out_channel, row, col]``."""

    layer: str
    out_channel: int
    row: int
    col: int
    patch: list  # (C, K, K): the padded input under the kernel
    kernel: list  # (C, K, K): weight[out_channel]
    product: list  # (C, K, K): patch * kernel
    bias: float  # 0.0 when the conv has no bias (all convs here: BN follows them)
    total: float  # product summed, plus bias
    layer_output: float  # what the layer itself computed at that position
    stride: int
    padding: int
    matches: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Conv2d``, in module order (stem, blocks, shortcut projections)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _square(value: Any, what: str, layer: str) -> int:
    """The single int of an (a, a) conv attribute; this walk-through shows square convs only."""
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise ValueError(f"{layer!r} has a non-square {what} {value}; only square convs can be worked by hand")
    return int(a)


def _layer_io(model: nn.Module, layer: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """(input, output) of conv ``layer`` in one forward pass of ``x``, in eval mode without
    gradients; the hook is removed and the model's mode restored afterwards."""
    conv = model.get_submodule(layer)
    assert isinstance(conv, nn.Conv2d)
    seen: dict[str, Tensor] = {}

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        seen["input"], seen["output"] = inputs[0].detach(), out.detach()

    handle = conv.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            model(x.to(device=conv.weight.device, dtype=conv.weight.dtype))
    finally:
        handle.remove()
    if "input" not in seen:
        raise ValueError(f"{layer!r} did not run in the forward pass, so it has no output to explain")
    return seen["input"], seen["output"]


def output_size(model: nn.Module, layer: str, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(rows, columns) of conv ``layer``'s output for one ``image_size`` square image: the
    positions ``convolution_by_hand`` accepts.

    Measured by one forward pass rather than counted from the layer's name, because where
    the map halves depends on the block: a basic block strides its first conv, a
    bottleneck its middle 3x3 (so its first 1x1 still sees the full map).
    """
    names = conv_layers(model)
    if layer not in names:
        raise ValueError(f"{layer!r} is not a conv layer of this model; valid layers: {', '.join(names)}")
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    _, out = _layer_io(model, layer, torch.zeros(1, stem.in_channels, image_size, image_size))
    return int(out.shape[2]), int(out.shape[3])


def _workable_conv(model: nn.Module, layer: str, out_channel: int) -> tuple[nn.Conv2d, int, int, int]:
    """(conv, kernel size, stride, padding) of conv ``layer``, or a ValueError saying why
    its output cannot be worked by hand as one patch times one kernel."""
    names = conv_layers(model)
    if layer not in names:
        raise ValueError(f"{layer!r} is not a conv layer of this model; valid layers: {', '.join(names)}")
    conv = model.get_submodule(layer)
    if not isinstance(conv, nn.Conv2d):  # conv_layers lists Conv2d only; this narrows the type
        raise ValueError(f"{layer!r} is not a Conv2d")
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"{layer!r} is grouped, non-zero-padded or uses string padding; cannot be worked by hand")
    if _square(conv.dilation, "dilation", layer) != 1:
        raise ValueError(f"{layer!r} is dilated; only undilated convs can be worked by hand")
    if not 0 <= out_channel < conv.out_channels:
        raise ValueError(f"out_channel must be in 0..{conv.out_channels - 1} for {layer!r}, got {out_channel}")
    k = _square(conv.kernel_size, "kernel size", layer)
    return conv, k, _square(conv.stride, "stride", layer), _square(conv.padding, "padding", layer)


def convolution_by_hand(model: nn.Module, x: Tensor, layer: str, out_channel: int, row: int, col: int) -> ConvByHand:
    """Recompute one output value of conv ``layer`` from its input patch and kernel.

    ``x`` is one normalized image (1, C, H, W). The model runs once in eval mode without
    gradients; a hook (removed afterwards) records the layer's input and output. The
    model's mode is restored and nothing else about it changes.
    """
    conv, k, stride, pad = _workable_conv(model, layer, out_channel)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image of shape (1, C, H, W), got {tuple(x.shape)}")

    seen_in, seen_out = _layer_io(model, layer, x)
    out = seen_out[0]  # (O, H_out, W_out)
    h_out, w_out = out.shape[1:]
    if not (0 <= row < h_out and 0 <= col < w_out):
        raise ValueError(
            f"position ({row}, {col}) is outside {layer!r}'s {h_out}x{w_out} output; "
            f"row must be in 0..{h_out - 1} and col in 0..{w_out - 1}"
        )

    # Pad explicitly so the patch of a border position shows its zeros, as the conv sees them.
    padded = F.pad(seen_in[0], (pad, pad, pad, pad))  # (C, H + 2p, W + 2p)
    r0, c0 = row * stride, col * stride
    # float64 for the sum: its rounding then cannot be blamed for a mismatch.
    patch = padded[:, r0 : r0 + k, c0 : c0 + k].double().cpu()  # (C, K, K)
    kernel = conv.weight.detach()[out_channel].double().cpu()  # (C, K, K)
    product = patch * kernel  # (C, K, K)
    bias = float(conv.bias.detach()[out_channel]) if conv.bias is not None else 0.0
    total = float(product.sum()) + bias
    layer_output = float(out[out_channel, row, col])
    return ConvByHand(
        layer=layer,
        out_channel=out_channel,
        row=row,
        col=col,
        patch=patch.tolist(),
        kernel=kernel.tolist(),
        product=product.tolist(),
        bias=bias,
        total=total,
        layer_output=layer_output,
        stride=stride,
        padding=pad,
        matches=abs(total - layer_output) <= 1e-4 * max(1.0, abs(layer_output)),
    )
