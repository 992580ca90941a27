"""A neutral description of a ResNet for the architecture figures: stem boxes, blocks by
stage and a head, as plain data. The CIFAR ``ModelSummary`` and the dict of
``imagenet.imagenet_summary`` both convert into it (``to_architecture``), so one drawing
function serves both families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the summary module pulls in torch; figures only need its data
    from resnet_viz.nets.summary import ModelSummary

Conv = tuple[int, int, int]  # (kernel, filters, stride) of one conv on a block's branch


@dataclass(frozen=True)
class ArchBox:
    """A box that is not a residual block: one stem layer, or the head."""

    title: str
    lines: tuple[str, ...]  # shown under the title
    hover: str


@dataclass(frozen=True)
class ArchBlock:
    """One residual block. ``convs`` and ``kind`` are drawn when given (the ImageNet nets)."""

    name: str
    stage: int
    in_shape: tuple[int, ...]  # (C, H, W)
    out_shape: tuple[int, ...]
    params: int
    flops: int
    shortcut: str  # "none", "identity", "pad" (option A), "projection"
    shape_changes: bool
    convs: tuple[Conv, ...] = ()
    kind: str = ""  # "basic" or "bottleneck"
    receptive_field: int | None = None


@dataclass(frozen=True)
class Architecture:
    """What the architecture figures draw: stem boxes, blocks in stage order, the head."""

    name: str  # "ResNet-50", "ResNet(A)-20"
    title: str
    stem: tuple[ArchBox, ...]
    head: ArchBox
    blocks: tuple[ArchBlock, ...]
    stage_names: Mapping[int, str] = field(default_factory=dict)  # stage -> caption, e.g. 1 -> "conv2_x"

    def stage_name(self, stage: int) -> str:
        return self.stage_names.get(stage, f"stage {stage}")


def shape_text(t: Sequence[int]) -> str:
    return "×".join(map(str, t))


def count_text(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def conv_text(conv: Conv) -> str:
    """ "3×3, 128, /2" as in the paper's Fig. 3 (the /2 only where the conv has stride 2)."""
    k, filters, stride = conv
    return f"{k}×{k}, {filters}" + (f", /{stride}" if stride > 1 else "")


def to_architecture(summary: ModelSummary | Mapping[str, Any] | Architecture) -> Architecture:
    """The neutral description of a CIFAR ``ModelSummary`` or an ``imagenet_summary`` dict."""
    if isinstance(summary, Architecture):
        return summary
    if isinstance(summary, Mapping):
        return _from_imagenet(summary)
    if not all(hasattr(summary, a) for a in ("blocks", "config", "label")):
        raise ValueError(f"expected a ModelSummary (summary.summarize) or an imagenet_summary dict, "
                         f"got {type(summary).__name__}")
    return _from_cifar(summary)


def _from_cifar(s: ModelSummary) -> Architecture:
    first_in = s.blocks[0].in_shape if s.blocks else None
    last_out = s.blocks[-1].out_shape if s.blocks else None
    classes = s.config.num_classes
    head_flops = 2 * (last_out[0] if last_out else 0) * classes
    stem_flops = s.flops - sum(b.flops for b in s.blocks) - head_flops
    stem = ArchBox("stem", ("conv 3×3", shape_text(first_in) if first_in else ""),
                   f"stem: 3×3 conv + BN + ReLU<br>out {shape_text(first_in) if first_in else '?'}<br>"
                   f"params {s.stem_params:,}<br>{stem_flops / 1e6:.2f} MFLOPs")
    head = ArchBox("head", ("avg pool + fc", f"{classes} classes"),
                   f"head: global average pool + fully connected<br>{shape_text(last_out) if last_out else ''} → "
                   f"{classes}<br>params {s.head_params:,}<br>{head_flops / 1e6:.3f} MFLOPs")
    blocks = tuple(ArchBlock(b.name, b.stage, b.in_shape, b.out_shape, b.params, b.flops, b.shortcut,
                             b.shape_changes, receptive_field=b.receptive_field) for b in s.blocks)
    title = f"{s.label}: {s.depth} layers, {s.params:,} parameters, {s.flops / 1e6:.1f} MFLOPs per image"
    return Architecture(s.label, title, (stem,), head, blocks)


_IMAGENET_KEYS = ("label", "depth", "params", "flops", "image_size", "num_classes", "stem", "head_params", "blocks")


def _from_imagenet(s: Mapping[str, Any]) -> Architecture:
    missing = [k for k in _IMAGENET_KEYS if k not in s]
    if missing:
        raise ValueError(f"not an imagenet_summary dict: missing {', '.join(missing)}")
    size, classes = s["image_size"], s["num_classes"]
    stem = []
    for layer in s["stem"]:
        what = conv_text((layer["kernel"], layer["filters"], layer["stride"])) if layer["kind"] == "conv" \
            else f"{layer['kernel']}×{layer['kernel']}, /{layer['stride']}"
        cost = f"<br>params {layer['params']:,}<br>{layer['flops'] / 1e6:.0f} MFLOPs" if "params" in layer else ""
        title = "conv1" if layer["kind"] == "conv" else layer["kind"]  # the paper's Table 1 name
        stem.append(ArchBox(title, (what, shape_text(layer["out_shape"])),
                            f"{layer['kind']} {what}<br>out {shape_text(layer['out_shape'])}{cost}"))
    last = s["blocks"][-1]["out_shape"] if s["blocks"] else (0,)
    head = ArchBox("head", ("avg pool + fc", f"{classes} classes"),
                   f"head: global average pool + fully connected<br>{shape_text(last)} → {classes}<br>"
                   f"params {s['head_params']:,}<br>{2 * last[0] * classes / 1e6:.1f} MFLOPs")
    blocks = tuple(ArchBlock(b["name"], b["stage"], tuple(b["in_shape"]), tuple(b["out_shape"]), b["params"],
                             b["flops"], b["shortcut"], b["shape_changes"], tuple(map(tuple, b["convs"])), b["type"])
                   for b in s["blocks"])
    names = {b.stage: f"conv{b.stage + 1}_x" for b in blocks}  # the paper's Table 1 names (conv1 is the stem)
    return Architecture(s["label"], f"{s['label']}: {s['depth']} layers, {s['params']:,} parameters, "
                        f"{s['flops'] / 1e9:.1f} GFLOPs per {size}×{size} image", tuple(stem), head, blocks, names)
